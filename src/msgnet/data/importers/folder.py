"""`msgnet data import folder`: images plus masks, paired by file stem.

Masks hold class indices (0 = background; grey or palette-indexed PNG/TIFF), or colours
mapped through a palette JSON given by the user::

    {"#000000": "background", "#ff0000": "tumour", "0,255,0": "edema"}
    {"255,0,0": 1, "0,255,0": {"id": 2, "name": "edema"}}
    [{"color": [255, 0, 0], "name": "tumour", "id": 1}, ...]

Colours mapped to a name get consecutive ids in the order they appear; black or the name
"background" is class 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from msgnet.data.format import ClassInfo
from msgnet.data.importers.common import Sample, Source, make_classes
from msgnet.data.importers.imagefiles import IMAGE_SUFFIXES, MASK_SUFFIXES, read_image, read_mask
from msgnet.errors import DataError, UsageError


def parse_colour(text: Any, where: str) -> tuple[int, int, int]:
    """'#rrggbb', 'r,g,b' or [r, g, b] -> (r, g, b)."""
    try:
        if isinstance(text, (list, tuple)):
            vals = [int(v) for v in text]
        elif isinstance(text, str) and text.strip().startswith("#") and len(text.strip()) == 7:
            t = text.strip()
            vals = [int(t[i : i + 2], 16) for i in (1, 3, 5)]
        else:
            vals = [int(v) for v in str(text).strip("[]() ").split(",")]
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a colour (#rrggbb or r,g,b)") from None
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise DataError(f"{where}: {text!r} is not a colour (#rrggbb or r,g,b)")
    return vals[0], vals[1], vals[2]


def load_palette(path: Path) -> tuple[dict[tuple[int, int, int], int], list[ClassInfo]]:
    """colour -> class id, and the classes (class 0 first) with the palette's colours."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: palette file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a JSON palette ({type(exc).__name__})") from None
    if isinstance(data, dict):
        entries = list(data.items())
    elif isinstance(data, list):
        try:
            entries = [(e["color"], {k: v for k, v in e.items() if k != "color"}) for e in data]
        except (TypeError, KeyError):
            raise DataError(f"{path}: list entries must be objects with a \"color\"") from None
    else:
        raise DataError(f"{path}: a palette is an object colour -> class, or a list of {{color, name, id}}")
    colour_to_id: dict[tuple[int, int, int], int] = {}
    names: dict[int, str] = {0: "background"}
    colours: dict[int, tuple[int, int, int]] = {}
    pending: list[tuple[tuple[int, int, int], str]] = []
    for key, value in entries:
        col = parse_colour(key, str(path))
        if col in colour_to_id or col in [c for c, _ in pending]:
            raise DataError(f"{path}: colour {col} listed twice")
        cid: int | None = None
        name: str | None = None
        if isinstance(value, bool):
            raise DataError(f"{path}: class of colour {col} must be a name or an id")
        if isinstance(value, int):
            cid = value
        elif isinstance(value, str):
            name = value
        elif isinstance(value, dict):
            cid = value.get("id")
            name = value.get("name")
        else:
            raise DataError(f"{path}: class of colour {col} must be a name or an id")
        if cid is not None:
            if not isinstance(cid, int) or not 0 <= cid <= 255:
                raise DataError(f"{path}: class id {cid!r} of colour {col} must be within 0..255")
            colour_to_id[col] = cid
            colours.setdefault(cid, col)
            if name:
                names[cid] = str(name)
        elif name is not None and (name.lower() == "background" or col == (0, 0, 0)):
            colour_to_id[col] = 0
            colours.setdefault(0, col)
        elif name is not None:
            pending.append((col, name))
        else:
            raise DataError(f"{path}: colour {col} needs a class name or id")
    by_name = {v: k for k, v in names.items()}
    for col, name in pending:
        if name not in by_name:
            by_name[name] = max(list(names) + [0]) + 1
            names[by_name[name]] = name
        colour_to_id[col] = by_name[name]
        colours.setdefault(by_name[name], col)
    top = max(names.keys() | set(colour_to_id.values()))
    if top > 255:
        raise DataError(f"{path}: too many classes")
    used = set(colour_to_id.values())
    missing = [i for i in range(1, top + 1) if i not in used]
    if missing:
        raise DataError(f"{path}: class ids must be consecutive from 1; id {missing[0]} has no colour")
    full_names = [names.get(i, f"class{i}") for i in range(top + 1)]
    full_colours = [colours.get(i, (0, 0, 0)) for i in range(top + 1)]
    return colour_to_id, make_classes(full_names, full_colours)


def colours_to_classes(mask: np.ndarray, colour_to_id: dict[tuple[int, int, int], int], origin: str) -> np.ndarray:
    """(H, W, 3) colours -> (H, W) class ids; an unknown colour is refused, naming a pixel."""
    packed = (mask[:, :, 0].astype(np.int64) << 16) | (mask[:, :, 1].astype(np.int64) << 8) | mask[:, :, 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colour_to_id], dtype=np.int64)
    ids = np.array(list(colour_to_id.values()), dtype=np.uint8)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    bad = keys[pos] != packed
    if bad.any():
        y, x = (int(v[0]) for v in np.nonzero(bad))
        r, g, b = (int(v) for v in mask[y, x])
        raise DataError(f"{origin}: colour ({r},{g},{b}) at x={x}, y={y} is not in the palette")
    return ids[pos]


def _listing(folder: Path, suffixes: Sequence[str], strip: str, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such {what} folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            stem = p.stem[: -len(strip)] if strip and p.stem.endswith(strip) else p.stem
            if stem in found:
                raise DataError(f"{p}: two {what} files share the stem {stem!r} ({found[stem].name})")
            found[stem] = p
    if not found:
        raise UsageError(f"{folder}: no {what} files ({', '.join(suffixes)}) found")
    return found


def pair_files(images_dir: Path, masks_dir: Path, mask_suffix: str = "") -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every image; an image without mask (or the reverse) is refused."""
    images = _listing(images_dir, IMAGE_SUFFIXES, "", "image")
    masks = _listing(masks_dir, MASK_SUFFIXES, mask_suffix, "mask")
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"{path}: no mask named {stem}{mask_suffix}.* in {masks_dir}")
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(f"{path}: no image named {stem}.* in {images_dir}")
    return [(stem, images[stem], masks[stem]) for stem in images]


def folder_sources(
    pairs: Sequence[tuple[str, Path, Path]],
    num_classes: int,
    colour_to_id: dict[tuple[int, int, int], int] | None,
    class_hint: str,
) -> list[Source]:
    """One source per image; masks are checked against the image size and the declared classes."""

    def loader(stem: str, image_path: Path, mask_path: Path):
        def load() -> list[Sample]:
            image = read_image(image_path)
            if colour_to_id is not None:
                layout = colours_to_classes(read_mask(mask_path, colour=True), colour_to_id, str(mask_path))
            else:
                raw = read_mask(mask_path, colour=False)
                lo, hi = int(raw.min()), int(raw.max())
                if lo < 0 or hi >= num_classes:
                    bad = lo if lo < 0 else hi
                    raise DataError(f"{mask_path}: label {bad} is outside the declared classes "
                                    f"0..{num_classes - 1} ({class_hint})")
                layout = raw.astype(np.uint8)
            if layout.shape != image.shape[:2]:
                raise DataError(f"{mask_path}: mask is {layout.shape[1]}x{layout.shape[0]} but its image "
                                f"{image_path.name} is {image.shape[1]}x{image.shape[0]}")
            return [Sample(image, layout, str(image_path))]

        return load

    return [Source(stem, str(img), loader(stem, img, msk)) for stem, img, msk in pairs]


def parse_class_names(text: str) -> list[str]:
    """'a,b,c' -> ['background', 'a', 'b', 'c'] (background implied as class 0)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("classes: give the object class names, e.g. `classes` cell,nucleus")
    if names[0].lower() == "background":
        names = names[1:]
    if len(set(names)) != len(names):
        raise UsageError(f"classes: a name is listed twice in {text!r}")
    if len(names) > 255:
        raise UsageError("classes: at most 255 object classes")
    return ["background"] + names


def class_names_from_masks(pairs: Sequence[tuple[str, Path, Path]]) -> list[str]:
    """Without --classes: one class per id found in the index masks, named ``class_1``, ``class_2``, ...
    (ids up to the largest found, so a class absent from every mask keeps its number)."""
    top = 0
    for _, _, mask_path in pairs:
        raw = read_mask(mask_path, colour=False)
        if raw.size and int(raw.min()) < 0:
            raise DataError(f"{mask_path}: negative label {int(raw.min())}")
        top = max(top, int(raw.max()) if raw.size else 0)
    if top == 0:
        raise DataError("masks: every mask is empty (only label 0): no object class to name")
    if top > 255:
        raise DataError(f"masks: label {top} found; at most 255 object classes")
    return ["background"] + [f"class_{k}" for k in range(1, top + 1)]
