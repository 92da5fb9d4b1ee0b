"""Evaluation: DICE by hand, coherency at a known violation rate, FID sanity, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation, open_dataset
from msgnet.evaluation.dice import dice_scores
from msgnet.evaluation.stats import wilson_interval
from msgnet.layouts.boxes import boxes_to_layout


def _info(num_classes=3, size=16, channels=1, rule=None):
    classes = [ClassInfo(0, "background", (0, 0, 0))] + [
        ClassInfo(i, str(i - 1), (40 * i, 200, 100)) for i in range(1, num_classes)
    ]
    return DatasetInfo(name="toy", image_size=(size, size), channels=channels, classes=classes,
                       splits={"train": [], "val": []}, rule=rule)


def test_dice_matches_hand_computation():
    # Two 2x4 images, classes 0..2.
    target = np.array([[[1, 1, 0, 0], [2, 2, 0, 0]],
                       [[0, 0, 0, 0], [0, 0, 2, 2]]])
    pred = np.array([[[1, 0, 0, 0], [2, 2, 2, 0]],
                     [[1, 0, 0, 0], [0, 0, 2, 0]]])
    res = dice_scores(pred, target, 3)
    # class 1: TP 1, FP 1 (image 2), FN 1 -> 2/(2+1+1) = 0.5
    # class 2: TP 3, FP 1, FN 1 -> 6/8 = 0.75
    assert res.per_class[0] is None
    assert res.per_class[1] == pytest.approx(0.5)
    assert res.per_class[2] == pytest.approx(0.75)
    assert res.dice == pytest.approx(0.625)
    # Per image (MONAI, classes present in the reference only):
    # image 1: class 1 -> 2*1/(2+1) = 2/3, class 2 -> 2*2/(2+3) = 0.8; image 2: class 2 -> 2/(2+1) = 2/3
    assert res.per_class_per_image[1] == pytest.approx(2 / 3)
    assert res.per_class_per_image[2] == pytest.approx((0.8 + 2 / 3) / 2)
    assert res.dice_per_image == pytest.approx((2 / 3 + (0.8 + 2 / 3) / 2) / 2)


def test_dice_class_absent_everywhere_is_left_out():
    target = np.array([[[1, 1], [0, 0]]])
    res = dice_scores(target, target, 4)
    assert res.per_class[1] == pytest.approx(1.0)
    assert res.per_class[2] is None and res.per_class[3] is None
    assert res.dice == pytest.approx(1.0)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 100)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.0370, abs=1e-3)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def _write_rule_set(path, n=40, broken_count=10, region_leaks=4):
    """Every image should hold 2 objects in the upper half; some hold 1, some leak into the lower half."""
    rule = {"object_count": {"min": 2, "max": 2}, "region": {"x": 0, "y": 0, "w": 16, "h": 8},
            "no_overlap": True}
    with DatasetWriter(path, _info(rule=rule)) as w:
        for i in range(n):
            objs = [ObjectAnnotation(1, (0, 0, 4, 4)), ObjectAnnotation(2, (8, 0, 4, 4))]
            if i < broken_count:
                objs = objs[:1]
            elif i < broken_count + region_leaks:
                objs = [objs[0], ObjectAnnotation(2, (8, 6, 4, 4))]  # rows 6..9 cross the region's edge
            layout = boxes_to_layout(objs, (16, 16))
            w.add("train" if i % 4 else "val", (layout * 60).astype(np.uint8), layout, objects=objs)
    return path


def test_coherency_measures_known_violation_rate(tmp_path):
    from msgnet.evaluation.coherency import check_coherency

    ds = open_dataset(_write_rule_set(tmp_path / "rules", n=40, broken_count=10, region_leaks=4))
    res = check_coherency(ds, progress=False)
    assert res.num_images == 40
    assert res.num_violating == 14
    assert res.rate == pytest.approx(14 / 40)
    assert res.by_rule == {"object_count": 10, "region": 4, "no_overlap": 0}
    lo, hi = res.interval
    assert lo < 14 / 40 < hi
    js = res.to_json()
    assert js["by_rule"]["region"]["images"] == 4


def test_coherency_cli_json_and_exit_codes(tmp_path, capsys):
    from msgnet.cli import main

    path = _write_rule_set(tmp_path / "rules", n=20, broken_count=5, region_leaks=0)
    out = tmp_path / "coh.json"
    assert main(["eval", "coherency", "--data", str(path), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["violating"] == 5 and data["violation_rate"] == pytest.approx(0.25)
    assert main(["eval", "coherency", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
    from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig
    from msgnet.evaluation.fid import fid_kid

    torch.manual_seed(0)
    clf = DigitClassifier(DigitClassifierConfig(channels=(4, 8), hidden=16)).eval()
    gen = torch.Generator().manual_seed(1)
    # Blob images: a bright square at a random place on black.
    real = torch.zeros(120, 1, 28, 28)
    for i in range(len(real)):
        y, x = torch.randint(0, 20, (2,), generator=gen).tolist()
        real[i, 0, y : y + 8, x : x + 8] = 1.0
    same = fid_kid(real, real.clone(), clf, "objects")
    assert abs(same["fid"]) < 1e-3 and abs(same["kid_mean"]) < 1e-2
    fids = []
    for sigma in (0.1, 0.3, 0.6):
        noisy = (real + sigma * torch.randn(real.shape, generator=gen)).clamp(0, 1)
        fids.append(fid_kid(real, noisy, clf, "objects")["fid"])
    assert fids[0] < fids[1] < fids[2]
    assert fids[0] > 100 * max(abs(same["fid"]), 1e-9)
    whole = fid_kid(real, real.clone(), clf, "images")
    assert abs(whole["fid"]) < 1e-3 and "globally average-pooled" in whole["features"]


def test_crop_to_cell_frames_like_mnist():
    from msgnet.evaluation.digit_classifier import crop_to_cell

    img = np.zeros((32, 32), dtype=np.uint8)
    img[4:14, 10:15] = 255  # a 5 wide x 10 high stroke block
    cell = crop_to_cell(img, (10, 4, 5, 10))
    ys, xs = np.nonzero(cell > 127)
    assert cell.shape == (28, 28)
    assert ys.min() >= 4 and ys.max() <= 23  # 20 px tall, centred
    assert abs((xs.min() + xs.max()) / 2 - 13.5) <= 1  # padded to a square, centred horizontally
    assert xs.max() - xs.min() + 1 <= 11


def test_mismatched_datasets_and_missing_dirs_exit_2_one_line(tmp_path, capsys):
    from msgnet.cli import main

    a = tmp_path / "a"
    b = tmp_path / "b"
    for path, size in ((a, 16), (b, 20)):
        with DatasetWriter(path, _info(size=size)) as w:
            for split in ("train", "val"):
                lay = np.zeros((size, size), dtype=np.uint8)
                lay[2:6, 2:6] = 1
                w.add(split, lay * 100, lay)
    assert main(["eval", "augment", "--real", str(a), "--synthetic", str(b), "--seeds", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(b / "dataset.json") in err[0] and "size" in err[0]
    assert main(["eval", "augment", "--real", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--real" in err[0] and "missing" in err[0]
    assert main(["eval", "fid", "--real", str(a), "--synthetic", str(b)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["eval", "fidelity", "--data", str(a), "--classifier", str(tmp_path / "noclf")]) == 2
    assert "--classifier" in capsys.readouterr().err
