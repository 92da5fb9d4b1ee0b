"""The typed requests of the smaller `msgnet eval` commands: fidelity, fid, vqvae and class-gain.

Paths may be ``str`` or ``Path``; every value is checked when the request is made, naming its field
(the command line puts its flag in the field's place). The defaults are written here once: the CLI
reads them. Each request is run by the function of its module (``run_fidelity``, ``run_fid``,
``measure_vqvae``, ``run_class_gain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from msgnet.data.checks import check_count, check_name, check_seed
from msgnet.io import paths_as_fields


@dataclass(frozen=True)
class FidelityRequest:
    """`msgnet eval fidelity`: the share of annotated objects of ``data`` the digit classifier reads as
    their class. ``classifier``: a trained classifier's folder (None: the default place, trained on demand)."""

    data: Path
    split: str | None = None  # None: every split
    classifier: Path | None = None
    device: torch.device | str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        paths_as_fields(self, ("data",), ("classifier",))
        check_name("split", self.split, optional=True)


@dataclass(frozen=True)
class FidRequest:
    """`msgnet eval fid`: FID/KID of ``synthetic`` against ``real``'s validation images, on at most
    ``max_images`` synthetic images (classifier features)."""

    real: Path
    synthetic: Path
    max_images: int = 5000
    classifier: Path | None = None
    device: torch.device | str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        paths_as_fields(self, ("real", "synthetic"), ("classifier",))
        check_count("max_images", self.max_images, least=2)


@dataclass(frozen=True)
class VQVAEAdherenceRequest:
    """`msgnet eval vqvae`: ``run``'s VQ-VAE on the first ``num`` images (0: all) of ``data``'s ``split``;
    ``seed`` draws the changed layouts of the obedience test."""

    run: Path
    data: Path
    split: str = "val"
    num: int = 0
    seed: int = 0
    classifier: Path | None = None
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        paths_as_fields(self, ("run", "data"), ("classifier",))
        check_name("split", self.split)
        check_count("num", self.num, least=0)
        check_seed("seed", self.seed)


@dataclass(frozen=True)
class ClassGainRequest:
    """`msgnet eval class-gain`: the codes prior of ``run`` on its extracted ``split`` codes (the first
    ``max_maps`` maps, 0: all), ``batch_size`` maps at a time; ``seed`` draws the class permutations."""

    run: Path
    split: str = "val"
    max_maps: int = 0
    batch_size: int = 64
    seed: int = 0
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        paths_as_fields(self, ("run",))
        check_name("split", self.split)
        check_count("max_maps", self.max_maps, least=0)
        check_count("batch_size", self.batch_size)
        check_seed("seed", self.seed)
