"""The cVQ-VAE baseline: builds from a preset, learns one batch, saves and loads, and its decoder
follows the layout it is given."""

from __future__ import annotations

import json

import numpy as np
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


def test_train_cvqvae_then_sample_given_layouts_deterministically(tmp_path, capsys):
    from msgnet.cli import main
    from msgnet.data.format import open_dataset

    data = make_tiny_dataset(tmp_path / "data", n=24, n_val=6)
    run = tmp_path / "run"
    assert main(["train", "cvqvae", "--config", "tiny", "--data", str(data), "--run", str(run), "--steps", "4",
                 "--device", "cpu"]) == 0
    assert (run / "cvqvae" / "config.json").is_file() and (run / "cvqvae_prior" / "config.json").is_file()
    prior = json.loads((run / "cvqvae_prior" / "config.json").read_text())["config"]
    assert (prior["height"], prior["width"], prior["num_condition_classes"]) == (4, 4, 3)  # H x W, given the layout
    outs = []
    for name in ("a", "b"):
        assert main(["sample", "--run", str(run), "--num", "4", "--out", str(tmp_path / name), "--layouts", str(data),
                     "--seed", "3", "--device", "cpu"]) == 0
        outs.append(open_dataset(tmp_path / name).load_split("train"))
    assert np.array_equal(outs[0][0], outs[1][0])  # a pure function of the seed
    given = open_dataset(data)
    first = [given.read_layout(i) for i in given.ids("train")[:4]]
    assert all(np.array_equal(outs[0][1][k], first[k]) for k in range(4))  # the annotation is the given layout
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "c")]) == 2  # no layout prior
    assert "--layouts" in capsys.readouterr().err
