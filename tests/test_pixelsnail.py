"""PixelSNAIL / LayoutPixelSNAIL: shapes, exact causality, the condition, loss, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from msgnet.config import PixelSNAILConfig
from msgnet.errors import UsageError
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.models.priors import load_prior
from msgnet.nn.causal import CausalConv2d


def tiny_config(**changes) -> PixelSNAILConfig:
    base = dict(
        height=5, width=7, num_classes=6, channels=8, num_blocks=2, num_res_blocks=1,
        res_channels=8, kernel_size=3, attention=True, attention_dim=8, attention_heads=2,
        dropout=0.0, num_out_res_blocks=1, num_condition_classes=3, condition_embedding_dim=4,
        condition_res_blocks=1, condition_res_dim=4, embedding_dim=0,
    )
    base.update(changes)
    return PixelSNAILConfig(**base)


def _perturb(tokens: torch.Tensor, p: int, num_classes: int) -> torch.Tensor:
    t = tokens.clone()
    flat = t.view(t.shape[0], -1)
    flat[:, p] = (flat[:, p] + 1) % num_classes
    return t


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_causal_conv_reads_only_earlier_positions(kernel):
    torch.manual_seed(0)
    for include_center in (False, True):
        conv = CausalConv2d(1, 1, kernel, include_center=include_center).double()
        x = torch.zeros(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
        out = conv(x)
        assert out.shape == x.shape
        i, j = 3, 4
        out[0, 0, i, j].backward()
        grad = x.grad[0, 0].abs() > 0
        for a in range(6):
            for b in range(7):
                later = (a, b) > (i, j) or (not include_center and (a, b) == (i, j))
                if later:
                    assert not grad[a, b], (a, b)
        assert grad[i, j - 1] and grad[i - 1, j]  # it does read its neighbours
        assert bool(grad[i, j]) == include_center


def _check_causality(model: PixelSNAIL, condition: torch.Tensor | None) -> None:
    cfg = model.config
    n = cfg.height * cfg.width
    torch.manual_seed(1)
    tokens = torch.randint(0, cfg.num_classes, (2, cfg.height, cfg.width))
    with torch.no_grad():
        base = model(tokens, condition).flatten(2)
        changed_later = 0
        for p in range(n):
            out = model(_perturb(tokens, p, cfg.num_classes), condition).flatten(2)
            diff = (out - base).abs().amax(dim=(0, 1))
            # Positions up to and including p never see token p.
            assert diff[: p + 1].max() == 0, f"position <= {p} depends on token {p}"
            changed_later += int((diff[p + 1 :] > 1e-12).any())
    # The test can fail: tokens do influence later positions.
    assert changed_later >= n - 2


@pytest.mark.parametrize("kernel", [2, 3, 5])
@pytest.mark.parametrize("attention", [True, False])
def test_pixelsnail_is_causal(kernel, attention):
    torch.manual_seed(0)
    model = PixelSNAIL(tiny_config(kernel_size=kernel, attention=attention)).double().eval()
    cond = torch.randint(0, 3, (2, 5, 7))
    _check_causality(model, cond)


def test_layout_prior_is_causal():
    torch.manual_seed(0)
    cfg = tiny_config(num_condition_classes=0, embedding_dim=5, height=6, width=3, kernel_size=5)
    model = LayoutPixelSNAIL(cfg).double().eval()
    _check_causality(model, None)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = PixelSNAIL(cfg)
    tokens = torch.randint(0, 6, (3, 5, 7))
    cond = torch.randint(0, 3, (3, 5, 7))
    logits = model(tokens, cond)
    assert logits.shape == (3, 6, 5, 7)
    loss, metrics = model.loss(tokens, cond)
    assert loss.ndim == 0 and loss.requires_grad
    assert metrics["bits_per_token"] == pytest.approx(metrics["loss"] / math.log(2))
    # At initialisation the prior is close to uniform over 6 classes.
    assert abs(metrics["loss"] - math.log(6)) < 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_condition_changes_the_distribution():
    torch.manual_seed(0)
    model = PixelSNAIL(tiny_config()).eval()
    tokens = torch.randint(0, 6, (1, 5, 7))
    cond_a = torch.zeros(1, 5, 7, dtype=torch.long)
    cond_b = cond_a.clone()
    cond_b[0, 2:4, 3:6] = 2
    with torch.no_grad():
        pa = model(tokens, cond_a).softmax(1)
        pb = model(tokens, cond_b).softmax(1)
    assert (pa - pb).abs().max() > 1e-3
    # Even the very first position (no tokens seen yet) depends on the condition.
    assert (pa[..., 0, 0] - pb[..., 0, 0]).abs().max() > 1e-5


def test_condition_required_and_refused():
    model = PixelSNAIL(tiny_config())
    tokens = torch.zeros(1, 5, 7, dtype=torch.long)
    with pytest.raises(ValueError):
        model(tokens)
    uncond = PixelSNAIL(tiny_config(num_condition_classes=0))
    with pytest.raises(ValueError):
        uncond(tokens, torch.zeros(1, 5, 7, dtype=torch.long))
    with pytest.raises(ValueError):
        uncond(torch.zeros(1, 4, 7, dtype=torch.long))
    with pytest.raises(ValueError):
        LayoutPixelSNAIL(tiny_config())


def test_training_mode_uses_dropout():
    torch.manual_seed(0)
    model = PixelSNAIL(tiny_config(dropout=0.5, num_condition_classes=0))
    tokens = torch.randint(0, 6, (2, 5, 7))
    a, b = model(tokens), model(tokens)
    assert (a - b).abs().max() > 0
    model.eval()
    assert torch.equal(model(tokens), model(tokens))


@pytest.mark.parametrize("layout", [False, True])
def test_save_load_identical_logits(tmp_path, layout):
    torch.manual_seed(0)
    if layout:
        model = LayoutPixelSNAIL(tiny_config(num_condition_classes=0, embedding_dim=4)).eval()
        cond = None
    else:
        model = PixelSNAIL(tiny_config()).eval()
        cond = torch.randint(0, 3, (2, 5, 7))
    # Move the weights away from their initial values so the norms are not trivial.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "prior")
    loaded = load_prior(tmp_path / "prior")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    tokens = torch.randint(0, 6, (2, 5, 7))
    with torch.no_grad():
        assert torch.equal(model(tokens, cond), loaded(tokens, cond))


def test_load_prior_errors(tmp_path):
    with pytest.raises(UsageError):
        load_prior(tmp_path / "missing")
    model = PixelSNAIL(tiny_config())
    model.save_pretrained(tmp_path / "p")
    other = PixelSNAIL(tiny_config(channels=16))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "p" / "model.safetensors"))
    with pytest.raises(UsageError):
        load_prior(tmp_path / "p")
