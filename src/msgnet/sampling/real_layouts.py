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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from msgnet.augmentation.copy_paste import CutObject, cut_objects, paste_object
from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.data.format import open_dataset
from msgnet.data.rules import layout_keeps_rule
from msgnet.data.torch_dataset import load_split_ids

TRIES = 20  # redraws before falling back to the real layout as it is


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
