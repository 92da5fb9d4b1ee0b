"""Atomic file writing and the on-disk form of model weights (safetensors + config.json)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from PIL import Image
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from msgnet.errors import DataError, UsageError


@contextmanager
def failures_named(path: Path | str, unnamed_or: str | None = None) -> Iterator[None]:
    """An ``OSError`` (a full disk, a folder we may not write) raised inside names ``path``: the file or
    folder the user knows. ``unnamed_or``: rename only errors that name nothing or this path."""
    try:
        yield
    except OSError as exc:
        if unnamed_or is not None and exc.filename not in (None, unnamed_or):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


@contextmanager
def atomic_path(path: Path | str, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success. ``durable``:
    the folder is fsynced after the rename (the caller fsyncs the file before), so that a crash
    just after leaves the new file or the old one, never an empty one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; the output gets the user's usual mode
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with failures_named(path, unnamed_or=str(tmp_path)):  # the file the user knows, not our temporary
            yield tmp_path
            os.replace(tmp_path, path)
            if durable:
                fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(folder: Path | str) -> None:
    """Flush ``folder``'s entries to disk: a rename is durable only once its folder is (POSIX keeps
    the name in the folder's own data). A file system that cannot fsync a folder is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # EINVAL on some network and FUSE file systems: the rename itself stands
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def msgnet_home() -> Path:
    """Where msgnet keeps what it makes on demand (a trained digit classifier, the CLEVR renderer's
    environment): $MSGNET_HOME, else $XDG_CACHE_HOME/msgnet or ~/.cache/msgnet."""
    root = os.environ.get("MSGNET_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "msgnet")
    return Path(root)

def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` durably: the file is fsynced before it is renamed into place, its folder after
    (run.json, dataset.json, config.json, preset.yaml: a power cut must not leave them empty)."""
    with atomic_path(path, durable=True) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Serialised in memory first, then written by Python: a full disk is an ``OSError`` naming the
    path (ENOSPC), never a serialiser's internal error, and the previous file stays."""
    with atomic_path(path, durable=True) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: Path | str) -> Any:
    """Load optimiser/RNG state; never unpickles arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or hostile file
        raise UsageError(f"{path}: cannot read training state ({type(exc).__name__})") from None


def save_model(model: torch.nn.Module, config: Any, directory: Path | str, kind: str) -> None:
    """Write ``model.safetensors`` and ``config.json`` (with ``kind``) atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / "model.safetensors", safetensors_bytes(state))
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
    folder = path if path.is_dir() else path.parent  # an existing output folder: can we write in it?
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


def prepare_output_dir(out: Path | str, overwrite: bool, inputs: Iterable[Path | str] = (),
                       field: str = "out") -> None:
    """Check a dataset output folder before any work: never an input, inside one or holding one;
    replaced (``overwrite``) only when it is a dataset msgnet wrote; writable."""
    out = Path(out)
    ensure_output_apart(out, *inputs, field=field)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise UsageError(f"{out}: already exists (choose another `{field}`, or `overwrite`)")
        if not out.is_dir() or out.is_symlink() or not is_msgnet_dataset(out):
            raise UsageError(f"{out}: `overwrite` replaces only a dataset msgnet wrote, and this is not one "
                             f"(no msgnet dataset.json); choose another `{field}`")
    check_can_write(out)


# What msgnet writes into a PNG's text chunks, so that a later command knows it may replace the file.
PNG_MARK = ("Software", "msgnet")
JSON_MARK = "msgnet_version"


def written_by_msgnet(path: Path | str) -> bool:
    """Whether the file at ``path`` is one msgnet wrote: a PNG carrying msgnet's mark, or a JSON object
    with a ``msgnet_version`` key (the results msgnet's commands write with --json)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            with Image.open(path) as im:
                return im.info.get(PNG_MARK[0]) == PNG_MARK[1]
        data = json.loads(path.read_text())
        return isinstance(data, dict) and JSON_MARK in data
    except Exception:  # unreadable, not an image, not JSON: not ours
        return False


def paths_as_fields(request: Any, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Make a frozen request's path fields :class:`Path` (given as ``str`` or any path-like), refusing
    anything else in one line naming the field; ``optional`` ones may be None."""
    for name, may_be_none in [(n, False) for n in required] + [(n, True) for n in optional]:
        value = getattr(request, name)
        if value is None and may_be_none:
            continue
        if not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{name}: a path (str or Path), not {type(value).__name__}")
        object.__setattr__(request, name, Path(value))


def ensure_output_apart(output: Path | str, *inputs: Path | str | None, field: str = "output") -> None:
    """Refuse, before any work, an output that is one of ``inputs``, lies inside one or holds one:
    writing it would change what the command reads. ``field`` names the output in the error (the
    request's field; the CLI puts its flag in its place). Inputs that are None are skipped."""
    out = Path(output)
    target = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if target == src or src in target.parents or target in src.parents:
            raise UsageError(f"{field}: {out} must lie apart from the input {given} (not it, inside it or "
                             "around it)")


def check_apart(output: Path | str, inputs: Iterable[Path | str], role: str = "output") -> None:
    """:func:`ensure_output_apart` for a list of inputs."""
    ensure_output_apart(output, *inputs, field=role)


def check_output_file(path: Path | str, inputs: Iterable[Path | str] = (), field: str = "output") -> None:
    """Before any work: a file output lies apart from every input, replaces only a file msgnet wrote,
    and can be written."""
    path = Path(path)
    ensure_output_apart(path, *inputs, field=field)
    if path.is_dir():
        raise UsageError(f"{path}: a folder, not a file")
    if (path.exists() or path.is_symlink()) and not written_by_msgnet(path):
        raise UsageError(f"{path}: already exists and msgnet did not write it (choose another path, or remove it)")
    check_can_write(path)


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
