"""``msgnet.run_dir.STAGES`` is the one list of stages: every stage class the training loop runs writes
into a registered stage's folder, every registered stage that leaves a model has a class and a trainer,
and the commands, the budget and the reports take their stages from it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable

import msgnet.baselines
import msgnet.training
from msgnet.run_dir import STAGES, Stage, stages_of, trained_stages
from msgnet.training.stage import BaseStage


def stage_classes() -> list[type]:
    """Every BaseStage subclass msgnet defines (the modules of training/ and baselines/ imported first)."""
    for package in (msgnet.training, msgnet.baselines):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    found, todo = [], list(BaseStage.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [c for c in found if c.__module__.startswith("msgnet.")]


def mismatches(classes: Iterable[type], stages: Iterable[Stage], trainers: Iterable[str]) -> list[str]:
    """How the stage classes and the workflow's trainers disagree with the registry ``stages``."""
    stages, trainers = list(stages), set(trainers)
    folders = {s.folder for s in stages}
    concrete = [c for c in classes if c.name != BaseStage.name]  # a shared base names no folder
    problems = [f"{c.__module__}.{c.__qualname__} trains into {c.name}/, the folder of no registered stage"
                for c in concrete if c.name not in folders]
    trained_into = {c.name for c in concrete}
    problems += [f"stage {s.name}: no stage class trains into {s.folder}/" for s in stages
                 if s.weights and s.part_of is None and s.folder not in trained_into]
    names = {s.name for s in stages}
    problems += [f"trainer {t}: not a registered stage" for t in sorted(trainers - names)]
    problems += [f"stage {s.name}: no trainer" for s in stages if s.part_of is None and s.name not in trainers]
    problems += [f"stage {s.name}: part of {s.part_of}, which has no trainer" for s in stages
                 if s.part_of is not None and s.part_of not in trainers]
    return problems


def _trainers() -> list[str]:
    from msgnet.workflow.train import _TRAINERS

    return list(_TRAINERS)


def test_the_registry_matches_every_stage_class_and_trainer():
    assert mismatches(stage_classes(), STAGES, _trainers()) == []


def test_a_planted_stage_class_fails():
    class Planted(BaseStage):
        name = "planted"

    found = mismatches([*stage_classes(), Planted], STAGES, _trainers())
    assert len(found) == 1 and "Planted trains into planted/" in found[0]


def test_a_planted_registry_stage_fails():
    extra = Stage("extra", "extra", "msgnet", title="an extra model")
    found = mismatches(stage_classes(), (*STAGES, extra), _trainers())
    assert found == ["stage extra: no stage class trains into extra/", "stage extra: no trainer"]
    assert mismatches(stage_classes(), STAGES, [*_trainers(), "ghost"]) == ["trainer ghost: not a registered stage"]


def test_the_commands_budget_and_reports_take_their_stages_from_the_registry():
    from msgnet.cli import build_parser
    from msgnet.cli.train_cmd import _commands
    from msgnet.preset_derivation import MODEL_OF_STAGE
    from msgnet.workflow.budget import PAID
    from msgnet.workflow.train import ALL

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "stage")
    assert list(train.choices) == _commands()
    assert set(_commands()) - {"all"} == {s.name for s in trained_stages() if s.part_of is None}
    assert PAID == ALL == tuple(s.name for s in stages_of("msgnet"))
    assert MODEL_OF_STAGE == {s.name: s.model for s in STAGES if s.model}
    assert all(s.title for s in STAGES)
