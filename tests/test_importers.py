"""`msgnet data import folder|coco|bbbc041|brats`: round trips into valid datasets, and one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fixtures_importers import (
    make_bbbc041_fixture,
    make_brats_fixture,
    make_coco_fixture,
    make_folder_fixture,
)
from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.importers.coco import decode_rle, encode_rle, rle_counts_to_string, rle_string_to_counts
from msgnet.data.importers.common import tile_starts
from msgnet.data.summary import summarize


def _provenance(out: Path) -> dict[str, dict[str, str]]:
    return json.loads((out / "provenance.json").read_text())["images"]


def _check_split_by_source(out: Path) -> dict[str, str]:
    """Every source's images sit in one split only; returns source -> split."""
    ds = open_dataset(out)
    prov = _provenance(out)
    side: dict[str, str] = {}
    for split, ids in ds.info.splits.items():
        for i in ids:
            src = prov[str(i)]["source"]
            assert side.setdefault(src, split) == split, f"{src} is in two splits"
    return side


def _refused(argv: list[str], capsys, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# -- shared pieces -------------------------------------------------------------------------
def test_tile_starts_cover_the_image_with_the_paper_overlap():
    assert tile_starts(256, 96, 0.6) == [0, 38, 76, 114, 152, 160]
    assert tile_starts(96, 96, 0.6) == [0]
    assert tile_starts(100, 50, 0.0) == [0, 50]


def test_rle_strings_match_hand_computed_coco_vectors():
    # worked by hand from COCO's rleToString: deltas after the third count, sign bit 0x10
    assert rle_counts_to_string([1, 10, 3, 4]) == "1:3J"
    assert rle_string_to_counts("1:3J") == [1, 10, 3, 4]
    assert rle_string_to_counts("T3") == [100]
    mask = np.zeros((5, 4), bool)
    mask[1:3, 1] = True
    mask[4, 3] = True
    assert encode_rle(mask) == [6, 2, 11, 1]  # column-major runs, starting with background
    counts = encode_rle(mask)
    assert np.array_equal(decode_rle({"size": [5, 4], "counts": counts}, "x"), mask)
    assert np.array_equal(decode_rle({"size": [5, 4], "counts": rle_counts_to_string(counts)}, "x"), mask)


# -- folder --------------------------------------------------------------------------------
def test_folder_index_masks_tiled_split_by_source(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=5, size=(40, 48), channels=1)
    out = tmp_path / "ds"
    rc = main(["data", "import", "folder", str(fx["root"]), "--out", str(out), "--classes", "a,b",
               "--mode", "tile", "--size", "24", "--overlap", "0.5", "--val-fraction", "0.4"])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"msgnet data info {out}" in text
    ds = open_dataset(out)
    s = summarize(ds)
    assert s.image_size == (24, 24) and s.channels == 1
    assert s.class_names == ["background", "a", "b"]
    # rows 0,12,16 x cols 0,12,24 -> 9 tiles per image, 5 images
    assert sum(s.split_counts.values()) == 45
    side = _check_split_by_source(out)
    assert sorted(side.values()) == ["test", "train", "train", "val", "val"]
    assert ds.evaluation_splits() == ("val", "test")
    assert ds.info.augmentations == ["flip", "rotate90", "affine"]  # generic default
    # a tile equals the source crop
    prov = _provenance(out)
    first = ds.ids("train")[0]
    stem = Path(prov[str(first)]["origin"].split("@")[0]).stem
    x0, y0 = (int(v) for v in prov[str(first)]["origin"].split("@")[1].split(","))
    assert np.array_equal(ds.read_layout(first), fx["layouts"][stem][y0 : y0 + 24, x0 : x0 + 24])
    src = np.asarray(Image.open(fx["root"] / "images" / f"{stem}.png"))
    assert np.array_equal(ds.read_image(first)[:, :, 0], src[y0 : y0 + 24, x0 : x0 + 24])
    meta = json.loads((out / "dataset.json").read_text())["source"]
    assert meta["importer"] == "folder" and meta["origin"] == str(fx["root"].resolve())


def test_folder_palette_colour_masks_rgb_resize(tmp_path):
    pal = {"#000000": "background", "#ff0000": "tumour", "#00ff00": "edema"}
    fx = make_folder_fixture(tmp_path / "src", num=3, size=(30, 40), channels=3, palette=pal)
    out = tmp_path / "ds"
    assert main(["data", "import", "folder", str(fx["root"]), "--out", str(out), "--palette", str(fx["palette"]),
                 "--mode", "resize", "--size", "20x15", "--val-fraction", "0.34"]) == 0
    ds = open_dataset(out)
    s = summarize(ds)
    assert s.image_size == (15, 20) and s.channels == 3
    assert s.class_names == ["background", "tumour", "edema"]
    assert [tuple(c.color) for c in ds.info.classes][1] == (255, 0, 0)
    lay = ds.read_layout(ds.ids("train")[0])
    assert set(np.unique(lay)) <= {0, 1, 2} and lay.any()


def test_folder_16bit_tiff_and_two_channel_la(tmp_path):
    fx = make_folder_fixture(tmp_path / "tif", num=2, size=(20, 20), channels=1, image_ext=".tif", mask_ext=".tif")
    out = tmp_path / "ds_tif"
    assert main(["data", "import", "folder", str(fx["root"]), "--out", str(out), "--classes", "x,y",
                 "--test-fraction", "0"]) == 0
    img = open_dataset(out).read_image(0)
    assert img.dtype == np.uint8 and img.shape == (20, 20, 1) and img.max() == 255  # stretched from 16 bits
    fx2 = make_folder_fixture(tmp_path / "la", num=3, size=(20, 20), channels=2)
    out2 = tmp_path / "ds_la"
    assert main(["data", "import", "folder", str(fx2["root"]), "--out", str(out2), "--classes", "x,y",
                 "--mode", "center-crop", "--size", "16"]) == 0
    ds = open_dataset(out2)
    assert ds.info.channels == 2 and summarize(ds).channels == 2


def test_folder_without_classes_names_them_from_the_mask_ids(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=3, size=(20, 24), num_classes=4)  # ids 1..3
    out = tmp_path / "out"
    assert main(["data", "import", "folder", str(fx["root"]), "--out", str(out), "--val-fraction", "0.34",
                 "--test-fraction", "0"]) == 0
    assert "no --classes given" in capsys.readouterr().out
    found = max(int(lay.max()) for lay in fx["layouts"].values())
    assert summarize(open_dataset(out)).class_names == ["background"] + [f"class_{k}" for k in range(1, found + 1)]


def test_coco_from_a_folder_with_annotations_json_and_images(tmp_path):
    fx = make_coco_fixture(tmp_path / "coco", num=3)
    folder = tmp_path / "given"
    folder.mkdir()
    shutil.copy(fx["json"], folder / "annotations.json")
    shutil.copytree(fx["images"], folder / "images")
    out = tmp_path / "ds"
    assert main(["data", "import", "coco", str(folder), "--out", str(out), "--val-fraction", "0.34"]) == 0
    assert sum(len(v) for v in open_dataset(out).info.splits.values()) == 3


def test_folder_refusals(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=3, size=(20, 24))
    root = fx["root"]
    base = ["data", "import", "folder", str(root), "--out", str(tmp_path / "out")]
    # label outside the declared classes (fixture draws 1..2, declare one class)
    _refused(base + ["--classes", "a"], capsys, "img0", "outside the declared classes")
    # mask size differs from its image
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "img01.png")
    _refused(base + ["--classes", "a,b"], capsys, "img01.png", "mask is 10x10")
    # unreadable image
    (root / "images" / "img01.png").write_bytes(b"not a png")
    _refused(base + ["--classes", "a,b"], capsys, "img01.png", "unreadable")
    # image without a mask
    (root / "masks" / "img01.png").unlink()
    _refused(base + ["--classes", "a,b"], capsys, "img01.png", "no mask")
    # empty folder
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    _refused(["data", "import", "folder", str(empty), "--out", str(tmp_path / "o2"), "--classes", "a"],
             capsys, "no image files")
    # colour outside the palette
    pal = {"#000000": "background", "#ff0000": "a", "#00ff00": "b"}
    fxc = make_folder_fixture(tmp_path / "col", num=2, size=(20, 24), palette=pal)
    (fxc["root"] / "palette.json").write_text(json.dumps({"#000000": "background", "#ff0000": "a"}))
    _refused(["data", "import", "folder", str(fxc["root"]), "--out", str(tmp_path / "o3"),
              "--palette", str(fxc["palette"]), "--test-fraction", "0"], capsys, "not in the palette")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written


def test_three_way_split_by_source(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=10, size=(12, 12))
    base = ["data", "import", "folder", str(fx["root"]), "--classes", "a,b", "--val-fraction", "0.2"]
    out = tmp_path / "ds"
    assert main(base + ["--out", str(out), "--test-fraction", "0.2"]) == 0
    side = _check_split_by_source(out)  # no source in two splits
    assert sorted(side.values()) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    ds = open_dataset(out)
    assert sum(len(v) for v in ds.info.splits.values()) == 10 and ds.evaluation_splits() == ("val", "test")
    assert json.loads((out / "dataset.json").read_text())["source"]["test_fraction"] == 0.2
    # the test sources come out of training: val is the same as an import without a test split
    out0 = tmp_path / "ds0"
    assert main(base + ["--out", str(out0), "--test-fraction", "0"]) == 0
    side0 = _check_split_by_source(out0)
    assert {k for k, v in side0.items() if v == "val"} == {k for k, v in side.items() if v == "val"}
    assert open_dataset(out0).info.splits["test"] == [] and open_dataset(out0).evaluation_splits() == (None, "val")


def test_too_few_sources_for_the_splits_are_refused(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=2, size=(12, 12))
    base = ["data", "import", "folder", str(fx["root"]), "--classes", "a,b", "--out", str(tmp_path / "out")]
    _refused(base, capsys, "only 2 sources", "need 3", "--test-fraction 0")
    _refused(base + ["--val-fraction", "0.6", "--test-fraction", "0.5"], capsys, "--test-fraction", "training")
    _refused(base + ["--test-fraction", "1"], capsys, "--test-fraction", "[0, 1)")
    assert not (tmp_path / "out").exists()


def test_augmentations_option(tmp_path, capsys):
    fx = make_folder_fixture(tmp_path / "src", num=3, size=(12, 12))
    base = ["data", "import", "folder", str(fx["root"]), "--classes", "a,b"]
    for arg, expected in (("none", []), ("affine,flip", ["affine", "flip"])):
        out = tmp_path / f"ds-{arg}"
        assert main(base + ["--out", str(out), "--augmentations", arg]) == 0
        assert json.loads((out / "dataset.json").read_text())["augmentations"] == expected
        assert open_dataset(out).info.augmentations == expected
    _refused(base + ["--out", str(tmp_path / "bad"), "--augmentations", "flip,spin"], capsys,
             "--augmentations", "'spin'")
    _refused(base + ["--out", str(tmp_path / "bad"), "--augmentations", "flip,flip"], capsys,
             "--augmentations", "twice")
    assert not (tmp_path / "bad").exists()


# -- coco ----------------------------------------------------------------------------------
def test_coco_polygons_rle_boxes_and_merge(tmp_path):
    fx = make_coco_fixture(tmp_path / "coco", num=3)
    out = tmp_path / "ds"
    assert main(["data", "import", "coco", str(fx["json"]), "--out", str(out),
                 "--merge", "infected=ring,trophozoite,schizont", "--drop", "red blood cell",
                 "--val-fraction", "0.34"]) == 0
    ds = open_dataset(out)
    s = summarize(ds)
    assert s.class_names == ["background", "infected"]
    assert s.image_size == (48, 64) and s.channels == 3
    side = _check_split_by_source(out)
    assert sorted(side.values()) == ["test", "train", "val"]
    prov = _provenance(out)
    for iid in ds.info.splits["train"] + ds.info.splits["val"] + ds.info.splits["test"]:
        m = fx["expected"][Path(prov[str(iid)]["origin"]).name]
        expected = (m["ring"] | m["trophozoite"] | m["schizont"]).astype(np.uint8)
        assert np.array_equal(ds.read_layout(iid), expected)
    meta = json.loads((out / "dataset.json").read_text())["source"]
    assert meta["category_to_class"]["schizont"] == "infected" and meta["dropped"] == ["red blood cell"]


def test_coco_default_mapping_later_over_earlier(tmp_path):
    fx = make_coco_fixture(tmp_path / "coco", num=2)
    out = tmp_path / "ds"
    assert main(["data", "import", "coco", str(fx["json"]), "--out", str(out), "--val-fraction", "0.5",
                 "--test-fraction", "0"]) == 0
    ds = open_dataset(out)
    assert ds.info.class_names == ["background", "ring", "trophozoite", "red blood cell", "schizont"]
    prov = _provenance(out)
    lay = ds.read_layout(0)
    m = fx["expected"][Path(prov["0"]["origin"]).name]
    assert (lay[m["red blood cell"]] == 3).all()  # uncompressed RLE
    assert (lay[m["schizont"]] == 4).all()  # compressed RLE drawn last wins
    assert (lay[m["ring"] & ~m["schizont"]] == 1).all()
    assert int((lay > 0).sum()) == int((m["ring"] | m["trophozoite"] | m["red blood cell"] | m["schizont"]).sum())
    objs = ds.annotations()[0]
    assert sorted(o.category_id for o in objs) == [1, 2, 3, 4]


def test_coco_tiles_skip_empty_and_cap_per_source(tmp_path):
    fx = make_coco_fixture(tmp_path / "coco", num=2)
    out = tmp_path / "ds"
    assert main(["data", "import", "coco", str(fx["json"]), "--out", str(out), "--val-fraction", "0",
                 "--test-fraction", "0", "--mode", "tile", "--size", "16", "--skip-empty",
                 "--max-per-source", "5"]) == 0
    ds = open_dataset(out)
    ids = ds.ids("train")
    assert len(ids) == 10 and ds.info.splits["val"] == [] and ds.info.splits["test"] == []
    assert ds.evaluation_splits() == (None, "val")
    assert all(ds.read_layout(i).any() for i in ids)
    summarize(ds)


def test_coco_refusals(tmp_path, capsys):
    fx = make_coco_fixture(tmp_path / "coco", num=2)
    path = fx["json"]
    base = ["data", "import", "coco", str(path), "--out", str(tmp_path / "out"), "--test-fraction", "0"]
    _refused(base + ["--merge", "infected=ring,gametocyte"], capsys, "unknown category 'gametocyte'")
    _refused(base + ["--drop", "nope"], capsys, "unknown category 'nope'")
    data = json.loads(path.read_text())
    bad = dict(data, annotations=data["annotations"] + [{"id": 99, "image_id": 10, "category_id": 42, "bbox": [0, 0, 2, 2]}])
    path.write_text(json.dumps(bad))
    _refused(base, capsys, "category_id 42")
    rle_bad = json.loads(json.dumps(data))
    rle_bad["annotations"][2]["segmentation"]["size"] = [10, 10]
    rle_bad["annotations"][2]["segmentation"]["counts"] = [50, 50]
    path.write_text(json.dumps(rle_bad))
    _refused(base, capsys, "RLE size 10x10")
    path.write_text(json.dumps(data))
    (fx["images"] / "smear1.png").unlink()
    _refused(base, capsys, "smear1.png", "missing image")
    path.write_text("{not json")
    _refused(base, capsys, "instances.json", "not valid JSON")
    assert not (tmp_path / "out").exists()


# -- bbbc041 -------------------------------------------------------------------------------
def test_bbbc041_official_split_paper_patches(tmp_path):
    fx = make_bbbc041_fixture(tmp_path / "malaria", num_train=3, num_test=2, shape=(150, 200))
    out = tmp_path / "ds"
    assert main(["data", "import", "bbbc041", str(fx["root"]), "--out", str(out)]) == 0
    ds = open_dataset(out)
    s = summarize(ds)
    assert s.image_size == (96, 96) and s.channels == 3
    assert s.class_names == ["background", "infected"]
    # 6x6 patches of the 256x256 image; test.json is the test split, one of the 3 training images is val
    assert s.split_counts == {"train": 2 * 36, "val": 1 * 36, "test": 2 * 36}
    side = _check_split_by_source(out)
    assert all((v in ("train", "val")) if "training" in k else v == "test" for k, v in side.items())
    assert ds.evaluation_splits() == ("val", "test")
    assert ds.info.augmentations == ["flip", "rotate90", "affine"]
    # the ring (rows 10..40, cols 15..45 of 150x200) lands, scaled to 256x256, in the top-left patch
    prov = _provenance(out)
    top_left = next(int(i) for i, p in prov.items() if p["origin"].endswith("training-000.png@0,0"))
    lay = ds.read_layout(top_left)
    ys, xs = np.nonzero(lay == 1)
    assert (ys.min(), xs.min()) == (round(10 * 256 / 150), round(15 * 256 / 200))
    assert (ys.max() + 1, xs.max() + 1) == (round(40 * 256 / 150), round(45 * 256 / 200))
    # red blood cells and leukocytes are background: only the infected boxes are drawn
    assert s.pixel_fraction[1] < 0.1


def test_bbbc041_single_json_split_by_image(tmp_path):
    fx = make_bbbc041_fixture(tmp_path / "malaria", num_train=4, num_test=1)
    out = tmp_path / "ds"
    assert main(["data", "import", "bbbc041", str(fx["root"] / "training.json"), "--out", str(out),
                 "--val-fraction", "0.25", "--mode", "resize", "--size", "64", "--prescale", "256"]) == 0
    side = _check_split_by_source(out)
    assert sorted(side.values()) == ["test", "train", "train", "val"]  # a single JSON: all three drawn
    assert open_dataset(out).info.image_size == (64, 64)


def test_bbbc041_refusals(tmp_path, capsys):
    fx = make_bbbc041_fixture(tmp_path / "malaria", num_train=2, num_test=1)
    root = fx["root"]
    base = ["data", "import", "bbbc041", str(root), "--out", str(tmp_path / "out")]
    entries = fx["entries"]["training"]
    bad = json.loads(json.dumps(entries))
    bad[1]["objects"][0]["category"] = "platelet"
    (root / "training.json").write_text(json.dumps(bad))
    _refused(base, capsys, "training.json", "unknown category 'platelet'")
    bad = json.loads(json.dumps(entries))
    bad[0]["image"]["shape"]["r"] = 999
    (root / "training.json").write_text(json.dumps(bad))
    _refused(base, capsys, "training-000.png", "r=999")
    (root / "training.json").write_text(json.dumps(entries))
    (root / "images" / "test-000.png").unlink()
    _refused(base, capsys, "test-000.png", "missing image")
    (root / "test.json").write_text(json.dumps({"images": []}))
    _refused(base, capsys, "test.json", "JSON list")
    _refused(["data", "import", "bbbc041", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys,
             "no such file")
    assert not (tmp_path / "out").exists()


# -- brats ---------------------------------------------------------------------------------
def test_brats_two_channel_slices_and_classes(tmp_path):
    import torch

    from msgnet.data.torch_dataset import ImageLayoutDataset

    fx = make_brats_fixture(tmp_path / "brats", num_patients=3, shape=(32, 32, 12))
    out = tmp_path / "ds"
    assert main(["data", "import", "brats", str(fx["root"]), "--out", str(out), "--val-fraction", "0.34"]) == 0
    ds = open_dataset(out)
    s = summarize(ds)
    assert s.channels == 2 and s.image_size == (32, 32)
    assert s.class_names == ["outside-brain", "brain", "necrotic-core", "edema", "enhancing"]
    even_tumour = [z for z in fx["tumour_slices"] if z % 2 == 0]
    assert sum(s.split_counts.values()) == 3 * len(even_tumour)
    side = _check_split_by_source(out)
    assert sorted(side.values()) == ["test", "train", "val"]
    prov = _provenance(out)
    assert {int(p["origin"].split("z=")[1]) for p in prov.values()} == set(even_tumour)
    assert ds.info.augmentations == ["flip", "affine"]  # no quarter turns for anatomy
    lay = ds.read_layout(0)
    assert set(np.unique(lay)) == {0, 1, 2, 3, 4}
    img = ds.read_image(0)
    assert (img[lay == 0] == 0).all() and (img[lay > 0] > 0).all()  # outside brain is black
    tds = ImageLayoutDataset(ds, "train")
    x, y = tds[0]
    assert x.shape == (2, 32, 32) and x.dtype == torch.float32 and y.shape == (32, 32)


def test_brats_resize_and_no_brain_class(tmp_path):
    fx = make_brats_fixture(tmp_path / "brats", num_patients=2, shape=(24, 24, 8), suffix=".nii")
    out = tmp_path / "ds"
    assert main(["data", "import", "brats", str(fx["root"]), "--out", str(out), "--size", "16",
                 "--no-brain-class", "--val-fraction", "0.5", "--test-fraction", "0"]) == 0
    ds = open_dataset(out)
    assert ds.info.image_size == (16, 16) and ds.info.class_names == ["background", "necrotic-core", "edema",
                                                                      "enhancing"]
    summarize(ds)


def test_brats_refusals(tmp_path, capsys):
    import nibabel as nib

    fx = make_brats_fixture(tmp_path / "brats", num_patients=2, shape=(16, 16, 6))
    root = fx["root"]
    p0 = root / fx["patients"][0]
    base = ["data", "import", "brats", str(root), "--out", str(tmp_path / "out"), "--test-fraction", "0"]
    seg_path = p0 / f"{fx['patients'][0]}_seg.nii.gz"
    seg_img = nib.load(str(seg_path))
    seg = np.asarray(seg_img.dataobj).copy()
    seg[seg == 4] = 3  # BraTS 2023 labelling
    nib.save(nib.Nifti1Image(seg, seg_img.affine), str(seg_path))
    _refused(base, capsys, "_seg.nii.gz", "label 3", "--labels 1,2,3")
    nib.save(nib.Nifti1Image(seg[:8], seg_img.affine), str(seg_path))
    _refused(base, capsys, fx["patients"][0], "shapes differ")
    seg_path.write_bytes(b"\x00" * 10)
    _refused(base, capsys, "_seg.nii.gz", "unreadable")
    seg_path.unlink()
    _refused(base, capsys, fx["patients"][0], "missing the seg volume")
    shutil.rmtree(root)
    root.mkdir()
    _refused(base, capsys, "no patient folders")
    assert not (tmp_path / "out").exists()
