"""`msgnet data import brats`: BraTS NIfTI volumes into 2-channel (FLAIR, T1Gd) slices (paper §4.3, App. A.4).

Input: a folder of patient folders (or one patient folder), each holding
``*_flair``, ``*_t1ce`` and ``*_seg`` ``.nii``/``.nii.gz`` (BraTS 2017-2021 naming; the
2023 names ``-t2f``, ``-t1c``, ``-seg`` are accepted too).

What is written (the paper models "the brain and the background" as extra classes):

- class 0 ``outside-brain``: voxels where both FLAIR and T1Gd are zero (BraTS volumes are
  skull-stripped, so zero means outside the brain);
- class 1 ``brain``: brain tissue without tumour (``--no-brain-class`` folds it into class 0);
- classes 2, 3, 4: the tumour sub-regions, BraTS labels 1 (necrotic / non-enhancing core),
  2 (peritumoral edema), 4 (GD-enhancing tumour), in that order (``--labels 1,2,3`` for
  BraTS 2023, where enhancing tumour is 3).

Slices: axial, index ``z`` of the stored volume, even ``z`` only, and only slices that
contain tumour. Each slice is shown as ``np.rot90(volume[:, :, z])``. Intensities are
normalised per volume and modality: clipped to the 0.5-99.5 percentiles of the brain
voxels and scaled to 1..255 (outside the brain stays 0). Images are 240x240 unless
``--size`` resizes them (bilinear for images, nearest for layouts).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from msgnet.data.importers.common import Sample, Source
from msgnet.data.importers.imagefiles import one_line
from msgnet.errors import DataError, UsageError

MODALITIES = {"flair": ("flair", "t2f"), "t1ce": ("t1ce", "t1c", "t1gd"), "seg": ("seg",)}
TUMOUR_NAMES = ("necrotic-core", "edema", "enhancing")
DEFAULT_LABELS = (1, 2, 4)
PERCENTILES = (0.5, 99.5)
# Geometric augmentations valid for axial slices. "flip" for the brain's left-right symmetry
# (tumours occur on either side). No "rotate90": anatomy has an up (frontal lobe at the top
# of every slice), and a quarter-turned slice is one no scan shows. Note that the vocabulary's
# "flip" also covers the up-down flip, which is no more anatomical than a quarter turn; a
# consumer that wants only plausible slices should flip brats left-right only.
AUGMENTATIONS = ("flip", "affine")
_NIFTI = re.compile(r"^(?P<stem>.+?)[-_](?P<mod>[a-z0-9]+)\.nii(\.gz)?$", re.IGNORECASE)


def class_names(brain_class: bool) -> list[str]:
    return (["outside-brain", "brain"] if brain_class else ["background"]) + list(TUMOUR_NAMES)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _NIFTI.match(p.name))


def patient_folders(src: Path) -> list[Path]:
    """Folders holding NIfTI files: ``src`` itself, or its sub-folders (two levels deep)."""
    if not src.is_dir():
        raise UsageError(f"{src}: no such folder (expected BraTS patient folders)")
    if _nifti_files(src):
        return [src]
    found = []
    for sub in sorted(p for p in src.iterdir() if p.is_dir()):
        if _nifti_files(sub):
            found.append(sub)
        else:
            found.extend(s for s in sorted(p for p in sub.iterdir() if p.is_dir()) if _nifti_files(s))
    if not found:
        raise UsageError(f"{src}: no patient folders with .nii/.nii.gz files found")
    return found


def modality_files(folder: Path) -> dict[str, Path]:
    """flair / t1ce / seg file of one patient; a missing or doubled modality is refused."""
    out: dict[str, Path] = {}
    for p in _nifti_files(folder):
        mod = _NIFTI.match(p.name).group("mod").lower()  # type: ignore[union-attr]
        for key, aliases in MODALITIES.items():
            if mod in aliases:
                if key in out:
                    raise DataError(f"{folder}: two {key} volumes ({out[key].name}, {p.name})")
                out[key] = p
    for key, aliases in MODALITIES.items():
        if key not in out:
            raise DataError(f"{folder}: missing the {key} volume (*_{aliases[0]}.nii.gz)")
    return out


def _load_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many kinds for truncated or foreign files
        raise DataError(f"{path}: unreadable NIfTI ({one_line(exc)})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(data.shape)}")
    return data


def normalise(volume: np.ndarray, brain: np.ndarray, where: str) -> np.ndarray:
    """Clip to the brain's 0.5-99.5 percentiles and scale to 1..255; outside the brain is 0."""
    vals = volume[brain].astype(np.float64)
    lo, hi = np.percentile(vals, PERCENTILES)
    if not np.isfinite([lo, hi]).all():
        raise DataError(f"{where}: non-finite intensities")
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((volume.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 254.0 + 1.0
    return np.where(brain, np.round(out), 0).astype(np.uint8)


def patient_samples(folder: Path, labels: Sequence[int], brain_class: bool) -> list[Sample]:
    """The even, tumour-bearing axial slices of one patient as 2-channel images with layouts."""
    files = modality_files(folder)
    flair, t1ce, seg = (_load_volume(files[k]) for k in ("flair", "t1ce", "seg"))
    if not flair.shape == t1ce.shape == seg.shape:
        raise DataError(f"{folder}: volume shapes differ (flair {flair.shape}, t1ce {t1ce.shape}, seg {seg.shape})")
    if not np.issubdtype(seg.dtype, np.integer):
        if not np.all(np.isfinite(seg)) or not np.all(seg == np.round(seg)):
            raise DataError(f"{files['seg']}: segmentation labels must be whole numbers")
    seg = seg.astype(np.int64)
    allowed = {0, *labels}
    present = set(np.unique(seg).tolist())
    unknown = sorted(present - allowed)
    if unknown:
        hint = " (BraTS 2023 labels? try `labels` 1,2,3)" if unknown == [3] and 4 not in present else ""
        raise DataError(f"{files['seg']}: label {unknown[0]} is outside the declared labels "
                        f"0,{','.join(map(str, labels))}{hint}")
    brain = (flair != 0) | (t1ce != 0)
    if not brain.any():
        raise DataError(f"{folder}: FLAIR and T1Gd are all zero (no brain)")
    channels = [normalise(flair, brain, str(files["flair"])), normalise(t1ce, brain, str(files["t1ce"]))]
    # class map: tumour labels -> 2.. (or 1.. without the brain class), brain -> 1, outside -> 0
    first = 2 if brain_class else 1
    lut = np.zeros(max(allowed) + 1, dtype=np.uint8)
    for k, lab in enumerate(labels):
        lut[lab] = first + k
    classes = lut[seg]
    if brain_class:
        classes[(classes == 0) & brain] = 1
    samples = []
    for z in range(0, seg.shape[2], 2):
        if not (seg[:, :, z] > 0).any():
            continue
        image = np.stack([np.rot90(c[:, :, z]) for c in channels], axis=2)
        layout = np.rot90(classes[:, :, z])
        samples.append(Sample(np.ascontiguousarray(image), np.ascontiguousarray(layout), f"{folder}@z={z}"))
    return samples


def brats_sources(src: Path, labels: Sequence[int] = DEFAULT_LABELS, brain_class: bool = True) -> list[Source]:
    """One source per patient (its slices stay in one split); modalities are checked up front."""
    if len(labels) != 3 or len(set(labels)) != 3 or min(labels) < 1 or max(labels) > 255:
        raise UsageError(f"labels: expected three distinct positive labels, got {labels}")
    folders = patient_folders(src)
    for f in folders:
        modality_files(f)

    def loader(folder: Path):
        return lambda: patient_samples(folder, labels, brain_class)

    return [Source(str(f.relative_to(src)) if f != src else src.name, str(f), loader(f)) for f in folders]
