"""Which real images a generator was trained on: the run's record and a generated set's copy of it.

A low-data benchmark (``msgnet eval augment --real-subset N``) is only fair if the generator
behind the synthetic images saw no real image that the benchmark's U-Net does not also train
on. So the training ids travel with the models and then with every set sampled from them:

- ``RUN/dataset.json`` ``source``: ``training_data`` (resolved dataset path), ``training_ids``
  (the train-split image ids used, all of them without a subset) and ``training_subset``
  (``--train-subset N`` or null); written by :func:`msgnet.sampling.run.record_training_data`.
- a generated set's ``dataset.json`` ``source.generator_training``:
  ``{"run", "dataset", "split": "train", "ids", "subset"}``; ``ids`` is null where the run
  predates this record (unknown, so not checkable). Read it with :func:`generator_training`.

(Not to be confused with an imported set's ``provenance.json``, which names the source file
of each of *its* images.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgnet.data.format import Dataset, DatasetInfo
from msgnet.data.subsets import seeded_subset
from msgnet.errors import UsageError

TRAIN_SPLIT = "train"
GENERATOR_TRAINING_KEY = "generator_training"


@dataclass(frozen=True)
class TrainingData:
    """The real images a run trains on: a dataset folder, ids of its train split, the subset size."""

    dataset: str | None  # resolved path; None only for a record of unknown origin
    ids: list[int] | None  # None: unknown (a run recorded before ids were kept)
    subset: int | None  # --train-subset N, or None for the whole train split

    def source_fields(self) -> dict[str, Any]:
        """The keys this record takes in a run's ``dataset.json`` ``source``."""
        return {"training_data": self.dataset, "training_ids": self.ids, "training_subset": self.subset}


def choose_training_data(dataset: Dataset, subset: int | None) -> TrainingData:
    """All train ids of ``dataset``, or the seeded subset of ``subset`` of them (``--train-subset``)."""
    ids = [int(i) for i in dataset.ids(TRAIN_SPLIT)]
    if not ids:
        raise UsageError(f"{dataset.root / 'dataset.json'}: split 'train' is empty")
    if subset is not None:
        # The benchmark's --real-subset N names the very same images (msgnet.data.subsets).
        ids = seeded_subset(ids, subset, where="subset")
    return TrainingData(str(Path(dataset.root).resolve()), ids, subset)


def _int_list(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(i) for i in value]
    except (TypeError, ValueError):
        raise UsageError(f"{where}: not a list of image ids") from None


def _int_or_none(value: Any, where: str) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: not a number of images") from None


def recorded_training_data(info: DatasetInfo, where: str = "dataset.json") -> TrainingData | None:
    """The training record in a run's ``dataset.json`` (None if it names no training data at all)."""
    src = info.source
    if "training_data" not in src:
        return None
    return TrainingData(
        dataset=None if src["training_data"] is None else str(src["training_data"]),
        ids=_int_list(src.get("training_ids"), f"{where}: source.training_ids"),
        # A run recorded before subsets existed trained on the whole train split (null).
        subset=_int_or_none(src.get("training_subset"), f"{where}: source.training_subset"),
    )


def generator_training_record(run_dir: Path | str, run_info: DatasetInfo) -> dict[str, Any]:
    """``source.generator_training`` of a set sampled from the run in ``run_dir``."""
    rec = recorded_training_data(run_info)
    return {
        "run": str(Path(run_dir).resolve()),
        "dataset": rec.dataset if rec else None,
        "split": TRAIN_SPLIT,
        "ids": rec.ids if rec else None,
        "subset": rec.subset if rec else None,
    }


def generator_training(info: DatasetInfo, where: str = "dataset.json") -> dict[str, Any] | None:
    """The real images behind a generated set, or None for a real (not generated) set.

    Keys: ``run`` (str | None), ``dataset`` (resolved path of the real dataset, str | None),
    ``split`` ("train"), ``ids`` (sorted list of image ids, or None: unknown, not checkable)
    and ``subset`` (int | None). A set generated before this record existed gives ``ids`` None.
    """
    src = info.source
    if not src.get("generated"):
        return None
    rec = src.get(GENERATOR_TRAINING_KEY)
    if not isinstance(rec, dict):
        rec = {"run": src.get("run")}
    ids = _int_list(rec.get("ids"), f"{where}: source.{GENERATOR_TRAINING_KEY}.ids")
    return {
        "run": rec.get("run"),
        "dataset": rec.get("dataset"),
        "split": rec.get("split", TRAIN_SPLIT),
        "ids": None if ids is None else sorted(ids),
        "subset": _int_or_none(rec.get("subset"), f"{where}: source.{GENERATOR_TRAINING_KEY}.subset"),
    }
