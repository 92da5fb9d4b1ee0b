"""The evaluation's digit classifier, annotation fidelity and FID/KID on a chosen device.

On every machine: an explicit ``device="cpu"`` gives the numbers of the default (bit for bit on a
machine without CUDA), the work really runs where it is asked to, and the CLI takes ``--device``.
With CUDA: training, fidelity and FID/KID on the GPU agree with the CPU within a tolerance.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation, open_dataset
from msgnet.evaluation.digit_classifier import (ClassifierTraining, DigitClassifier, DigitClassifierConfig,
                                                save_classifier, train_classifier)
from msgnet.layouts.boxes import boxes_to_layout

SRC = Path(__file__).resolve().parents[1] / "src" / "msgnet"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TINY = DigitClassifierConfig(channels=(4, 8), hidden=16)


def _tiny_classifier(seed: int = 0) -> DigitClassifier:
    torch.manual_seed(seed)
    return DigitClassifier(TINY).eval()


def _feature_classifier() -> DigitClassifier:
    """A random classifier whose features are O(0.1-1): with PyTorch's default init the features of
    this tiny net are ~1e-2 and FID/KID come out ~1e-6, below float32 rounding of KID's kernel."""
    clf = _tiny_classifier()
    with torch.no_grad():
        for name, p in clf.named_parameters():
            if name.endswith("weight"):
                p.mul_(3.0)
    return clf


def _fid_sets() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(real, fake) pairs that differ: fake digits 0-4 only, and fake digits with added noise."""
    def t(c: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(c).float().div(255).unsqueeze(1)

    real = t(_cells(200, 2)[0])
    x, y = _cells(400, 4)
    same = t(_cells(200, 3)[0])
    noisy = (same + 0.3 * torch.randn(same.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    return {"few": (real, t(x[y < 5][:200])), "noisy": (real, noisy)}


def _watch_devices(clf: DigitClassifier) -> set[str]:
    """The device types the classifier's conv trunk is fed on, from now on."""
    seen: set[str] = set()
    clf.trunk.register_forward_pre_hook(lambda _m, inp: seen.add(inp[0].device.type))
    return seen


def _cells(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Easy 'digits': digit k is a bright 8x4 bar at one of ten places, on noise. (N, 28, 28) uint8, (N,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 5)
        x[i, 4 + 12 * r : 12 + 12 * r, 1 + 5 * c : 5 + 5 * c] = 255
    return np.clip(x.astype(int) + rng.integers(0, 60, x.shape), 0, 255).astype(np.uint8), labels


def _digit_info(size: int = 32) -> DatasetInfo:
    classes = [ClassInfo(0, "background", (0, 0, 0))] + [
        ClassInfo(d + 1, str(d), (20 * d, 200, 100)) for d in range(10)
    ]
    return DatasetInfo(name="digits", image_size=(size, size), channels=1, classes=classes,
                       splits={"train": [], "val": []})


def _write_digit_set(path: Path, n: int = 24, seed: int = 0) -> Path:
    """Images of one or two rectangles of different shapes, annotated with digit classes."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, _digit_info()) as w:
        for k in range(n):
            objs = []
            for j in range(int(rng.integers(1, 3))):
                bw, bh = (int(v) for v in rng.integers(3, 13, size=2))
                x0, y0 = int(rng.integers(0, 16 - bw + 1)) + 16 * j, int(rng.integers(0, 32 - bh + 1))
                objs.append(ObjectAnnotation(int(rng.integers(1, 11)), (x0, y0, bw, bh)))
            layout = boxes_to_layout(objs, (32, 32))
            image = np.where(layout > 0, 255, rng.integers(0, 40, layout.shape)).astype(np.uint8)
            w.add("val" if k % 3 == 0 else "train", image, layout, objects=objs)
    return path


# --- CPU, every machine ---------------------------------------------------------------------------


def test_fidelity_on_explicit_cpu_equals_default_and_a_direct_computation(tmp_path):
    from msgnet.evaluation.digit_classifier import crop_to_cell
    from msgnet.evaluation.fidelity import annotation_fidelity

    ds = open_dataset(_write_digit_set(tmp_path / "d"))
    clf = _tiny_classifier()
    seen = _watch_devices(clf)
    explicit = annotation_fidelity(ds, clf, None, progress=False, device="cpu")
    assert seen == {"cpu"}
    as_device = annotation_fidelity(ds, clf, None, progress=False, device=torch.device("cpu"))
    assert as_device == explicit
    if not torch.cuda.is_available():  # device=None means the CPU here
        assert annotation_fidelity(ds, clf, None, progress=False) == explicit
        assert seen == {"cpu"}
    # The same numbers by hand: every annotated object, cropped, through the classifier on the CPU.
    clf = clf.cpu()
    ann = ds.annotations()
    cells, truth = [], []
    for iid in ds.ids("train") + ds.ids("val"):
        for o in ann.get(iid, []):
            cells.append(crop_to_cell(ds.read_image(iid), o.bbox))
            truth.append(o.category_id - 1)
    with torch.no_grad():
        pred = clf(torch.from_numpy(np.stack(cells)).float().div(255).unsqueeze(1)).argmax(1).numpy()
    assert explicit["objects"] == len(truth)
    assert explicit["agreement"] == pytest.approx(float((pred == np.array(truth)).mean()))
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (np.array(truth), pred), 1)
    assert explicit["confusion"] == confusion.tolist()


def test_fid_kid_on_explicit_cpu_equals_default():
    from msgnet.evaluation.fid import fid_kid

    real, fake = _fid_sets()["noisy"]
    clf = _feature_classifier()
    seen = _watch_devices(clf)
    for kind in ("objects", "images"):
        explicit = fid_kid(real, fake, clf, kind, kid_subsets=20, device="cpu")
        assert seen == {"cpu"}
        assert explicit["fid"] > 1e-2 and explicit["kid_mean"] > 1e-2  # clean vs noisy digits differ
        assert fid_kid(real, fake, clf, kind, kid_subsets=20, device=torch.device("cpu")) == explicit
        if not torch.cuda.is_available():
            assert fid_kid(real, fake, clf, kind, kid_subsets=20) == explicit
            assert seen == {"cpu"}


def test_classifier_training_on_explicit_cpu_is_reproducible_and_learns():
    xt, yt = _cells(768, 0)
    xv, yv = _cells(256, 1)
    cfg = DigitClassifierConfig(channels=(4, 8), hidden=16, dropout=0.0)
    training = ClassifierTraining(epochs=3, batch_size=64, lr=2e-2, max_shift=1)
    model, info = train_classifier(xt, yt, xv, yv, cfg, training, progress=False, device="cpu")
    assert next(model.parameters()).device.type == "cpu" and info["device"] == "cpu"
    assert info["test_accuracy"] > 0.9 and len(info["epoch_loss"]) == 3
    assert info["epoch_loss"][-1] < info["epoch_loss"][0]
    if not torch.cuda.is_available():
        again, info2 = train_classifier(xt, yt, xv, yv, cfg, training, progress=False)
        for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
            assert torch.equal(a, b), k
        assert info2["epoch_loss"] == info["epoch_loss"]


def test_classifier_training_says_how_long_it_will_take(capsys):
    """Trained on first use inside `eval fidelity`: one estimate line after the first steps, and a bar."""
    from msgnet.evaluation.digit_classifier import ESTIMATE_AFTER

    xt, yt = _cells(64 * (ESTIMATE_AFTER + 5), 0)
    xv, yv = _cells(64, 1)
    lines: list[str] = []
    train_classifier(xt, yt, xv, yv, DigitClassifierConfig(channels=(4, 8), hidden=16),
                     ClassifierTraining(epochs=1, batch_size=64), progress=True, device="cpu", log=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"digit classifier: {ESTIMATE_AFTER + 5} steps, about ")
    assert f"the first {ESTIMATE_AFTER} (" in lines[0] and " ms a step)" in lines[0]
    assert f"{ESTIMATE_AFTER + 5}/{ESTIMATE_AFTER + 5}" in capsys.readouterr().err  # the bar reached its end


def test_compute_fid_lives_in_the_library_and_cli_passes_device(tmp_path, capsys, monkeypatch):
    from msgnet.cli import main
    from msgnet.evaluation import digit_classifier, fid

    real = open_dataset(_write_digit_set(tmp_path / "real", n=30, seed=0))
    syn = open_dataset(_write_digit_set(tmp_path / "syn", n=30, seed=1))
    clf = _tiny_classifier()
    seen = _watch_devices(clf)
    result = fid.compute_fid(real, syn, clf, device="cpu")
    assert seen == {"cpu"}
    assert result["images"]["fid"] is not None and result["objects"]["fid"] is not None
    assert "FID" in fid.format_fid(result)

    clf_dir = tmp_path / "clf"
    save_classifier(_tiny_classifier(), clf_dir, {})
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--real", str(real.root), "--synthetic", str(syn.root), "--classifier",
                 str(clf_dir), "--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["objects"]["fid"] == pytest.approx(result["objects"]["fid"])
    out = tmp_path / "fidelity.json"
    assert main(["eval", "fidelity", "--data", str(real.root), "--classifier", str(clf_dir), "--device", "cpu",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["objects"] > 0
    capsys.readouterr()

    calls = []
    monkeypatch.setattr(digit_classifier, "train_and_save", lambda out, training, progress, device: calls.append(
        (out, training.epochs, device)))
    assert main(["eval", "train-classifier", "--out", str(tmp_path / "c2"), "--epochs", "1", "--device",
                 "cpu"]) == 0
    assert calls == [(tmp_path / "c2", 1, "cpu")]


def test_device_option_on_the_eval_commands():
    from msgnet.cli import build_parser

    parser = build_parser()
    for argv in (["fidelity", "--data", "D"], ["fid", "--real", "R", "--synthetic", "S"], ["train-classifier"],
                 ["report", "--real", "R", "--synthetic", "S"]):
        assert parser.parse_args(["eval", *argv]).device is None
        assert parser.parse_args(["eval", *argv, "--device", "cuda:1"]).device == "cuda:1"


def test_evaluation_library_does_not_import_compute_fid_from_the_cli():
    def imports(path: Path) -> list[tuple[str, str]]:
        tree = ast.parse(path.read_text())
        return [(node.module or "", a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names]

    for name in ("fid.py", "fidelity.py", "digit_classifier.py"):
        assert not [m for m, _ in imports(SRC / "evaluation" / name) if m.startswith("msgnet.cli")], name
    from_cli = [n for m, n in imports(SRC / "evaluation" / "report.py") if m.startswith("msgnet.cli")]
    assert "compute_fid" not in from_cli and "format_fid" not in from_cli
    assert "def compute_fid" not in (SRC / "cli" / "eval_cmd.py").read_text()


# --- CUDA ----------------------------------------------------------------------------------------


@needs_cuda
def test_classifier_training_on_cuda_agrees_with_cpu():
    xt, yt = _cells(768, 0)
    xv, yv = _cells(256, 1)
    # No dropout: CPU and CUDA draw dropout masks from different generators; everything else
    # (initial weights, batch order, shifts) is drawn on the CPU and is the same on both.
    cfg = DigitClassifierConfig(channels=(4, 8), hidden=16, dropout=0.0)
    training = ClassifierTraining(epochs=3, batch_size=64, lr=2e-2, max_shift=1)
    cpu, info_cpu = train_classifier(xt, yt, xv, yv, cfg, training, progress=False, device="cpu")
    gpu, info_gpu = train_classifier(xt, yt, xv, yv, cfg, training, progress=False, device="cuda")
    assert next(gpu.parameters()).device.type == "cuda" and info_gpu["device"].startswith("cuda")
    assert info_gpu["test_accuracy"] == pytest.approx(info_cpu["test_accuracy"], abs=0.03)
    assert info_gpu["epoch_loss"][0] == pytest.approx(info_cpu["epoch_loss"][0], rel=1e-3)
    assert info_gpu["epoch_loss"] == pytest.approx(info_cpu["epoch_loss"], rel=0.1, abs=0.02)
    from msgnet.evaluation.digit_classifier import classify

    agree = (classify(gpu, xv) == classify(cpu, xv)).mean()
    assert agree >= 0.97


@needs_cuda
def test_fid_kid_on_cuda_agrees_with_cpu():
    from msgnet.evaluation.fid import fid_kid

    clf = _feature_classifier()
    seen = _watch_devices(clf)
    sets = _fid_sets()
    # (images, few) is left out: whole-image pooled features barely see which digits are drawn.
    for kind, name in (("objects", "few"), ("objects", "noisy"), ("images", "noisy")):
        real, fake = sets[name]
        cpu = fid_kid(real, fake, clf, kind, kid_subsets=20, device="cpu")
        seen.clear()
        gpu = fid_kid(real, fake, clf, kind, kid_subsets=20, device="cuda")
        assert seen == {"cuda"}
        assert cpu["fid"] > 1e-2 and cpu["kid_mean"] > 1e-2, (kind, name, cpu)
        # Convolutions run in TF32 on recent GPUs (PyTorch's default): features agree to ~1e-3.
        assert gpu["fid"] == pytest.approx(cpu["fid"], rel=2e-2), (kind, name)
        assert gpu["kid_mean"] == pytest.approx(cpu["kid_mean"], rel=2e-2), (kind, name)
        assert gpu["kid_std"] == pytest.approx(cpu["kid_std"], rel=0.1, abs=1e-4), (kind, name)
        real_gpu = real.cuda()  # inputs already on the device are used in place
        assert fid_kid(real_gpu, real_gpu.clone(), clf, kind, kid_subsets=5, device="cuda")["fid"] == \
            pytest.approx(0.0, abs=1e-3)


@needs_cuda
def test_fidelity_on_cuda_agrees_with_cpu(tmp_path):
    from msgnet.evaluation.fidelity import annotation_fidelity

    ds = open_dataset(_write_digit_set(tmp_path / "d", n=60))
    clf = _tiny_classifier()
    seen = _watch_devices(clf)
    cpu = annotation_fidelity(ds, clf, None, progress=False, device="cpu")
    gpu = annotation_fidelity(ds, clf, None, progress=False, device="cuda")
    assert "cuda" in seen and next(clf.parameters()).device.type == "cuda"
    assert gpu["objects"] == cpu["objects"]
    # Argmax may flip on a near tie (TF32 convolutions); allow one object in fifty.
    assert gpu["agreement"] == pytest.approx(cpu["agreement"], abs=max(0.02, 1.5 / cpu["objects"]))
    diff = np.abs(np.array(gpu["confusion"]) - np.array(cpu["confusion"])).sum()
    assert diff <= max(2, 0.04 * cpu["objects"])
