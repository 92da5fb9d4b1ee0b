"""The U-Net augmentation benchmark and the report, end to end on tiny datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.layouts.boxes import boxes_to_layout

TINY = ["--seeds", "1", "--epochs", "1", "--min-steps", "6", "--batch-size", "4"]


def _write_squares(path, n_train=24, n_val=8, n_test=0, seed=0, size=16, generator_ids=None, real_root=None):
    """Class 1 = bright square, class 2 = dim square; the image tells the class, as digits do."""
    rng = np.random.default_rng(seed)
    classes = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "0", (255, 0, 0)), ClassInfo(2, "1", (0, 255, 0))]
    splits = {"train": [], "val": []} | ({"test": []} if n_test else {})
    source = {}
    if generator_ids is not None:
        source = {"generated": True, "generator_training": {"run": "r", "dataset": str(real_root), "split": "train",
                                                            "ids": list(generator_ids), "subset": None}}
    info = DatasetInfo(name="squares", image_size=(size, size), channels=1, classes=classes, splits=splits,
                       rule={"object_count": {"min": 1, "max": 1}}, source=source, augmentations=["affine"])
    with DatasetWriter(path, info) as w:
        for i in range(n_train + n_val + n_test):
            cid = int(rng.integers(1, 3))
            x, y = (int(v) for v in rng.integers(0, size - 6, 2))
            obj = ObjectAnnotation(cid, (x, y, 6, 6))
            layout = boxes_to_layout([obj], (size, size))
            image = np.where(layout > 0, 250 if cid == 1 else 110, 0).astype(np.uint8)
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            w.add(split, image, layout, objects=[obj])
    return path


def _toy_arrays(n=20, seed=0):
    from msgnet.evaluation.benchmark.runner import Arrays

    rng = np.random.default_rng(seed)
    lay = np.zeros((n, 16, 16), dtype=np.uint8)
    for i in range(n):
        x, y = rng.integers(0, 10, 2)
        lay[i, y : y + 6, x : x + 6] = 1 + i % 2
    return Arrays((lay[..., None] * 100).astype(np.uint8), lay)


def test_equal_exposure_real_batches_identical_in_every_setting():
    from msgnet.evaluation.benchmark.exposure import make_plan

    real_only = make_plan(100, 0, 32, None, 50, seed=3)
    augmented = make_plan(100, 0, 32, None, 50, seed=3)  # augmentation draws from its own generator
    with_added = make_plan(100, 100, 32, 1.0, 50, seed=3)
    with_half = make_plan(100, 50, 32, 0.5, 50, seed=3)
    for plan in (augmented, with_added, with_half):
        assert torch.equal(plan.real, real_only.real)
    assert with_added.added.shape == (50, 32) and with_half.added.shape == (50, 16)
    assert not torch.equal(make_plan(100, 0, 32, None, 50, seed=4).real, real_only.real)
    # every pass is a permutation: 3 batches of 32 per pass over 100 images, no image twice in a pass
    first_pass = real_only.real[:3].ravel()
    assert len(set(first_pass.tolist())) == 96
    only_added = make_plan(0, 40, 8, None, 10, seed=0)
    assert only_added.real is None and only_added.added.shape == (10, 8)


def test_benchmark_records_the_same_real_batches_for_every_setting():
    from msgnet.augmentation.standard import AugmentationSettings
    from msgnet.evaluation.benchmark.runner import BenchmarkData, make_settings, run_benchmark, summarise
    from msgnet.evaluation.benchmark.protocol import UNetProtocol

    toy = _toy_arrays(28)
    data = BenchmarkData(toy.subset(range(16)), list(range(100, 116)), toy.subset(range(16, 22)),
                         toy.subset(range(22, 28)), True, 3, synthetic=_toy_arrays(10, seed=1))
    protocol = UNetProtocol(channels=(4, 8), strides=(2,), epochs=1, min_steps=4, batch_size=4, curve_points=2)
    settings = make_settings(["real", "augment", "copy-paste", "synthetic", "augment+synthetic", "synthetic-only"],
                             [0.5], with_synthetic=True)
    runs = run_benchmark(data, protocol, [0, 1], [8], settings, AugmentationSettings(("affine",)),
                         torch.device("cpu"), subset_ids=lambda n: list(range(100, 100 + n)),
                         progress=False, log=lambda s: None)
    assert len(runs) == 2 * 6
    for seed in (0, 1):
        digests = {r["real_batches_sha1"] for r in runs.values() if r["seed"] == seed and r["train_real"]}
        assert len(digests) == 1  # identical real batches, whatever is added
    by = {k.split("/", 1)[1]: r for k, r in runs.items()}
    assert by["copy-paste@0.5/0"]["train_added"] == 4 and by["copy-paste@0.5/0"]["added_per_step"] == 2
    assert by["synthetic-only/0"]["train_real"] == 0 and by["synthetic-only/0"]["real_per_step"] == 0
    assert all(r["steps"] == 4 and r["selected_step"] in (2, 4) and len(r["curve"]) == 2 for r in runs.values())
    assert "segmentation_fidelity" in by["real/0"]
    entries = summarise(runs, settings, 3)
    assert [e["n"] for e in entries] == [8] and len(entries[0]["settings"]) == 6


def test_steps_have_a_floor_so_small_sets_converge():
    from msgnet.evaluation.benchmark.protocol import UNetProtocol

    p = UNetProtocol()
    assert p.steps(100) == p.min_steps  # 10 epochs of 100 images would be 40 steps
    assert p.steps(45_000) == 10 * 1407
    assert p.steps(10) == p.min_steps


def test_trained_unet_beats_chance_and_dice_is_its_own(tmp_path):
    """A U-Net that learnt the easy toy task scores high on its validation split."""
    from msgnet.data.format import open_dataset
    from msgnet.evaluation.dice import dice_scores
    from msgnet.evaluation.benchmark.exposure import make_plan
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.training import DeviceSet, evaluate_dice, predict, train_unet

    torch.set_num_threads(2)
    ds = open_dataset(_write_squares(tmp_path / "sq", n_train=64, n_val=16))
    train = DeviceSet.from_arrays(*ds.load_split("train"), torch.device("cpu"))
    val = DeviceSet.from_arrays(*ds.load_split("val"), torch.device("cpu"))
    protocol = UNetProtocol(channels=(8, 16), strides=(2,), batch_size=16, lr=1e-2, curve_points=4)
    trained = train_unet(train, make_plan(64, 0, 16, None, 80, 0), 3, protocol, seed=0, monitor=val,
                         select=True, progress=False)
    res = evaluate_dice(trained.model, val, 3)
    assert res.dice > 0.6
    assert res.dice == pytest.approx(max(p["monitor_dice"] for p in trained.curve))  # best checkpoint kept
    again = dice_scores(predict(trained.model, val), val.layouts, 3)
    assert again.dice == pytest.approx(res.dice)


def test_paired_gain_removes_the_seed_to_seed_spread():
    from msgnet.evaluation.benchmark.verdict import paired_gain

    a = [{"seed": s, "dice": d} for s, d in enumerate([0.80, 0.70, 0.90])]
    b = [{"seed": s, "dice": d} for s, d in enumerate([0.75, 0.66, 0.84])]
    g = paired_gain(a, b)
    assert g["gain"] == pytest.approx(0.05)
    assert 0.0 < g["low"] < 0.05 < g["high"]  # paired: the seed-to-seed spread cancels


def test_policies_train_under_their_rules_and_the_choice_ignores_the_test_split():
    """Every policy trains on a toy set; perturbing the test split changes no validation figure and no choice."""
    from msgnet.augmentation.standard import AugmentationSettings
    from msgnet.evaluation.benchmark.policy import PairPolicy
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.runner import BenchmarkData, run_benchmark, summarise
    from msgnet.evaluation.benchmark.settings import make_settings
    from msgnet.evaluation.benchmark.verdict import verdict_for

    torch.set_num_threads(1)  # one thread: the loop times no thread counts, so both benchmarks round alike
    toy = _toy_arrays(28)
    policies = [PairPolicy.parse(s) for s in ("union", "on-top@0.5,weight=0.5", "on-top@0.5,filter=1", "pretrain@0.5",
                                              "on-top@0.5,copy-paste=1")]
    settings = make_settings(["real", "augment", "augment+copy-paste"], [1.0], True, policies)
    protocol = UNetProtocol(channels=(4, 8), strides=(2,), epochs=1, min_steps=8, batch_size=4, curve_points=2)
    choices, vals = [], []
    for test in (toy.subset(range(16, 22)), _toy_arrays(6, seed=9)):
        data = BenchmarkData(toy.subset(range(16)), list(range(16)), test, toy.subset(range(22, 28)), True, 3,
                             synthetic=_toy_arrays(10, seed=1))
        runs = run_benchmark(data, protocol, [0, 1], [None], settings, AugmentationSettings(("flip",)),
                             torch.device("cpu"), subset_ids=lambda n: list(range(n)), progress=False,
                             log=lambda s: None, keep_policies=2)
        by = {k.split("/", 1)[1]: r for k, r in runs.items()}
        assert by["pairs:pretrain@0.5/0"]["pretrain_steps"] == 4 and by["pairs:pretrain@0.5/0"]["steps"] == 8
        assert by["pairs:union/0"]["train_added"] == 10 and by["pairs:union/0"]["real_per_step"] == 0
        assert 0 < by["pairs:on-top@0.5,filter=1/0"]["generated_pixels_kept"] < 1
        pasted = by["pairs:on-top@0.5,copy-paste=1/0"]  # the baseline's 16 copy-paste images, beside 10 pairs
        assert pasted["copy_paste_images"] == 16 and pasted["train_added"] == 16 + 10
        assert pasted["real_per_step"] == 4 and pasted["copy_paste_per_step"] == 4 and pasted["added_per_step"] == 4 + 2
        assert pasted["real_batches_sha1"] == by["augment+copy-paste@1/0"]["real_batches_sha1"]
        assert sum(1 for k in by if k.startswith("pairs:")) == 5 + 2  # halving: 2 of 5 ran the second seed
        entry = summarise(runs, settings, 3)[0]
        v = verdict_for(entry)
        choices.append((v["reference"]["setting"], v["selected"]["setting"], v["adopt"]))
        vals.append({k: r["val_dice"] for k, r in by.items()})
    assert choices[0] == choices[1] and vals[0] == vals[1]


def test_cli_augment_low_data_curve_resume_and_report(tmp_path, capsys):
    from msgnet.cli import main
    from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig, save_classifier

    real = _write_squares(tmp_path / "real", n_train=24, n_val=8, n_test=8, seed=0)
    syn = _write_squares(tmp_path / "syn", seed=1, generator_ids=range(0, 24), real_root=real)
    out = tmp_path / "aug.json"
    args = ["eval", "augment", "--real", str(real), "--synthetic", str(syn), "--real-subset", "8,16",
            "--settings", "real,augment,copy-paste,synthetic", "--external-generator", "--json", str(out), *TINY]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "protocol: MONAI UNet 2D" in text and "verdict" in text and "N=8: " in text and "N=16: " in text
    data = json.loads(out.read_text())
    assert data["complete"] and [e["n"] for e in data["results"]] == [8, 16]
    assert data["tested_on"].startswith("real test split (8 images)")
    assert "selection" in data["monitor"]
    assert all(len(e["settings"]) == 4 for e in data["results"])
    # resume: nothing left to do, the same figures come back
    assert main(args[:-len(TINY)] + TINY + ["--resume"]) == 0
    again = json.loads(out.read_text())
    assert again["runs"] == data["runs"]

    torch.manual_seed(0)
    clf_dir = tmp_path / "clf"
    save_classifier(DigitClassifier(DigitClassifierConfig(channels=(4, 8), hidden=16)), clf_dir, {})
    rep = tmp_path / "report"
    assert main(["eval", "report", "--real", str(real), "--synthetic", str(syn), "--out", str(rep),
                 "--augment", str(out), "--classifier", str(clf_dir)]) == 0
    md = (rep / "report.md").read_text()
    for needle in ("U-Net augmentation benchmark", "augment_dice_vs_n.png", "augment_real_curves.png", "Verdict"):
        assert needle in md
    for png in ("augment_dice_vs_n.png", "augment_real_curves.png"):
        assert (rep / png).stat().st_size > 1000
    # the benchmark section alone, from the JSON only
    alone = tmp_path / "alone"
    assert main(["eval", "report", "--augment", str(out), "--out", str(alone)]) == 0
    md = (alone / "report.md").read_text()
    assert "Verdict" in md and "Coherency" not in md and (alone / "augment_dice_vs_n.png").is_file()
    assert main(["eval", "report", "--real", str(real), "--out", str(alone)]) == 2


def test_generator_outside_the_subset_is_refused_unless_external(tmp_path, capsys):
    from msgnet.cli import main

    real = _write_squares(tmp_path / "real", n_train=24, n_val=8, n_test=8)
    syn = _write_squares(tmp_path / "syn", seed=1, generator_ids=range(0, 24), real_root=real)
    base = ["eval", "augment", "--real", str(real), "--synthetic", str(syn), "--settings", "real,synthetic", *TINY]
    # trained on all 24 training images: fine against all 24, refused against a subset of 8
    assert main(base + ["--json", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    assert main(base + ["--real-subset", "8", "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outside the U-Net's 8" in err[0] and "--external-generator" in err[0]
    assert not (tmp_path / "b.json").exists()
    assert main(base + ["--real-subset", "30"]) == 2
    assert "30 images asked" in capsys.readouterr().err


def test_cli_refuses_an_unwritable_output_before_training(tmp_path, capsys):
    from msgnet.cli import main

    real = _write_squares(tmp_path / "real")
    (tmp_path / "exists.json").write_text("{}")
    assert main(["eval", "augment", "--real", str(real), "--json", str(tmp_path / "exists.json"), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["eval", "augment", "--real", str(real), "--json", str(tmp_path / "no" / "x.json"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_old_sets_without_test_split_use_val_as_test_without_selection(tmp_path):
    from msgnet.evaluation.benchmark.request import AugmentRequest, run_augment_benchmark
    from msgnet.evaluation.benchmark.protocol import UNetProtocol

    real = _write_squares(tmp_path / "real", n_train=12, n_val=6)
    res = run_augment_benchmark(AugmentRequest(real=real, seeds=1, settings=["real"], progress=False,
                                               protocol=UNetProtocol(channels=(4, 8), strides=(2,), min_steps=4,
                                                                     batch_size=4)),
                                log=lambda s: None)
    assert res["tested_on"].startswith("real val split") and "no selection" in res["monitor"]
    assert all(r["selected_step"] is None for r in res["runs"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_trains_on_the_device_and_agrees_with_the_plan():
    from msgnet.augmentation.standard import AugmentationSettings
    from msgnet.evaluation.benchmark.runner import BenchmarkData, make_settings, run_benchmark
    from msgnet.evaluation.benchmark.protocol import UNetProtocol

    toy = _toy_arrays(40)
    data = BenchmarkData(toy.subset(range(24)), list(range(24)), toy.subset(range(24, 32)),
                         toy.subset(range(32, 40)), True, 3, synthetic=_toy_arrays(12, seed=1))
    protocol = UNetProtocol(channels=(8, 16), strides=(2,), min_steps=60, batch_size=8, lr=1e-2)
    settings = make_settings(["real", "augment", "copy-paste", "synthetic"], [1.0], True)
    runs = {}
    for dev in ("cpu", "cuda"):
        runs[dev] = run_benchmark(data, protocol, [0], [None], settings, AugmentationSettings(("flip",)),
                                  torch.device(dev), subset_ids=lambda n: list(range(n)), progress=False,
                                  log=lambda s: None)
    for key, run in runs["cuda"].items():
        assert run["real_batches_sha1"] == runs["cpu"][key]["real_batches_sha1"]
    assert runs["cuda"]["24/real/0"]["dice"] > 0.5


def test_a_benchmark_without_synthetic_pairs_resumes_with_them(tmp_path):
    """Baseline runs (real, augment, copy-paste) stay valid when a synthetic set is added later."""
    from msgnet.errors import UsageError
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.request import _load_done

    protocol = UNetProtocol(min_steps=5)
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"protocol": protocol.to_json(), "real": str(tmp_path / "real"), "synthetic": None,
                                "runs": {"100/real/0": {"dice": 0.5}}}))
    assert _load_done(path, protocol, tmp_path / "real", tmp_path / "syn") == {"100/real/0": {"dice": 0.5}}
    path.write_text(json.dumps({"protocol": protocol.to_json(), "real": str(tmp_path / "real"),
                                "synthetic": str(tmp_path / "syn"), "runs": {}}))
    with pytest.raises(UsageError):
        _load_done(path, protocol, tmp_path / "real", tmp_path / "other")  # another synthetic set
    with pytest.raises(UsageError):
        _load_done(path, protocol, tmp_path / "other-real", tmp_path / "syn")  # another real set



def test_the_unet_loop_times_its_threads_and_restores_them(monkeypatch):
    """On a CPU with 2 threads the loop times 2 and 1 threads every THREAD_PROBE_PERIOD steps, keeps the
    faster, and leaves the process's setting as it found it."""
    from msgnet.evaluation.benchmark import training
    from msgnet.evaluation.benchmark.exposure import make_plan
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.training import DeviceSet, train_unet

    toy = _toy_arrays(16)
    real = DeviceSet.from_arrays(toy.images, toy.layouts, torch.device("cpu"))
    protocol = UNetProtocol(channels=(4, 8), strides=(2,), batch_size=4, curve_points=2)
    monkeypatch.setattr(training, "THREAD_PROBE_PERIOD", 8)
    calls = []
    real_set = torch.set_num_threads
    torch.set_num_threads(2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real_set(n)))
    train_unet(real, make_plan(16, 0, 4, None, 22, 0), 3, protocol, seed=0, progress=False)
    # three probes (steps 1-4, 9-12, 17-20): 2 threads, 1 thread, then the faster kept; 2 restored at the end
    probes, restore = calls[:-1], calls[-1]
    assert len(probes) == 9 and probes[0::3] == [2, 2, 2] and probes[1::3] == [1, 1, 1] and restore == 2
    assert set(probes[2::3]) <= {1, 2}


@pytest.mark.parametrize("asked,compiler,steps,compiled",
                         [(True, True, 6, True), (True, False, 6, False), (False, True, 6, False), (True, True, 5, False)])
def test_unet_steps_are_compiled_only_when_asked_a_compiler_is_there_and_it_pays(monkeypatch, asked, compiler, steps,
                                                                                compiled):
    """The protocol's ``compile`` runs the training steps through torch.compile's module (a stand-in here that
    counts its calls), while the weights kept and evaluated are the plain module's; a training shorter than
    COMPILE_FROM_STEPS (6 here) runs uncompiled, since it cannot win the compilation's time back."""
    from msgnet.evaluation.benchmark import protocol as protocol_module
    from msgnet.evaluation.benchmark import training
    from msgnet.evaluation.benchmark.exposure import make_plan
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.training import DeviceSet, train_unet

    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    monkeypatch.setattr(protocol_module, "COMPILE_FROM_STEPS", 6)
    monkeypatch.setattr(training, "compiler_available", lambda device: compiler)
    monkeypatch.setattr(training, "compiled_for_training", lambda m, device, enabled: Counting(m) if enabled else m)
    toy = _toy_arrays(16)
    real = DeviceSet.from_arrays(toy.images, toy.layouts, torch.device("cpu"))
    protocol = UNetProtocol(channels=(4, 8), strides=(2,), batch_size=4, curve_points=2, compile=asked)
    trained = train_unet(real, make_plan(16, 0, 4, None, steps, 0), 3, protocol, seed=0, progress=False)
    assert len(calls) == (steps if compiled else 0)
    assert not isinstance(trained.model, Counting)
    assert ("compiled" in protocol.describe()) == asked

