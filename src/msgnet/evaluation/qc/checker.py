"""Quality control of generated pairs against the real dataset they imitate.

:class:`QualityControl` is prepared once per real dataset: it loads (or trains and caches) the
consistency segmenter, indexes the real training images for the memorisation search, scores
the real validation pairs and derives the thresholds from them
(:mod:`msgnet.evaluation.qc.thresholds`). Then :meth:`QualityControl.score` scores any batch of pairs and
:meth:`QualityControl.reasons` says why each would be rejected. ``msgnet qc`` scores a
generated set on disk; ``msgnet sample --qc`` scores every batch as it is sampled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Sequence

import numpy as np
import torch

from msgnet.data.format import Dataset
from msgnet.data.rules import validate_rule
from msgnet.errors import UsageError
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.evaluation.stats import wilson_interval
from msgnet.evaluation.qc.memorisation import NearestReal, pixel_vectors
from msgnet.evaluation.qc.scores import (ScoreTable, consistency_columns, image_statistics, rule_column,
                                         swap_partners)
from msgnet.evaluation.qc.segmenter import (QC_PROTOCOL, Segmenter, load_segmenter, save_segmenter, train_segmenter,
                                 training_fingerprint)
from msgnet.evaluation.qc.thresholds import (MIN_FOREGROUND, THRESHOLD_RANGES, Thresholds, calibrate, judged_mask,
                                             parse_overrides, real_distribution)
from msgnet.locks import writing
from msgnet.run_dir import RunDir

logger = logging.getLogger(__name__)

# The thresholds a user may set by hand, as QCSettings fields (None: derived from the real data).
THRESHOLD_FIELDS = tuple(THRESHOLD_RANGES)


@dataclass(frozen=True)
class QCSettings:
    """How quality control is set up. A threshold given (``min_dice=0.5``, or in ``overrides``, which
    also takes ``allow_empty``) is set by hand; the others are derived from the real validation pairs
    (see Thresholds). Every value is checked here, naming its field."""

    real_keep: float = 0.95
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    protocol: UNetProtocol = QC_PROTOCOL  # of the consistency segmenter
    min_dice: float | None = None
    min_found_fraction: float | None = None
    min_pixel_distance: float | None = None
    min_feature_distance: float | None = None
    min_object_pixels: int | None = None
    min_contrast: float | None = None
    max_saturation: float | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.real_keep) or not 0.0 < self.real_keep <= 1.0:
            raise UsageError(f"real_keep: must be in (0, 1], got {self.real_keep!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise UsageError(f"seed: a whole number, not {self.seed!r}")
        if not isinstance(self.protocol, UNetProtocol):
            raise UsageError(f"protocol: a UNetProtocol, not {type(self.protocol).__name__}")
        self.protocol.validate()
        if not isinstance(self.overrides, dict):
            raise UsageError(f"overrides: a dict of thresholds, not {type(self.overrides).__name__}")
        given = {name: getattr(self, name) for name in THRESHOLD_FIELDS if getattr(self, name) is not None}
        clash = [n for n, v in given.items() if n in self.overrides and self.overrides[n] != v]
        if clash:
            raise UsageError(f"{clash[0]}: given twice with two values (as a field and in overrides)")
        merged = {**self.overrides, **given}
        known = {f.name for f in dataclasses.fields(Thresholds)} - {"percentile", "origin"}
        for name, value in merged.items():
            if name not in known:
                raise UsageError(f"overrides: unknown threshold {name!r} (known: {', '.join(sorted(known))})")
            if name != "allow_empty" and not _is_number(value):
                raise UsageError(f"{name}: a number, not {value!r}")
        object.__setattr__(self, "overrides", parse_overrides(merged))
        for name in THRESHOLD_FIELDS:
            object.__setattr__(self, name, self.overrides.get(name))

    def to_json(self) -> dict[str, Any]:
        return {"real_keep": self.real_keep, "overrides": dict(self.overrides), "seed": self.seed,
                "segmenter_protocol": self.protocol.to_json()}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def qc_protocol(steps: int | None = None) -> UNetProtocol:
    """The consistency segmenter's protocol, trained for at least ``steps`` steps (None: as declared)."""
    if steps is None:
        return QC_PROTOCOL
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise UsageError(f"qc_steps: must be a whole number, at least 1, got {steps!r}")
    return dataclasses.replace(QC_PROTOCOL, min_steps=steps)


def writing_segmenter(segmenter_dir: Path) -> ContextManager[None]:
    """The lock to hold while a segmenter is trained into ``segmenter_dir``: its run's, where that is a
    run's own ``RUN/qc/segmenter`` (one writer per run); elsewhere, a cache no run owns, none."""
    root = Path(segmenter_dir).parent.parent
    if RunDir(root).qc_segmenter == Path(segmenter_dir) and root.is_dir():
        return writing(root)
    return contextlib.nullcontext()


GRADED_LABEL = {"min_dice": "dice", "min_found_fraction": "found_fraction"}


def images_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


class QualityControl:
    """Scores image + annotation pairs against one real dataset and decides which to keep."""

    def __init__(self, real: Dataset, segmenter: Segmenter, reference: NearestReal, settings: QCSettings,
                 progress: bool = True):
        self.real = real
        self.segmenter = segmenter
        self.reference = reference
        self.settings = settings
        self.rule = validate_rule(real.info.rule, str(real.root / "dataset.json"))
        self.num_classes = real.info.num_classes
        self.progress = progress
        val = real.load_split("val")
        self.real_scores = self.score(*val)
        min_foreground = float(settings.overrides.get("min_foreground", MIN_FOREGROUND))
        self.swapped_scores = self.swapped(*val, judged_mask(self.real_scores, min_foreground))
        self.thresholds: Thresholds = calibrate(self.real_scores, settings.real_keep, settings.overrides,
                                                self.swapped_scores)
        self.real_val_kept = float(self.thresholds.kept(self.real_scores).mean())
        # Out of sample: the thresholds were fitted to val; the test split, where there is one, checks them.
        self.real_test_kept: float | None = None
        if real.info.splits.get("test"):
            self.real_test_kept = float(self.thresholds.kept(self.score(*real.load_split("test"))).mean())

    @classmethod
    def prepare(cls, real: Dataset, segmenter_dir: Path, settings: QCSettings, device: torch.device,
                reference_ids: Sequence[int] | None = None, progress: bool = True) -> "QualityControl":
        """Load or train the segmenter (cached in ``segmenter_dir``) and index the reference images.

        ``reference_ids``: the real training images the segmenter learns from and the near-copy
        search looks through (the generator's own training images when known); default the whole
        train split.
        """
        if not real.info.splits.get("val"):
            raise UsageError(f"{real.root / 'dataset.json'}: quality control derives its thresholds from the "
                             "'val' split, which is empty here")
        train_ids = [int(i) for i in real.ids("train")]
        images, layouts = real.load_split("train")
        rows = np.arange(len(train_ids))
        if reference_ids is not None:
            row_of = {iid: r for r, iid in enumerate(train_ids)}
            missing = [i for i in reference_ids if int(i) not in row_of]
            if missing:
                raise UsageError(f"{real.root}: image {missing[0]} (a generator training image) is not in its "
                                 "train split")
            rows = np.array([row_of[int(i)] for i in reference_ids], dtype=np.int64)
        # The segmenter learns from the generator's own training images only: a run on a subset
        # of N images must not select its pairs with labels of images it was never given.
        used_ids = [train_ids[r] for r in rows]
        fingerprint = training_fingerprint(real.root, used_ids, settings.protocol, settings.seed)
        segmenter = load_segmenter(segmenter_dir, fingerprint, device)
        if segmenter is None:
            with writing_segmenter(segmenter_dir):  # a run's segmenter is written under the run's lock
                logger.info(f"qc: training the consistency segmenter on {len(used_ids)} real training pairs "
                            f"(cached in {segmenter_dir})")
                segmenter = train_segmenter((images[rows], layouts[rows]), real.load_split("val"),
                                            real.info.num_classes, device, fingerprint, settings.protocol,
                                            settings.seed, progress, geometric=real.info.augmentations)
                save_segmenter(segmenter, segmenter_dir)
        ref_images = images_nchw(images[rows])
        _, feats = segmenter.segment(ref_images)
        reference = NearestReal(np.asarray(train_ids, dtype=np.int64)[rows],
                                pixel_vectors(ref_images).to(device), feats)
        return cls(real, segmenter, reference, settings, progress)

    def score(self, images: np.ndarray, layouts: np.ndarray) -> ScoreTable:
        """Scores of pairs: images (N, H, W, C) uint8, layouts (N, H, W) uint8."""
        h, w = self.real.info.image_size
        if images.shape[1:3] != (h, w) or images.shape[3] != self.real.info.channels:
            raise UsageError(f"pairs of shape {images.shape[1:]} do not match the real data "
                             f"({h}x{w}, {self.real.info.channels} channel(s))")
        x = images_nchw(images)
        pred, feats = self.segmenter.segment(x)
        cols = consistency_columns(pred, layouts, self.num_classes)
        cols["rule_broken"] = rule_column(self.rule, layouts)
        cols.update(self.reference.nearest(pixel_vectors(x).to(self.segmenter.device), feats))
        cols["contrast"], cols["saturation"] = image_statistics(images)
        return ScoreTable(cols)

    def swapped(self, images: np.ndarray, layouts: np.ndarray, judged: np.ndarray) -> ScoreTable:
        """Consistency scores of real images paired with other real layouts (among the ``judged`` pairs):
        what a bad pair looks like, to check the consistency cuts against."""
        rows = np.flatnonzero(judged)
        partners = swap_partners(layouts[rows], seed=self.settings.seed)
        if not len(partners):
            return ScoreTable()
        image_rows, layout_rows = rows[partners[:, 0]], rows[partners[:, 1]]
        pred, _ = self.segmenter.segment(images_nchw(images[image_rows]))
        return ScoreTable(consistency_columns(pred, layouts[layout_rows], self.num_classes))

    def reasons(self, table: ScoreTable) -> list[list[str]]:
        return self.thresholds.reasons(table)

    def describe(self) -> dict[str, Any]:
        """Settings, thresholds and the real distributions they came from (for qc.json and dataset.json)."""
        return {
            "settings": self.settings.to_json(),
            "real": str(self.real.root.resolve()),
            "segmenter": {k: v for k, v in self.segmenter.record.items() if k != "protocol"},
            "memorisation_reference_images": int(len(self.reference.ids)),
            "thresholds": self.thresholds.to_json(),
            "real_validation": {"pairs": len(self.real_scores), "kept": self.real_val_kept,
                                "judged": int(self.thresholds.judged(self.real_scores).sum()),
                                "distribution": real_distribution(self.real_scores, self.thresholds)},
            "real_test_kept": self.real_test_kept,
        }

    def describe_text(self) -> str:
        t = self.thresholds
        dist = real_distribution(self.real_scores, t)
        lines = [f"qc thresholds (real validation pairs: {len(self.real_scores)}, "
                 f"{100 * self.real_val_kept:.1f}% of them kept"
                 + (f"; real test pairs kept: {100 * self.real_test_kept:.1f}%" if self.real_test_kept is not None
                    else "") + ")"]
        for name, col in (("min_dice", "dice"), ("min_found_fraction", "found_fraction"),
                          ("min_pixel_distance", "pixel_distance"), ("min_feature_distance", "feature_distance")):
            d = dist[col]
            lines.append(f"  {col:<17} reject below {getattr(t, name):.4f}  ({t.origin.get(name)}; real p1 "
                         f"{d['p1']:.4f}, p5 {d['p5']:.4f}, p25 {d['p25']:.4f}, median {d['p50']:.4f})")
        swapped = t.swapped.get("rejected", {})
        if swapped:
            lines.append(f"  swapped pairs     {t.swapped['pairs']} real images with another real layout: "
                         + ", ".join(f"{GRADED_LABEL[k]} rejects {100 * v:.0f}%" for k, v in swapped.items()))
        judged = int(t.judged(self.real_scores).sum())
        lines.append(f"  near-empty        a layout with < {100 * t.min_foreground:g}% object pixels (real validation: "
                     f"{len(self.real_scores) - judged} of {len(self.real_scores)}) skips dice and found_fraction; "
                     f"rejected when the segmenter sees > {100 * t.max_empty_prediction:.2f}% object pixels")
        lines.append(f"  smallest object   reject below {t.min_object_pixels} px ({t.origin.get('min_object_pixels')})")
        lines.append(f"  contrast          reject below {t.min_contrast:.4f} ({t.origin.get('min_contrast')})")
        lines.append(f"  saturation        reject above {t.max_saturation:.4f} ({t.origin.get('max_saturation')})")
        lines.append(f"  empty layouts     {'allowed' if t.allow_empty else 'rejected'}")
        lines.append(f"  rule              {'none declared' if not self.rule else 'a pair that breaks it is rejected'}")
        return "\n".join(lines)


def pass_rate(kept: int, scored: int) -> dict[str, Any]:
    lo, hi = wilson_interval(kept, scored)
    return {"kept": kept, "scored": scored, "rate": kept / scored if scored else float("nan"),
            "ci95": [lo, hi], "interval": "Wilson score, 95%"}
