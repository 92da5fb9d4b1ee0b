import json

import numpy as np
import pytest
from PIL import Image

from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.torch_dataset import ImageLayoutDataset
from msgnet.errors import DataError
from tests.fixtures import make_tiny_dataset


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_dataset(tmp_path / "tiny", n=12, size=16, channels=1)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_write_then_read_round_trip(tmp_path, channels):
    from msgnet.data.format import DatasetWriter
    from tests.fixtures import tiny_info

    rng = np.random.default_rng(channels)
    written = [(rng.integers(0, 256, (16, 16, channels), dtype=np.uint8), rng.integers(0, 3, (16, 16), dtype=np.uint8))
               for _ in range(4)]
    with DatasetWriter(tmp_path / "exact", tiny_info(16, channels)) as writer:
        for image, layout in written:
            writer.add("train", image[..., 0] if channels == 1 else image, layout)
    back_images, back_layouts = open_dataset(tmp_path / "exact").load_split("train")
    for k, (image, layout) in enumerate(written):  # every pixel value of every channel (L, LA, RGB) survives
        assert np.array_equal(back_images[k], image) and np.array_equal(back_layouts[k], layout)

    root = make_tiny_dataset(tmp_path / "ds", n=8, size=16, channels=channels)
    ds = open_dataset(root)
    images, layouts = ds.load_split("train")
    assert images.shape == (len(ds.ids("train")), 16, 16, channels)
    assert layouts.dtype == np.uint8 and layouts.max() < ds.info.num_classes
    torch_ds = ImageLayoutDataset(ds, "val")
    x, y = torch_ds[0]
    assert x.shape == (channels, 16, 16) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.shape == (16, 16)
    coco = json.loads((root / "annotations.json").read_text())
    assert {"images", "annotations", "categories"} <= set(coco)
    assert all(c["id"] != 0 for c in coco["categories"])


def test_no_temporary_leftovers_after_failed_write(tmp_path):
    from msgnet.data.format import DatasetWriter
    from tests.fixtures import tiny_info

    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "out", tiny_info(8, 1)) as w:
            w.add("train", np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_info_refuses_corrupt_png(tiny, capsys):
    (tiny / "images" / "000003.png").write_bytes(b"\x89PNG garbage")
    err = _one_line_error(capsys, ["data", "info", str(tiny), "--no-preview"])
    assert "000003.png" in err and "unreadable" in err


def test_info_refuses_layout_of_wrong_size(tiny, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny / "layouts" / "000002.png")
    err = _one_line_error(capsys, ["data", "info", str(tiny), "--no-preview"])
    assert "000002.png" in err and "differs" in err


def test_info_refuses_undeclared_class(tiny, capsys):
    lay = np.zeros((16, 16), np.uint8)
    lay[0, 0] = 7
    Image.fromarray(lay).save(tiny / "layouts" / "000001.png")
    err = _one_line_error(capsys, ["data", "info", str(tiny), "--no-preview"])
    assert "000001.png" in err and "class id 7" in err


def test_info_refuses_unknown_category_in_annotations(tiny, capsys):
    coco = json.loads((tiny / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 42
    (tiny / "annotations.json").write_text(json.dumps(coco))
    err = _one_line_error(capsys, ["data", "info", str(tiny), "--no-preview"])
    assert "annotations.json" in err and "42" in err


def test_info_refuses_missing_dir_and_bad_json(tmp_path, capsys):
    _one_line_error(capsys, ["data", "info", str(tmp_path / "nope")])
    (tmp_path / "dataset.json").write_text("{not json")
    err = _one_line_error(capsys, ["data", "info", str(tmp_path)])
    assert "dataset.json" in err


def test_info_prints_summary_and_preview(tiny, capsys):
    assert main(["data", "info", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "splits" in out and "objects/image" in out
    assert (tiny / "preview.png").is_file()


def test_empty_split_is_refused(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=4, size=8)
    meta = json.loads((root / "dataset.json").read_text())
    meta["splits"] = {"train": [], "val": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="empty"):
        open_dataset(root)


# -- splits for evaluation and declared augmentations -----------------------------------------
def _edit_meta(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))
    return meta


def test_old_dataset_without_test_or_augmentations_still_opens(tmp_path, capsys):
    root = make_tiny_dataset(tmp_path / "old", n=8, size=8)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["augmentations"]  # written before the field existed
    assert set(meta["splits"]) == {"train", "val"}
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = open_dataset(root)
    assert ds.info.augmentations is None
    assert ds.evaluation_splits() == (None, "val")  # val serves as test, nothing selected on it
    assert main(["data", "info", str(root), "--no-preview"]) == 0
    out = capsys.readouterr().out
    assert "test: 0" in out and "val serves as test" in out and "not declared" in out


def test_evaluation_splits_follow_the_test_split(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=8, size=8, n_val=2)
    splits = open_dataset(root).info.splits
    train, val = splits["train"], splits["val"]
    _edit_meta(root, splits={"train": train[2:], "val": val, "test": train[:2]})
    assert open_dataset(root).evaluation_splits() == ("val", "test")
    _edit_meta(root, splits={"train": train, "val": val, "test": []})  # --test-fraction 0
    assert open_dataset(root).evaluation_splits() == (None, "val")
    _edit_meta(root, splits={"train": train, "val": [], "test": val})  # --val-fraction 0
    assert open_dataset(root).evaluation_splits() == (None, "test")


@pytest.mark.parametrize("augmentations", [["flip", "rotate90", "affine"], ["affine"], [], None])
def test_augmentations_round_trip_through_dataset_json(tmp_path, augmentations):
    from msgnet.data.format import DatasetInfo, DatasetWriter
    from tests.fixtures import tiny_info

    info = tiny_info(8, 1)
    info.augmentations = augmentations
    with DatasetWriter(tmp_path / "ds", info) as w:
        w.add("train", np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["augmentations"] == augmentations
    assert open_dataset(tmp_path / "ds").info.augmentations == augmentations
    # a generation run keeps the training set's description this way (msgnet.sampling.run)
    again = DatasetInfo.from_json(json.loads(json.dumps(info.to_json())), "run/dataset.json")
    assert again.augmentations == augmentations


@pytest.mark.parametrize("value, needle", [
    (["flip", "shear"], "'shear'"), ("flip", "list of names"), ([1], "list of names"), (["flip", "flip"], "twice"),
])
def test_bad_augmentations_are_refused_naming_the_file(tiny, value, needle):
    _edit_meta(tiny, augmentations=value)
    with pytest.raises(DataError) as exc:
        open_dataset(tiny)
    assert str(tiny / "dataset.json") in str(exc.value) and needle in str(exc.value)


def test_parse_augmentations():
    from msgnet.data.format import GEOMETRIC_AUGMENTATIONS, parse_augmentations
    from msgnet.errors import UsageError

    assert GEOMETRIC_AUGMENTATIONS == ("flip", "rotate90", "affine")
    assert parse_augmentations("none") == [] and parse_augmentations(" rotate90, flip ") == ["rotate90", "flip"]
    for bad in ("mirror", "", "flip,,mirror"):
        with pytest.raises(UsageError, match="^augmentations: "):
            parse_augmentations(bad)


def test_compare_puts_each_datasets_first_images_in_its_row_under_the_layouts(tmp_path, capsys):
    from msgnet.layouts.render import colorize

    a = make_tiny_dataset(tmp_path / "a", n=12, size=16, seed=0)
    b = make_tiny_dataset(tmp_path / "b", n=12, size=16, seed=1)
    out = tmp_path / "cmp.png"
    assert main(["data", "compare", str(a), str(b), "--num", "3", "--out", str(out), "--scale", "1"]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    pad, side = 2, 16
    assert grid.shape == (pad + 3 * (side + pad), pad + 3 * (side + pad), 3)  # layouts, a, b; 3 columns

    def tile(row: int, col: int) -> np.ndarray:
        y, x = pad + row * (side + pad), pad + col * (side + pad)
        return grid[y:y + side, x:x + side]

    da, db = open_dataset(a), open_dataset(b)
    for col in range(3):
        ia, ib = da.info.splits["train"][col], db.info.splits["train"][col]
        assert np.array_equal(tile(0, col), colorize(da.read_layout(ia), da.info.palette))
        assert np.array_equal(tile(1, col)[..., 0], da.read_image(ia)[..., 0])
        assert np.array_equal(tile(2, col)[..., 0], db.read_image(ib)[..., 0])
    c = make_tiny_dataset(tmp_path / "c", n=12, size=8)
    capsys.readouterr()
    assert main(["data", "compare", str(a), str(c), "--out", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(c) in err[0] and not (tmp_path / "bad.png").exists()
