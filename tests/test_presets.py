"""Every shipped preset loads, is self-consistent, its VQ-VAE maps a batch to the right shapes, and
its three models each take a training step."""

from __future__ import annotations

import pytest
import torch

from msgnet.config import list_presets, load_preset
from msgnet.errors import UsageError
from msgnet.models.vqvae import DoublePathVQVAE
from tests.fixtures import train_one_step_each

EXPECTED = {  # name: (in_channels, image_size, latent_size, layout classes)
    "clevr-64": (3, 64, 16, 25),
    "clevr-192": (3, 192, 24, 25),
    "clevr-64-cpu": (3, 64, 16, 25),
    "clevr-192-cpu": (3, 192, 24, 25),
    "malaria": (3, 96, 24, 2),
    "brats": (2, 240, 30, 5),
    "multi-mnist": (1, 64, 16, 11),
    "multi-mnist-cpu": (1, 64, 16, 11),
    "malaria-cpu": (3, 96, 24, 2),
    "brats-cpu": (2, 120, 30, 5),
    "tiny": (1, 16, 4, 3),
}


def test_all_expected_presets_ship():
    # Every shipped preset is checked below: a new one must be added to EXPECTED.
    assert set(EXPECTED) == set(list_presets())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_is_consistent(name):
    p = load_preset(name)
    channels, size, latent, classes = EXPECTED[name]
    assert p.name == name and p.source.strip()
    v = p.vqvae
    assert (v.in_channels, v.image_size, v.latent_size) == (channels, size, latent)
    # The latent prior models the 2H x W stacked codes, conditioned on the layout classes.
    assert (p.prior.height, p.prior.width) == (2 * latent, latent)
    assert p.prior.num_classes == v.num_embeddings
    assert p.prior.num_condition_classes == classes
    # The layout prior models the H x W layout, unconditionally.
    assert (p.layout_prior.height, p.layout_prior.width) == (latent, latent)
    assert p.layout_prior.num_classes == classes and p.layout_prior.num_condition_classes == 0


@pytest.mark.parametrize("name", ["clevr-64", "clevr-192", "malaria", "brats"])
def test_paper_presets_follow_table4(name):
    p = load_preset(name)
    v, t = p.vqvae, p.vqvae_train
    table4 = {  # hidden, codes, batch, lr, iterations
        "clevr-64": (128, 256, 64, 1e-3, 25000),
        "clevr-192": (128, 256, 32, 8e-4, 50000),
        "malaria": (256, 128, 32, 8e-4, 80000),
        "brats": (256, 128, 16, 8e-4, 50000),
    }[name]
    assert (v.hidden_dim, v.num_embeddings, t.batch_size, t.learning_rate, t.iterations) == table4
    assert (v.residual_dim, v.num_residual_blocks, v.embedding_dim, v.commitment) == (64, 2, 64, 0.25)
    assert v.attention_below == 64 and not v.restart_dead_codes and t.schedule == "linear"
    assert p.prior_train.schedule == "cyclical" and p.prior_train.learning_rate == 3e-4
    assert (p.prior.num_blocks, p.prior.num_res_blocks, p.prior.kernel_size) == (4, 3, 5)


def test_cpu_preset_respects_budget():
    p = load_preset("multi-mnist-cpu")
    assert 0 < p.vqvae_train.max_minutes <= 30
    assert p.vqvae.restart_dead_codes  # without restarts the perplexity stays far below 32
    assert p.vqvae.attention_below <= 32  # no self-attention on the 32x32 maps


@pytest.mark.parametrize("name", ["multi-mnist-cpu", "malaria-cpu", "brats-cpu", "clevr-64-cpu",
                                  "clevr-192-cpu"])
def test_cpu_presets_train_priors_without_dropout(name):
    # Dropout makes a CPU prior step 2-3x slower (benchmarks/prior_training.py) and the CPU
    # presets train for about an epoch, where it regularises nothing.
    p = load_preset(name)
    assert p.prior.dropout == 0 and p.layout_prior.dropout == 0


def test_multi_mnist_cpu_priors_end_annealed_within_the_main_job_budget():
    # A fixed step count (not the wall-time cap) ends the run, so the linear schedule reaches 0
    # and a seed reproduces it; the caps stay a guard only.
    p = load_preset("multi-mnist-cpu")
    for t in (p.prior_train, p.layout_prior_train):
        assert t.iterations > 0 and t.schedule == "linear" and t.max_minutes > 0
    assert p.vqvae_train.max_minutes + p.prior_train.max_minutes + p.layout_prior_train.max_minutes <= 44


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_vqvae_builds_and_maps_a_batch(name):
    cfg = load_preset(name).vqvae
    torch.manual_seed(0)
    model = DoublePathVQVAE(cfg).eval()
    x = torch.rand(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        out = model(x)
    assert out.reconstruction.shape == x.shape
    assert out.indices[0].shape == out.indices[1].shape == (1, cfg.latent_size, cfg.latent_size)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_builds_all_three_models_and_each_takes_a_step(name):
    train_one_step_each(load_preset(name), batch=1)


def test_unknown_keys_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvqvae:\n  hiden_dim: 3\n")
    with pytest.raises(UsageError, match="hiden_dim"):
        load_preset(str(bad))
