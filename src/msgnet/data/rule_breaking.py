"""Layouts that break a dataset's rule on purpose: the input of the paper's §4.2 argument.

Layout-conditioned generators (pre-MSGNet, the cVQ-VAE and obj-cGAN baselines) draw whatever
layout they are given; MSGNet samples its own. To measure what the conditioned models do with
a layout the training data never showed, :func:`break_allowed_class_sets` takes a dataset
whose rule lists ``allowed_class_sets`` (Multi-MNIST ``pairs``: {6,4},{7,2},{5,1},{8,0},{9,3})
and relabels one object of every layout so that the image's class set is no longer allowed —
the digit shapes and positions stay those of real layouts, only a class changes. The result
is a msgnet dataset whose layouts serve ``msgnet sample --layouts``; its images are the
source's, unchanged, and its ``source`` says so (they no longer match the layouts).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from msgnet.data.checks import check_count, check_name, check_seed
from msgnet.data.format import DatasetWriter, ObjectAnnotation, open_dataset
from msgnet.errors import UsageError
from msgnet.layouts import layout_to_objects


def forbidden_relabel(classes: list[int], allowed: list[list[int]], object_classes: list[int],
                      rng: np.random.Generator) -> tuple[int, int] | None:
    """(index of the object to relabel, its new class) making the sorted class set not allowed;
    None if no single relabelling can (every choice lands on an allowed set)."""
    allowed_sets = {tuple(sorted(s)) for s in allowed}
    for k in rng.permutation(len(classes)):
        options = [c for c in object_classes if c != classes[k]
                   and tuple(sorted(classes[:k] + [c] + classes[k + 1:])) not in allowed_sets]
        if options:
            return int(k), int(rng.choice(options))
    return None


def _component(layout: np.ndarray, obj: ObjectAnnotation) -> np.ndarray:
    """Mask of the 8-connected component of ``obj``'s class whose tight box is ``obj.bbox``."""
    labels, n = ndimage.label(layout == obj.category_id, structure=np.ones((3, 3), dtype=bool))
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        ys, xs = sl
        if (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start) == tuple(obj.bbox):
            return labels == idx
    raise AssertionError(f"no component with box {obj.bbox}")  # layout_to_objects made it from this layout


def break_allowed_class_sets(source: Path | str, out: Path | str, seed: int = 0, split: str = "train",
                             num: int | None = None, overwrite: bool = False) -> Path:
    """Write ``out``: the first ``num`` layouts of ``source``'s ``split``, each with one object relabelled
    so that its class set breaks the rule's ``allowed_class_sets``. ``num`` None: every layout of the split."""
    check_seed("seed", seed)
    check_name("split", split)
    if num is not None:
        check_count("num", num)
    ds = open_dataset(source)
    rule = ds.info.rule or {}
    allowed = rule.get("allowed_class_sets")
    if not allowed:
        raise UsageError(f"{Path(source) / 'dataset.json'}: its rule lists no allowed_class_sets to break")
    ids = ds.ids(split)[: num or None]
    if not ids:
        raise UsageError(f"{source}: the {split} split is empty")
    object_classes = [c.id for c in ds.info.classes if c.id != 0]
    rng = np.random.default_rng(seed)
    info = replace(ds.info, name=f"{ds.info.name}-rule-broken", splits={},
                   rule=None)  # it obeys no rule: breaking one is its purpose
    info.source = {"made_by": "msgnet data break-rule", "from": str(Path(source).resolve()), "split": split,
                   "seed": seed, "broken_rule": rule,
                   "note": "layouts only: every layout has one object relabelled so that its class set is not "
                           "allowed; the images are the source's, unchanged, and do not match the layouts"}
    writer = DatasetWriter(out, info, overwrite=overwrite)
    try:
        for iid in ids:
            layout = ds.read_layout(iid).copy()
            objects = layout_to_objects(layout)
            choice = forbidden_relabel([o.category_id for o in objects], allowed, object_classes, rng)
            if choice is None:
                continue
            k, new_class = choice
            layout[_component(layout, objects[k])] = new_class
            relabelled = [ObjectAnnotation(new_class if j == k else o.category_id, o.bbox)
                          for j, o in enumerate(objects)]
            writer.add("train", ds.read_image(iid), layout, relabelled)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
