"""Tiny on-disk inputs for the importers (no downloads), reusable by end-to-end tests.

Every builder writes into a folder it is given and returns what a test needs to know
(paths and the ground truth it drew), so a test can import, train tiny, sample and evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _noise_image(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    img = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return img[:, :, 0] if channels == 1 else img


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def make_folder_fixture(
    root: Path,
    num: int = 4,
    size: tuple[int, int] = (40, 48),
    channels: int = 1,
    num_classes: int = 3,
    palette: dict[str, str] | None = None,
    image_ext: str = ".png",
    mask_ext: str = ".png",
    seed: int = 0,
) -> dict[str, Any]:
    """images/ + masks/ with rectangles of random classes 1..num_classes-1.

    With ``palette`` ({"#rrggbb": name}, class ids in order) masks are colour-coded and the
    palette is written to root/palette.json. Returns {"root", "layouts": {stem: layout}, "palette"}.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    layouts: dict[str, np.ndarray] = {}
    colours = None
    if palette is not None:
        (root).mkdir(parents=True, exist_ok=True)
        (root / "palette.json").write_text(json.dumps(palette))
        colours = [tuple(int(k[i : i + 2], 16) for i in (1, 3, 5)) for k in palette]
    for n in range(num):
        stem = f"img{n:02d}"
        layout = np.zeros((h, w), dtype=np.uint8)
        for _ in range(3):
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            layout[y : y + int(rng.integers(4, 9)), x : x + int(rng.integers(4, 9))] = rng.integers(1, num_classes)
        image = _noise_image(rng, h, w, channels)
        if image_ext in (".tif", ".tiff") and channels == 1:
            image = image.astype(np.uint16) * 257  # a 16-bit microscopy-like image
        _save(root / "images" / f"{stem}{image_ext}", image, "LA" if channels == 2 else None)
        if colours is not None:
            mask = np.array(colours, dtype=np.uint8)[layout]
        else:
            mask = layout
        _save(root / "masks" / f"{stem}{mask_ext}", mask)
        layouts[stem] = layout
    return {"root": root, "layouts": layouts, "palette": root / "palette.json" if palette else None}


def encode_rle_string(mask: np.ndarray) -> dict[str, Any]:
    """A compressed COCO RLE dict for a bool mask (uses the importer's own encoder)."""
    from msgnet.data.importers.coco import encode_rle, rle_counts_to_string

    return {"size": list(mask.shape), "counts": rle_counts_to_string(encode_rle(mask))}


def make_coco_fixture(root: Path, num: int = 3, size: tuple[int, int] = (48, 64), seed: int = 0) -> dict[str, Any]:
    """A COCO JSON with, per image: a box-only ring, a polygon trophozoite, an uncompressed-RLE
    red blood cell and a compressed-RLE schizont (drawn in that order).

    Returns {"json", "images", "expected": {file_name: {category name: bool mask}}}.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    cats = [{"id": 1, "name": "ring"}, {"id": 2, "name": "trophozoite"},
            {"id": 3, "name": "red blood cell"}, {"id": 7, "name": "schizont"}]
    images, anns, expected = [], [], {}
    for n in range(num):
        name = f"smear{n}.png"
        _save(root / "images" / name, _noise_image(rng, h, w, 3))
        images.append({"id": 10 + n, "file_name": name, "width": w, "height": h})
        masks = {}
        box = np.zeros((h, w), bool)
        box[4:14, 6:20] = True
        masks["ring"] = box
        anns.append({"id": len(anns) + 1, "image_id": 10 + n, "category_id": 1, "bbox": [6, 4, 14, 10]})
        # A rectangle as polygon: PIL fills the closed outline inclusive of its corners.
        poly = np.zeros((h, w), bool)
        poly[20:31, 30:46] = True
        masks["trophozoite"] = poly
        anns.append({"id": len(anns) + 1, "image_id": 10 + n, "category_id": 2,
                     "segmentation": [[30, 20, 45, 20, 45, 30, 30, 30]], "bbox": [30, 20, 16, 11]})
        disc = (np.arange(h)[:, None] - 36) ** 2 + (np.arange(w)[None, :] - 12) ** 2 <= 36
        masks["red blood cell"] = disc
        from msgnet.data.importers.coco import encode_rle

        anns.append({"id": len(anns) + 1, "image_id": 10 + n, "category_id": 3, "iscrowd": 1,
                     "segmentation": {"size": [h, w], "counts": encode_rle(disc)}, "bbox": [6, 30, 13, 13]})
        blob = np.zeros((h, w), bool)
        blob[8 + n : 18 + n, 50:60] = True
        blob[12 + n, 50:54] = False
        masks["schizont"] = blob
        anns.append({"id": len(anns) + 1, "image_id": 10 + n, "category_id": 7,
                     "segmentation": encode_rle_string(blob), "bbox": [50, 8 + n, 10, 10]})
        expected[name] = masks
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return {"json": path, "images": root / "images", "expected": expected}


BBBC041_CATEGORIES = ("red blood cell", "ring", "trophozoite", "schizont", "gametocyte", "leukocyte", "difficult")


def make_bbbc041_fixture(root: Path, num_train: int = 3, num_test: int = 2, shape: tuple[int, int] = (150, 200),
                         seed: int = 0) -> dict[str, Any]:
    """malaria/-like folder: images/*.png, training.json and test.json in the BBBC041 layout.

    Every image has red blood cells everywhere, one ring and one trophozoite at known places
    (r = row, c = column). Returns {"root", "entries": {"training": [...], "test": [...]}}.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    out: dict[str, list] = {}
    for split, count in (("training", num_train), ("test", num_test)):
        entries = []
        for n in range(count):
            name = f"{split}-{n:03d}.png"
            _save(root / "images" / name, _noise_image(rng, h, w, 3))
            objects = []
            for r in range(0, h - 20, 30):
                for c in range(0, w - 20, 30):
                    objects.append({"category": "red blood cell",
                                    "bounding_box": {"minimum": {"r": r, "c": c}, "maximum": {"r": r + 20, "c": c + 20}}})
            objects.append({"category": "ring", "bounding_box": {"minimum": {"r": 10, "c": 15},
                                                                 "maximum": {"r": 40, "c": 45}}})
            objects.append({"category": "trophozoite", "bounding_box": {"minimum": {"r": h - 40, "c": w - 50},
                                                                        "maximum": {"r": h - 5, "c": w - 10}}})
            objects.append({"category": "leukocyte", "bounding_box": {"minimum": {"r": 60, "c": 80},
                                                                      "maximum": {"r": 90, "c": 110}}})
            entries.append({"image": {"checksum": f"{n:032x}", "pathname": f"/images/{name}",
                                      "shape": {"r": h, "c": w, "channels": 3}},
                            "objects": objects})
        (root / f"{split}.json").write_text(json.dumps(entries))
        out[split] = entries
    return {"root": root, "entries": out}


def make_brats_fixture(root: Path, num_patients: int = 3, shape: tuple[int, int, int] = (32, 32, 12),
                       seed: int = 0, suffix: str = ".nii.gz") -> dict[str, Any]:
    """BraTS-like patient folders: <pid>/<pid>_{flair,t1ce,seg}.nii.gz (float32 MRI, uint8 labels 0,1,2,4).

    A spherical brain of noise, an edema shell around a core with an enhancing rim, present
    in slices 3..8 only. Returns {"root", "patients": [names], "tumour_slices": [z, ...]}.
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    xx, yy, zz = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    brain = ((xx - X / 2) ** 2 + (yy - Y / 2) ** 2) <= (0.4 * X) ** 2
    patients = []
    for p in range(num_patients):
        pid = f"Brats17_TEST_{p:03d}_1"
        folder = root / pid
        folder.mkdir(parents=True, exist_ok=True)
        cx, cy = X / 2 + rng.integers(-3, 4), Y / 2 + rng.integers(-3, 4)
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        seg = np.zeros(shape, dtype=np.uint8)
        slab = (zz >= 3) & (zz <= 8)
        seg[(d2 <= 36) & slab & brain] = 2  # edema
        seg[(d2 <= 16) & slab & brain] = 4  # enhancing
        seg[(d2 <= 4) & slab & brain] = 1  # necrotic core
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        for mod, scale in (("flair", 400.0), ("t1ce", 900.0)):
            vol = (rng.random(shape) * scale + 100.0 + 300.0 * (seg > 0)).astype(np.float32) * brain
            nib.save(nib.Nifti1Image(vol, affine), str(folder / f"{pid}_{mod}{suffix}"))
        nib.save(nib.Nifti1Image(seg, affine), str(folder / f"{pid}_seg{suffix}"))
        patients.append(pid)
    return {"root": root, "patients": patients, "tumour_slices": [z for z in range(Z) if 3 <= z <= 8]}
