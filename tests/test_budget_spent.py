"""A budget that is spent (issue 32): the stages of a derived preset buy their steps as they start.

No training and no real timing here: a fake machine stands in for the clock, the step timer and the
three trainers, so that "another process loaded the CPU while it was timed" is a number, not luck.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
import yaml

import msgnet.preset_derivation as derivation
import msgnet.step_budget as step_budget
import msgnet.workflow.train as train_module
from msgnet.evaluation.job_report import _training_lines
from msgnet.preset_derivation import STAGE_SHARES
from msgnet.run_dir import RunDir
from msgnet.training.checkpoint import STATE_FILE
from msgnet.workflow.train import train
from tests.fixtures import make_tiny_dataset

IDLE = {"vqvae": 0.05, "layout_prior": 0.03, "prior": 0.11}  # seconds per step, the machine undisturbed
BUDGET = 12.0  # minutes
LOOP_OVERHEAD = 1.05  # the loop's steps are a little slower than the bare probe's (data loading)
PAID = ("vqvae", "codes", "layout-prior", "prior")
STAGE_OF = {"vqvae": "vqvae", "layout_prior": "layout-prior", "prior": "prior"}


class Machine:
    """The fake clock, step timer and trainers. ``probe_slowdowns``: how much slower each successive
    step-time probe runs (the derivation's first, then each stage's); ``stop_at``: the share of its
    steps after which a stage stops early (early stopping)."""

    def __init__(self, probe_slowdowns=(), stop_at=None, interrupt=None):
        self.now = 0.0
        self.slowdowns = list(probe_slowdowns)
        self.stop_at = stop_at or {}
        self.interrupt = interrupt  # a model whose trainer is stopped by Ctrl-C after its checkpoint
        self.probes: list[tuple[str, ...]] = []
        self.iterations: dict[str, int] = {}  # the step count each trainer was last given
        self.finished: set[str] = set()

    def perf_counter(self) -> float:
        return self.now

    def measure(self, preset, device, repeats=8, models=None, warmup=2):
        models = tuple(models or IDLE)
        slow = self.slowdowns.pop(0) if self.slowdowns else 1.0
        self.probes.append(models)
        out = {m: IDLE[m] * slow for m in models}
        self.now += sum(10 * s for s in out.values())  # the probe's own steps take time too
        return out

    def trainer(self, model):
        def run(job):
            cfg = getattr(job.preset, f"{model}_train")
            self.iterations[model] = cfg.iterations
            if model in self.finished:
                self.now += 1.0  # a finished stage resumes at its end
                return
            steps = cfg.iterations * self.stop_at.get(model, 1.0)
            # Each validation costs what the derivation assumes it costs (step_budget.validation_steps).
            validations = int(steps // cfg.val_every)
            busy = steps * LOOP_OVERHEAD + validations * step_budget.validation_steps(model, cfg.batch_size)
            self.now += min(busy * IDLE[model], 60 * cfg.max_minutes)
            ckpt = job.run.stage_dir(STAGE_OF[model]) / "checkpoint"
            ckpt.mkdir(parents=True, exist_ok=True)
            for name in (STATE_FILE, "model.safetensors"):
                (ckpt / name).write_bytes(b"")
            if model == self.interrupt:
                self.interrupt = None
                raise KeyboardInterrupt
            self.finished.add(model)
        return run

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(derivation, "measure_step_seconds", self.measure)
        monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=self.perf_counter, sleep=time.sleep))
        for model in IDLE:
            monkeypatch.setitem(train_module._TRAINERS, STAGE_OF[model], self.trainer(model))
        monkeypatch.setitem(train_module._TRAINERS, "codes", lambda job: setattr(self, "now", self.now + 5.0))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("budget") / "data", n=48, size=32, num_classes=3, n_val=8)


def idle_steps(model: str) -> float:
    """The steps the derivation gives a model when its probe runs on an idle machine (its share, less the
    time of its validations)."""
    return step_budget.stage_steps(BUDGET * 60 * STAGE_SHARES[model], IDLE[model],
                                   step_budget.validation_steps(model, 32))[0]


def spent_seconds(run) -> float:
    stages = RunDir(run).read_manifest()["stages"]
    return sum(stages[s]["seconds"] for s in PAID)


def test_a_probe_slowed_by_another_process_still_spends_the_budget(tmp_path, data, monkeypatch, caplog):
    """The derivation's timing runs 20x slow (a second process on the CPU); the stages, timed again as
    they start on a quiet machine, still buy the idle machine's steps and spend the budget training."""
    machine = Machine(probe_slowdowns=[20.0])
    machine.install(monkeypatch)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="msgnet.workflow.budget"):
        train(run, data, budget=BUDGET, device="cpu")
    assert spent_seconds(run) >= 0.9 * BUDGET * 60
    assert spent_seconds(run) <= 1.1 * BUDGET * 60  # and not much more
    for model, steps in machine.iterations.items():
        assert steps >= 0.5 * idle_steps(model), model
    # Each stage timed its own model as it started (after the derivation's probe of all three).
    assert machine.probes == [tuple(IDLE), ("vqvae",), ("layout_prior",), ("prior",)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # What each stage bought is in preset.yaml (a resume keeps it) and in run.json, with its time.
    written = yaml.safe_load(RunDir(run).preset_yaml.read_text())
    stages = RunDir(run).read_manifest()["stages"]
    for model, steps in machine.iterations.items():
        assert written[f"{model}_train"]["iterations"] == steps
        entry = stages[STAGE_OF[model]]
        assert entry["steps_bought"] == steps and entry["step_seconds"] == pytest.approx(IDLE[model])
        assert entry["spent_seconds"] == entry["seconds"] > 0
        # Its share pays for its steps and its validations.
        train_cfg = written[f"{model}_train"]
        validations = (train_cfg["iterations"] // train_cfg["val_every"]
                       * step_budget.validation_steps(model, train_cfg["batch_size"]))
        assert entry["budget_seconds"] == pytest.approx((steps + validations) * IDLE[model], abs=1.0)
    lines = "\n".join(_training_lines(run))
    assert lines.count("s/step (timed as it started)") == 3 and "- prior: bought" in lines


def test_time_a_stage_leaves_passes_to_the_next(tmp_path, data, monkeypatch):
    """The layout prior stops early at a quarter of its steps: the codes prior gets its time."""
    machine = Machine(stop_at={"layout_prior": 0.25})
    machine.install(monkeypatch)
    run = tmp_path / "run"
    train(run, data, budget=BUDGET, device="cpu")
    assert spent_seconds(run) >= 0.9 * BUDGET * 60
    # Its own share would buy idle_steps; the layout prior's unspent time (3/4 of its share, less the VQ-VAE's
    # overrun) comes on top: the steps of at least 40% of that share more.
    seconds = (STAGE_SHARES["prior"] + 0.4 * STAGE_SHARES["layout_prior"]) * BUDGET * 60
    more = step_budget.stage_steps(seconds, IDLE["prior"], step_budget.validation_steps("prior", 32))[0]
    assert machine.iterations["prior"] >= more > 1.1 * idle_steps("prior")
    assert machine.iterations["vqvae"] >= 0.95 * idle_steps("vqvae")


def test_a_stage_timed_on_a_loaded_machine_warns_and_leaves_its_time(tmp_path, data, monkeypatch, caplog):
    """The VQ-VAE's own timing runs 20x slow: it buys few steps, says so in one line, and the time it
    does not spend passes to the priors; the budget is still spent."""
    machine = Machine(probe_slowdowns=[1.0, 20.0])
    machine.install(monkeypatch)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="msgnet.workflow.budget"):
        train(run, data, budget=BUDGET, device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("vqvae: bought") and "\n" not in warnings[0]
    assert "idle 0.05 s/step" in warnings[0]
    assert machine.iterations["vqvae"] < 0.1 * idle_steps("vqvae")
    assert spent_seconds(run) >= 0.9 * BUDGET * 60
    for model in ("layout_prior", "prior"):
        assert machine.iterations[model] >= 1.1 * idle_steps(model), model


def test_a_resumed_stage_keeps_the_steps_it_bought(tmp_path, data, monkeypatch):
    """Ctrl-C in the codes prior, then --resume: it continues with the step count it bought (its learning
    rate schedule depends on it) and is not timed again; its time adds up across the two calls."""
    machine = Machine(interrupt="prior")
    machine.install(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(run, data, budget=BUDGET, device="cpu")
    bought = machine.iterations["prior"]
    assert yaml.safe_load(RunDir(run).preset_yaml.read_text())["prior_train"]["iterations"] == bought
    probes = len(machine.probes)
    machine.slowdowns = [5.0] * 4  # timed again now, it would buy another count
    machine.iterations.clear()
    train(run, data, device="cpu", resume=True)
    assert machine.iterations["prior"] == bought and len(machine.probes) == probes
    assert RunDir(run).read_manifest()["stages"]["prior"]["steps_bought"] == bought


def test_steps_fixed_by_the_user_are_not_bought(tmp_path, data, monkeypatch):
    machine = Machine()
    machine.install(monkeypatch)
    run = tmp_path / "run"
    train(run, data, budget=BUDGET, device="cpu", overrides=["prior_train.iterations=33"])
    assert machine.iterations["prior"] == 33 and machine.probes == [tuple(IDLE)]  # the derivation's probe only
    manifest = RunDir(run).read_manifest()
    assert "budget" not in manifest and "steps_bought" not in manifest["stages"]["prior"]
