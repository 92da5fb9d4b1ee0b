"""Small-data training in the shared loop: moving average, best checkpoint, early stopping."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from msgnet.config import TrainConfig
from msgnet.io import load_state_dict
from msgnet.training.loop import BaseStage, train


@dataclass(frozen=True)
class ToyConfig:
    size: int = 1


class ToyStage(BaseStage):
    """One weight w, trained towards 2 while validation measures the distance to 1: the
    validation loss falls while w crosses 1 and rises after, like a prior overfitting."""

    name = "toy"
    kind = "toy"

    def __init__(self) -> None:
        self.config = ToyConfig()
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()

    def training_step(self, model, batch, step):
        w = model.weight.sum()
        loss = (w - 2.0) ** 2 + 0 * batch.sum()
        return loss, {"loss": loss.detach()}

    def evaluate(self, model, batches):
        for _ in batches:
            pass
        return {"loss": float((model.weight.sum() - 1.0) ** 2)}


def _data(n: int = 8) -> torch.Tensor:
    return torch.zeros(n, 1)


def _cfg(**kw) -> TrainConfig:
    base = dict(batch_size=4, learning_rate=0.05, schedule="constant", iterations=200, log_every=10,
                checkpoint_every=1000, image_every=0, val_every=5, grad_clip=0.0)
    return TrainConfig(**{**base, **kw})


def _val_rows(stage_dir):
    import csv

    return [r for r in csv.DictReader((stage_dir / "metrics.csv").open()) if r["split"] == "val"]


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    stage = ToyStage()
    result = train(stage, _data(), _data(), _cfg(keep_best=True, patience=3), tmp_path, device="cpu")
    assert result.stopped_early and result.step < 200
    rows = _val_rows(result.model_dir)
    losses = [(int(r["step"]), float(r["loss"])) for r in rows]
    best_step, best_loss = min(losses, key=lambda x: x[1])
    selected = json.loads((result.model_dir / "selected.json").read_text())
    assert selected["kept"] == "best validation" and selected["step"] == best_step
    assert selected["stopped_early_no_improvement"] is True
    # three validations without improvement after the best one, then the stop
    assert [s for s, _ in losses if s > best_step] == [best_step + 5, best_step + 10, best_step + 15]
    saved = load_state_dict(result.model_dir)["weight"].item()
    assert (saved - 1.0) ** 2 == pytest.approx(best_loss, rel=1e-4, abs=1e-7)
    last = stage.model.weight.item()
    assert abs(saved - 1.0) < abs(last - 1.0)  # the last weights overshot; the saved ones did not


def test_without_selection_the_last_weights_are_saved(tmp_path):
    stage = ToyStage()
    result = train(stage, _data(), _data(), _cfg(iterations=60), tmp_path, device="cpu")
    assert not result.stopped_early and result.step == 60
    assert load_state_dict(result.model_dir)["weight"].item() == stage.model.weight.item()
    assert json.loads((result.model_dir / "selected.json").read_text())["kept"] == "last step"


def test_averaged_weights_differ_from_the_raw_ones_and_are_saved(tmp_path):
    stage = ToyStage()
    result = train(stage, _data(), _data(), _cfg(iterations=40, ema_decay=0.9), tmp_path, device="cpu")
    raw = stage.model.weight.item()
    saved = load_state_dict(result.model_dir)["weight"].item()
    # w rises monotonically towards 2, so its moving average lags behind it
    assert saved < raw - 1e-3
    ema = 0.0
    ws = []
    stage2 = ToyStage()
    opt = torch.optim.Adam(stage2.model.parameters(), lr=0.05)
    for k in range(40):
        loss, _ = stage2.training_step(stage2.model, torch.zeros(4, 1), k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w = stage2.model.weight.item()
        ema = w if k == 0 else 0.9 * ema + 0.1 * w
        ws.append(w)
    assert abs(raw - ws[-1]) < 1e-6 and abs(saved - ema) < 1e-5
    assert json.loads((result.model_dir / "selected.json").read_text())["averaged"] is True


def test_selection_state_survives_resume(tmp_path):
    full = train(ToyStage(), _data(), _data(), _cfg(iterations=60, ema_decay=0.9, keep_best=True), tmp_path / "a",
                 device="cpu")
    first = train(ToyStage(), _data(), _data(), _cfg(iterations=60, ema_decay=0.9, keep_best=True,
                                                     max_minutes=1e-9), tmp_path / "b", device="cpu")
    assert first.stopped_early and first.step < 60
    resumed = train(ToyStage(), _data(), _data(), _cfg(iterations=60, ema_decay=0.9, keep_best=True),
                    tmp_path / "b", resume=True, device="cpu")
    assert resumed.step == 60
    a = load_state_dict(full.model_dir)["weight"]
    b = load_state_dict(resumed.model_dir)["weight"]
    assert torch.equal(a, b)
    assert (json.loads((full.model_dir / "selected.json").read_text())["step"]
            == json.loads((resumed.model_dir / "selected.json").read_text())["step"])

