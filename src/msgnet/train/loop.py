"""The one training loop shared by every stage (VQ-VAE, latent prior, layout prior).

A *stage* says what to optimise and how to score it; the loop does everything else:
device, seeding, Adam, the learning-rate schedule, data order, DDP, the progress bar,
``metrics.csv``, periodic image grids, validation, checkpoints, exact resume, Ctrl-C,
the wall-time budget and the final save. Writing a new stage::

    class MyStage(BaseStage):
        name = "prior"                      # files go to RUN_DIR/prior/
        kind = "pixelsnail"                 # "kind" written into config.json
        def __init__(self, config):
            self.config = config            # dataclass saved as config.json
            self.model = PixelSNAIL(config) # built *after* seed_everything(train_cfg.seed)
        def training_step(self, model, batch, step):
            codes, cond = batch             # tensors already on the device
            loss = F.cross_entropy(model(codes, cond), codes)
            return loss, {"loss": loss.detach()}
        def evaluate(self, model, batches):
            ...                             # model unwrapped, eval mode, no_grad
            return {"nll": total / count}

    result = train(MyStage(cfg), train_set, val_set, train_cfg, run_dir, resume=...)

Datasets are map-style torch datasets held in memory; item ``i`` is a tensor or a tuple
of tensors, and a batch is the tuple of their stacks. See :class:`Stage` for the
contract and :func:`train` for what is written where.

Data order is a pure function of ``(seed, epoch)`` and the learning rate a pure function
of the step, so a run resumed from a checkpoint (``resume=True``) continues bit for bit:
it ends with exactly the weights of an uninterrupted run (on CPU; cuDNN may be
non-deterministic on GPUs).
"""

from __future__ import annotations

import csv
import io
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from msgnet.config import TrainConfig
from msgnet.errors import UsageError
from msgnet.io import atomic_write_text, save_model
from msgnet.train import distributed as D
from msgnet.train.acceleration import Precision, compiled_for_training, place_for_training
from msgnet.train.checkpoint import (
    check_same_architecture,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from msgnet.train.schedules import lr_factor
from msgnet.train.selection import WeightSelection

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


class _InterruptFlag:
    """SIGINT sets a flag that the loop checks between steps (a second Ctrl-C aborts at once)."""

    def __init__(self) -> None:
        self.set = False
        self._previous: Any = None

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _gather(dataset: Any, indices: torch.Tensor) -> Batch:
    """A batch in one indexing operation where the dataset offers it, else item by item."""
    if hasattr(dataset, "batch_of"):
        return dataset.batch_of(indices)
    return collate([dataset[int(i)] for i in indices])


def _scalar(v: Any) -> float:
    return float(v.detach().float().mean().item()) if isinstance(v, torch.Tensor) else float(v)


def train(
    stage: Stage,
    train_set: Any,
    val_set: Any,
    config: TrainConfig,
    run_dir: Path | str,
    resume: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``stage`` and save it to ``run_dir/<stage.name>/``.

    Files (rank 0 only): ``metrics.csv``; ``images/step_XXXXXXX.png`` every
    ``image_every`` steps; ``checkpoint/`` (weights, config, training state) every
    ``checkpoint_every`` steps, at the end, on Ctrl-C and when ``max_minutes`` run out;
    the final ``model.safetensors`` + ``config.json``.

    The global batch is ``config.batch_size``, split evenly across DDP ranks; an epoch is
    ``len(train_set) // batch_size`` steps (the incomplete last batch is dropped).
    ``max_minutes`` counts the wall time of this call (a resumed run gets a new budget).
    Ctrl-C (SIGINT) finishes the current step, writes a checkpoint and raises
    ``KeyboardInterrupt``; resume with ``resume=True``.
    """
    config.validate()
    info = D.setup(device)
    try:
        return _train(stage, train_set, val_set, config, Path(run_dir), resume, info, log)
    finally:
        D.teardown(info)


def _train(
    stage: Stage,
    train_set: Any,
    val_set: Any,
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    info: D.DistInfo,
    log: Callable[[str], None],
) -> TrainResult:
    start_time = time.monotonic()
    main = info.is_main
    stage_dir = run_dir / stage.name
    ckpt_dir = stage_dir / "checkpoint"
    n = len(train_set)
    if cfg.batch_size % info.world_size:
        raise UsageError(
            f"train: batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes"
        )
    if n < cfg.batch_size:
        raise UsageError(f"train: {n} training items, fewer than batch_size {cfg.batch_size}")
    local_bs = cfg.batch_size // info.world_size
    steps_per_epoch = n // cfg.batch_size
    total = cfg.iterations if cfg.iterations > 0 else cfg.epochs * steps_per_epoch

    model = place_for_training(stage.model, info.device)
    cuda = info.device.type == "cuda"
    if cuda and hasattr(train_set, "batch_of"):
        train_set = train_set.to(info.device)  # uint8 on the GPU: batches are gathered there
    # A fused Adam on CUDA (one kernel for all parameters); the same update as the loop on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                 betas=(cfg.adam_beta1, 0.999), **({"fused": True} if cuda else {}))
    autocast = Precision(cfg.precision, info.device)
    step = 0
    last_val: dict[str, float] = {}
    resumed_from: int | None = None
    finished_early = False  # a checkpoint of a run that early stopping ended: nothing left to train
    selection = WeightSelection(model, cfg, getattr(stage, "selection_metric", "loss"))
    if resume and find_checkpoint(ckpt_dir) is not None:
        check_same_architecture(ckpt_dir, stage.config)
        weights, state = load_checkpoint(ckpt_dir)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        stage.load_state_dict(state.get("stage", {}))
        selection.load_state_dict(state.get("selection", {}))
        finished_early = bool(state.get("stopped_no_improvement", False))
        last_val = dict(state.get("last_val", {}))
        set_rng_state(state["rng"])
        if info.enabled:  # only rank 0's RNG state is saved: ranks re-derive theirs
            torch.manual_seed(cfg.seed + 7919 * info.rank + step)
        resumed_from = step
        if main:
            log(f"{stage.name}: resuming from step {step}/{total} ({ckpt_dir})")
    else:
        if resume and main:
            log(f"{stage.name}: no checkpoint in {ckpt_dir}, starting from scratch")
        # Dropout etc. draw from the global torch RNG: give each rank its own stream.
        torch.manual_seed(cfg.seed + 7919 * info.rank)
    metrics_log = MetricsLog(stage_dir / "metrics.csv", resumed_from) if main else None

    wrapped: nn.Module = model
    if info.enabled:
        wrapped = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    # Only the training forward pass is compiled; validation and saving use the plain module.
    wrapped = compiled_for_training(wrapped, info.device, cfg.compile, log if main else lambda _: None)
    image_batch = next(iterate_batches(val_set, min(8, len(val_set)))) if len(val_set) else None

    def set_lr(s: int) -> float:
        lr = cfg.learning_rate * lr_factor(s, total, cfg, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def validate_and_images(s: int, images: bool) -> bool:
        """Validate (rank 0) and record it; True when early stopping says to stop (all ranks)."""
        nonlocal last_val
        stop = False
        if main and len(val_set):
            evaluated = selection.eval_model
            with torch.random.fork_rng(devices=_fork_devices(info)):
                evaluated.eval()
                with torch.no_grad():
                    last_val = stage.evaluate(
                        evaluated,
                        (to_device(b, info.device) for b in iterate_batches(val_set, local_bs, cfg.val_samples)),
                    )
                    last_val = {k: _scalar(v) for k, v in last_val.items()}
                    if images and image_batch is not None:
                        stage.write_images(
                            evaluated, to_device(image_batch, info.device), stage_dir / "images" / f"step_{s:07d}.png"
                        )
                model.train()
            stop = selection.observe(s, last_val)
            assert metrics_log is not None
            metrics_log.append(
                {"step": s, "epoch": s // steps_per_epoch, "split": "val", "time_s": time.monotonic() - start_time,
                 "lr": optimizer.param_groups[0]["lr"], **last_val}
            )
            bar.write(f"{stage.name} step {s}: " + ", ".join(f"val_{k}={v:.4g}" for k, v in last_val.items()))
        return D.any_rank(stop, info)

    def checkpoint(s: int) -> None:
        if main:
            save_checkpoint(
                ckpt_dir, model, stage.config, stage.kind,
                {"optimizer": optimizer.state_dict(), "scheduler": {"step": s}, "step": s,
                 "epoch": s // steps_per_epoch, "position": s % steps_per_epoch, "stage": stage.state_dict(),
                 "rng": rng_state(), "last_val": last_val, "total_steps": total,
                 "selection": selection.state_dict(), "stopped_no_improvement": no_improvement},
            )
        D.barrier(info)

    bar = tqdm(total=total, initial=step, desc=stage.name, disable=not main, dynamic_ncols=True)
    sums: dict[str, Any] = {}
    count = 0
    loss_sum = torch.zeros((), device=info.device)
    stopped_early = no_improvement = finished_early
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
    model.train()
    try:
        with _InterruptFlag() as interrupt:
            while step < total and not no_improvement:
                epoch, pos = divmod(step, steps_per_epoch)
                if epoch != perm_epoch:
                    perm_epoch, perm = epoch, epoch_permutation(n, cfg.seed, epoch)
                idx = perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
                idx = idx[info.rank * local_bs : (info.rank + 1) * local_bs]
                batch = to_device(_gather(train_set, idx), info.device)
                lr = set_lr(step)
                with autocast:
                    loss, metrics = stage.training_step(wrapped, batch, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                selection.update()
                step += 1
                bar.update(1)
                # Summed on the device and read back only when logged: no host sync per step.
                for k, v in metrics.items():
                    value = v.detach().float().mean() if isinstance(v, torch.Tensor) else v
                    sums[k] = sums.get(k, 0.0) + value
                loss_sum = loss_sum + loss.detach().float()
                count += 1
                periodic_ckpt = step % max(cfg.checkpoint_every, 1) == 0 and step < total
                if step % max(cfg.log_every, 1) == 0 or step == total or periodic_ckpt:
                    if not math.isfinite(_scalar(loss_sum)):  # before anything logs or checkpoints it
                        raise UsageError(f"{stage.name}: the loss became {_scalar(loss_sum)} by step {step}; "
                                         "lower the learning rate")
                    loss_sum = torch.zeros((), device=info.device)
                if step % max(cfg.log_every, 1) == 0 or step == total:
                    means = {k: _scalar(v) / count for k, v in sums.items()}
                    sums, count = {}, 0
                    if main:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                        assert metrics_log is not None
                        metrics_log.append(
                            {"step": step, "epoch": epoch, "split": "train",
                             "time_s": time.monotonic() - start_time, "lr": lr, **means}
                        )
                if step % steps_per_epoch == 0:
                    epoch_metrics = stage.on_epoch_end(model, epoch, info)
                    if main and epoch_metrics:
                        assert metrics_log is not None
                        metrics_log.append(
                            {"step": step, "epoch": epoch, "split": "epoch",
                             "time_s": time.monotonic() - start_time, "lr": lr,
                             **{k: _scalar(v) for k, v in epoch_metrics.items()}}
                        )
                        bar.write(f"{stage.name} epoch {epoch}: "
                                  + ", ".join(f"{k}={_scalar(v):.4g}" for k, v in epoch_metrics.items()))
                out_of_time = cfg.max_minutes > 0 and time.monotonic() - start_time > 60 * cfg.max_minutes
                if D.any_rank(out_of_time, info) and step < total:
                    stopped_early = True
                    if main:
                        bar.write(f"{stage.name}: max_minutes={cfg.max_minutes:g} spent, stopping at step {step}/{total}")
                    break
                if D.any_rank(interrupt.set, info):
                    checkpoint(step)
                    if main:
                        bar.write(f"{stage.name}: interrupted at step {step}; checkpoint in {ckpt_dir} "
                                  "(resume to continue)")
                    raise KeyboardInterrupt
                periodic_img = cfg.image_every > 0 and step % cfg.image_every == 0 and step < total
                periodic_val = cfg.val_every > 0 and step % cfg.val_every == 0 and step < total
                if periodic_ckpt or periodic_img or periodic_val:
                    no_improvement = validate_and_images(step, periodic_img)
                if periodic_ckpt:
                    checkpoint(step)
                if no_improvement:
                    stopped_early = True
                    if main:
                        bar.write(f"{stage.name}: validation {selection.metric} has not improved for "
                                  f"{cfg.patience} validations, stopping at step {step}/{total}")
                    break
        # End of training (or of the time budget): validate, image, checkpoint, final save.
        if not (resumed_from == step and last_val) and not no_improvement:
            validate_and_images(step, True)
        checkpoint(step)
        if main:
            save_model(selection.final_model(), stage.config, stage_dir, stage.kind)
            kept = selection.write_record(stage_dir, step, no_improvement)
            bar.write(f"{stage.name}: saved {stage_dir} ({'averaged ' if kept['averaged'] else ''}weights of "
                      f"step {kept['step']}, {kept['kept']}) after step {step}/{total}")
        D.barrier(info)
    finally:
        bar.close()
    return TrainResult(stage_dir, step, total, stopped_early, last_val)


def _fork_devices(info: D.DistInfo) -> list[int]:
    return [info.device.index or 0] if info.device.type == "cuda" else []
