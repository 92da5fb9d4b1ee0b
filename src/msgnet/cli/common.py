"""Pieces shared by several command modules."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any


def add_preset_arguments(p: argparse.ArgumentParser, derivable: bool = False) -> None:
    """``--config`` and dotted overrides; with ``derivable`` the preset may be left out and derived."""
    p.add_argument("--config", required=not derivable, default=None, metavar="PRESET",
                   help="preset name (see `msgnet presets`) or a YAML file"
                   + ("; without it: the run's preset.yaml when resuming, else one derived from the dataset "
                      "and --budget (written to RUN/preset.yaml with the reason for each choice)" if derivable else ""))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set vqvae_train.batch_size=32 (repeatable)")
    p.add_argument("overrides_positional", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides may also be given bare, e.g. prior.dropout=0.2")


def pair_policies(text: str) -> list[str]:
    """argparse type of ``--policies``: ``P;P;...``, each a valid pair policy spec (normalised)."""
    from msgnet.evaluation.benchmark.policy import PairPolicy

    try:
        return [PairPolicy.parse(v.strip()).spec for v in text.split(";") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N [cuda if available, else cpu]")


def add_train_subset_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on N images of the train split (a seeded, nested subset: the same N images "
                   "as `msgnet eval augment --real-subset N`); recorded in RUN/dataset.json, and later "
                   "stages and --resume reuse the run's images")


def load_preset_from_args(args: argparse.Namespace):
    from msgnet.config import load_preset

    return load_preset(args.config, list(args.overrides) + list(args.overrides_positional))


def library_default(owner: object, name: str) -> Any:
    """The default the library gives ``name``: a field of the request dataclass ``owner``, or a keyword of
    the function ``owner``. Options read it here rather than repeat it, so that it is written once."""
    if dataclasses.is_dataclass(owner):
        found = owner.__dataclass_fields__[name]  # type: ignore[union-attr]
        if found.default_factory is not dataclasses.MISSING:
            return found.default_factory()
        return found.default
    return inspect.signature(owner).parameters[name].default  # type: ignore[arg-type]
