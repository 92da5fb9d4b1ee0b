"""Layouts made from real ones (mask-first): the generator's own training layouts, transformed or recombined.

MSGNet samples its layouts from the LayoutPixelSNAIL; at small budgets that prior breaks the dataset's
rule in many of them (wrong object counts, overlaps). Augmentation by generation works best when the
masks come first and are made from real ones (GenSeg, Nat. Commun. 2025), so this is the other way to
choose a layout before the codes prior draws its image. Each layout is one of two recipes, chosen at
random per pair:

- **transform**: a real training layout under one of the geometric transforms dataset.json declares
  valid (the same ranges as standard augmentation; uncovered corners are background, never reflected
  objects);
- **recombine**: a real training layout keeps some of its objects and receives objects cut from
  another real training layout, each placed where it covers no object (as copy-paste places them),
  with the number kept chosen so the total stays within the rule's object count.

A layout that breaks the dataset's rule (when it declares one) is drawn again, up to ``TRIES`` times;
after that the untouched real layout is used, which obeys the rule by construction. Every layout's
recipe is recorded (``provenance``): the real ids it came from and what was done to them.

The same real objects also give the layout prior's layouts their shapes (``layout_source`` "prior-shapes",
:meth:`RealLayoutMaker.reshape`): the prior draws where objects go, of which class and how large, on a
grid coarser than the image (issue 32: a digit is a few cells there), and each drawn object becomes a
real training object of its class and nearest size, centred where the drawn one was. The annotation then
has the shapes of real objects instead of the grid's blocks, and the decoder, which learnt from real
layouts, draws under shapes like those it learnt from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from scipy import ndimage

from msgnet.augmentation.copy_paste import CutObject, cut_objects, paste_object
from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.data.format import open_dataset
from msgnet.data.rules import layout_keeps_rule
from msgnet.data.torch_dataset import load_split_ids
from msgnet.errors import UsageError
from msgnet.io import atomic_write_bytes
from msgnet.layouts import layout_to_objects

TRIES = 20  # redraws before falling back to the real layout as it is
# A drawn object takes the shape of one of this many real objects of its class nearest to it in height and
# width (chosen at random among them, so one drawn box does not always get the same shape).
NEAREST_SHAPES = 8


@dataclass
class RealLayoutMaker:
    """Makes layouts from ``layouts`` (N, H, W) uint8, the real training layouts of ids ``ids``."""

    layouts: np.ndarray
    ids: list[int]
    rule: dict[str, Any] | None
    transforms: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.layouts) == 0:
            raise ValueError("layouts made from real ones need at least one real layout")
        self.objects: list[list[CutObject]] = cut_objects(self.layouts)
        self.donors = [i for i, objs in enumerate(self.objects) if objs]
        self.shapes: dict[int, list[CutObject]] = {}  # every real object by class, for reshape()
        for obj in (o for objs in self.objects for o in objs):
            self.shapes.setdefault(obj.class_id, []).append(obj)
        self._sizes = {c: np.array([o.mask.shape for o in objs]) for c, objs in self.shapes.items()}
        # Built once; reseeded from each layout's own rng (one per pair), so a layout depends on its rng alone.
        self.augmentation = None
        if self.transforms:
            self.augmentation = StandardAugmentation(AugmentationSettings.for_dataset(self.transforms), "cpu", 0)

    def make(self, rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One layout per rng, (len(rngs), H, W) uint8, and their provenance: layout k is a pure function
        of ``rngs[k]`` (its pair's own stream, msgnet.sampling.engine)."""
        out = np.empty((len(rngs),) + self.layouts.shape[1:], dtype=np.uint8)
        provenance = [{}] * len(rngs)
        for k, rng in enumerate(rngs):
            out[k], provenance[k] = self.make_one(rng)
        return out, provenance

    def make_one(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        augmentation = self.augmentation
        if augmentation is not None:
            augmentation.generator.manual_seed(int(rng.integers(2**62)))
        base = int(rng.integers(len(self.layouts)))
        for _ in range(TRIES):
            if augmentation is not None and rng.random() < 0.5:
                made, record = self._transformed(base, augmentation)
            else:
                made, record = self._recombined(base, rng)
            if made is not None and self.obeys(made):
                return made, record
            base = int(rng.integers(len(self.layouts)))
        return self.layouts[base].copy(), {"recipe": "real", "from": self.ids[base]}

    def reshape(self, layout: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """``layout`` (a drawn one, at image size) with each object replaced by a real object of its class:
        one of the :data:`NEAREST_SHAPES` nearest in height and width, centred on the drawn object's box, where
        it neither covers nor touches an object placed before it. An object none of those fits, or of a class
        no real layout holds, is left out (a dataset's rule on object counts then has it drawn again)."""
        made = np.zeros_like(layout)
        taken = np.zeros(layout.shape, dtype=bool)  # placed objects and the pixels touching them
        height, width = layout.shape
        used: list[int] = []
        for drawn in layout_to_objects(layout):
            x, y, w, h = drawn.bbox
            sizes = self._sizes.get(drawn.category_id)
            if sizes is None:
                continue
            nearest = np.argsort(np.abs(sizes - (h, w)).sum(1), kind="stable")[:NEAREST_SHAPES]
            for j in rng.permutation(nearest):
                obj = self.shapes[drawn.category_id][int(j)]
                mh, mw = obj.mask.shape
                y0 = int(np.clip(round(y + (h - mh) / 2), 0, max(height - mh, 0)))
                x0 = int(np.clip(round(x + (w - mw) / 2), 0, max(width - mw, 0)))
                region = made[y0 : y0 + mh, x0 : x0 + mw]
                # Not touching another object either: two touching objects of a class would be one.
                if region.shape == obj.mask.shape and not taken[y0 : y0 + mh, x0 : x0 + mw][obj.mask].any():
                    region[obj.mask] = drawn.category_id
                    taken = ndimage.binary_dilation(made > 0, structure=np.ones((3, 3), dtype=bool))
                    used.append(self.ids[obj.source])
                    break
        return made, {"recipe": "prior-shapes", "shapes_from": used}

    def obeys(self, layout: np.ndarray) -> bool:
        """Whether ``layout`` holds objects and keeps the dataset's rule (if it declares one)."""
        return layout_keeps_rule(self.rule, layout)

    def _transformed(self, base: int, augmentation: StandardAugmentation) -> tuple[np.ndarray, dict[str, Any]]:
        lay = torch.from_numpy(self.layouts[base][None].astype(np.int64))
        made = augmentation.geometric_layouts(lay)[0].numpy().astype(np.uint8)
        return made, {"recipe": "transform", "from": self.ids[base], "transforms": list(self.transforms)}

    def _recombined(self, base: int, rng: np.random.Generator) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Some of ``base``'s objects kept, objects of another layout added into free space."""
        if not self.donors:
            return None, {}
        donor = self.donors[int(rng.integers(len(self.donors)))]
        own, given = self.objects[base], self.objects[donor]
        count = (self.rule or {}).get("object_count")
        low, high = (int(count["min"]), int(count["max"])) if count else (1, 10**9)
        add = min(int(rng.integers(1, len(given) + 1)), high)
        keep_low, keep_high = max(0, low - add), min(len(own), high - add)
        if keep_low > keep_high:
            return None, {}
        keep = int(rng.integers(keep_low, keep_high + 1))
        made = np.zeros_like(self.layouts[base])
        kept = sorted(int(j) for j in rng.permutation(len(own))[:keep])
        for j in kept:
            obj = own[j]
            h, w = obj.mask.shape
            made[obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w][obj.mask] = obj.class_id
        for j in rng.permutation(len(given))[:add]:
            if paste_object(None, made, given[int(j)], None, rng) is None:
                return None, {}
        return made, {"recipe": "recombine", "from": self.ids[base], "kept_objects": keep,
                      "objects_from": self.ids[donor], "added_objects": add}


def real_layout_maker(data_dir: Any, ids: list[int] | None, rule: dict[str, Any] | None,
                      transforms: tuple[str, ...]) -> RealLayoutMaker:
    """A maker over the train-split layouts ``ids`` (all of them when None) of the dataset at ``data_dir``."""
    dataset = open_dataset(data_dir)
    _, layouts = load_split_ids(dataset, "train", ids)
    used = list(ids) if ids is not None else [int(i) for i in dataset.ids("train")]
    return RealLayoutMaker(layouts, used, rule, tuple(transforms))


def write_training_layouts(path: Path, maker: RealLayoutMaker) -> None:
    """``maker``'s real layouts and their ids into ``path`` (safetensors), so that an export of the run makes
    layouts from them (and gives drawn ones their shapes) without the training set beside it."""
    tensors = {"layouts": torch.from_numpy(np.ascontiguousarray(maker.layouts)),
               "ids": torch.tensor(maker.ids, dtype=torch.int64)}
    atomic_write_bytes(path, safetensors_bytes(tensors))


def read_training_layouts(path: Path) -> tuple[np.ndarray, list[int]]:
    """What :func:`write_training_layouts` wrote: the layouts (N, H, W) uint8 and their ids."""
    try:
        tensors = load_file(str(path))
        layouts, ids = tensors["layouts"].numpy(), [int(i) for i in tensors["ids"]]
    except Exception as exc:  # a damaged or foreign file
        raise UsageError(f"{path}: unreadable training layouts ({type(exc).__name__})") from None
    if layouts.ndim != 3 or len(layouts) != len(ids):
        raise UsageError(f"{path}: holds {tuple(layouts.shape)} layouts for {len(ids)} ids")
    return layouts.astype(np.uint8), ids
