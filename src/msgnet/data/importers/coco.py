"""`msgnet data import coco`: a COCO instances JSON (boxes, polygons, RLE) into layouts.

Each annotation is drawn with its category's class, in file order (later over earlier):
its polygons (rasterised with PIL.ImageDraw) or its RLE mask (uncompressed or compressed,
decoded here; no pycocotools) when present, else its box filled. Categories map to
classes one to one, in category-id order, unless merged (``--merge "infected=ring,schizont"``)
or dropped (``--drop name``: its objects are not drawn, their pixels stay background).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from msgnet.data.importers.common import Sample, Source
from msgnet.data.importers.imagefiles import read_image
from msgnet.errors import DataError, UsageError
from msgnet.io import read_json
from msgnet.layouts.boxes import coco_box, coco_id, coco_size


# -- RLE ----------------------------------------------------------------------------------
def rle_string_to_counts(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (LEB128-like, 6 bits per char from ASCII 48)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("truncated RLE string")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid RLE character {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign extension
        if len(counts) > 2:
            x += counts[-2]  # counts after the third are stored as deltas
        counts.append(x)
    return counts


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Encode counts as COCO's compressed RLE string (the inverse of :func:`rle_string_to_counts`)."""
    out = []
    for i, cnt in enumerate(counts):
        x = int(cnt) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def decode_rle(rle: dict[str, Any], where: str) -> np.ndarray:
    """A COCO RLE dict {"size": [h, w], "counts": list | str} -> (h, w) bool mask (column-major runs)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        counts = rle_string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: malformed RLE ({exc})") from None
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise DataError(f"{where}: RLE runs cover {sum(counts)} pixels, its size {w}x{h} has {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with background
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def encode_rle(mask: np.ndarray) -> list[int]:
    """(h, w) bool mask -> uncompressed COCO counts (column-major, starting with a background run)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


# -- categories ---------------------------------------------------------------------------
def parse_merge(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """['infected=ring,trophozoite'] -> [('infected', ['ring', 'trophozoite'])]."""
    out = []
    for spec in specs:
        name, sep, members = spec.partition("=")
        parts = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name.strip() or not parts:
            raise UsageError(f"merge: expected NAME=CAT1,CAT2,..., got {spec!r}")
        out.append((name.strip(), parts))
    return out


def category_mapping(
    categories: Sequence[dict[str, Any]],
    merges: Sequence[tuple[str, list[str]]],
    drops: Sequence[str],
    where: str,
) -> tuple[dict[int, int], list[str]]:
    """COCO category id -> class id (dropped ones absent), and class names (background first).

    Merged classes come first, in the order given, then the remaining categories by id.
    """
    by_name: dict[str, int] = {}
    for c in categories:
        by_name[str(c["name"])] = int(c["id"])
    known = ", ".join(sorted(by_name))
    for name in list(drops) + [m for _, ms in merges for m in ms]:
        if name not in by_name:
            raise UsageError(f"{where}: unknown category {name!r} in `merge`/`drop` (known: {known})")
    used: dict[str, str] = {}
    for target, members in merges:
        for m in members:
            if m in used:
                raise UsageError(f"merge: category {m!r} is merged twice ({used[m]}, {target})")
            if m in drops:
                raise UsageError(f"merge: category {m!r} is also dropped")
            used[m] = target
    names = ["background"]
    mapping: dict[int, int] = {}
    for target, members in merges:
        if target in names:
            raise UsageError(f"merge: class {target!r} given twice")
        names.append(target)
        for m in members:
            mapping[by_name[m]] = len(names) - 1
    for c in sorted(categories, key=lambda c: int(c["id"])):
        name = str(c["name"])
        if name in used or name in drops:
            continue
        if name in names:
            raise UsageError(f"merge: class name {name!r} collides with an existing category")
        names.append(name)
        mapping[int(c["id"])] = len(names) - 1
    if len(names) > 256:
        raise UsageError(f"{where}: more than 255 classes")
    return mapping, names


# -- drawing ------------------------------------------------------------------------------
def draw_annotation(layout: np.ndarray, ann: dict[str, Any], cid: int, where: str) -> tuple[float, ...] | None:
    """Draw one annotation into ``layout``; return its box [x, y, w, h] (None if it covers nothing)."""
    h, w = layout.shape
    seg = ann.get("segmentation")
    bbox = ann.get("bbox")
    mask: np.ndarray | None = None
    if seg is not None and not isinstance(seg, (dict, list)):
        raise DataError(f"{where}: segmentation must be polygons (a list) or an RLE (an object), got "
                        f"{type(seg).__name__} {seg!r:.40}")
    if isinstance(seg, dict):
        mask = decode_rle(seg, where)
        if mask.shape != (h, w):
            raise DataError(f"{where}: RLE size {mask.shape[1]}x{mask.shape[0]} differs from its image ({w}x{h})")
    elif isinstance(seg, list) and seg:
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in seg:
            try:
                pts = [float(v) for v in poly]
            except (TypeError, ValueError):
                raise DataError(f"{where}: a polygon must be a flat list [x1, y1, x2, y2, ...]") from None
            if len(pts) < 6 or len(pts) % 2:
                raise DataError(f"{where}: a polygon needs at least 3 points (an even count of numbers)")
            draw.polygon(list(zip(pts[0::2], pts[1::2])), fill=1, outline=1)
        mask = np.asarray(canvas, dtype=bool)
    if mask is not None:
        layout[mask] = cid
        if bbox is None:
            ys, xs = np.nonzero(mask)
            if ys.size == 0:
                return None
            return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
    if bbox is None:
        raise DataError(f"{where}: annotation {ann.get('id')} has neither bbox nor segmentation")
    x, y, bw, bh = coco_box(bbox, (h, w), where)  # partly outside: drawn clipped to the image
    if mask is None and (bw == 0 or bh == 0):
        raise DataError(f"{where}: bbox {[x, y, bw, bh]} has zero size and no segmentation: its object would "
                        "cover no pixel")
    if mask is None:
        x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
        x1, y1 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
        if x1 > x0 and y1 > y0:
            layout[y0:y1, x0:x1] = cid
    return x, y, bw, bh


def load_coco(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path}: no such COCO JSON file")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not a COCO file (needs lists \"images\", \"annotations\", \"categories\")")
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: every category needs an \"id\" and a \"name\"")
        coco_id(c["id"], "category id", str(path))
    return data


def resolve_image(images_dir: Path, file_name: str) -> Path:
    """The image file for a COCO file_name: as given under images_dir, else its base name there or in images/."""
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name,
                      images_dir / "images" / file_name, images_dir / "images" / Path(file_name).name):
        if candidate.is_file():
            return candidate
    return images_dir / file_name


def coco_sources(path: Path, images_dir: Path, mapping: dict[int, int], data: dict[str, Any]) -> list[Source]:
    """One source per COCO image; annotations of unknown categories or images are refused."""
    known_cats = {coco_id(c["id"], "category id", str(path)) for c in data["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    image_ids = set()
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: every image needs an \"id\" and a \"file_name\"")
        image_ids.add(im["id"])
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise DataError(f"{path}: every annotation needs \"image_id\" and \"category_id\"")
        where = f"{path} (annotation {ann.get('id')})"
        coco_id(ann["category_id"], "category_id", where)
        coco_id(ann["image_id"], "image_id", where)
        if ann["category_id"] not in known_cats:
            raise DataError(f"{path}: annotation {ann.get('id')} has category_id {ann['category_id']} "
                            "not listed in \"categories\"")
        if ann["image_id"] not in image_ids:
            raise DataError(f"{path}: annotation {ann.get('id')} refers to image_id {ann['image_id']} "
                            "not listed in \"images\"")
        by_image.setdefault(ann["image_id"], []).append(ann)

    def loader(im: dict[str, Any]):
        def load() -> list[Sample]:
            file = resolve_image(images_dir, str(im["file_name"]))
            image = read_image(file)
            h, w = image.shape[:2]
            where = f"{path} (image {im['id']})"
            if coco_size(im, "width", w, where) != w or coco_size(im, "height", h, where) != h:
                raise DataError(f"{file}: image is {w}x{h} but {path.name} says {im.get('width')}x{im.get('height')}")
            layout = np.zeros((h, w), dtype=np.uint8)
            boxes = []
            for ann in by_image.get(im["id"], []):
                cid = mapping.get(int(ann["category_id"]))
                if cid is None:
                    continue  # a dropped category
                box = draw_annotation(layout, ann, cid, f"{path} (annotation {ann.get('id')})")
                if box is not None:
                    boxes.append((cid, box))
            return [Sample(image, layout, str(file), boxes)]

        return load

    return [Source(f"{im['id']}:{im['file_name']}", str(im["file_name"]), loader(im)) for im in data["images"]]
