"""How generated pairs enter the U-Net's training: policies, their loss, and selection on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msgnet.evaluation.benchmark.exposure import make_plan
from msgnet.evaluation.benchmark.loss import IGNORE, PairLoss, class_mean_losses, filter_pixels
from msgnet.evaluation.benchmark.policy import DECLARED_POLICIES, PairPolicy


def test_union_draws_generated_pairs_in_proportion_to_the_pool():
    for num_added in (42, 250, 1000):
        plan = make_plan(1000, num_added, 32, None, 3000, seed=0, mixing="union")
        share = float((plan.batches >= 1000).float().mean())
        assert share == pytest.approx(num_added / (1000 + num_added), abs=0.01)
        assert all(len(set(row.tolist())) == 32 for row in plan.batches[:50])  # no row twice in a step


def test_on_top_never_repeats_a_pair_within_a_step_and_keeps_the_real_stream():
    base = make_plan(1000, 0, 32, None, 200, seed=1)
    for num_added, ratio, per_step in ((8, 1.0, 8), (42, 1.0, 32), (42, 0.25, 8), (500, 0.5, 16)):
        plan = make_plan(1000, num_added, 32, ratio, 200, seed=1)
        assert plan.added.shape == (200, per_step)
        assert all(len(set(row.tolist())) == per_step for row in plan.added)
        assert torch.equal(plan.real, base.real)  # equal real exposure
        assert int(plan.added.max()) < num_added and int(plan.added.min()) >= 0


def test_the_copy_paste_policy_is_the_reference_step_for_step_plus_pairs_on_top():
    policy = PairPolicy.parse("on-top@0.25,copy-paste=1")
    assert policy.spec in DECLARED_POLICIES and policy.copy_paste == 1.0
    baseline = make_plan(1000, 1000, 32, 1.0, 200, seed=3)  # augment+copy-paste@1: 1,000 pasted images, 1:1 on top
    plan = make_plan(1000, 42, 32, policy.ratio, 200, seed=3, num_copy_paste=1000, copy_paste_ratio=policy.copy_paste)
    assert plan.batches.shape == (200, 32 + 32 + 8)
    assert torch.equal(plan.real, baseline.real)  # equal real exposure
    assert plan.copy_paste_columns == 32 and torch.equal(plan.copy_paste, baseline.added)  # the baseline's very rows
    pairs = plan.batches[:, 64:] - 1000 - 1000
    assert all(len(set(row.tolist())) == 8 for row in pairs)  # never one pair twice in a step
    assert int(pairs.min()) >= 0 and int(pairs.max()) < 42
    assert plan.added.shape == (200, 40) and int(plan.added.max()) < 1000 + 42
    with pytest.raises(ValueError):
        make_plan(1000, 42, 32, None, 100, seed=3, mixing="union", num_copy_paste=1000, copy_paste_ratio=1.0)


def test_copy_paste_rows_of_a_pool_count_as_real_in_the_loss():
    from msgnet.evaluation.benchmark.training import DeviceSet

    def part(n):
        return DeviceSet(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.zeros(n, 4, 4, dtype=torch.uint8))

    pool = DeviceSet.pool(part(3), part(2), added_generated=True, copy_paste=part(4))
    assert len(pool) == 9 and pool.generated.tolist() == [False] * 7 + [True] * 2


def test_pretrain_then_fine_tune_takes_the_stated_steps_in_each_phase():
    policy = PairPolicy.parse("pretrain@0.3")
    assert policy.pretrain_steps(100) == 30
    plan = make_plan(1000, 50, 32, None, 100, seed=2, mixing="pretrain", pretrain_steps=policy.pretrain_steps(100))
    assert plan.steps == 100 and plan.pretrain_steps == 30
    assert bool((plan.batches[:30] >= 1000).all()) and bool((plan.batches[30:] < 1000).all())
    assert torch.equal(plan.batches[30:], make_plan(1000, 0, 32, None, 70, seed=2).batches)
    with pytest.raises(ValueError):
        make_plan(1000, 50, 32, None, 100, seed=2, mixing="pretrain", pretrain_steps=100)


def test_the_learning_rate_restarts_for_fine_tuning():
    from msgnet.evaluation.benchmark.training import cosine_schedule

    plain, two = cosine_schedule(100), cosine_schedule(100, restart_at=30)
    assert plain(0) == 1 and plain(50) == pytest.approx(0.5) and plain(100) == pytest.approx(0)
    assert two(29) < 0.01 and two(30) == 1 and two(65) == pytest.approx(0.5)


def _batch(seed=0, b=6, c=4, size=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, size, size, generator=g)
    layouts = torch.randint(0, c, (b, size, size), generator=g)
    generated = torch.tensor([False, True, False, True, True, False][:b])
    return logits, layouts, generated


def test_plain_pair_loss_is_monais_dice_ce():
    from monai.losses import DiceCELoss

    logits, layouts, generated = _batch()
    ours = PairLoss()(logits, layouts, generated)
    theirs = DiceCELoss(to_onehot_y=True, softmax=True)(logits, layouts.unsqueeze(1))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


def test_generated_weight_zero_gives_exactly_the_real_only_loss():
    logits, layouts, generated = _batch(1)
    weighted = PairLoss(generated_weight=0.0)(logits, layouts, generated)
    real_only = PairLoss()(logits[~generated], layouts[~generated])
    assert float(weighted) == pytest.approx(float(real_only), rel=1e-6)
    half = PairLoss(generated_weight=0.5)(logits, layouts, generated)
    full = PairLoss()(logits, layouts, generated)
    assert float(half) != pytest.approx(float(full)) and float(half) != pytest.approx(float(real_only))


def test_ignored_pixels_count_in_neither_term():
    logits, layouts, generated = _batch(2)
    changed = logits.clone()
    layouts = layouts.clone()
    layouts[:, :4] = IGNORE
    changed[:, :, :4] = torch.randn_like(changed[:, :, :4]) * 10  # whatever the model says there
    loss = PairLoss(ignores_pixels=True)
    assert float(loss(logits, layouts, generated)) == pytest.approx(float(loss(changed, layouts, generated)), rel=1e-6)


def test_the_pixel_filter_masks_exactly_the_pixels_above_the_threshold():
    layouts = torch.tensor([[[0, 0, 1], [1, 2, 2]]], dtype=torch.uint8)
    losses = torch.tensor([[[0.1, 0.5, 0.9], [1.1, 3.0, 2.9]]])
    means = torch.tensor([0.2, 0.5, 1.5], dtype=torch.float64)  # k = 2: thresholds 0.4, 1.0, 3.0
    out = filter_pixels(layouts, losses, means, 2.0)
    assert out.tolist() == [[[0, IGNORE, 1], [IGNORE, 2, 2]]]
    real_losses = torch.tensor([[[0.1, 0.3], [2.0, 4.0]]])
    real_layouts = torch.tensor([[[0, 0], [1, 1]]])
    got = class_mean_losses(real_losses, real_layouts, 3)
    assert got[:2].tolist() == pytest.approx([0.2, 3.0]) and got[2] == float("inf")  # no pixel: never filters


def test_policy_specs_round_trip_and_bad_ones_are_refused():
    for spec in DECLARED_POLICIES:
        assert PairPolicy.parse(spec).spec == spec
    assert PairPolicy.parse("on-top@0.5, weight=0.3, filter=1.5").to_json()["filter_k"] == 1.5
    assert PairPolicy.parse("on-top@0.25,weight=0.5,copy-paste=2").to_json()["copy_paste"] == 2.0
    from msgnet.evaluation.benchmark.settings import policy_setting

    pasted = policy_setting(PairPolicy.parse("on-top@0.25,copy-paste=1"))
    assert pasted.name == "pairs:on-top@0.25,copy-paste=1" and pasted.augment and pasted.added == "synthetic"
    assert pasted.label == "real + augmentation + copy-paste + pairs (on-top@0.25,copy-paste=1)"
    for bad in ("sideways", "pretrain", "pretrain@1", "union@2", "on-top@0", "on-top@1,weight=2", "union,size=3",
                "on-top@x", "union,copy-paste=1", "pretrain@0.3,copy-paste=1", "on-top@1,copy-paste=0"):
        with pytest.raises(ValueError, match="pair policy"):
            PairPolicy.parse(bad)


def _row(name, val, test, added=None, policy=None):
    runs = [{"seed": s, "dice": d, "val_dice": v} for s, (v, d) in enumerate(zip(val, test))]
    return {"name": name, "label": name, "added": added, "real": True, "runs": runs, "policy": policy,
            "dice_mean": float(np.mean(test))}


def _entry(test_shift=0.0):
    t = lambda xs: [x + test_shift for x in xs]  # noqa: E731
    return {"n": 100, "settings": [
        _row("real", [0.70] * 3, t([0.70, 0.71, 0.69])),
        _row("augment", [0.80, 0.81, 0.79], t([0.78, 0.79, 0.77])),
        _row("copy-paste@1", [0.78] * 3, t([0.95, 0.95, 0.95]), "copy-paste"),  # best on test, not on val
        _row("pairs:union", [0.82, 0.83, 0.81], t([0.79, 0.80, 0.78]), "synthetic", {"spec": "union"}),
        _row("pairs:on-top@1", [0.90], t([0.10]), "synthetic", {"spec": "on-top@1"}),  # dropped by halving
    ]}


def test_selection_reads_only_the_validation_split():
    from msgnet.evaluation.benchmark.verdict import format_verdict, verdict_for

    v = verdict_for(_entry())
    assert v["reference"]["setting"] == "augment" and v["selected"]["setting"] == "pairs:union" and v["adopt"]
    assert v["selected"]["vs_reference"]["gain"] == pytest.approx(0.01)
    assert "adopt real" not in v["advice"] and v["advice"].startswith("adopt pairs:union")
    perturbed = _entry(test_shift=0.0)
    for row in perturbed["settings"]:  # any test figures at all: the choice is the same
        for run in row["runs"]:
            run["dice"] = float(np.random.default_rng(len(row["name"])).uniform())
    v2 = verdict_for(perturbed)
    assert (v2["reference"]["setting"], v2["selected"]["setting"], v2["adopt"]) == ("augment", "pairs:union", True)
    worse = _entry()
    worse["settings"][3]["runs"] = [{**r, "val_dice": 0.5} for r in worse["settings"][3]["runs"]]
    v3 = verdict_for(worse)
    assert not v3["adopt"] and v3["advice"].startswith("don't add these pairs")
    assert any("don't add these pairs" in line for line in format_verdict(v3))


def test_the_copy_paste_policy_is_chosen_on_validation_like_the_others():
    from msgnet.evaluation.benchmark.verdict import verdict_for

    entry = _entry()
    spec = "on-top@0.25,copy-paste=1"
    entry["settings"].append(_row("pairs:" + spec, [0.86, 0.88, 0.85], [0.70, 0.71, 0.69], "synthetic",
                                  {"spec": spec, "copy_paste": 1.0}))
    v = verdict_for(entry)  # best on validation, worst on test: chosen all the same, and adopted
    assert v["selected"]["setting"] == "pairs:" + spec and v["adopt"] and v["reference"]["setting"] == "augment"
    entry["settings"][-1]["runs"] = entry["settings"][-1]["runs"][:1]  # halving dropped it after seed 0
    assert verdict_for(entry)["selected"]["setting"] == "pairs:union"


def test_successive_halving_keeps_the_best_on_validation_and_finishes_their_seeds():
    from msgnet.evaluation.benchmark.settings import halving_order, make_settings

    policies = [PairPolicy.parse(s) for s in ("union", "on-top@0.25", "pretrain@0.3")]
    settings = make_settings(["augment"], [1.0], True, policies)
    first = halving_order(settings, [0, 1, 2], {}, keep=1)
    assert [(s.name, seed) for s, seed in first] == [("augment", 0), ("augment", 1), ("augment", 2),
                                                      ("pairs:union", 0), ("pairs:on-top@0.25", 0),
                                                      ("pairs:pretrain@0.3", 0)]
    done = {"pairs:union/0": {"val_dice": 0.5, "dice": 0.99}, "pairs:on-top@0.25/0": {"val_dice": 0.7, "dice": 0.1},
            "pairs:pretrain@0.3/0": {"val_dice": 0.6, "dice": 0.5}}
    order = halving_order(settings, [0, 1, 2], done, keep=1)
    assert [(s.name, seed) for s, seed in order[6:]] == [("pairs:on-top@0.25", 1), ("pairs:on-top@0.25", 2)]
    assert len(halving_order(settings, [0, 1, 2], done, keep=None)) == 12


def test_successive_halving_of_the_baselines_finishes_the_two_best_and_leaves_the_policies_alone():
    from msgnet.evaluation.benchmark.settings import halving_order, make_settings

    settings = make_settings(["real", "augment", "copy-paste"], [1.0], True, [PairPolicy.parse("union")])
    first = halving_order(settings, [0, 1, 2], {}, keep=None, keep_baselines=2)
    assert [(s.name, seed) for s, seed in first] == [("real", 0), ("augment", 0), ("copy-paste@1", 0),
                                                      ("pairs:union", 0), ("pairs:union", 1), ("pairs:union", 2)]
    done = {"real/0": {"val_dice": 0.6}, "augment/0": {"val_dice": 0.8}, "copy-paste@1/0": {"val_dice": 0.7}}
    order = [(s.name, seed) for s, seed in halving_order(settings, [0, 1, 2], done, keep=None, keep_baselines=2)]
    assert order[3:7] == [("augment", 1), ("copy-paste@1", 1), ("augment", 2), ("copy-paste@1", 2)]
    assert ("real", 1) not in order and order[7:] == [("pairs:union", 0), ("pairs:union", 1), ("pairs:union", 2)]


def test_a_bad_policy_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    from msgnet.cli import main

    for cmd in (["eval", "augment", "--real", str(tmp_path / "nowhere"), "--policies", "union;sideways"],
                ["run", str(tmp_path / "nowhere"), "--run", str(tmp_path / "r"), "--policies", "pretrain@2"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) <= 2 and "pair policy" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "r").exists()
