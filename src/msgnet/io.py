"""Atomic file writing and the on-disk form of model weights (safetensors + config.json)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors.torch import load_file, save_file

from msgnet.errors import UsageError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()



def msgnet_home() -> Path:
    """Where msgnet keeps what it makes on demand (a trained digit classifier, the CLEVR renderer's
    environment): $MSGNET_HOME, else $XDG_CACHE_HOME/msgnet or ~/.cache/msgnet."""
    root = os.environ.get("MSGNET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "msgnet")
    return Path(root)

def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_training_state(path: Path | str) -> Any:
    """Load optimiser/RNG state; never unpickles arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or hostile file
        raise UsageError(f"{path}: cannot read training state ({type(exc).__name__})") from None


def save_model(model: torch.nn.Module, config: Any, directory: Path | str, kind: str) -> None:
    """Write ``model.safetensors`` and ``config.json`` (with ``kind``) atomically into ``directory``."""
    import dataclasses

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    atomic_write_json(directory / "config.json", {"kind": kind, "config": cfg})


def read_model_config(directory: Path | str) -> tuple[str, dict[str, Any]]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise UsageError(f"{path}: {why_not_found(path)} (not a saved msgnet model)")
    try:
        data = json.loads(path.read_text())
        return data["kind"], data["config"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UsageError(f"{path}: not a msgnet model config") from None


def load_state_dict(directory: Path | str) -> dict[str, torch.Tensor]:
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise UsageError(f"{path}: {why_not_found(path)}")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: unreadable weights ({exc})") from None


def read_json(path: Path | str) -> Any:
    """Parse a JSON file a user handed us; a missing or malformed file is a one-line DataError."""
    from msgnet.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {why_not_found(path)}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__} at char {getattr(exc, 'pos', '?')})") from None


def check_can_write(path: Path | str) -> None:
    """Refuse, before any work, an output that cannot be written: under a file, or where writing
    fails. The test creates (and removes) a temporary file in the nearest existing folder."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{path}: cannot be written: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".msgnet-write-test.", dir=folder)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be written ({folder}: {exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def is_msgnet_dataset(directory: Path | str) -> bool:
    """Whether ``directory`` holds a dataset msgnet wrote (a dataset.json with classes and splits)."""
    marker = Path(directory) / "dataset.json"
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "classes" in data and "splits" in data


def prepare_output_dir(out: Path | str, overwrite: bool, inputs: Iterable[Path | str] = ()) -> None:
    """Check a dataset output folder before any work: never an input, inside one or holding one;
    replaced (``overwrite``) only when it is a dataset msgnet wrote; writable."""
    out = Path(out)
    target = out.resolve()
    for given in inputs:
        src = Path(given).resolve()
        if target == src or src in target.parents or target in src.parents:
            raise UsageError(f"{out}: the output must lie apart from the input {given} (not it, inside it or "
                             "around it)")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise UsageError(f"{out}: already exists (choose another --out, or --overwrite)")
        if not out.is_dir() or out.is_symlink() or not is_msgnet_dataset(out):
            raise UsageError(f"{out}: --overwrite replaces only a dataset msgnet wrote, and this is not one "
                             "(no msgnet dataset.json); choose another --out")
    check_can_write(out)


def why_not_found(path: Path | str, want: str = "file") -> str:
    """Why ``path`` is not the existing ``want`` ("file" or "folder"): the words for one error line."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "a symbolic link loop"
        except OSError:
            return "a broken symbolic link"
    if want == "file" and path.is_dir():
        return "a folder, not a file"
    if want == "folder" and path.exists() and not path.is_dir():
        return "a file, not a folder"
    return "missing" if want == "file" else "no such folder"
