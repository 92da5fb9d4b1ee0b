"""`msgnet data info`: validate a whole dataset and summarise it (counts, classes, objects, positions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msgnet.data.checks import check_count
from msgnet.data.format import Dataset
from msgnet.data.rules import validate_rule
from msgnet.errors import DataError, UsageError
from msgnet.layouts.render import pairs_grid, save_png

POSITION_BINS = 4  # where objects sit: a 4x4 grid of box centres


@dataclass
class DatasetSummary:
    name: str
    image_size: tuple[int, int]
    channels: int
    split_counts: dict[str, int]
    class_names: list[str]
    objects_per_class: np.ndarray
    pixel_fraction: np.ndarray  # share of layout pixels per class
    objects_per_image: dict[int, int]
    centre_grid: np.ndarray  # (POSITION_BINS, POSITION_BINS) counts of box centres
    rule: dict | None
    source: dict = field(default_factory=dict)
    evaluation: tuple[str | None, str] = (None, "val")  # Dataset.evaluation_splits()
    augmentations: list[str] | None = None

    def to_text(self) -> str:
        h, w = self.image_size
        select, test = self.evaluation
        # Old sets have no test split: say so, rather than let "val" pass for a held-out test.
        role = f"select on {select}, report on {test}" if select else f"no selection split, report on {test}"
        if test == "val":
            role = "no test split: val serves as test, nothing selected on it"
        counts = dict(self.split_counts)
        counts.setdefault("test", 0)
        augment = "not declared" if self.augmentations is None else (", ".join(self.augmentations) or "none")
        lines = [
            f"dataset   {self.name}  ({w}x{h}, {self.channels} channel{'s' if self.channels > 1 else ''})",
            "splits    " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + f"  ({role})",
            f"augment   {augment}  (geometric augmentations declared valid)",
        ]
        if self.source:
            lines.append("made by   " + ", ".join(f"{k}={v}" for k, v in list(self.source.items())[:6]))
        if self.rule:
            lines.append(f"rule      {self.rule.get('description') or self.rule}")
        lines.append("classes   id  name                 objects   pixels")
        for cid, name in enumerate(self.class_names):
            lines.append(
                f"          {cid:>2}  {name[:20]:<20} {int(self.objects_per_class[cid]):>7}  "
                f"{100 * self.pixel_fraction[cid]:6.2f}%"
            )
        lines.append(
            "objects/image  " + ", ".join(f"{k}: {v}" for k, v in sorted(self.objects_per_image.items()))
        )
        lines.append(f"box centres (rows top->bottom, {POSITION_BINS}x{POSITION_BINS} cells, % of objects):")
        total = max(int(self.centre_grid.sum()), 1)
        for row in self.centre_grid:
            lines.append("          " + " ".join(f"{100 * v / total:5.1f}" for v in row))
        return "\n".join(lines)


def summarize(dataset: Dataset, preview: Path | None = None, preview_count: int = 16) -> DatasetSummary:
    """Read and validate every file of ``dataset``; optionally write a preview grid PNG."""
    info = dataset.info
    validate_rule(info.rule, str(dataset.root / "dataset.json"))
    annotations = dataset.annotations()
    all_ids = [i for ids in info.splits.values() for i in ids]
    if not all_ids:
        raise DataError(f"{dataset.root / 'dataset.json'}: the dataset is empty")
    if len(set(all_ids)) != len(all_ids):
        raise DataError(f"{dataset.root / 'dataset.json'}: an image id is listed in two splits")
    n_cls = info.num_classes
    objects_per_class = np.zeros(n_cls, dtype=np.int64)
    pixels = np.zeros(n_cls, dtype=np.int64)
    per_image: dict[int, int] = {}
    centres = np.zeros((POSITION_BINS, POSITION_BINS), dtype=np.int64)
    h, w = info.image_size
    shown_images, shown_layouts = [], []
    for iid in all_ids:
        image = dataset.read_image(iid)
        layout = dataset.read_layout(iid)
        if dataset.has_masks and dataset.mask_path(iid).exists():
            dataset.read_mask(iid)
        pixels += np.bincount(layout.ravel(), minlength=n_cls)[:n_cls]
        objs = annotations.get(iid, [])
        per_image[len(objs)] = per_image.get(len(objs), 0) + 1
        for o in objs:
            objects_per_class[o.category_id] += 1
            x, y, bw, bh = o.bbox
            cy = min(int((y + bh / 2) / h * POSITION_BINS), POSITION_BINS - 1)
            cx = min(int((x + bw / 2) / w * POSITION_BINS), POSITION_BINS - 1)
            centres[max(cy, 0), max(cx, 0)] += 1
        if len(shown_images) < preview_count:
            shown_images.append(image)
            shown_layouts.append(layout)
    if preview is not None:
        scale = max(1, 128 // max(h, w))
        save_png(pairs_grid(shown_images, shown_layouts, info.palette, columns=8), preview, scale=scale)
    return DatasetSummary(
        name=info.name,
        image_size=info.image_size,
        channels=info.channels,
        split_counts={k: len(v) for k, v in info.splits.items()},
        class_names=info.class_names,
        objects_per_class=objects_per_class,
        pixel_fraction=pixels / max(int(pixels.sum()), 1),
        objects_per_image=per_image,
        centre_grid=centres,
        rule=info.rule,
        source=info.source,
        evaluation=dataset.evaluation_splits(),
        augmentations=info.augmentations,
    )


def comparison_grid(datasets: list[Dataset], num: int = 8, split: str = "train",
                    layouts_row: bool = True) -> np.ndarray:
    """One row per dataset of its first ``num`` images of ``split``, above them (``layouts_row``)
    the first dataset's layouts in colour: the paper's Fig. 5 and 6, where row k > 0 holds the
    images a generator drew from the layouts of the first dataset (``msgnet sample --layouts``
    draws them in that dataset's order)."""
    from msgnet.layouts.render import colorize, grid

    check_count("num", num)
    if not datasets:
        raise UsageError("datasets: give at least one dataset")
    first = datasets[0]
    rows: list[list[np.ndarray]] = []
    for ds in datasets:
        if ds.info.image_size != first.info.image_size:
            raise DataError(f"{ds.root}: images are {ds.info.image_size[1]}x{ds.info.image_size[0]}, "
                            f"{first.root}'s {first.info.image_size[1]}x{first.info.image_size[0]}")
        ids = ds.info.splits.get(split, [])[:num]
        if not ids:
            raise DataError(f"{ds.root / 'dataset.json'}: no images in the {split} split")
        rows.append([ds.read_image(i) for i in ids])
    if layouts_row:
        ids = first.info.splits[split][:num]
        rows.insert(0, [colorize(first.read_layout(i), first.info.palette) for i in ids])
    width = max(len(r) for r in rows)
    blank = np.zeros((*first.info.image_size, 3), np.uint8)  # pads a dataset with fewer images
    tiles = [t for r in rows for t in r + [blank] * (width - len(r))]
    return grid(tiles, columns=width)
