"""Training checkpoints: weights + config (safetensors/json) and a training-state file.

A checkpoint is the directory ``<stage dir>/checkpoint/`` holding

- ``model.safetensors`` + ``config.json`` (:func:`msgnet.io.save_model`), and
- ``training_state.pt``: optimiser state, step, epoch, position in the epoch's data
  order, the stage's own state and the RNG states (torch, numpy, python, cuda). It is
  written with ``torch.save`` from plain containers and tensors only, and read back with
  ``torch.load(weights_only=True)`` (:func:`msgnet.io.load_training_state`).

The directory is written whole under a temporary name and swapped in, so a crash
never leaves a half-written checkpoint (the previous one survives as ``checkpoint.old``
until the swap is complete).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msgnet.errors import UsageError
from msgnet.io import atomic_torch_save, load_state_dict, load_training_state, read_model_config, save_model

STATE_FILE = "training_state.pt"


def rng_state() -> dict[str, Any]:
    """All random-number-generator states, as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(obj: Any) -> Any:
    return [_to_lists(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _to_tuples(obj: Any) -> Any:
    return tuple(_to_tuples(o) for o in obj) if isinstance(obj, list) else obj


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    config: Any,
    kind: str,
    training_state: dict[str, Any],
) -> None:
    """Write a complete checkpoint to ``directory`` atomically (see module docstring)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".new")
    old = directory.with_name(directory.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_model(model, config, tmp, kind)
        atomic_torch_save(training_state, tmp / STATE_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save (a full disk) leaves the last good checkpoint only
        raise
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def find_checkpoint(directory: Path) -> Path | None:
    """The checkpoint directory to resume from (falls back to ``.old`` after a crash mid-swap)."""
    directory = Path(directory)
    for cand in (directory, directory.with_name(directory.name + ".old")):
        if (cand / STATE_FILE).is_file() and (cand / "model.safetensors").is_file():
            return cand
    return None


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, training state) of the checkpoint in ``directory``."""
    found = find_checkpoint(directory)
    if found is None:
        raise UsageError(f"{directory}: no checkpoint to resume from")
    return load_state_dict(found), load_training_state(found / STATE_FILE)


def check_same_architecture(directory: Path, config: Any) -> None:
    """Refuse to resume a checkpoint saved under another model config (``--resume`` with other
    overrides): its weights would not fit, or worse, fit and mean something else."""
    found = find_checkpoint(directory)
    if found is not None:
        check_saved_config(found, config)


def check_saved_config(directory: Path, config: Any) -> None:
    """``directory/config.json`` (a checkpoint or a trained model), if any, must hold ``config``;
    keys the saved file lacks are fields added since, at their defaults."""
    if not (Path(directory) / "config.json").is_file():
        return
    _, saved = read_model_config(directory)
    current = dataclasses.asdict(config)
    differ = [k for k in sorted(set(saved) | set(current)) if k in saved and saved[k] != current.get(k)]
    if differ:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in differ[:3])
        raise UsageError(f"{Path(directory) / 'config.json'}: the run was trained with another model ({shown}); "
                         "resume with the run's own settings (its preset.yaml), or train into another `run`")
