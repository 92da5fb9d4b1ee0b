"""The cVQ-VAE baseline: builds from a preset, learns one batch, saves and loads, and its decoder
follows the layout it is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msgnet.baselines.cvqvae import CVQVAEConfig, LayoutConditionedVQVAE
from msgnet.config import load_preset
from tests.fixtures import make_tiny_dataset


def _batch(tmp_path):
    from msgnet.data.format import open_dataset

    data = make_tiny_dataset(tmp_path / "d", n=12, n_val=2)
    images, layouts = open_dataset(data).load_split("train")
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0,
            torch.from_numpy(layouts).long())


def test_cvqvae_takes_its_sizes_from_a_preset():
    preset = load_preset("multi-mnist-cpu")
    cfg = CVQVAEConfig.from_preset(preset)
    assert (cfg.hidden_dim, cfg.num_embeddings, cfg.latent_size, cfg.num_classes) == (
        preset.vqvae.hidden_dim, preset.vqvae.num_embeddings, preset.vqvae.latent_size, 11)
    model = LayoutConditionedVQVAE(cfg)
    x = torch.rand(2, 1, 64, 64)
    lay = torch.randint(0, 11, (2, 64, 64))
    out = model(x, lay)
    assert out.reconstruction.shape == x.shape and out.indices[0].shape == (2, 16, 16)
    assert model.encode_indices(x).shape == (2, 16, 16)


def test_cvqvae_learns_one_batch_and_round_trips(tmp_path):
    torch.manual_seed(0)
    images, layouts = _batch(tmp_path)
    model = LayoutConditionedVQVAE(CVQVAEConfig.from_preset(load_preset("tiny")))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(images, layouts).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 4
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = LayoutConditionedVQVAE.from_pretrained(tmp_path / "m")
    codes = model.encode_indices(images)
    with torch.no_grad():
        assert torch.equal(loaded.decode_indices(codes, layouts), model.decode_indices(codes, layouts))


def test_the_decoder_follows_the_layout_it_is_given(tmp_path):
    torch.manual_seed(0)
    images, layouts = _batch(tmp_path)
    model = LayoutConditionedVQVAE(CVQVAEConfig.from_preset(load_preset("tiny"))).eval()
    codes = model.encode_indices(images)
    with torch.no_grad():
        same = model.decode_indices(codes, layouts)
        other = model.decode_indices(codes, torch.roll(layouts, 5, dims=2))
    assert not torch.allclose(same, other)


def _train_baseline(tmp_path, method: str, steps: int, *extra: str):
    """``msgnet train METHOD`` on a tiny dataset with the tiny preset: (data, run)."""
    from msgnet.cli import main

    data = tmp_path / "data"
    if not data.exists():
        make_tiny_dataset(data, n=24, n_val=6)
    run = tmp_path / "run"
    assert main(["train", method, "--config", "tiny", "--data", str(data), "--run", str(run), "--steps", str(steps),
                 "--device", "cpu", *extra]) == 0
    return data, run


def test_train_cvqvae_then_sample_given_layouts_deterministically(tmp_path, capsys):
    data, run = _train_baseline(tmp_path, "cvqvae", 4)
    assert (run / "cvqvae" / "config.json").is_file() and (run / "cvqvae_prior" / "config.json").is_file()
    prior = json.loads((run / "cvqvae_prior" / "config.json").read_text())["config"]
    assert (prior["height"], prior["width"], prior["num_condition_classes"]) == (4, 4, 3)  # H x W, given the layout
    _samples_given_layouts_deterministically(run, data, tmp_path, capsys)


# --- obj-cGAN ---------------------------------------------------------------------------------

def test_obj_cgan_takes_its_sizes_from_a_preset_and_reads_objects_from_layouts():
    from msgnet.baselines.obj_cgan import ObjCGAN, ObjCGANConfig, objects_of_layouts

    preset = load_preset("multi-mnist-cpu")
    cfg = ObjCGANConfig.from_preset(preset)
    assert (cfg.image_size, cfg.in_channels, cfg.num_classes, cfg.width) == (64, 1, 11, preset.vqvae.hidden_dim)
    layout = np.zeros((1, 64, 64), np.uint8)
    layout[0, 8:24, 4:20] = 3
    layout[0, 40:60, 30:44] = 7
    labels, boxes = objects_of_layouts(layout, cfg.max_objects)
    assert labels[0, :3].tolist() == [7, 3, 0]  # larger first, then empty slots
    assert torch.allclose(boxes[0, 1], torch.tensor([4 / 64, 8 / 64, 16 / 64, 16 / 64]))
    model = ObjCGAN(cfg)
    images = model.generate(labels, boxes, torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    d_loss, g_loss = model.losses(torch.rand(1, 1, 64, 64), labels, boxes, torch.randn(1, cfg.noise_dim))
    assert d_loss.ndim == 0 and g_loss.ndim == 0


def test_obj_cgan_object_pathway_writes_only_inside_its_boxes():
    from msgnet.baselines.obj_cgan import ObjCGAN, ObjCGANConfig

    torch.manual_seed(0)
    model = ObjCGAN(ObjCGANConfig.from_preset(load_preset("multi-mnist-cpu"))).eval()
    noise = torch.randn(2, model.config.noise_dim)
    labels = torch.zeros(2, model.config.max_objects, dtype=torch.long)
    boxes = torch.zeros(2, model.config.max_objects, 4)
    with torch.no_grad():
        assert float(model.generator.object_features(noise, labels, boxes).abs().max()) == 0.0  # zero layout
        labels[:, 0] = 4
        boxes[:, 0] = torch.tensor([0.25, 0.5, 0.25, 0.375])  # x 16..32, y 32..56 of 64: cells 4..8, 8..14 of 16
        feats = model.generator.object_features(noise, labels, boxes)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[8:14, 4:8] = True
    assert float(feats[..., ~inside].abs().max()) == 0.0
    assert float(feats[..., inside].abs().max()) > 0.0


def test_obj_cgan_learns_one_batch_and_round_trips(tmp_path):
    """Trained on one batch, the generator's images come much closer to that batch's images."""
    from msgnet.baselines.obj_cgan import ObjCGAN, ObjCGANConfig, objects_of_layouts

    torch.manual_seed(0)
    images, layouts = _batch(tmp_path)
    cfg = ObjCGANConfig(image_size=16, in_channels=1, num_classes=3, width=16, noise_dim=8)
    labels, boxes = objects_of_layouts(layouts, cfg.max_objects)
    model = ObjCGAN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))

    def distance() -> float:
        model.eval()
        fake = model.generate(labels, boxes, torch.Generator().manual_seed(1))
        model.train()
        return float((fake - images).pow(2).mean())

    before = distance()
    for _ in range(150):
        d_loss, g_loss = model.losses(images, labels, boxes, torch.randn(len(images), cfg.noise_dim))
        opt.zero_grad()
        (d_loss + g_loss).backward()
        opt.step()
    assert distance() < before / 3
    model.eval()
    model.save_pretrained(tmp_path / "gan")
    loaded = ObjCGAN.from_pretrained(tmp_path / "gan")
    a = model.generate(labels, boxes, torch.Generator().manual_seed(2))
    assert torch.equal(loaded.generate(labels, boxes, torch.Generator().manual_seed(2)), a)


def test_obj_cgan_generator_gets_no_gradient_from_the_discriminator_loss_and_vice_versa():
    from msgnet.baselines.obj_cgan import ObjCGAN, ObjCGANConfig

    torch.manual_seed(0)
    cfg = ObjCGANConfig(image_size=16, in_channels=1, num_classes=3, width=8, noise_dim=4)
    model = ObjCGAN(cfg)
    labels = torch.tensor([[1, 2, 0, 0, 0, 0, 0, 0]])
    boxes = torch.tensor([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]] + [[0.0] * 4] * 6])
    d_loss, g_loss = model.losses(torch.rand(1, 1, 16, 16), labels, boxes, torch.randn(1, 4))
    d_loss.backward(retain_graph=True)
    assert all(p.grad is None for p in model.generator.parameters())
    model.zero_grad(set_to_none=True)
    g_loss.backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.generator.parameters())


def test_train_obj_cgan_then_sample_given_layouts_deterministically(tmp_path, capsys):
    data, run = _train_baseline(tmp_path, "obj-cgan", 3)
    assert (run / "obj_cgan" / "model.safetensors").is_file() and (run / "obj_cgan" / "metrics.csv").is_file()
    # Resume continues from the checkpoint to the new step count.
    _train_baseline(tmp_path, "obj-cgan", 5, "--resume")
    assert "resuming from step 3" in capsys.readouterr().out
    _samples_given_layouts_deterministically(run, data, tmp_path, capsys)


def _samples_given_layouts_deterministically(run, data, tmp_path, capsys):
    """A baseline run samples given layouts as a pure function of the seed, annotates each image with
    its given layout, and without --layouts refuses in one line (it has no layout prior)."""
    from msgnet.cli import main
    from msgnet.data.format import open_dataset

    outs = []
    for name in ("a", "b"):
        assert main(["sample", "--run", str(run), "--num", "4", "--out", str(tmp_path / name), "--layouts", str(data),
                     "--seed", "3", "--device", "cpu"]) == 0
        outs.append(open_dataset(tmp_path / name).load_split("train"))
    assert np.array_equal(outs[0][0], outs[1][0])
    given = open_dataset(data)
    first = [given.read_layout(i) for i in given.ids("train")[:4]]
    assert all(np.array_equal(outs[0][1][k], first[k]) for k in range(4))
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--layouts" in capsys.readouterr().err


def test_cvqvae_stage_restarts_dead_codes_from_the_data(tmp_path):
    """Without restarts the cVQ-VAE codebook collapsed to one code; at step 0 every code is dead and
    is moved onto encoder outputs of the batch, so the first batch already uses many codes."""
    from dataclasses import replace

    from msgnet.baselines.cvqvae_training import CVQVAEStage

    torch.manual_seed(0)
    images, layouts = _batch(tmp_path)
    cfg = replace(CVQVAEConfig.from_preset(load_preset("tiny")), restart_dead_codes=True)
    stage = CVQVAEStage(cfg)
    before = stage.model.quantizer.codebook.weight.detach().clone()
    _, metrics = stage.training_step(stage.model, (images, layouts), 0)
    after = stage.model.quantizer.codebook.weight.detach()
    with torch.no_grad():
        z = stage.model.encode(images)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert not torch.equal(before, after)
    assert (after[:, None] - flat[None]).norm(dim=2).min(1).values.max() < 1e-6  # each code sits on an encoder output
    assert float(metrics["ppl"]) > 2.0
    assert stage.state_dict()["window_usage"].sum() == images.shape[0] * z.shape[2] * z.shape[3]


def test_obj_cgan_gets_msgnets_steps_and_time_caps_together():
    from dataclasses import replace

    from msgnet.baselines.obj_cgan_training import gan_train_config

    p = load_preset("multi-mnist-cpu")
    cfg = gan_train_config(p)
    assert cfg.iterations == p.vqvae_train.iterations + p.layout_prior_train.iterations + p.prior_train.iterations
    assert cfg.max_minutes == pytest.approx(p.vqvae_train.max_minutes + p.layout_prior_train.max_minutes
                                            + p.prior_train.max_minutes)
    assert (cfg.learning_rate, cfg.adam_beta1, cfg.schedule, cfg.keep_best) == (2e-4, 0.5, "constant", False)
    exact = gan_train_config(p, steps=7)
    assert exact.iterations == 7 and exact.max_minutes == 0
    uncapped = replace(p, prior_train=replace(p.prior_train, max_minutes=0.0))
    assert gan_train_config(uncapped).max_minutes == 0  # one stage without a cap: none for the GAN
