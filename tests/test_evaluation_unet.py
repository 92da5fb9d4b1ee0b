"""The U-Net benchmark and the report, end to end on tiny datasets."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.layouts.boxes import boxes_to_layout


def _write_squares(path, n_train=24, n_val=8, seed=0, size=16):
    """Class 1 = bright square, class 2 = dim square; the image tells the class, as digits do."""
    rng = np.random.default_rng(seed)
    classes = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "0", (255, 0, 0)), ClassInfo(2, "1", (0, 255, 0))]
    info = DatasetInfo(name="squares", image_size=(size, size), channels=1, classes=classes,
                       splits={"train": [], "val": []}, rule={"object_count": {"min": 1, "max": 1}})
    with DatasetWriter(path, info) as w:
        for i in range(n_train + n_val):
            cid = int(rng.integers(1, 3))
            x, y = (int(v) for v in rng.integers(0, size - 6, 2))
            obj = ObjectAnnotation(cid, (x, y, 6, 6))
            layout = boxes_to_layout([obj], (size, size))
            image = np.where(layout > 0, 250 if cid == 1 else 110, 0).astype(np.uint8)
            w.add("train" if i < n_train else "val", image, layout, objects=[obj])
    return path


def test_benchmark_runs_end_to_end_quickly():
    from msgnet.evaluation.unet_benchmark import Arrays, UNetProtocol, format_benchmark, run_benchmark

    rng = np.random.default_rng(0)
    lay = np.zeros((20, 16, 16), dtype=np.uint8)
    for i in range(20):
        x, y = rng.integers(0, 10, 2)
        lay[i, y : y + 6, x : x + 6] = 1 + i % 2
    img = (lay[..., None] * 100).astype(np.uint8)
    real = Arrays(img[:12], lay[:12])
    val = Arrays(img[12:], lay[12:])
    syn = Arrays(img[:8], lay[:8])
    protocol = UNetProtocol(channels=(4, 8), strides=(2,), epochs=3, batch_size=4)
    start = time.perf_counter()
    res = run_benchmark(real, val, 3, protocol, seeds=[0, 1], synthetic=syn, ratios=(0.5, 1.0),
                        progress=False, log=lambda s: None)
    assert time.perf_counter() - start < 60
    names = [s["name"] for s in res["settings"]]
    assert names == ["real", "real+synthetic@0.5", "real+synthetic@1", "synthetic"]
    by = {s["name"]: s for s in res["settings"]}
    assert by["real+synthetic@0.5"]["runs"][0]["train_synthetic"] == 6
    assert by["real+synthetic@1"]["runs"][0]["train_synthetic"] == 8  # capped at what exists
    assert by["synthetic"]["runs"][0]["train_real"] == 0
    assert all(len(s["runs"]) == 2 and s["dice_std"] is not None for s in res["settings"])
    assert all(r["steps"] == 3 * 3 for s in res["settings"] for r in s["runs"])  # same steps everywhere
    assert by["real"]["delta_vs_real"] is None and by["synthetic"]["delta_vs_real"] is not None
    assert 0.0 <= by["real"]["dice_mean"] <= 1.0
    assert "segmentation_fidelity" in res
    text = format_benchmark(res, ["background", "a", "b"])
    assert "channels [4, 8]" in text and "real only" in text


def test_trained_unet_beats_chance_and_dice_is_its_own(tmp_path):
    """A U-Net that learnt the easy toy task scores high; evaluate_dice agrees with dice_scores(predict)."""
    import torch

    from msgnet.evaluation.dice import dice_scores
    from msgnet.evaluation.unet_benchmark import UNetProtocol, evaluate_dice, predict, train_unet
    from msgnet.data.format import open_dataset

    torch.set_num_threads(2)
    ds = open_dataset(_write_squares(tmp_path / "sq", n_train=64, n_val=16))
    xi, xl = ds.load_split("train")
    vi, vl = ds.load_split("val")
    protocol = UNetProtocol(channels=(8, 16), strides=(2,), batch_size=16, lr=1e-2)
    model = train_unet(xi, xl, 3, protocol, steps=80, seed=0, progress=False)
    res = evaluate_dice(model, vi, vl, 3)
    assert res.dice > 0.6
    again = dice_scores(predict(model, vi), vl, 3)
    assert again.dice == pytest.approx(res.dice)


def test_cli_augment_and_report(tmp_path, capsys):
    import torch

    from msgnet.cli import main
    from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig, save_classifier

    real = _write_squares(tmp_path / "real", seed=0)
    syn = _write_squares(tmp_path / "syn", seed=1)
    out = tmp_path / "aug.json"
    assert main(["eval", "augment", "--real", str(real), "--synthetic", str(syn), "--seeds", "1",
                 "--epochs", "1", "--batch-size", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "protocol: MONAI UNet 2D" in text and "(c) synthetic only" in text
    data = json.loads(out.read_text())
    assert data["protocol"]["epochs"] == 1 and len(data["settings"]) == 3

    torch.manual_seed(0)
    clf_dir = tmp_path / "clf"
    save_classifier(DigitClassifier(DigitClassifierConfig(channels=(4, 8), hidden=16)), clf_dir, {})
    run = tmp_path / "run"
    (run / "vqvae").mkdir(parents=True)
    (run / "vqvae" / "metrics.csv").write_text(
        "step,epoch,split,time_s,lr,loss,perplexity\n"
        + "".join(f"{s},0,train,{s},0.001,{1 / (s + 1)},{10 + s}\n" for s in range(20))
        + "19,0,val,20,,0.2,\n")
    rep = tmp_path / "report"
    assert main(["eval", "report", "--run", str(run), "--real", str(real), "--synthetic", str(syn),
                 "--out", str(rep), "--augment", str(out), "--classifier", str(clf_dir)]) == 0
    md = (rep / "report.md").read_text()
    for needle in ("Coherency", "Annotation fidelity", "FID", "U-Net augmentation benchmark", "curves_vqvae.png",
                   "preview_real.png"):
        assert needle in md
    for png in ("preview_real.png", "preview_synthetic.png", "curves_vqvae.png"):
        assert (rep / png).stat().st_size > 100
    js = json.loads((rep / "report.json").read_text())
    assert js["coherency"]["synthetic"]["violating"] == 0
    assert js["annotation_fidelity"]["real_val"]["objects"] == 8
