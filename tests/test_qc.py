"""Quality control of generated pairs: `msgnet qc` and `msgnet sample --qc`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from msgnet.errors import UsageError

from msgnet.cli import main
from msgnet.data.format import DatasetWriter, ObjectAnnotation, open_dataset
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.layouts.boxes import boxes_to_layout
from msgnet.evaluation.qc.checker import QCSettings, QualityControl
from msgnet.evaluation.qc.request import QCRequest, run_qc
from msgnet.evaluation.qc.scores import ScoreTable, objects_found, pair_dice
from msgnet.evaluation.qc.thresholds import calibrate
from tests.fixtures import interrupt_sampling_after, tiny_info

SIZE = 32
RULE = {"object_count": {"min": 1, "max": 3}, "no_overlap": True}
# Small enough to train in seconds, good enough to segment the intensity-coded rectangles below.
FAST = UNetProtocol(channels=(8, 16, 32), strides=(2, 2), min_steps=400, epochs=1, batch_size=16, curve_points=4)


def _pair(rng: np.random.Generator, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray, list[ObjectAnnotation]]:
    """1-3 non-overlapping rectangles; texture encodes the class (solid, stripes, checks), plus noise.

    Texture rather than brightness: the U-Net's instance norm removes an image's absolute level."""
    objects: list[ObjectAnnotation] = []
    while len(objects) < int(rng.integers(1, 4)):
        w, h = (int(v) for v in rng.integers(6, 12, size=2))
        x, y = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
        box = (x, y, w, h)
        if all(x + w + 1 <= o.bbox[0] or o.bbox[0] + o.bbox[2] + 1 <= x or y + h + 1 <= o.bbox[1]
               or o.bbox[1] + o.bbox[3] + 1 <= y for o in objects):
            objects.append(ObjectAnnotation(int(rng.integers(1, num_classes)), box))
    layout = boxes_to_layout(objects, (SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    texture = np.stack([np.zeros((SIZE, SIZE)), np.full((SIZE, SIZE), 200.0), 60 + 140.0 * (yy % 4 < 2),
                        60 + 140.0 * ((yy // 2 + xx // 2) % 2)])
    image = texture[layout, yy, xx] + 20 + rng.normal(0, 6, layout.shape)
    image = image.clip(0, 255).astype(np.uint8)
    return image[:, :, None], layout, objects


def make_real(path: Path, rule: dict | None = RULE, n: tuple[int, int, int] = (240, 100, 100), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    info = tiny_info(SIZE, 1, 4, rule=rule)
    with DatasetWriter(path, info) as writer:
        for split, count in zip(("train", "val", "test"), n):
            for _ in range(count):
                image, layout, objects = _pair(rng)
                writer.add(split, image, layout, objects=objects)
    return path


def make_generated(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]], real_info) -> Path:
    info = tiny_info(SIZE, 1, 4, rule=real_info.rule)
    info.splits = {"train": []}
    info.source = {"generated": True}
    with DatasetWriter(path, info) as writer:
        for image, layout in pairs:
            writer.add("train", image, layout)
    return path


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc")
    return make_real(root / "real"), root


@pytest.fixture(scope="module")
def prepared(real_set):
    real, root = real_set
    qc = QualityControl.prepare(open_dataset(real), root / "segmenter", QCSettings(protocol=FAST),
                                __import__("torch").device("cpu"), progress=False)
    return qc


def _run(real: Path, gen: Path, root: Path, out: Path | None = None, **kw) -> dict:
    req = QCRequest(data=gen, real=real, out=out, segmenter=root / "segmenter",
                    settings=QCSettings(protocol=FAST, **kw), device="cpu", progress=False)
    return run_qc(req)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_pair_dice_and_objects_found_by_hand():
    lay = np.zeros((1, 8, 8), np.uint8)
    lay[0, :4, :4] = 1
    pred = lay.copy()
    pred[0, :4, :2] = 2  # half of the object called class 2
    import torch

    d = pair_dice(torch.from_numpy(pred), torch.from_numpy(lay), 3)[0]
    # pooled over classes: TP 8 (class 1); predicted object pixels 16, layout object pixels 16
    assert d == pytest.approx(2 * 8 / 32)
    pred2 = lay.copy()
    pred2[0, 6, 6] = 2  # one stray pixel of an absent class costs one pixel's worth
    assert pair_dice(torch.from_numpy(pred2), torch.from_numpy(lay), 3)[0] == pytest.approx(32 / 33)
    assert objects_found(pred[0], lay[0]) == (1, 1, 16)  # exactly half is still "found"
    pred[0, :4, :3] = 2
    assert objects_found(pred[0], lay[0]) == (1, 0, 16)


def test_thresholds_keep_about_95_percent_of_real_validation_pairs(prepared):
    qc = prepared
    assert qc.segmenter.record["val_dice"] > 0.9  # the segmenter really learned the real pairs
    assert 0.95 <= qc.real_val_kept <= 0.97
    assert qc.real_test_kept is not None and qc.real_test_kept >= 0.85  # out of sample: the test split
    assert 0.0 < qc.thresholds.percentile <= 5.0
    assert qc.thresholds.min_dice > 0.3


def test_calibration_meets_the_target_on_a_known_distribution():
    rng = np.random.default_rng(1)
    n = 2000
    table = ScoreTable({
        "dice": rng.uniform(0, 1, n), "found_fraction": np.ones(n), "pixel_distance": rng.uniform(0.1, 0.2, n),
        "feature_distance": rng.uniform(0.5, 1.0, n), "objects": np.full(n, 2), "smallest_object": np.full(n, 40),
        "contrast": np.full(n, 0.2), "saturation": np.zeros(n), "rule_broken": np.array([""] * n, dtype=object),
        "foreground": np.full(n, 0.2), "predicted_foreground": np.full(n, 0.2),
    })
    for target in (0.9, 0.95, 0.99):
        t = calibrate(table, target)
        kept = t.kept(table).mean()
        assert target <= kept <= target + 0.01
    t = calibrate(table, 0.95, {"min_dice": 0.5})
    assert t.min_dice == 0.5 and t.origin["min_dice"] == "set by hand"
    assert t.kept(table).mean() <= 0.5


def _table(n: int, rng: np.random.Generator, near_empty: int = 0, dice=(0.7, 0.95), **cols) -> ScoreTable:
    """Scores of ``n`` pairs, the first ``near_empty`` of them with a sliver of an object (0.3% of the pixels)
    that the segmenter finds or not by chance."""
    fg = np.where(np.arange(n) < near_empty, 0.003, rng.uniform(0.1, 0.3, n))
    chance = rng.integers(0, 2, n).astype(float)
    base = {
        "dice": np.where(fg < 0.01, chance, rng.uniform(*dice, n)),
        "found_fraction": np.where(fg < 0.01, chance, rng.choice([0.75, 1.0], n)),
        "pixel_distance": rng.uniform(0.5, 1.0, n), "feature_distance": rng.uniform(2.0, 4.0, n),
        "objects": np.full(n, 3), "smallest_object": np.full(n, 40), "contrast": np.full(n, 0.2),
        "saturation": np.zeros(n), "rule_broken": np.array(["n/a"] * n, dtype=object), "foreground": fg,
        "predicted_foreground": np.where(fg < 0.01, 0.002, fg),
    }
    return ScoreTable({**base, **cols})


def test_cuts_on_a_tile_set_with_many_near_empty_tiles_are_not_zero_and_reject_swapped_pairs():
    rng = np.random.default_rng(3)
    real = _table(30, rng, near_empty=20)  # two thirds of validation: slivers whose DICE is 0 or 1 by chance
    swapped = _table(10, rng, dice=(0.05, 0.35), found_fraction=rng.choice([0.0, 0.25], 10))
    t = calibrate(real, 0.95, swapped=swapped)
    assert t.min_dice > 0.6 and t.min_found_fraction > 0.5  # from the 10 tiles with something to judge
    assert t.min_pixel_distance > 0.5 and t.min_feature_distance > 2.0  # order statistics, not interpolation
    assert t.swapped["pairs"] == 10 and min(t.swapped["rejected"].values()) >= 0.9
    assert all(r for r in t.reasons(swapped))  # every swapped pair rejected
    assert t.kept(real).mean() == 1.0  # 30 pairs: a cut above the lowest would keep 29/30 < 95%
    # a near-empty candidate is judged by what its image shows: nothing more than the real near-empty ones
    empty_ok = _table(1, rng, near_empty=1, dice=[0.0, 0.0])
    showing = _table(1, rng, near_empty=1, predicted_foreground=np.array([0.2]))
    assert t.reasons(empty_ok) == [[]] and t.reasons(showing) == [["unannotated-objects"]]
    # judged as before (every pair with an object, no swapped pairs), the chance DICE of the slivers cuts to 0
    old = calibrate(real, 0.95, {"min_foreground": 0.0})
    assert old.min_dice == 0.0 and old.min_found_fraction == 0.0


def test_a_cut_that_lets_swapped_pairs_through_is_raised_as_far_as_the_real_pairs_allow():
    rng = np.random.default_rng(4)
    real = _table(200, rng, dice=(0.3, 0.9))
    swapped = _table(100, rng, dice=(0.2, 0.6))
    plain = calibrate(real, 0.95)
    t = calibrate(real, 0.95, swapped=swapped)
    assert t.min_dice > plain.min_dice and "raised" in t.origin["min_dice"]
    assert (real["dice"] >= t.min_dice).mean() >= 0.9  # never keeps fewer than 90% of the real pairs
    assert t.swapped["rejected"]["min_dice"] == pytest.approx(np.mean(swapped["dice"] < t.min_dice))
    assert calibrate(real, 0.95, {"min_dice": 0.1}, swapped=swapped).min_dice == 0.1  # a hand-set cut stays


def test_near_empty_real_tiles_do_not_pull_the_segmenters_cuts_to_zero(real_set, prepared):
    from msgnet.evaluation.qc.thresholds import judged_mask

    qc = prepared
    images, layouts = open_dataset(real_set[0]).load_split("test")
    images, layouts = images[:60].copy(), layouts[:60].copy()
    # 40 of 60 become near-empty tiles: one 3x3 sliver in a corner, annotated but not visible (a mask
    # that holds what the image barely shows); the image is the background texture
    rng = np.random.default_rng(0)
    for k in range(40):
        layouts[k] = 0
        layouts[k, :3, :3] = 1
        images[k] = (20 + rng.normal(0, 6, images[k].shape)).clip(0, 255).astype(np.uint8)
    table = qc.score(images, layouts)
    assert judged_mask(table, 0.01).sum() == 20
    swapped = qc.swapped(images, layouts, judged_mask(table, 0.01))
    t = calibrate(table, 0.95, swapped=swapped)
    assert t.min_dice > 0.3 and t.min_found_fraction > 0.3
    assert t.swapped["rejected"]["min_dice"] >= 0.9 and len(swapped) >= 15
    assert calibrate(table, 0.95, {"min_foreground": 0.0}).min_dice == 0.0  # the failure this rule removes
    assert qc.thresholds.swapped["pairs"] > 50 and qc.thresholds.swapped["rejected"]["min_dice"] >= 0.9


def test_swapped_images_are_rejected_originals_kept(real_set, prepared, tmp_path):
    real, root = real_set
    ds = open_dataset(real)
    images, layouts = ds.load_split("test")
    originals = [(images[i], layouts[i]) for i in range(40)]
    swapped = []
    for i in range(40):
        j = (i + 7) % 40
        if (layouts[i] != layouts[j]).mean() > 0.05:  # a swap between near-identical layouts is no swap
            swapped.append((images[i], layouts[j]))
    gen = make_generated(tmp_path / "gen", originals + swapped, ds.info)
    summary = _run(real, gen, root, out=tmp_path / "kept")
    rows = _csv(tmp_path / "kept" / "qc.csv")
    assert len(rows) == len(originals) + len(swapped)
    kept_originals = sum(r["kept"] == "1" for r in rows[:40])
    assert kept_originals >= 36
    for r in rows[40:]:
        assert r["kept"] == "0" and ("inconsistent" in r["reasons"] or "objects-missing" in r["reasons"]), r
    kept = open_dataset(tmp_path / "kept")
    assert len(kept.ids("train")) == kept_originals == summary["pass_rate"]["kept"]
    meta = json.loads((tmp_path / "kept" / "dataset.json").read_text())
    qc = meta["source"]["qc"]
    assert qc["pass_rate"]["scored"] == len(rows) and qc["pass_rate"]["ci95"][0] < qc["pass_rate"]["rate"]
    assert qc["thresholds"]["min_dice"] > 0 and "real_validation" in qc
    assert (tmp_path / "kept" / "rejected.png").is_file() and (tmp_path / "kept" / "qc_histograms.png").is_file()
    assert main(["data", "info", str(tmp_path / "kept"), "--no-preview"]) == 0
    # eval report shows the QC section of a kept set: pass rate, thresholds, both figures
    assert main(["eval", "report", "--real", str(real), "--synthetic", str(tmp_path / "kept"), "--no-augment",
                 "--out", str(tmp_path / "rep"), "--device", "cpu"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Quality control of the generated pairs" in md and f"{kept_originals} of {len(rows)} scored" in md
    assert (tmp_path / "rep" / "qc_rejected.png").is_file() and (tmp_path / "rep" / "qc_histograms.png").is_file()


def test_exact_copies_of_training_images_are_flagged(real_set, prepared, tmp_path):
    real, root = real_set
    ds = open_dataset(real)
    train_images, train_layouts = ds.load_split("train")
    test_images, test_layouts = ds.load_split("test")
    pairs = [(test_images[i], test_layouts[i]) for i in range(30)]
    pairs += [(train_images[i], train_layouts[i]) for i in range(0, 100, 10)]
    gen = make_generated(tmp_path / "gen", pairs, ds.info)
    before = sorted(str(p.relative_to(gen)) for p in gen.rglob("*"))
    _run(real, gen, root)  # no --out: the report goes to GEN-qc/ beside the set, nothing into the set
    assert sorted(str(p.relative_to(gen)) for p in gen.rglob("*")) == before
    rows = _csv(tmp_path / "gen-qc" / "qc.csv")
    train_ids = ds.ids("train")
    for k, r in enumerate(rows[30:]):
        assert "near-copy-pixels" in r["reasons"] and "near-copy-features" in r["reasons"]
        assert int(r["pixel_nn"]) == train_ids[10 * k] and float(r["pixel_distance"]) < 1e-3
    flagged = sum("near-copy" in r["reasons"] for r in rows[:30])
    assert flagged <= 3


def test_degenerate_pairs_are_rejected(real_set, prepared):
    qc = prepared
    ds = open_dataset(real_set[0])
    images, layouts = ds.load_split("test")
    blank = np.zeros_like(images[:1])
    empty_layout = np.zeros_like(layouts[:1])
    tiny = layouts[:1].copy()
    tiny[:] = 0
    tiny[0, 0, 0] = 1
    white = np.full_like(images[:1], 255)
    table = qc.score(np.concatenate([blank, images[:1], images[:1], white]),
                     np.concatenate([layouts[:1], empty_layout, tiny, layouts[:1]]))
    reasons = qc.reasons(table)
    assert "blank" in reasons[0]
    assert "empty" in reasons[1]
    assert "tiny-object" in reasons[2]
    assert "saturated" in reasons[3]


def test_a_set_without_a_rule_is_handled(tmp_path):
    real = make_real(tmp_path / "real", rule=None, n=(120, 60, 0))
    ds = open_dataset(real)
    images, layouts = ds.load_split("val")
    bad = layouts[:5].copy()
    bad[:, :2, :] = 1  # would break a no-overlap rule if there were one
    gen = make_generated(tmp_path / "gen", list(zip(images[:5], layouts[:5])), ds.info)
    summary = _run(real, gen, tmp_path)
    rows = _csv(tmp_path / "gen-qc" / "qc.csv")
    assert all(r["rule_broken"] == "n/a" and "rule" not in r["reasons"] for r in rows)
    assert summary["real_test_kept"] is None  # no test split: nothing out of sample to report


def test_qc_writes_its_report_when_nothing_passes(real_set, tmp_path):
    real, root = real_set
    ds = open_dataset(real)
    images, layouts = ds.load_split("val")
    blank = [(np.zeros_like(images[k]), layouts[k]) for k in range(6)]
    gen = make_generated(tmp_path / "gen", blank, ds.info)
    with pytest.raises(UsageError, match="no pair passed quality control"):
        _run(real, gen, root, out=tmp_path / "kept")
    rows = _csv(tmp_path / "kept" / "qc.csv")
    assert len(rows) == 6 and all("blank" in r["reasons"] for r in rows)
    assert (tmp_path / "kept" / "rejected.png").is_file() and (tmp_path / "kept" / "qc.json").is_file()
    assert not (tmp_path / "kept" / "dataset.json").exists()


def test_qc_cli_refuses_bad_input(tmp_path, capsys, real_set):
    real, _ = real_set
    assert main(["qc", "--data", str(tmp_path / "nope"), "--real", str(real)]) == 2
    assert "nope" in capsys.readouterr().err
    other = make_real(tmp_path / "other", n=(4, 2, 0))
    info = json.loads((other / "dataset.json").read_text())
    info["image_size"] = [16, 16]
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "dataset.json").write_text(json.dumps({**info, "splits": {"train": [0]}}))
    assert main(["qc", "--data", str(tmp_path / "small"), "--real", str(real)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "16x16" in err
    assert main(["qc", "--data", str(real), "--real", str(real), "--real-keep", "1.5"]) == 2
    assert main(["qc", "--data", str(real), "--real", str(real), "--out", str(real)]) == 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.fixtures import make_tiny_dataset

    root = tmp_path_factory.mktemp("qc-run")
    data = make_tiny_dataset(root / "data", n=40, size=16, channels=1, num_classes=3, n_val=12)
    run = root / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]) == 0
    return data, run


# The tiny run's pairs are rough: keep the checks that a rough pair can pass, so that some pass and some fail.
LENIENT = ["--qc-steps", "100", "--min-dice", "0", "--min-found-fraction", "0", "--min-contrast", "0",
           "--max-saturation", "1", "--min-object-pixels", "0"]


def test_sample_qc_delivers_num_passing_pairs_deterministically_and_resumes(tiny_run, tmp_path):
    _, run = tiny_run
    args = ["sample", "--run", str(run), "--num", "6", "--batch-size", "4", "--seed", "3", "--qc", "--device", "cpu",
            *LENIENT]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    a_images, a_layouts = open_dataset(tmp_path / "a").load_split("train")
    assert a_images.shape[0] == 6
    rows = _csv(tmp_path / "a" / "qc.csv")
    assert [int(r["kept_id"]) for r in rows if r["kept_id"] != ""] == list(range(6))
    assert all(r["reasons"] == "" for r in rows if r["kept_id"] != "")
    assert all(r["kept"] == "0" for r in rows if r["reasons"])
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["source"]["qc"]["candidates"] == len(rows) and meta["source"]["qc"]["pass_rate"]["scored"] == len(rows)
    assert main(["data", "info", str(tmp_path / "a"), "--no-preview"]) == 0
    assert main(["report", "--run", str(run), "--samples", str(tmp_path / "a")]) == 0
    md = (run / "report.md").read_text()
    assert "### Quality control of the generated pairs" in md and f"of {len(rows)} scored pairs pass" in md
    # the grid of the worst rejected pairs exists exactly when some candidate was rejected
    assert (run / "report" / "qc_rejected.png").is_file() == any(r["reasons"] for r in rows)
    # the kept pairs are exactly the passing candidates of plain sampling with the same seed, in order
    assert main(["sample", "--run", str(run), "--num", str(len(rows)), "--batch-size", "4", "--seed", "3",
                 "--device", "cpu", "--out", str(tmp_path / "plain")]) == 0
    plain_images, _ = open_dataset(tmp_path / "plain").load_split("train")
    passing = [int(r["id"]) for r in rows if r["kept_id"] != ""]
    assert np.array_equal(plain_images[passing], a_images)

    with interrupt_sampling_after(1):
        assert main([*args, "--out", str(tmp_path / "c")]) == 130
    assert main([*args, "--out", str(tmp_path / "c"), "--resume"]) == 0
    c_images, c_layouts = open_dataset(tmp_path / "c").load_split("train")
    assert np.array_equal(a_images, c_images) and np.array_equal(a_layouts, c_layouts)
    assert (tmp_path / "c" / "qc.csv").read_text() == (tmp_path / "a" / "qc.csv").read_text()


def test_sample_qc_stops_at_the_cap_with_the_figures(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    code = main(["sample", "--run", str(run), "--num", "4", "--batch-size", "4", "--qc", "--device", "cpu",
                 "--qc-steps", "100", "--min-dice", "1", "--qc-max-candidates", "8", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "passed quality control in 8 candidates" in err and "inconsistent" in err
    assert not (tmp_path / "x").exists()
    # Nothing passed, and the diagnosis is there all the same, beside the candidates.
    partial = tmp_path / "x.partial"
    rows = _csv(partial / "qc.csv")
    assert len(rows) == 8 and all(r["kept"] == "0" for r in rows)
    assert json.loads((partial / "qc.json").read_text())["pass_rate"]["kept"] == 0
    assert (partial / "rejected.png").is_file() and str(partial) in err


def test_sample_qc_refuses_an_incompatible_real_set_and_leaves_nothing(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    real = make_real(tmp_path / "real32", n=(8, 4, 0))  # 32x32: the run makes 16x16 images
    code = main(["sample", "--run", str(run), "--num", "2", "--qc", "--qc-real", str(real), "--device", "cpu",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "32x32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_sample_qc_can_accept_fewer_pairs_at_the_cap(tiny_run, tmp_path):
    _, run = tiny_run
    out = tmp_path / "few"
    assert main(["sample", "--run", str(run), "--num", "50", "--batch-size", "4", "--qc", "--device", "cpu",
                 *LENIENT, "--qc-max-candidates", "8", "--qc-accept-fewer", "--out", str(out)]) == 0
    meta = json.loads((out / "dataset.json").read_text())["source"]["qc"]
    kept = meta["pass_rate"]["kept"]
    assert meta["stopped_at_cap"] is True and meta["requested"] == 50 and meta["candidates"] == 8
    assert 1 <= kept <= 8 and len(open_dataset(out).ids("train")) == kept


def test_set_quality_sees_collapse_that_the_pass_rate_misses(real_set, prepared):
    from msgnet.evaluation.qc.set_quality import measure_set

    qc = prepared
    images, layouts = open_dataset(real_set[0]).load_split("test")
    varied = measure_set(qc, images[:40], layouts[:40])
    collapsed = measure_set(qc, np.repeat(images[:1], 40, 0), np.repeat(layouts[:1], 40, 0))
    assert varied.diversity > 0.5 and collapsed.diversity < 0.05
    assert collapsed.distinct_layouts == 1 / 40 and varied.distinct_layouts > 0.9
    assert varied.rule_kept == 1.0 and 0 <= varied.pass_rate <= 1
    assert varied.score() > collapsed.score() or collapsed.pass_rate == 0
