"""Input-token corruption of the priors' training and the codes prior's class gain (issue 32)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msgnet.cli import main
from msgnet.config import TrainConfig, load_preset
from msgnet.errors import UsageError
from msgnet.evaluation.class_gain import class_gain, run_class_gain
from msgnet.io import load_state_dict
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.training import prior_stage
from msgnet.training.prior_diagnostics import corrupt_tokens, corruption_generator, derangements, permute_object_classes
from msgnet.training.prior_stage import PriorStage, train_prior
from tests.test_prior_stage import read_metrics, tiny, write_codes


def _prior(num_condition_classes: int = 4) -> PixelSNAIL:
    torch.manual_seed(0)
    return PixelSNAIL(replace(load_preset("tiny").prior, num_condition_classes=num_condition_classes))


def _batches(n_batches: int = 3, batch: int = 4, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 16, (batch, 8, 4), generator=g), torch.randint(0, classes, (batch, 4, 4), generator=g))
            for _ in range(n_batches)]


# -- class gain ------------------------------------------------------------------------


def test_permuted_layouts_keep_shapes_and_change_every_object_class():
    g = torch.Generator().manual_seed(0)
    tables = derangements(500, 5, g)
    assert (tables[:, 0] == 0).all()
    assert torch.equal(tables[:, 1:].sort(1).values, torch.arange(1, 5).expand(500, 4))  # a permutation of 1..4
    assert (tables[:, 1:] != torch.arange(1, 5)).all()  # no object class keeps its class
    assert len({tuple(t.tolist()) for t in tables}) == 9  # all 9 derangements of 4 classes are drawn

    layout = torch.randint(0, 5, (64, 6, 6), generator=g)
    permuted = permute_object_classes(layout, 5, g)
    assert permuted.shape == layout.shape
    assert torch.equal(permuted == 0, layout == 0)  # background and object shapes stay
    assert (permuted[layout != 0] != layout[layout != 0]).all()
    for b in range(64):  # one class -> one class within a map
        for c in layout[b].unique().tolist():
            assert permuted[b][layout[b] == c].unique().numel() == 1
    with pytest.raises(UsageError, match="num_condition_classes"):
        derangements(1, 2, g)  # a single object class cannot be permuted


def test_class_gain_is_zero_for_priors_that_cannot_see_the_class():
    blind = _prior(4)
    with torch.no_grad():  # every object class embedded alike: the prior sees where objects are, not which
        weight = blind.condition_stack.embedding.weight
        weight[2:4] = weight[1]
    result = class_gain(blind, _batches())
    assert result["class_gain"] == 0.0 and result["nll_true"] == result["nll_permuted"] > 0

    unconditional = _prior(0)
    assert class_gain(unconditional, _batches())["class_gain"] == 0.0

    # The same prior before its classes were tied does tell the classes apart: the figure would show it.
    assert abs(class_gain(_prior(4), _batches())["class_gain"]) > 1e-4
    blind.train()
    class_gain(blind, _batches())
    assert blind.training  # evaluated in eval mode, left in the mode it was found in


def test_class_gain_is_logged_and_positive_when_codes_follow_the_class(tmp_path, capsys):
    run = tmp_path / "run"
    write_codes(run, n_train=16, n_val=8)  # each code is 5 * its cell's class + 0 or 1
    preset = tiny(iterations=40)
    preset = replace(preset, prior_train=replace(preset.prior_train, learning_rate=3e-3, log_every=10,
                                                  checkpoint_every=100))
    train_prior(preset, run, device="cpu")
    rows = read_metrics(run / "prior" / "metrics.csv")
    gains = [float(r["val_class_gain"]) for r in rows if r["split"] == "epoch"]
    assert len(gains) == 10 and gains[-1] > 0.1 and gains[-1] > gains[0]
    (final,) = [float(r["class_gain"]) for r in rows if r["split"] == "val"]

    result = run_class_gain(run, device="cpu")
    assert result["class_gain"] == pytest.approx(final, abs=1e-4)
    assert result["nll_permuted"] > result["nll_true"] and result["maps"] == 8

    out = tmp_path / "gain.json"
    assert main(["eval", "class-gain", "--run", str(run), "--device", "cpu", "--json", str(out)]) == 0
    assert "class gain: " in capsys.readouterr().out
    assert json.loads(out.read_text())["class_gain"] == pytest.approx(result["class_gain"], abs=1e-6)


# -- input-token corruption -------------------------------------------------------------


class _Recorder(nn.Module):
    """Calls the prior and keeps what it was given and what it returned."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, tokens, condition=None):
        logits = self.model(tokens, condition)
        self.seen.append((tokens.clone(), logits))
        return logits


def _stage_batch(n: int = 64):
    g = torch.Generator().manual_seed(3)
    return (torch.randint(0, 16, (n, 8, 4), generator=g).to(torch.uint8),
            torch.randint(0, 3, (n, 8, 4), generator=g).to(torch.uint8))


def test_corruption_replaces_inputs_and_never_the_targets():
    cfg = load_preset("tiny").prior
    stage = PriorStage(cfg, seed=5, token_corruption=0.4)
    batch = _stage_batch()
    kept = tuple(t.clone() for t in batch)
    recorder = _Recorder(stage.model)
    rng = torch.get_rng_state()
    loss, _ = stage.training_step(recorder, batch, step=7)
    ((inputs, logits),) = recorder.seen
    tokens = kept[0].long()
    assert all(torch.equal(a, b) for a, b in zip(batch, kept))  # the batch itself is not touched
    changed = (inputs != tokens).float().mean().item()
    assert abs(changed - 0.4 * 15 / 16) < 0.04  # a uniform token is the old one 1 time in 16
    assert torch.equal(loss, F.cross_entropy(logits, tokens))  # targets: the true tokens
    assert not torch.equal(loss, F.cross_entropy(logits, inputs))
    # Its own stream, a pure function of (seed, step): reproducible, resumable, the global one untouched
    # by the corruption (the model's dropout draws from it, so compare one call of training_inputs).
    torch.set_rng_state(rng)
    assert torch.equal(stage.training_inputs(tokens, 7), inputs)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not torch.equal(stage.training_inputs(tokens, 8), inputs)
    assert not torch.equal(PriorStage(cfg, seed=6, token_corruption=0.4).training_inputs(tokens, 7), inputs)


def test_corruption_functions():
    tokens = torch.randint(0, 10, (200, 10))
    g = corruption_generator(0, 0, 0, "cpu")
    assert corrupt_tokens(tokens, 0.0, 10, g) is tokens
    assert torch.equal(g.get_state(), corruption_generator(0, 0, 0, "cpu").get_state())  # nothing drawn
    out = corrupt_tokens(tokens, 0.5, 10, g)
    assert out.dtype == tokens.dtype and 0 <= int(out.min()) and int(out.max()) < 10
    assert abs((out != tokens).float().mean().item() - 0.45) < 0.04
    assert not torch.equal(corruption_generator(0, 0, 1, "cpu").get_state(), corruption_generator(0, 0, 0, "cpu").get_state())
    for bad in (1.0, -0.1):
        with pytest.raises(UsageError, match="token_corruption"):
            TrainConfig(iterations=1, token_corruption=bad).validate("prior_train")


def _train(tmp_path, name, **fields):
    run = tmp_path / name
    write_codes(run)
    preset = tiny(iterations=4)
    preset = replace(preset, prior_train=replace(preset.prior_train, **fields))
    train_prior(preset, run, device="cpu")
    losses = [r["loss"] for r in read_metrics(run / "prior" / "metrics.csv") if r["split"] == "train"]
    return losses, load_state_dict(run / "prior")


def test_no_corruption_trains_bit_for_bit_as_before(tmp_path, monkeypatch):
    assert load_preset("tiny").prior_train.token_corruption == 0.0  # tiny.yaml does not name the field
    default_losses, default_weights = _train(tmp_path, "default")
    corrupted_losses, corrupted = _train(tmp_path, "corrupted", token_corruption=0.3)

    # Training as it was before corruption existed: inputs are the tokens, and no generator is ever made.
    def no_generator(*args, **kwargs):
        raise AssertionError("token_corruption 0 must draw nothing")

    monkeypatch.setattr(prior_stage, "corruption_generator", no_generator)
    zero_losses, zero_weights = _train(tmp_path, "zero", token_corruption=0.0)
    monkeypatch.setattr(PriorStage, "training_inputs", lambda self, tokens, step: tokens)
    old_losses, old_weights = _train(tmp_path, "old")
    assert default_losses == zero_losses == old_losses
    assert all(torch.equal(default_weights[k], w[k]) for w in (zero_weights, old_weights) for k in default_weights)
    assert corrupted_losses != default_losses
    assert not all(torch.equal(default_weights[k], corrupted[k]) for k in default_weights)


def test_a_resumed_run_continues_the_corruption_stream(tmp_path):
    preset = tiny(iterations=6)
    preset = replace(preset, prior_train=replace(preset.prior_train, token_corruption=0.3))
    full, part = tmp_path / "full", tmp_path / "part"
    write_codes(full)
    write_codes(part)
    train_prior(preset, full, device="cpu")
    short = replace(preset, prior_train=replace(preset.prior_train, max_minutes=1e-9))
    train_prior(short, part, device="cpu")  # stops after one step
    from msgnet.io import load_training_state

    assert int(load_training_state(part / "prior" / "checkpoint" / "training_state.pt")["step"]) < 6
    train_prior(preset, part, resume=True, device="cpu")
    a, b = load_state_dict(full / "prior"), load_state_dict(part / "prior")
    assert all(torch.equal(a[k], b[k]) for k in a)
