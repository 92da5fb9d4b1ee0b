"""Layouts given to generate from (pre-MSGNet): a msgnet dataset folder or a COCO json of boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from msgnet.data.format import DatasetInfo, ObjectAnnotation, open_dataset
from msgnet.errors import UsageError
from msgnet.layouts import boxes_to_layout
from msgnet.layouts.boxes import coco_box, coco_id, coco_size
from msgnet.sampling.settings import GenerationSettings


def load_given_layouts(source: str, info: DatasetInfo) -> list[np.ndarray]:
    """Full-resolution class maps from a msgnet dataset folder or a COCO json of boxes."""
    path = Path(source)
    h, w = info.image_size
    known = {c.id for c in info.classes}
    if path.is_dir():
        ds = open_dataset(path)
        if ds.info.image_size != (h, w):
            raise UsageError(f"{path}: layouts are {ds.info.image_size[1]}x{ds.info.image_size[0]}, the run makes {w}x{h}")
        layouts = [ds.read_layout(i) for split in ("train", "val") for i in ds.info.splits.get(split, [])]
        bad = sorted({int(c) for lay in layouts for c in np.unique(lay)} - known)
        if bad:
            raise UsageError(f"{path}: class id {bad[0]} is not a class of the trained run")
        return layouts
    if path.is_file():
        try:
            coco = json.loads(path.read_text())
            images = {coco_id(im["id"], "image id", str(path)): im for im in coco["images"]}
            anns = coco["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            raise UsageError(f"{path}: not a COCO json with images and annotations") from None
        per_image: dict[int, list[ObjectAnnotation]] = {i: [] for i in images}
        for a in anns:
            where = f"{path} (annotation {a.get('id') if isinstance(a, dict) else a!r:.20})"
            if not isinstance(a, dict):
                raise UsageError(f"{where}: an annotation must be an object")
            cid = coco_id(a.get("category_id"), "category_id", where)
            if cid not in known or cid == 0:
                raise UsageError(f"{path}: category_id {cid} is not an object class of the trained run")
            im = images.get(coco_id(a.get("image_id"), "image_id", where))
            if im is None:
                raise UsageError(f"{path}: annotation {a.get('id')} names an unknown image")
            iw, ih = coco_size(im, "width", w, where), coco_size(im, "height", h, where)
            x, y, bw, bh = coco_box(a.get("bbox"), (ih, iw), where)
            sx, sy = w / iw, h / ih
            per_image[int(a["image_id"])].append(ObjectAnnotation(cid, (x * sx, y * sy, bw * sx, bh * sy)))  # type: ignore[arg-type]
        return [boxes_to_layout(objs, (h, w)) for _, objs in sorted(per_image.items())]
    raise UsageError(f"{path}: no such dataset folder or COCO json")


def given_layouts(settings: GenerationSettings, layouts: Sequence[np.ndarray] | None,
                  info: DatasetInfo) -> list[np.ndarray] | None:
    """The layouts to generate images for: ``layouts`` handed over in memory (``MSGNet.sample(layouts=...)``),
    else those of ``settings.layouts_from``, checked against the run; None when none are given."""
    if layouts is not None:
        if settings.layout_source != "prior" or settings.layouts_from is not None:
            raise UsageError("layouts: given in memory; leave layout_source at 'prior' and layouts_from unset")
        given, where = [np.asarray(layout, dtype=np.uint8) for layout in layouts], "layouts"
        bad = [g.shape for g in given if g.shape != tuple(info.image_size)]
        if bad:
            raise UsageError(f"layouts: a layout is {bad[0]}, the run makes {tuple(info.image_size)}")
        unknown = sorted({int(c) for g in given for c in np.unique(g)} - {c.id for c in info.classes})
        if unknown:
            raise UsageError(f"layouts: class id {unknown[0]} is not a class of the run")
        if not given:
            raise UsageError("layouts: none given")
    elif settings.layouts_from is not None:
        given, where = load_given_layouts(settings.layouts_from, info), settings.layouts_from
        if not given:
            raise UsageError(f"{where}: holds no layouts")
    else:
        return None
    if len(given) < settings.num and not settings.repeat_layouts:
        raise UsageError(f"{where}: holds {len(given)} layouts, fewer than `num` {settings.num} "
                         "(`repeat_layouts` reuses them in turn)")
    return given
