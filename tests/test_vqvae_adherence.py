"""FSQ, the decoder told the layout (class modulation, code replacement, class adversary) and the
VQ-VAE adherence diagnostics (reconstruction fidelity, decoder obedience, `msgnet eval vqvae`)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from msgnet.config import VQVAEConfig, load_preset
from msgnet.errors import UsageError
from msgnet.evaluation.vqvae_adherence import vqvae_adherence
from msgnet.layouts.classes import permute_object_classes
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.fsq import FiniteScalarQuantizer

LEVELS = (8, 6, 5)  # 240 codes, mixed radix basis (1, 8, 48)
BIG = 1e4


def _tiny(**changes) -> VQVAEConfig:
    """The tiny preset's VQ-VAE (16x16 images, 4x4 latent, 16 codes), changed."""
    return replace(load_preset("tiny").vqvae, **changes)


def _identity_fsq() -> FiniteScalarQuantizer:
    """FSQ on 3 channels whose input projection is the identity: the input is what gets bounded."""
    q = FiniteScalarQuantizer(LEVELS, embedding_dim=3)
    with torch.no_grad():
        q.project_in.weight.copy_(torch.eye(3)[:, :, None, None])
        q.project_in.bias.zero_()
    return q.eval()


# ---- 1. FSQ ---------------------------------------------------------------------------------------


def test_fsq_every_index_is_a_grid_point_and_back():
    q = _identity_fsq()
    assert q.num_embeddings == 240
    idx = torch.arange(240).view(1, 240, 1)
    grid = q._from_indices(idx)  # (1, 3, 240, 1)
    points = grid[0, :, :, 0].T  # (240, 3)
    assert len({tuple(p.tolist()) for p in points}) == 240  # 240 distinct grid points
    for ch, n in enumerate(LEVELS):  # each channel on its grid: -(n//2) .. n-1-n//2
        assert set(points[:, ch].tolist()) == set(range(-(n // 2), n - n // 2))
    assert torch.equal(q._to_indices(grid), idx)
    # By hand, mixed radix (digit = grid point + n//2): 0 -> all lowest, 239 -> all highest.
    for index, point in ((0, (-4, -3, -2)), (1, (-3, -3, -2)), (8, (-4, -2, -2)), (48, (-4, -3, -1)),
                         (239, (3, 2, 2))):
        assert tuple(points[index].long().tolist()) == point


def test_fsq_lookup_of_indices_is_the_forward_output_and_extremes_stay_in_range():
    torch.manual_seed(0)
    q = FiniteScalarQuantizer(LEVELS, embedding_dim=4).eval()
    z = torch.randn(3, 4, 5, 5) * 3
    out = q(z)
    indices = q.indices(z)
    assert torch.equal(out.indices, indices)
    assert torch.allclose(q.lookup(indices), out.quantized, atol=1e-6)
    assert float(out.codebook_loss) == 0.0 and float(out.commitment_loss) == 0.0
    signs = torch.where(torch.rand(4, 4, 6, 6) < 0.5, -1.0, 1.0)
    for extreme in (signs * BIG, torch.full((4, 4, 6, 6), BIG), torch.full((4, 4, 6, 6), -BIG)):
        got = q.indices(extreme)
        assert int(got.min()) >= 0 and int(got.max()) < 240
        assert torch.equal(q(extreme).indices, got)
    # With the identity projection the extremes are exactly the grid's corners.
    qi = _identity_fsq()
    assert int(qi.indices(torch.full((1, 3, 2, 2), -BIG)).unique()) == 0
    assert int(qi.indices(torch.full((1, 3, 2, 2), BIG)).unique()) == 239
    with pytest.raises(ValueError, match="240"):
        q.lookup(torch.tensor([[[240]]]))


def test_fsq_straight_through_gradient_reaches_the_input():
    torch.manual_seed(1)
    q = FiniteScalarQuantizer(LEVELS, embedding_dim=4).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q(z).quantized.pow(2).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert q.project_in.weight.grad is not None and q.project_in.weight.grad.abs().sum() > 0


def test_fsq_usage_counts_and_perplexity_on_a_hand_case():
    q = _identity_fsq()
    # Channel values -BIG / 0 / +BIG land on digit 0 / n//2 / n-1, so each index is known by hand.
    m, o, p = -BIG, 0.0, BIG
    pixels = [(m, m, m), (m, m, m), (o, o, o), (o, o, o), (p, p, p), (p, m, o)]
    expected = [0, 0, 4 + 8 * 3 + 48 * 2, 124, 7 + 8 * 5 + 48 * 4, 7 + 0 + 48 * 2]  # 0 0 124 124 239 103
    z = torch.tensor(pixels).T.reshape(1, 3, 2, 3)
    out = q(z)
    assert out.indices.flatten().tolist() == expected
    hand = torch.zeros(240, dtype=torch.long)
    hand[0], hand[124], hand[239], hand[103] = 2, 2, 1, 1
    assert torch.equal(out.counts, hand)
    entropy = -(2 * (1 / 3) * math.log(1 / 3) + 2 * (1 / 6) * math.log(1 / 6))
    assert float(out.perplexity) == pytest.approx(math.exp(entropy), rel=1e-5)


@pytest.mark.parametrize("changes, field", [
    (dict(quantizer="fsq", fsq_levels="8,1,5", num_embeddings=40), "fsq_levels"),
    (dict(quantizer="fsq", fsq_levels="8,x", num_embeddings=8), "fsq_levels"),
    (dict(quantizer="fsq", fsq_levels=""), "fsq_levels"),
    (dict(quantizer="fsq", fsq_levels="8,6,5", num_embeddings=256), "num_embeddings"),
    (dict(quantizer="fsq", fsq_levels="8,6,5", num_embeddings=240, restart_dead_codes=True), "restart_dead_codes"),
    (dict(quantizer="vq", fsq_levels="8,6,5"), "fsq_levels"),
    (dict(quantizer="lfq"), "quantizer"),
    (dict(code_replacement=1.0, layout_classes=3), "code_replacement"),
    (dict(layout_classes=1), "layout_classes"),
    (dict(class_adversary=0.1), "class_adversary"),
])
def test_config_refuses_bad_new_options_naming_the_field(changes, field):
    with pytest.raises(UsageError, match=re.escape(f"vqvae.{field}")):
        _tiny(**changes).validate()


def test_fsq_config_builds_fsq_quantizers():
    cfg = _tiny(quantizer="fsq", fsq_levels="8,6,5", num_embeddings=240)
    cfg.validate()
    model = DoublePathVQVAE(cfg)
    assert isinstance(model.quantizer_attn, FiniteScalarQuantizer) and model.quantizer_conv.num_embeddings == 240
    with pytest.raises(ValueError):
        FiniteScalarQuantizer((8, 1), 4)


# ---- 2. every new option off: today's model --------------------------------------------------------


def test_new_options_off_give_todays_model_bit_for_bit():
    base = _tiny()
    explicit = replace(base, quantizer="vq", fsq_levels="", layout_classes=0, code_replacement=0.0,
                       class_adversary=0.0)
    shapes = {k: tuple(v.shape) for k, v in DoublePathVQVAE(base).state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in DoublePathVQVAE(explicit).state_dict().items()}
    assert not [k for k in shapes if any(w in k for w in ("modulation", "class_adversary", "project_"))]
    # The tiny model before these options existed: 56 tensors holding 29587 numbers.
    assert len(shapes) == 56 and sum(math.prod(s) for s in shapes.values()) == 29587

    torch.manual_seed(0)
    a = DoublePathVQVAE(base)
    torch.manual_seed(0)
    b = DoublePathVQVAE(explicit)
    x = torch.rand(2, 1, 16, 16)
    layout = torch.randint(0, 3, (2, 16, 16))
    for model in (a, b):
        model.train()
    outs = [a(x), b(x, None), b(x, layout)]  # a decoder not told the layout ignores one given
    for out in outs[1:]:
        assert torch.equal(out.reconstruction, outs[0].reconstruction) and torch.equal(out.loss, outs[0].loss)
        assert out.auxiliary_loss is None and out.adversary_accuracy is None

    state = torch.random.get_rng_state()
    a(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # code_replacement 0: no random number drawn
    replacing = DoublePathVQVAE(_tiny(code_replacement=0.5)).train()
    state = torch.random.get_rng_state()
    replacing(x)
    assert not torch.equal(torch.random.get_rng_state(), state)  # (the check sees a draw when there is one)
    state = torch.random.get_rng_state()
    replacing.eval()(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # never outside training


# ---- 3. zero-initialised modulation -----------------------------------------------------------------


def test_zero_modulation_is_todays_decoder_and_trained_modulation_reads_the_layout():
    torch.manual_seed(0)
    plain = DoublePathVQVAE(_tiny()).eval()
    told = DoublePathVQVAE(_tiny(layout_classes=11)).eval()
    missing, unexpected = told.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(re.fullmatch(r"modulation_[ac]\.\d+\.table\.weight", k) for k in missing)
    g = torch.Generator().manual_seed(1)
    codes = (torch.randint(16, (3, 4, 4), generator=g), torch.randint(16, (3, 4, 4), generator=g))
    layouts = [torch.zeros(3, 16, 16, dtype=torch.long)] + [torch.randint(0, 11, (3, 16, 16), generator=g)
                                                            for _ in range(3)]
    with torch.no_grad():
        ref = plain.decode_indices(*codes)
        for layout in layouts:
            assert torch.equal(told.decode_indices(*codes, layout), ref)
        for name, p in told.named_parameters():
            if "modulation" in name:
                p.normal_(0.0, 0.5, generator=g)
        drawn = [told.decode_indices(*codes, layout) for layout in layouts]
        assert torch.equal(told.decode_indices(*codes, layouts[1]), drawn[1])
        for i in range(len(drawn)):
            for j in range(i + 1, len(drawn)):
                assert not torch.allclose(drawn[i], drawn[j])
        # Sampling hands a told decoder the full-size layout the codes were drawn for.
        from msgnet.sampling.generators import MSGNetImages

        def sample(prior, n, condition, generator, batch_size, **rule):
            return torch.cat(codes, 1)  # the stacked (B, 2h, w) code maps
        generated = MSGNetImages(told, nn.Identity(), torch.device("cpu")).images(
            layouts[2].numpy(), torch.zeros(3, 4, 4, dtype=torch.long), g, sample, {})
        assert torch.equal(generated, drawn[2])
    with pytest.raises(ValueError, match="told the layout"):
        told.decode_indices(*codes)
    with pytest.raises(ValueError, match="told the layout"):
        told.decode_indices(*codes, torch.zeros(3, 4, 4, dtype=torch.long))  # latent-size, not full-size
    with pytest.raises(ValueError, match="layout classes"):
        told.decode_indices(*codes, torch.full((3, 16, 16), 11))


# ---- 4. decoder obedience with fakes -----------------------------------------------------------------

DIGIT_OF = {c: c - 1 for c in range(1, 11)}  # class c is digit c - 1


def _random_layouts(n: int, seed: int) -> np.ndarray:
    """(n, 32, 32) layouts of one or two separate rectangles (6..12 px a side), classes 1..10."""
    rng = np.random.default_rng(seed)
    lay = np.zeros((n, 32, 32), dtype=np.int64)
    for i in range(n):
        for lo, hi in ((0, 16), (17, 32)):
            if lo and rng.random() < 0.5:
                continue
            w, h = (int(v) for v in rng.integers(6, 13, 2))
            x, y = int(rng.integers(lo, hi - w + 1)), int(rng.integers(0, 32 - h + 1))
            lay[i, y:y + h, x:x + w] = int(rng.integers(1, 11))
    return lay


def _shade(classes):
    """The marker of a class: its grey value (class 1..10 -> 20..245), background black."""
    return (classes > 0) * (20 + 25 * (classes - 1))


def _read_shade(cells: np.ndarray) -> np.ndarray:
    """Fake digit reader: the grey value at the middle of an MNIST-framed crop, back to a digit."""
    middle = np.median(cells[:, 12:16, 12:16].reshape(len(cells), -1), axis=1)
    return np.round((middle - 20) / 25).astype(np.int64)


class _FakeVQVAE(nn.Module):
    """Codes are the pixels' grey values (so they carry the class); the decoder draws either the
    layout's class markers (obedient) or the codes (ignores the layout)."""

    told_layout = True

    def __init__(self, obey: bool) -> None:
        super().__init__()
        self.obey = obey
        self.config = SimpleNamespace(num_embeddings=256, layout_classes=11)
        self.unused = nn.Parameter(torch.zeros(()))

    def encode_indices(self, x):
        codes = (x[:, 0] * 255).round().long()
        return codes, codes.clone()

    def decode_indices(self, codes_attn, codes_conv, layout=None):
        grey = _shade(layout) if self.obey else codes_attn
        return grey[:, None].float() / 255.0


def test_decoder_obedience_is_one_for_a_decoder_that_draws_its_layout_and_zero_for_one_that_ignores_it():
    layouts = _random_layouts(40, seed=0)
    images = _shade(layouts).astype(np.uint8)[..., None]
    obedient = vqvae_adherence(_FakeVQVAE(obey=True), images, layouts, _read_shade, DIGIT_OF, batch_size=16)
    ignoring = vqvae_adherence(_FakeVQVAE(obey=False), images, layouts, _read_shade, DIGIT_OF, batch_size=16)
    for result in (obedient, ignoring):
        assert result["images"] == 40
        assert result["reconstruction_fidelity"] == 1.0  # both reconstruct (the reader reads markers right)
        assert result["used_codes_attn"] == len(np.unique(images)) == result["used_codes_conv"]
        assert result["psnr"] == pytest.approx(100.0)  # exact reconstructions
    assert obedient["decoder_obedience"] == 1.0
    assert ignoring["decoder_obedience"] == 0.0  # every object's class was changed
    assert ignoring["decoder_obedience_ci95_high"] < 0.2
    no_digits = vqvae_adherence(_FakeVQVAE(obey=True), images, layouts, None, None)
    assert "reconstruction_fidelity" not in no_digits and "decoder_obedience" not in no_digits
    assert no_digits["psnr"] == pytest.approx(100.0)


def test_changed_layouts_change_every_object_class_and_keep_shapes():
    g = torch.Generator().manual_seed(0)
    base = torch.from_numpy(_random_layouts(300, seed=1))
    for k in (3, 5, 11):
        layouts = torch.where(base > 0, 1 + (base - 1) % (k - 1), 0)
        changed = permute_object_classes(layouts, k, g)
        objects = layouts > 0
        assert torch.equal(changed > 0, objects) and torch.equal(changed[~objects], layouts[~objects])
        assert bool((changed[objects] != layouts[objects]).all())
        assert int(changed.max()) <= k - 1
        for old, new in zip(layouts, changed):  # one permutation per layout: a class maps to one class
            for c in old[old > 0].unique():
                assert len(new[old == c].unique()) == 1
    with pytest.raises(UsageError):
        permute_object_classes(torch.zeros(1, 4, 4, dtype=torch.long), 2, g)


# ---- 5. training a told-layout FSQ VQ-VAE -------------------------------------------------------------


def test_told_layout_fsq_training_with_adversary_and_code_replacement(tmp_path):
    from fixtures import make_tiny_dataset

    from msgnet.training.loop import train
    from msgnet.training.vqvae_stage import VQVAEStage, open_image_datasets

    data = make_tiny_dataset(tmp_path / "data", n=24, size=16, channels=1, num_classes=3)
    p = load_preset("tiny")
    cfg = replace(p.vqvae, quantizer="fsq", fsq_levels="4,4", num_embeddings=16, layout_classes=3,
                  class_adversary=0.5, code_replacement=0.25)
    stage = VQVAEStage(cfg, seed=0)
    train_set, val_set = open_image_datasets(cfg, data)
    train(stage, train_set, val_set, replace(p.vqvae_train, iterations=4), tmp_path / "run", device="cpu",
          log=lambda _s: None)
    rows = list(csv.DictReader((tmp_path / "run" / "vqvae" / "metrics.csv").open()))
    accuracies = [float(r["adversary_accuracy"]) for r in rows if r["split"] == "train" and r.get("adversary_accuracy")]
    assert accuracies and all(0.0 <= a <= 1.0 for a in accuracies)
    assert all(math.isfinite(float(r["auxiliary_loss"])) for r in rows if r["split"] == "train")

    saved = DoublePathVQVAE.from_pretrained(tmp_path / "run" / "vqvae")
    assert saved.told_layout and isinstance(saved.quantizer_attn, FiniteScalarQuantizer)
    assert saved.class_adversary is not None
    assert any(bool(p.detach().abs().sum() > 0) for n, p in saved.named_parameters() if "modulation" in n)
    trained = stage.model.eval().to(memory_format=torch.contiguous_format)  # it trained in channels_last
    reloaded = saved.state_dict()
    assert all(torch.equal(v, reloaded[k]) for k, v in trained.state_dict().items())
    images, layouts = val_set[0][0][None], val_set[0][1][None]
    with torch.no_grad():
        codes = saved.encode_indices(images)
        assert all(torch.equal(a, b) for a, b in zip(codes, trained.encode_indices(images)))
        drawn = saved.decode_indices(*codes, layouts)
        assert torch.equal(drawn, trained.decode_indices(*codes, layouts))
        other = torch.where(layouts > 0, 3 - layouts, 0)  # classes 1 <-> 2
        assert not torch.equal(saved.decode_indices(*codes, other), drawn)
    with pytest.raises(ValueError, match="told the layout"):
        saved.decode_indices(*codes)


def test_told_layout_stage_transforms_images_and_layouts_together():
    from msgnet.augmentation.standard import AugmentationSettings
    from msgnet.training.vqvae_stage import VQVAEStage

    layouts = torch.zeros(6, 16, 16, dtype=torch.long)
    layouts[:, 1:6, 2:12] = 1
    layouts[:, 9:15, 3:6] = 2
    batch = (layouts[:, None].float() / 2, layouts)  # the image is the layout, scaled
    settings = AugmentationSettings(geometric=("flip", "rotate90"))
    images, seen = VQVAEStage(_tiny(layout_classes=3), seed=3, augmentation=settings)._augmented(batch)
    assert seen is not None and torch.equal((images[:, 0] * 2).round().long(), seen)
    assert not torch.equal(seen, layouts)  # something moved
    assert VQVAEStage(_tiny(), seed=3, augmentation=settings)._augmented(batch)[1] is None  # not told: no layouts


# ---- 6. `msgnet eval vqvae` on a tiny Multi-MNIST run ---------------------------------------------------


def test_eval_vqvae_cli_on_a_tiny_multi_mnist_run(tmp_path, capsys):
    from msgnet.cli import main
    from msgnet.data.mnist_source import load_bundled
    from msgnet.data.multi_mnist import MultiMnistSpec, build_multi_mnist
    from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig, save_classifier
    from msgnet.evaluation.vqvae_adherence import measure_run_vqvae
    from msgnet.training.vqvae_stage import train_vqvae

    spec = MultiMnistSpec(num=16, size=32, digit_min=10, digit_max=12, val_fraction=0.25, test_fraction=0.0)
    data = build_multi_mnist(spec, load_bundled(), tmp_path / "mm", progress=False)
    p = load_preset("tiny")
    preset = replace(p, vqvae=replace(p.vqvae, image_size=32, latent_size=8, layout_classes=11),
                     vqvae_train=replace(p.vqvae_train, iterations=2))
    run = tmp_path / "run"
    train_vqvae(preset, data, run, device="cpu")
    # A tiny untrained digit classifier: the figures are then arbitrary, but present and well formed.
    torch.manual_seed(0)
    clf = tmp_path / "clf"
    save_classifier(DigitClassifier(DigitClassifierConfig(channels=(4, 8), hidden=16)), clf, {})
    out = tmp_path / "vqvae.json"
    assert main(["eval", "vqvae", "--run", str(run), "--data", str(data), "--classifier", str(clf),
                 "--device", "cpu", "--json", str(out)]) == 0
    assert "PSNR" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["images"] == 4 and result["psnr"] > 0
    for name in ("attn", "conv"):
        assert 1 <= result[f"used_codes_{name}"] <= 16
    for key in ("reconstruction_fidelity", "decoder_obedience"):
        assert 0.0 <= result[f"{key}_ci95_low"] <= result[key] <= result[f"{key}_ci95_high"] <= 1.0
    direct = measure_run_vqvae(run, data, classifier=clf, device="cpu")
    assert direct == {k: v for k, v in result.items() if k != "msgnet_version"}
    assert main(["eval", "vqvae", "--run", str(run), "--data", str(data), "--num", "-1"]) == 2


def test_obedience_loss_trains_the_reader_on_real_images_only_and_never_the_encoder():
    from msgnet.nn.obedience import object_cell_loss

    cfg = VQVAEConfig(image_size=16, latent_size=4, hidden_dim=16, residual_dim=8, embedding_dim=8,
                      num_embeddings=60, quantizer="fsq", fsq_levels="5,4,3", layout_classes=5, obedience=1.0)
    torch.manual_seed(0)
    model = DoublePathVQVAE(cfg).train()
    x = torch.rand(3, 1, 16, 16)
    layout = torch.zeros(3, 16, 16, dtype=torch.long)
    layout[:, 2:8, 2:8], layout[:, 9:15, 8:14] = 1, 3
    for p in model.modulation_a.parameters():  # a decoder that depends on the layout, as after training
        nn.init.normal_(p, std=0.5)
    out = model(x, layout)
    assert out.auxiliary_loss is not None and out.obedience_accuracy is not None
    model.zero_grad()
    out.auxiliary_loss.backward()
    reader_grads = [p.grad.clone() for p in model.class_reader.parameters()]
    # The encoder learns nothing from it: the codes are detached in the obedience term.
    assert all(p.grad is None or not p.grad.any() for p in model.enc_out_a.parameters())
    # The reader's gradient is its real-image loss's alone: the decoded term reads it with detached weights.
    model.zero_grad()
    from msgnet.layouts.resize import downsample_layout
    real_loss, _ = object_cell_loss(model.class_reader(x * 2 - 1), downsample_layout(layout, (4, 4), 5))
    real_loss.backward()
    for got, want in zip(reader_grads, (p.grad for p in model.class_reader.parameters())):
        assert torch.allclose(got, want, atol=1e-6)
    # ... and the decoder does learn from it.
    model.zero_grad()
    model(x, layout).auxiliary_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.modulation_a.parameters())


def test_obedience_realism_gives_the_reader_a_decoded_class_and_needs_the_obedience_loss():
    with pytest.raises(UsageError, match="vqvae.obedience_realism"):
        VQVAEConfig(layout_classes=5, obedience_realism=True).validate()
    cfg = VQVAEConfig(image_size=16, latent_size=4, hidden_dim=16, residual_dim=8, embedding_dim=8,
                      num_embeddings=60, quantizer="fsq", fsq_levels="5,4,3", layout_classes=5, obedience=0.5,
                      obedience_realism=True)
    model = DoublePathVQVAE(cfg).train()
    assert model.class_reader.net[-1].out_channels == 6  # the layout's 5 classes and "decoded"
    layout = torch.zeros(2, 16, 16, dtype=torch.long)
    layout[:, 2:9, 2:9] = 2
    out = model(torch.rand(2, 1, 16, 16), layout)
    out.loss.backward()
    assert torch.isfinite(out.auxiliary_loss)
