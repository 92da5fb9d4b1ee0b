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
