"""Independent checks of built Multi-MNIST sets: no overlap, allowed pairs, upper half, boxes = layouts."""

import json

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
    for split in ("train", "val", "test"):
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
    assert main(["data", "build", "multi-mnist", "--variant", "pairs", "--num", "50", "--out", str(out)]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["rule"]["allowed_class_sets"] and meta["source"]["variant"] == "pairs"
    assert meta["augmentations"] == ["affine"]  # flips and quarter turns change what a digit is
    assert {k: len(v) for k, v in meta["splits"].items()} == {"train": 46, "val": 2, "test": 2}
    assert main(["data", "build", "multi-mnist", "--num", "50", "--out", str(out)]) == 2  # exists
    # --test-fraction 0: the old two-way set, val serving as test
    out0 = tmp_path / "mm0"
    assert main(["data", "build", "multi-mnist", "--num", "20", "--val-fraction", "0.1", "--test-fraction", "0",
                 "--out", str(out0)]) == 0
    ds0 = open_dataset(out0)
    assert ds0.info.splits["test"] == [] and len(ds0.ids("val")) == 2 and ds0.evaluation_splits() == (None, "val")


@pytest.mark.parametrize("argv", [
    ["--variant", "diagonal"], ["--num", "1"], ["--num", "2"], ["--digit-size", "40"], ["--digit-size", "x"],
    ["--test-fraction", "1"], ["--test-fraction", "-0.1"], ["--val-fraction", "0.5", "--test-fraction", "0.5"],
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


def test_default_split_sizes():
    assert MultiMnistSpec(num=5000).split_sizes() == {"train": 4500, "val": 250, "test": 250}
    assert MultiMnistSpec(num=3).split_sizes() == {"train": 1, "val": 1, "test": 1}
    assert MultiMnistSpec(num=10, val_fraction=0.1, test_fraction=0).split_sizes() == {"train": 9, "val": 1, "test": 0}


def _instance_digits(per_class: int, first_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Solid blocks, each digit instance with its own grey value (>= the stroke threshold)."""
    n = 10 * per_class
    images = np.zeros((n, 28, 28), np.uint8)
    for k in range(n):
        images[k, 4:24, 4:24] = first_value + k
    return images, np.tile(np.arange(10), per_class)


def test_splits_share_no_digit_instance(tmp_path):
    # Every digit instance has its own grey value, so the pixels show which instances each
    # split used, independently of what the builder says in provenance.json.
    tr_images, tr_labels = _instance_digits(3, 70)  # values 70..99
    te_images, te_labels = _instance_digits(6, 120)  # values 120..179: 6 per class, 3 for val and 3 for test
    digits = MnistDigits(tr_images, tr_labels, te_images, te_labels, origin="instances")
    spec = MultiMnistSpec(num=60, val_fraction=0.25, test_fraction=0.25, seed=5)
    root = build_multi_mnist(spec, digits, tmp_path / "mm", progress=False)
    ds = open_dataset(root)
    ids = {s: set(ds.ids(s)) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in ids.items()} == spec.split_sizes() == {"train": 30, "val": 15, "test": 15}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    anns = ds.annotations()
    prov = json.loads((root / "provenance.json").read_text())["images"]
    seen: dict[str, set[int]] = {}
    for split, split_ids in ids.items():
        for iid in split_ids:
            image = ds.read_image(iid)[..., 0]
            values = []
            for o in anns[iid]:
                x, y, w, h = o.bbox
                box = image[y : y + h, x : x + w]
                values.append(int(np.bincount(box[box > 0]).argmax()))  # the block's flat inside
            # provenance.json names exactly the instances seen in the pixels
            part = prov[str(iid)]["source"]
            source_images = tr_images if part == "mnist-train" else te_images
            assert sorted(values) == sorted(int(source_images[i].max()) for i in prov[str(iid)]["digits"])
            seen.setdefault(split, set()).update(values)
    assert all(70 <= v < 100 for v in seen["train"])
    assert all(120 <= v < 180 for v in seen["val"] | seen["test"])
    assert not seen["val"] & seen["test"]
    assert len(seen["val"]) > 3 and len(seen["test"]) > 3  # several classes drawn in each


def test_real_layouts_through_a_grid_give_the_ceiling_a_prior_can_reach(tmp_path, capsys):
    from msgnet.evaluation.layout_coherency import real_layout_coherency

    out = tmp_path / "pairs"
    assert main(["data", "build", "multi-mnist", "--variant", "pairs", "--num", "60", "--out", str(out)]) == 0
    fine = real_layout_coherency(out, grid=64, parts=["object_count", "allowed_class_sets"])
    assert fine.num == len(json.loads((out / "dataset.json").read_text())["splits"]["train"])
    assert fine.violating == 0  # at full resolution the built layouts obey their rule
    coarse = real_layout_coherency(out, grid=2, parts=["object_count"])
    assert coarse.violating > coarse.num // 2  # a 2x2 grid merges the two digits into fewer objects
    assert main(["eval", "layouts", "--real", str(out), "--grid", "16", "--num", "20"]) == 0
    assert "real layouts through the 16x16 grid obeying the rule" in capsys.readouterr().out
