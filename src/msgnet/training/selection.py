"""Which weights a training keeps: an exponential moving average, the best validated checkpoint,
and early stopping — what small datasets need (a prior overfits 135 images within minutes).

* ``TrainConfig.ema_decay`` > 0 keeps an exponential moving average of the weights
  (``torch.optim.swa_utils.AveragedModel``); validation, image grids and the saved model use the
  average. Sampling loads the saved model, so it samples with the average.
* ``TrainConfig.keep_best`` keeps the weights (averaged, if averaging) of the validation with the
  lowest value of the stage's ``selection_metric`` (``loss`` for the priors, ``mse`` for the
  VQ-VAE) and saves those instead of the last ones.
* ``TrainConfig.patience`` > 0 stops after that many validations without improvement.

What was kept is written to ``RUN/<stage>/selected.json`` (and said on the progress bar).
Everything here is checkpointed, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from msgnet.config import TrainConfig
from msgnet.io import atomic_write_text


class WeightSelection:
    """EMA, best-checkpoint and early-stopping bookkeeping of one training (see the module docstring)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, metric: str):
        self.model = model
        self.cfg = cfg
        self.metric = metric
        self.ema: AveragedModel | None = None
        if cfg.ema_decay > 0:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.best_value = math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def update(self) -> None:
        """After every optimiser step."""
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def observe(self, step: int, metrics: dict[str, float]) -> bool:
        """Record a validation; True when early stopping says to stop."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        if value < self.best_value:
            self.best_value, self.best_step, self.since_best = float(value), step, 0
            if self.cfg.keep_best:
                self.best_state = {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}
        else:
            self.since_best += 1
        return self.cfg.patience > 0 and self.since_best >= self.cfg.patience

    def final_model(self) -> nn.Module:
        """The module to save: the best validated weights when kept, else the (averaged) last ones."""
        if self.best_state is None:
            return self.eval_model
        model = copy.deepcopy(self.eval_model)
        model.load_state_dict(self.best_state)
        return model

    def record(self, last_step: int, stopped_by_patience: bool) -> dict[str, Any]:
        kept_best = self.best_state is not None
        return {
            "kept": "best validation" if kept_best else "last step",
            "step": self.best_step if kept_best else last_step,
            "last_step": last_step,
            "metric": self.metric,
            "best_value": None if self.best_step is None else self.best_value,
            "best_step": self.best_step,
            "averaged": self.ema is not None,
            "ema_decay": self.cfg.ema_decay,
            "stopped_early_no_improvement": stopped_by_patience,
            "patience": self.cfg.patience,
        }

    def write_record(self, stage_dir: Path, last_step: int, stopped_by_patience: bool) -> dict[str, Any]:
        rec = self.record(last_step, stopped_by_patience)
        atomic_write_text(stage_dir / "selected.json", json.dumps(rec, indent=2))
        return rec

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": None if self.ema is None else {k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            "best_value": self.best_value if math.isfinite(self.best_value) else None,
            "best_step": self.best_step,
            "best_state": None if self.best_state is None else {k: v.cpu() for k, v in self.best_state.items()},
            "since_best": self.since_best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.best_value = math.inf if state.get("best_value") is None else float(state["best_value"])
        self.best_step = state.get("best_step")
        device = next(self.model.parameters()).device
        best = state.get("best_state")
        self.best_state = None if best is None else {k: v.to(device) for k, v in best.items()}
        self.since_best = int(state.get("since_best", 0))


def describe_kept(record: dict[str, Any]) -> str:
    """One line on the weights a stage kept, from its ``selected.json`` record (for reports)."""
    value = "" if record.get("best_value") is None else f", val {record['metric']} {record['best_value']:.4g}"
    return (f"step {record['step']} of {record['last_step']} ({record['kept']}{value}"
            + (", moving average" if record.get("averaged") else "")
            + (", stopped early: no improvement" if record.get("stopped_early_no_improvement") else "") + ")")
