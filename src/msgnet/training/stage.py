"""What a stage is to the training loop, and the pieces of data handling the loop and the stages share.

A stage (:class:`Stage`, usually a :class:`BaseStage` subclass) says what to optimise and how to
score it; :func:`msgnet.training.loop.train` does the rest. Data order is a pure function of
``(seed, epoch)`` (:func:`epoch_permutation`), which is what makes a resumed run continue bit for bit.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from msgnet.io import atomic_write_text
from msgnet.training import distributed as D

Batch = Any


@runtime_checkable
class Stage(Protocol):
    """What the loop needs from a stage. Subclass :class:`BaseStage` for the optional hooks.

    Attributes:
        name: sub-directory of the run directory for this stage's files.
        kind: the model kind written into ``config.json`` (e.g. ``"vqvae"``).
        config: the model's component config (a dataclass), saved as ``config.json``.
        model: the ``nn.Module`` to optimise (moved to the device and, under DDP,
            wrapped by the loop; the stage keeps the unwrapped module).
    """

    name: str
    kind: str
    config: Any
    model: nn.Module

    def training_step(self, model: nn.Module, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss to minimise for one (per-rank) batch and metrics to log.

        ``model`` is the module to call (DDP-wrapped under torchrun; call it, do not
        reach into ``self.model`` for the forward pass, or gradients will not be
        synchronised). ``batch`` is already on the device. Metric values may be floats
        or 0-d tensors; the loop averages them over each logging interval (rank 0's).
        """

    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        """Validation metrics over ``batches`` (the unwrapped model, eval mode, no_grad, rank 0)."""

    def write_images(self, model: nn.Module, batch: Batch, path: Path) -> None:
        """Write a PNG grid for a fixed validation batch to ``path`` (rank 0; may do nothing)."""

    def on_epoch_end(self, model: nn.Module, epoch: int, dist: D.DistInfo) -> dict[str, float]:
        """Called on every rank after the last step of each epoch (e.g. dead codes). Returns metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Extra stage state to checkpoint (tensors, numbers, plain containers only)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def finalize(self, model: nn.Module, train_set: Any, stage_dir: Path) -> nn.Module:
        """The module to save, made from the trained (selected) one (rank 0, after the last step; e.g. a
        short fine-tune). Called again when a finished stage is resumed, on the same selected weights."""


class BaseStage:
    """Defaults for the optional parts of :class:`Stage`."""

    name: str = "stage"
    kind: str = "model"
    selection_metric: str = "loss"  # the validation metric (lower is better) that picks kept weights

    def write_images(self, model: nn.Module, batch: Batch, path: Path) -> None:
        return None

    def on_epoch_end(self, model: nn.Module, epoch: int, dist: D.DistInfo) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def finalize(self, model: nn.Module, train_set: Any, stage_dir: Path) -> nn.Module:
        return model


@dataclass
class TrainResult:
    """How a :func:`train` call ended."""

    model_dir: Path  # RUN_DIR/<stage>/ with model.safetensors + config.json
    step: int
    total_steps: int
    stopped_early: bool = False  # the max_minutes budget ran out, or validation stopped improving
    metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and python; call before building the model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of ``epoch``: a permutation of range(n), a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def collate(items: list[Any]) -> Batch:
    """Stack a list of tensors, or of tuples of tensors, into a tensor / tuple of tensors."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(items)
    if isinstance(first, (tuple, list)):
        return tuple(torch.stack([torch.as_tensor(it[k]) for it in items]) for k in range(len(first)))
    raise TypeError(f"dataset items must be tensors or tuples of tensors, got {type(first).__name__}")


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return tuple(b.to(device, non_blocking=True) for b in batch)


def iterate_batches(dataset: Any, batch_size: int, limit: int = 0) -> Iterator[Batch]:
    """Batches of ``dataset`` in order (the first ``limit`` items if ``limit`` > 0)."""
    n = len(dataset) if limit <= 0 else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, n))])


class MetricsLog:
    """``metrics.csv``: one row per log step / validation / epoch end; columns grow as needed.

    Rewritten atomically on every append (a few thousand rows at most), so it is never
    half-written; on resume, rows after the checkpoint's step are dropped.
    """

    FIXED = ["step", "epoch", "split", "time_s", "lr"]

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict[str, str]] = []
        self.columns = list(self.FIXED)
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                for col in reader.fieldnames or []:
                    if col not in self.columns:
                        self.columns.append(col)
                self.rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]

    def append(self, row: dict[str, Any]) -> None:
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def gather_batch(dataset: Any, indices: torch.Tensor) -> Batch:
    """A batch in one indexing operation where the dataset offers it, else item by item."""
    if hasattr(dataset, "batch_of"):
        return dataset.batch_of(indices)
    return collate([dataset[int(i)] for i in indices])


def scalar(v: Any) -> float:
    """A logged value (a tensor of any shape, or a number) as one float."""
    return float(v.detach().float().mean().item()) if isinstance(v, torch.Tensor) else float(v)
