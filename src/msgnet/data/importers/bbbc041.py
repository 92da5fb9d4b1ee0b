"""`msgnet data import bbbc041`: the P. vivax malaria blood smears of BBBC041 (paper §4.3, App. A.3).

Input: the unpacked ``malaria/`` folder (training.json, test.json, images/), or one of its
JSON files. Each JSON is a list of::

    {"image": {"checksum": ..., "pathname": "/images/<name>.png", "shape": {"r": H, "c": W, "channels": 3}},
     "objects": [{"category": "ring", "bounding_box": {"minimum": {"r": y0, "c": x0},
                                                       "maximum": {"r": y1, "c": x1}}}, ...]}

(r = row = y, c = column = x.) As in the paper: the infected stages (ring, trophozoite,
schizont, gametocyte, and by default "difficult", making §4.3's five infected classes) are
merged into class 1 "infected"; red blood cells, leukocytes and the background are class 0.
Infected boxes are filled (later over earlier); images are downscaled to 256x256 and cut
into 96x96 patches overlapping by 60%. When both are given, test.json is the test split and
training.json is drawn by source image into train and val (``--val-fraction``): the official
test images are never used to select anything. A single JSON is drawn into all three splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msgnet.data.importers.common import Sample, Source
from msgnet.data.importers.imagefiles import read_image
from msgnet.errors import DataError, UsageError

INFECTED = ("ring", "trophozoite", "schizont", "gametocyte")
UNINFECTED = ("red blood cell", "leukocyte")
DIFFICULT = "difficult"
CATEGORIES = INFECTED + UNINFECTED + (DIFFICULT,)
CLASS_NAMES = ["background", "infected"]


def find_json_files(src: Path) -> list[tuple[Path, str | None]]:
    """(JSON, fixed split) pairs: the official lists of a folder (test.json fixed to test), or one given JSON."""
    if src.is_file():
        return [(src, None)]
    if not src.is_dir():
        raise UsageError(f"{src}: no such file or folder")
    train, test = src / "training.json", src / "test.json"
    if train.is_file() and test.is_file():
        return [(train, None), (test, "test")]
    found = [p for p in (train, test) if p.is_file()]
    if not found:
        raise UsageError(f"{src}: no training.json or test.json (the BBBC041 malaria/ folder)")
    return [(p, None) for p in found]


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{\"image\", \"objects\"}} entries (BBBC041)")
    if not data:
        raise DataError(f"{path}: lists no images")
    return data


def _box(obj: Any, where: str) -> tuple[str, tuple[float, float, float, float]]:
    try:
        cat = str(obj["category"])
        lo, hi = obj["bounding_box"]["minimum"], obj["bounding_box"]["maximum"]
        y0, x0, y1, x1 = float(lo["r"]), float(lo["c"]), float(hi["r"]), float(hi["c"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: an object needs \"category\" and \"bounding_box\" "
                        "{\"minimum\": {\"r\", \"c\"}, \"maximum\": {\"r\", \"c\"}}") from None
    if cat not in CATEGORIES:
        raise DataError(f"{where}: unknown category {cat!r} (BBBC041 has: {', '.join(CATEGORIES)})")
    if y1 < y0 or x1 < x0:
        raise DataError(f"{where}: bounding box maximum lies before its minimum")
    return cat, (x0, y0, x1 - x0, y1 - y0)


def bbbc041_sources(src: Path, images_root: Path | None, difficult_infected: bool = True) -> list[Source]:
    """One source per listed image; boxes parsed up front so malformed JSON fails before writing."""
    infected = set(INFECTED) | ({DIFFICULT} if difficult_infected else set())
    sources: list[Source] = []
    seen: set[str] = set()
    for path, split in find_json_files(src):
        root = images_root or path.parent
        for n, entry in enumerate(_entries(path)):
            where = f"{path} (entry {n})"
            try:
                pathname = str(entry["image"]["pathname"])
                shape = entry["image"].get("shape") or {}
                objects = entry.get("objects", [])
            except (KeyError, TypeError, AttributeError):
                raise DataError(f"{where}: needs \"image\": {{\"pathname\": ...}}") from None
            if not isinstance(objects, list):
                raise DataError(f"{where}: \"objects\" must be a list")
            boxes = [(1, box) for cat, box in (_box(o, where) for o in objects) if cat in infected]
            if pathname in seen:
                raise DataError(f"{where}: image {pathname} is listed twice")
            seen.add(pathname)
            file = root / pathname.lstrip("/")
            sources.append(Source(pathname, str(file), _loader(file, shape, boxes, where), split))
    return sources


def _loader(file: Path, shape: dict[str, Any], boxes, where: str):
    def load() -> list[Sample]:
        from msgnet.layouts.boxes import boxes_to_layout

        image = read_image(file)
        h, w = image.shape[:2]
        try:
            rh, rw = int(shape.get("r", h)), int(shape.get("c", w))
        except (TypeError, ValueError):
            raise DataError(f"{where}: \"shape\" must hold integers r and c") from None
        if (rh, rw) != (h, w):
            raise DataError(f"{file}: image is {w}x{h} but the JSON says c={rw}, r={rh}")
        # Layouts are redrawn from the scaled boxes after downscaling (sharper than nearest).
        return [Sample(image, boxes_to_layout(boxes, (h, w)), str(file), list(boxes), layout_from_boxes=True)]

    return load
