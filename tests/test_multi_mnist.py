"""Independent checks of built Multi-MNIST sets: no overlap, allowed pairs, upper half, boxes = layouts."""

import json
import time

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.mnist_source import MnistDigits, load_bundled
from msgnet.data.multi_mnist import ALLOWED_PAIRS, MultiMnistSpec, build_multi_mnist
from msgnet.data.rules import rule_violations
from msgnet.layouts import boxes_overlap, boxes_to_layout


@pytest.fixture(scope="module")
def digits():
    return load_bundled()


def _check(root, variant):
    ds = open_dataset(root)
    anns = ds.annotations()
    for split in ("train", "val"):
        for iid in ds.ids(split):
            objs = anns[iid]
            layout = ds.read_layout(iid)
            image = ds.read_image(iid)[..., 0]
            # boxes in annotations.json agree with the layouts
            np.testing.assert_array_equal(boxes_to_layout(objs, layout.shape), layout)
            assert all(not boxes_overlap(a.bbox, b.bbox) for i, a in enumerate(objs) for b in objs[i + 1:])
            classes = sorted(o.category_id - 1 for o in objs)
            if variant == "pairs":
                assert len(objs) == 2 and tuple(classes) in {tuple(sorted(p)) for p in ALLOWED_PAIRS}
            else:
                assert len(objs) == 3
            if variant == "upper-half":
                assert not layout[32:].any() and not image[32:].any()
            assert rule_violations(ds.info.rule, objs, layout) == []
            mask = ds.read_mask(iid)
            assert ((mask > 0) <= (layout > 0)).all()  # strokes lie inside their boxes


@pytest.mark.parametrize("variant", ["standard", "pairs", "upper-half"])
def test_variants_obey_their_rules(tmp_path, digits, variant):
    root = build_multi_mnist(MultiMnistSpec(variant=variant, num=200, seed=1), digits, tmp_path / variant,
                             progress=False)
    _check(root, variant)


def test_builder_is_deterministic_for_a_seed(tmp_path, digits):
    a = build_multi_mnist(MultiMnistSpec(num=20, seed=3), digits, tmp_path / "a", progress=False)
    b = build_multi_mnist(MultiMnistSpec(num=20, seed=3), digits, tmp_path / "b", progress=False)
    c = build_multi_mnist(MultiMnistSpec(num=20, seed=4), digits, tmp_path / "c", progress=False)
    ia, _ = open_dataset(a).load_split("train")
    ib, _ = open_dataset(b).load_split("train")
    ic, _ = open_dataset(c).load_split("train")
    assert np.array_equal(ia, ib) and not np.array_equal(ia, ic)


def test_train_and_val_use_disjoint_digit_sources(tmp_path):
    # Training digits are all 1s and validation digits all 0s: the splits must show exactly that.
    one, zero = np.zeros((10, 28, 28), np.uint8), np.zeros((10, 28, 28), np.uint8)
    one[:, 4:24, 13:15] = 255
    zero[:, 6:22, 8:20] = 255
    tr_labels = np.array([1] * 10)
    # every class needs digits: give each class the same image but keep labels honest per split
    imgs_tr = np.concatenate([one] * 10)
    imgs_te = np.concatenate([zero] * 10)
    labels = np.repeat(np.arange(10), 10)
    d = MnistDigits(imgs_tr, labels, imgs_te, labels, origin="synthetic")
    root = build_multi_mnist(MultiMnistSpec(num=10, seed=0), d, tmp_path / "s", progress=False)
    ds = open_dataset(root)
    tr, _ = ds.load_split("train")
    va, _ = ds.load_split("val")
    assert tr.sum() > 0 and va.sum() > 0
    # a bar (1) image has far fewer bright pixels than a block (0) image
    assert tr.astype(float).mean() < va.astype(float).mean() / 2
    del tr_labels


def test_cli_builds_and_reports(tmp_path, capsys):
    out = tmp_path / "mm"
    start = time.perf_counter()
    assert main(["data", "build", "multi-mnist", "--variant", "pairs", "--num", "50", "--out", str(out)]) == 0
    assert time.perf_counter() - start < 60
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["rule"]["allowed_class_sets"] and meta["source"]["variant"] == "pairs"
    assert main(["data", "build", "multi-mnist", "--num", "50", "--out", str(out)]) == 2  # exists


@pytest.mark.parametrize("argv", [
    ["--variant", "diagonal"], ["--num", "1"], ["--digit-size", "40"], ["--digit-size", "x"],
])
def test_cli_refuses_nonsense_options(tmp_path, capsys, argv):
    assert main(["data", "build", "multi-mnist", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    assert not (tmp_path / "o").exists()


def test_user_mnist_npz(tmp_path, capsys):
    x = np.zeros((20, 28, 28), np.uint8)
    x[:, 8:20, 8:20] = 200
    y = np.arange(20) % 10
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["data", "build", "multi-mnist", "--num", "10", "--mnist", str(tmp_path / "m.npz"),
                 "--out", str(tmp_path / "o")]) == 0
    np.savez(tmp_path / "bad.npz", x_train=x)
    assert main(["data", "build", "multi-mnist", "--num", "10", "--mnist", str(tmp_path / "bad.npz"),
                 "--out", str(tmp_path / "o2")]) == 2
