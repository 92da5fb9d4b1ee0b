"""One writer per output: an advisory lock held for as long as a process writes a run or a sampling run.

The lock is ``fcntl.flock`` on a ``.msgnet.lock`` file: the operating system releases it when the
process ends however it ends (a killed run never blocks the next one), and a second writer is
refused at once in one line naming the holder's pid. Within one process the lock is re-entrant
(`msgnet run` locks its run, then trains it), counted per path.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from msgnet.errors import UsageError

LOCK_NAME = ".msgnet.lock"
_held: dict[Path, int] = {}  # path -> depth, for this process only: what it already holds


@contextmanager
def writing(folder: Path | str, what: str = "run") -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) while the block writes into it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] = max(_held.get(key, 1) - 1, 1)  # the outermost holder releases the lock
        return
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UsageError(f"{folder}: another msgnet process (pid {holder}) is writing this {what}; "
                             "wait for it to end, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def release_before_move(folder: Path | str) -> None:
    """Remove ``folder``'s lock file before the folder is renamed into place (the lock itself is
    released when :func:`writing` ends); the finished output carries no lock file."""
    try:
        (Path(folder) / LOCK_NAME).unlink()
    except FileNotFoundError:
        pass
