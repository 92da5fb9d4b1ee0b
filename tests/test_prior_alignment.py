"""Condition contrastive alignment of the codes prior (issue 32): the loss, and that it makes the prior read classes."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from msgnet.config import load_preset
from msgnet.errors import UsageError
from msgnet.evaluation.class_gain import class_gain, run_class_gain
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.training.prior_alignment import AlignmentSettings, align_prior, alignment_loss, map_log_likelihood
from msgnet.training.prior_stage import train_prior
from tests.test_prior_stage import tiny, write_codes


def _prior(condition_dropout: float = 0.0) -> PixelSNAIL:
    torch.manual_seed(0)
    config = replace(load_preset("tiny").prior, num_condition_classes=4, condition_dropout=condition_dropout)
    return PixelSNAIL(config).eval()


def _maps(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Code maps (n, 8, 4) that spell their layout's class: code = 4 * class + 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    layout = torch.randint(0, 4, (n, 8, 4), generator=g)
    return 4 * layout + torch.randint(0, 2, (n, 8, 4), generator=g), layout


def test_map_log_likelihood_is_the_sum_of_the_tokens_log_probabilities():
    prior = _prior()
    codes, layout = _maps(3)
    expected = -F.cross_entropy(prior(codes, layout), codes, reduction="none").sum((1, 2))
    assert torch.allclose(map_log_likelihood(prior, codes, layout), expected)


def test_the_loss_of_a_prior_equal_to_its_reference_is_cca_at_zero_ratio():
    prior = _prior()
    codes, layout = _maps(4)
    negative = (layout % 3) + (layout > 0)  # any other layout: equal models give ratio 0 everywhere
    for lam in (1.0, 10.0):
        loss, metrics = alignment_loss(prior, prior, codes, layout, negative, beta=0.02, lam=lam)
        assert float(loss.detach()) == pytest.approx((1 + lam) * math.log(2) / lam)
        assert metrics["delta_pos"] == pytest.approx(0.0, abs=1e-4)
    # Maps without a negative (the nulled ones) count their positive term alone.
    none = torch.zeros(4, dtype=torch.bool)
    loss, _ = alignment_loss(prior, prior, codes, layout, negative, 0.02, 10.0, has_negative=none)
    assert float(loss.detach()) == pytest.approx(math.log(2) / 10.0)


def test_alignment_makes_the_prior_read_the_class_and_leaves_no_step_untaken():
    prior = _prior()
    codes, layout = _maps()
    before = class_gain(prior, [(codes, layout)])["class_gain"]
    untouched = {k: v.clone() for k, v in prior.state_dict().items()}
    record = align_prior(prior, codes, layout, AlignmentSettings(steps=0), progress=False)
    assert record["steps"] == 0 and all(torch.equal(v, prior.state_dict()[k]) for k, v in untouched.items())

    record = align_prior(prior, codes, layout, AlignmentSettings(steps=40, learning_rate=3e-3, beta=0.1),
                         progress=False)
    after = class_gain(prior, [(codes, layout)])["class_gain"]
    # The true layout gains likelihood against the frozen start, the permuted one loses it.
    assert record["delta_pos"] > record["delta_neg"]
    assert after > before + 0.1
    assert not prior.training


def test_a_guidable_prior_keeps_its_unconditional_model_as_a_positive():
    prior = _prior(condition_dropout=0.1)
    codes, layout = _maps()
    null = prior.null_condition(layout)
    with torch.no_grad():
        nll_null = -float(map_log_likelihood(prior, codes, null).mean())
    align_prior(prior, codes, layout, AlignmentSettings(steps=40, learning_rate=3e-3, beta=0.1, null_share=0.5),
                progress=False)
    # The nulled maps are positives: the unconditional likelihood of training maps does not fall.
    with torch.no_grad():
        assert -float(map_log_likelihood(prior, codes, null).mean()) <= nll_null + 1.0


def test_the_codes_prior_stage_saves_the_aligned_prior_and_records_it(tmp_path):
    run = tmp_path / "run"
    write_codes(run, n_train=16, n_val=8)  # each code is 5 * its cell's class + 0 or 1
    preset = tiny(iterations=20)
    train = replace(preset.prior_train, learning_rate=3e-3, alignment_steps=30, alignment_learning_rate=3e-3)
    train_prior(replace(preset, prior_train=train), run, device="cpu")
    record = json.loads((run / "prior" / "alignment.json").read_text())
    assert record["steps"] == 30
    assert record["after"]["val_class_gain"] > record["before"]["val_class_gain"]
    # What was saved is the aligned prior: its class gain is the record's "after".
    assert run_class_gain(run, device="cpu")["class_gain"] == pytest.approx(record["after"]["val_class_gain"], abs=1e-4)

    train_prior(preset, run, device="cpu")  # retrained without alignment: no record describes these weights
    assert not (run / "prior" / "alignment.json").exists()


def test_only_a_codes_prior_of_two_object_classes_or_more_is_aligned():
    preset = load_preset("tiny")
    aligned_layouts = replace(preset, layout_prior_train=replace(preset.layout_prior_train, alignment_steps=5))
    with pytest.raises(UsageError, match="layout_prior_train.alignment_steps"):
        aligned_layouts.validate()
    one_class = replace(preset, prior=replace(preset.prior, num_condition_classes=2),
                        layout_prior=replace(preset.layout_prior, num_classes=2),
                        prior_train=replace(preset.prior_train, alignment_steps=5))
    with pytest.raises(UsageError, match="prior_train.alignment_steps"):
        one_class.validate()
    replace(one_class, prior_train=preset.prior_train).validate()
