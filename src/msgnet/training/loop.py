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

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from msgnet.config import TrainConfig
from msgnet.errors import UsageError
from msgnet.io import save_model
from msgnet.training import distributed as D
from msgnet.training.acceleration import Precision, compiled_for_training, place_for_training
from msgnet.training.checkpoint import (
    check_same_architecture,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

logger = logging.getLogger(__name__)
from msgnet.training.schedules import lr_factor
from msgnet.training.selection import WeightSelection
from msgnet.training.stage import (BaseStage, MetricsLog, Stage, TrainResult, collate, epoch_permutation,
                                    gather_batch, iterate_batches, scalar, seed_everything, to_device)

__all__ = ["BaseStage", "Stage", "TrainResult", "collate", "epoch_permutation", "iterate_batches",
           "seed_everything", "to_device", "train"]

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


def train(
    stage: Stage,
    train_set: Any,
    val_set: Any,
    config: TrainConfig,
    run_dir: Path | str,
    resume: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = logger.info,
) -> TrainResult:
    """Train ``stage`` and save it to ``run_dir/<stage.name>/``.

    What the loop has to say (resuming, validation, the final save) goes to ``log``: this module's
    logger unless the caller passes another sink.

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


def _train(stage: Stage, train_set: Any, val_set: Any, cfg: TrainConfig, run_dir: Path, resume: bool,
           info: D.DistInfo, log: Callable[[str], None]) -> TrainResult:
    return TrainingSession(stage, train_set, val_set, cfg, run_dir, info, log).run(resume)


class TrainingSession:
    """One call of :func:`train`: the model, optimiser and records of a stage, and the steps between
    a start (or a resumed checkpoint) and the final save. :meth:`run` is the loop; each thing it does
    on the way (a step, a log row, an epoch's end, validation, a checkpoint) is a method of its own."""

    def __init__(self, stage: Stage, train_set: Any, val_set: Any, cfg: TrainConfig, run_dir: Path,
                 info: D.DistInfo, log: Callable[[str], None]):
        self.start_time = time.monotonic()
        self.stage, self.val_set, self.cfg, self.info, self.log = stage, val_set, cfg, info, log
        self.main = info.is_main
        self.stage_dir = run_dir / stage.name
        self.ckpt_dir = self.stage_dir / "checkpoint"
        self.n = len(train_set)
        if cfg.batch_size % info.world_size:
            raise UsageError(f"train: batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes")
        if self.n < cfg.batch_size:
            raise UsageError(f"train: {self.n} training items, fewer than batch_size {cfg.batch_size}")
        self.local_bs = cfg.batch_size // info.world_size
        self.steps_per_epoch = self.n // cfg.batch_size
        self.total = cfg.iterations if cfg.iterations > 0 else cfg.epochs * self.steps_per_epoch
        self.model = place_for_training(stage.model, info.device)
        cuda = info.device.type == "cuda"
        if cuda and hasattr(train_set, "batch_of"):
            train_set = train_set.to(info.device)  # uint8 on the GPU: batches are gathered there
        self.train_set = train_set
        # A fused Adam on CUDA (one kernel for all parameters); the same update as the loop on a CPU.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                          betas=(cfg.adam_beta1, 0.999), **({"fused": True} if cuda else {}))
        self.autocast = Precision(cfg.precision, info.device)
        self.step = 0
        self.last_val: dict[str, float] = {}
        self.resumed_from: int | None = None
        self.no_improvement = False  # early stopping ended the run (possibly before a resume)
        self.selection = WeightSelection(self.model, cfg, getattr(stage, "selection_metric", "loss"))
        self.sums: dict[str, Any] = {}
        self.count = 0
        self.loss_sum = torch.zeros((), device=info.device)

    def run(self, resume: bool) -> TrainResult:
        """Resume or start, train to the end (or the budget, or early stopping), save; the loop body."""
        self._resume_or_start(resume)
        self._prepare_forward()
        stopped_early = self.no_improvement
        self.bar = tqdm(total=self.total, initial=self.step, desc=self.stage.name, disable=not self.main,
                        dynamic_ncols=True)
        perm_epoch, perm = -1, torch.empty(0, dtype=torch.long)
        self.model.train()
        try:
            with _InterruptFlag() as interrupt:
                while self.step < self.total and not self.no_improvement:
                    epoch, pos = divmod(self.step, self.steps_per_epoch)
                    if epoch != perm_epoch:
                        perm_epoch, perm = epoch, epoch_permutation(self.n, self.cfg.seed, epoch)
                    lr = self._train_step(perm, pos)
                    periodic_ckpt = self._every(self.cfg.checkpoint_every) and self.step < self.total
                    self._record_step(epoch, lr, periodic_ckpt)
                    if self.step % self.steps_per_epoch == 0:
                        self._end_epoch(epoch, lr)
                    if self._out_of_time():
                        stopped_early = True
                        break
                    if D.any_rank(interrupt.set, self.info):
                        self._stop_for_interrupt()
                    periodic_img = self.cfg.image_every > 0 and self._every(self.cfg.image_every) and self.step < self.total
                    periodic_val = self.cfg.val_every > 0 and self._every(self.cfg.val_every) and self.step < self.total
                    if periodic_ckpt or periodic_img or periodic_val:
                        self.no_improvement = self.validate(self.step, periodic_img)
                    if periodic_ckpt:
                        self.checkpoint(self.step)
                    if self.no_improvement:
                        stopped_early = True
                        self._say(f"{self.stage.name}: validation {self.selection.metric} has not improved for "
                                  f"{self.cfg.patience} validations, stopping at step {self.step}/{self.total}")
                        break
            self._finish()
        finally:
            self.bar.close()
        return TrainResult(self.stage_dir, self.step, self.total, stopped_early, self.last_val)

    def _every(self, period: int) -> bool:
        return self.step % max(period, 1) == 0

    def _say(self, text: str) -> None:
        """``text`` to the log (rank 0). The progress bar is cleared while it is written and redrawn
        below it, as ``tqdm.write`` does, so that a console handler's line does not tear the bar."""
        if self.main:
            with tqdm.external_write_mode():
                self.log(text)

    def _resume_or_start(self, resume: bool) -> None:
        cfg, info = self.cfg, self.info
        if resume and find_checkpoint(self.ckpt_dir) is not None:
            check_same_architecture(self.ckpt_dir, self.stage.config)
            weights, state = load_checkpoint(self.ckpt_dir)
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.stage.load_state_dict(state.get("stage", {}))
            self.selection.load_state_dict(state.get("selection", {}))
            self.no_improvement = bool(state.get("stopped_no_improvement", False))
            self.last_val = dict(state.get("last_val", {}))
            set_rng_state(state["rng"])
            if info.enabled:  # only rank 0's RNG state is saved: ranks re-derive theirs
                torch.manual_seed(cfg.seed + 7919 * info.rank + self.step)
            self.resumed_from = self.step
            self._say(f"{self.stage.name}: resuming from step {self.step}/{self.total} ({self.ckpt_dir})")
        else:
            if resume:
                self._say(f"{self.stage.name}: no checkpoint in {self.ckpt_dir}, starting from scratch")
            # Dropout etc. draw from the global torch RNG: give each rank its own stream.
            torch.manual_seed(cfg.seed + 7919 * info.rank)
        self.metrics_log = MetricsLog(self.stage_dir / "metrics.csv", self.resumed_from) if self.main else None

    def _prepare_forward(self) -> None:
        """DDP around the model under torchrun; only the training forward pass is compiled."""
        wrapped: nn.Module = self.model
        if self.info.enabled:
            wrapped = DistributedDataParallel(
                self.model, device_ids=[self.info.device.index] if self.info.device.type == "cuda" else None)
        self.wrapped = compiled_for_training(wrapped, self.info.device, self.cfg.compile,
                                             self.log if self.main else lambda _: None)
        self.image_batch = next(iterate_batches(self.val_set, min(8, len(self.val_set)))) if len(self.val_set) else None

    def _train_step(self, perm: torch.Tensor, pos: int) -> float:
        """One optimiser step on this rank's share of batch ``pos`` of the epoch's permutation."""
        cfg, info = self.cfg, self.info
        idx = perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        idx = idx[info.rank * self.local_bs : (info.rank + 1) * self.local_bs]
        batch = to_device(gather_batch(self.train_set, idx), info.device)
        lr = cfg.learning_rate * lr_factor(self.step, self.total, cfg, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast:
            loss, metrics = self.stage.training_step(self.wrapped, batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.selection.update()
        self.step += 1
        self.bar.update(1)
        # Summed on the device and read back only when logged: no host sync per step.
        for k, v in metrics.items():
            value = v.detach().float().mean() if isinstance(v, torch.Tensor) else v
            self.sums[k] = self.sums.get(k, 0.0) + value
        self.loss_sum = self.loss_sum + loss.detach().float()
        self.count += 1
        return lr

    def _record_step(self, epoch: int, lr: float, periodic_ckpt: bool) -> None:
        """Check the loss is finite before anything logs or checkpoints it; log the train means."""
        at_end = self.step == self.total
        if self._every(self.cfg.log_every) or at_end or periodic_ckpt:
            if not math.isfinite(scalar(self.loss_sum)):
                raise UsageError(f"{self.stage.name}: the loss became {scalar(self.loss_sum)} by step {self.step}; "
                                 "lower the learning rate")
            self.loss_sum = torch.zeros((), device=self.info.device)
        if self._every(self.cfg.log_every) or at_end:
            means = {k: scalar(v) / self.count for k, v in self.sums.items()}
            self.sums, self.count = {}, 0
            if self.main:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                self._log_row("train", epoch, lr, means)

    def _log_row(self, split: str, epoch: int, lr: float, values: dict[str, float]) -> None:
        assert self.metrics_log is not None
        self.metrics_log.append({"step": self.step if split != "val" else values.pop("_step"), "epoch": epoch,
                                 "split": split, "time_s": time.monotonic() - self.start_time, "lr": lr, **values})

    def _end_epoch(self, epoch: int, lr: float) -> None:
        epoch_metrics = self.stage.on_epoch_end(self.model, epoch, self.info)
        if self.main and epoch_metrics:
            self._log_row("epoch", epoch, lr, {k: scalar(v) for k, v in epoch_metrics.items()})
            self._say(f"{self.stage.name} epoch {epoch}: "
                           + ", ".join(f"{k}={scalar(v):.4g}" for k, v in epoch_metrics.items()))

    def _out_of_time(self) -> bool:
        cfg = self.cfg
        out = cfg.max_minutes > 0 and time.monotonic() - self.start_time > 60 * cfg.max_minutes
        if D.any_rank(out, self.info) and self.step < self.total:
            self._say(f"{self.stage.name}: max_minutes={cfg.max_minutes:g} spent, stopping at step {self.step}/{self.total}")
            return True
        return False

    def _stop_for_interrupt(self) -> None:
        self.checkpoint(self.step)
        self._say(f"{self.stage.name}: interrupted at step {self.step}; checkpoint in {self.ckpt_dir} (resume to continue)")
        raise KeyboardInterrupt

    def validate(self, s: int, images: bool) -> bool:
        """Validate (rank 0) and record it; True when early stopping says to stop (all ranks)."""
        stop = False
        if self.main and len(self.val_set):
            evaluated = self.selection.eval_model
            with torch.random.fork_rng(devices=_fork_devices(self.info)):
                evaluated.eval()
                with torch.no_grad():
                    batches = (to_device(b, self.info.device)
                               for b in iterate_batches(self.val_set, self.local_bs, self.cfg.val_samples))
                    self.last_val = {k: scalar(v) for k, v in self.stage.evaluate(evaluated, batches).items()}
                    if images and self.image_batch is not None:
                        self.stage.write_images(evaluated, to_device(self.image_batch, self.info.device),
                                                self.stage_dir / "images" / f"step_{s:07d}.png")
                self.model.train()
            stop = self.selection.observe(s, self.last_val)
            self._log_row("val", s // self.steps_per_epoch, self.optimizer.param_groups[0]["lr"],
                          {"_step": s, **self.last_val})
            self._say(f"{self.stage.name} step {s}: " + ", ".join(f"val_{k}={v:.4g}" for k, v in self.last_val.items()))
        return D.any_rank(stop, self.info)

    def checkpoint(self, s: int) -> None:
        if self.main:
            save_checkpoint(
                self.ckpt_dir, self.model, self.stage.config, self.stage.kind,
                {"optimizer": self.optimizer.state_dict(), "scheduler": {"step": s}, "step": s,
                 "epoch": s // self.steps_per_epoch, "position": s % self.steps_per_epoch,
                 "stage": self.stage.state_dict(), "rng": rng_state(), "last_val": self.last_val,
                 "total_steps": self.total, "selection": self.selection.state_dict(),
                 "stopped_no_improvement": self.no_improvement},
            )
        D.barrier(self.info)

    def _finish(self) -> None:
        """End of training (or of the time budget): validate, image, checkpoint, final save."""
        if not (self.resumed_from == self.step and self.last_val) and not self.no_improvement:
            self.validate(self.step, True)
        self.checkpoint(self.step)
        if self.main:
            final = self.stage.finalize(self.selection.final_model(), self.train_set, self.stage_dir)
            save_model(final, self.stage.config, self.stage_dir, self.stage.kind)
            kept = self.selection.write_record(self.stage_dir, self.step, self.no_improvement)
            self._say(f"{self.stage.name}: saved {self.stage_dir} ({'averaged ' if kept['averaged'] else ''}"
                           f"weights of step {kept['step']}, {kept['kept']}) after step {self.step}/{self.total}")
        D.barrier(self.info)


def _fork_devices(info: D.DistInfo) -> list[int]:
    return [info.device.index or 0] if info.device.type == "cuda" else []
