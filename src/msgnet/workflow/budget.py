"""A budget that is spent: each training stage of a derived preset buys its steps when it starts.

A derived preset (`msgnet train all` or `msgnet run` without --config) once took every stage's step
count from one timing of each model made before anything trained. A second process loading the CPU
during that timing made the codes prior's step look 25 times slower than it was, so it bought 114
steps instead of 2,830 and a 12-minute budget trained for 5.8 (issue 32). Now:

* the derivation still writes step counts (``RUN/preset.yaml`` is complete from the start), timed at
  steady state (warm-up untimed, the fastest of eight steps: :func:`measure_step_seconds`);
* each training stage, when it starts, times its model again and buys its steps then: its share
  (``STAGE_SHARES``, among the training stages not done yet) of the budget *left*, that is the budget
  less the wall time the run's earlier stages took, code extraction included. A stage that stopped
  early (early stopping, a machine faster than timed) leaves its time to the stages after it; one that
  ran over (up to ``OVERRUN`` times its share, its ``max_minutes``) takes it from them;
* a stage that bought fewer than half the steps the machine's idle step time (the fastest step time
  seen for that model, at derivation or since) would buy in the same time gets a one-line warning.

Why steps bought at the start rather than a stage scheduled by elapsed time: the learning rate decays
to 0 over the step count, validations and checkpoints are spaced by it, and a step count written to
preset.yaml before the stage's first checkpoint is what lets ``--resume`` continue bit for bit and
``--config RUN/preset.yaml`` retrain the same models from the same seed; a stage cut by the clock
would do neither. So a stage resumed from its checkpoint keeps the steps it bought; a stage not yet
started buys from what is left. The wall time of a call interrupted mid-stage is not counted.

``RUN/run.json`` keeps ``"budget"``: the minutes, ``idle_step_seconds`` per model, what each stage
``bought`` (``steps_bought``, ``step_seconds`` measured at its start, ``budget_seconds`` its share) and
the seconds ``spent`` on each stage; each stage's entry under ``"stages"`` repeats its purchase with
``spent_seconds``. Not budgeted: named presets, ``steps``, overrides of a stage's iterations, epochs or
max_minutes (the user fixed the count), and torchrun (each process would time its own step and buy
a different count).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Sequence

import torch

from msgnet import preset_derivation as derivation
from msgnet import step_budget
from msgnet.config import Preset
from msgnet.data.format import DatasetInfo
from msgnet.preset_derivation import DEFAULT_BUDGET_MINUTES
from msgnet.run_dir import RunDir, stages_of

log = logging.getLogger(__name__)

KEY = "budget"  # its entry in RUN/run.json
PAID = tuple(s.name for s in stages_of("msgnet"))  # the stages whose wall time the budget pays for
FEW = 0.5  # fewer steps than this share of what the idle machine would buy: warn
FIXING = ("iterations", "epochs", "max_minutes")  # overridden, they take a stage's steps out of the budget


def derive_measured(info: DatasetInfo, num_train: int, device: torch.device, minutes: float | None,
                    **options: Any) -> tuple[Preset, dict[str, float]]:
    """:func:`msgnet.preset_derivation.derive_preset` (``options`` passed on), and the step time
    per model its probe measured."""
    probed: dict[str, float] = {}

    def probe(preset: Preset, dev: torch.device) -> dict[str, float]:
        # Looked up at the call, not bound at import: tests put a fake step timer in its place.
        probed.update(derivation.measure_step_seconds(preset, dev))
        return probed

    return derivation.derive_preset(info, num_train, device, minutes, step_seconds=probe, **options), probed


def budgeted(overrides: Sequence[str] = ()) -> bool:
    """Whether the stages may buy their steps: one process, and no override fixing a stage's count."""
    fixed = any(o.split("=", 1)[0].rsplit(".", 1)[-1] in FIXING for o in overrides)
    return int(os.environ.get("WORLD_SIZE", "1")) == 1 and not fixed


def record_plan(run: RunDir, minutes: float | None, probed: dict[str, float], overrides: Sequence[str] = ()) -> None:
    """Write the budget of a freshly derived preset into the run's manifest (removing an old one where
    the stages' steps are fixed)."""
    if not budgeted(overrides):
        run.record(KEY, None)
        return
    # Overrides may change a model or its batch: then the derivation's times are no idle reference.
    idle = {} if overrides else {k: float(v) for k, v in probed.items()}
    run.record(KEY, {"minutes": DEFAULT_BUDGET_MINUTES if minutes is None else float(minutes),
                     "idle_step_seconds": idle, "bought": {}, "spent": {}})


def read_plan(run: RunDir) -> dict | None:
    """The run's budget (None: its stages' steps are fixed)."""
    plan = run.read_manifest().get(KEY)
    return plan if isinstance(plan, dict) and "minutes" in plan else None


def buy_stage(run: RunDir, preset: Preset, name: str, device: torch.device) -> Preset:
    """``preset`` with stage ``name``'s steps bought now: its share of the budget left, at its model's
    step time measured now. The purchase is written to the manifest."""
    plan = read_plan(run)
    assert plan is not None, "buy_stage: the run has no budget"
    model = derivation.MODEL_OF_STAGE[name]
    measured = derivation.measure_step_seconds(preset, device, models=(model,))[model]
    idle = min(measured, plan.setdefault("idle_step_seconds", {}).get(model, measured))
    spent = plan.setdefault("spent", {})
    spent.pop(name, None)  # the stage starts afresh: what it took before is thrown away with its weights
    left = plan["minutes"] * 60 - sum(spent.values())
    pending = [s for s in derivation.MODEL_OF_STAGE if s == name or not run.done(s)]
    shares = derivation.STAGE_SHARES
    seconds = max(0.0, left) * shares[model] / sum(shares[derivation.MODEL_OF_STAGE[s]] for s in pending)
    base = getattr(preset, f"{model}_train")
    cost = step_budget.validation_steps(model, base.batch_size)
    steps, validations = step_budget.stage_steps(seconds, measured, cost)
    seconds = max(seconds, steps * measured)  # the floor of MIN_STEPS gets the time it needs
    train_cfg = step_budget.budgeted_train(base, steps, seconds / 60, ema=base.ema_decay > 0, validations=validations)
    idle_steps, _ = step_budget.stage_steps(seconds, idle, cost)
    if steps < FEW * idle_steps:
        log.warning("%s: bought %d steps at %.3g s/step measured now, under half the %d that its %.1f-minute "
                    "share buys at the machine's idle %.3g s/step: another process is probably loading the "
                    "machine (time it leaves unspent passes to the next stages)",
                    name, steps, measured, idle_steps, seconds / 60, idle)
    plan["idle_step_seconds"][model] = idle
    plan.setdefault("bought", {})[name] = {"steps_bought": steps, "step_seconds": float(f"{measured:.4g}"),
                                           "budget_seconds": round(seconds, 1),
                                           "idle_step_seconds": float(f"{idle:.4g}")}
    run.record(KEY, plan)
    return replace(preset, **{f"{model}_train": train_cfg})


def stage_spent(run: RunDir, name: str, seconds: float) -> dict:
    """Add ``seconds`` of stage ``name`` to what the budget spent; returns what the stage's manifest
    entry records of it (its purchase and ``spent_seconds``, across resumed calls)."""
    plan = read_plan(run)
    if plan is None or name not in PAID:
        return {}
    spent = plan.setdefault("spent", {})
    spent[name] = round(spent.get(name, 0.0) + seconds, 1)
    run.record(KEY, plan)
    return {**plan.get("bought", {}).get(name, {}), "spent_seconds": spent[name]}
