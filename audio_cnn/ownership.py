"""One writer per output folder: a run directory or an analysis folder belongs to one process.

Two processes writing the same folder lose data (the second overwrites the first's best
checkpoint, or mixes its classes into the first's subspaces). :func:`lock_folder` holds an
OS-level file lock (``filelock``) on ``FOLDER/.lock`` while a command writes there, taken
without waiting: a second writer is refused at once, with a message naming the first (its pid,
host, start time and command line, kept in ``FOLDER/.lock-owner.json``). The operating system
releases the lock when its process dies, so a killed process (even by SIGKILL) leaves a lock
*file* but no lock, and the folder can be resumed or rewritten.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from atomic_io import read_json, write_json_atomic

__all__ = ["FolderInUseError", "lock_folder"]

_LOCK_FILE = ".lock"
_OWNER_FILE = ".lock-owner.json"


class FolderInUseError(OSError):
    """Another process is writing to the folder (see :func:`lock_folder`)."""


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike[str], *, what: str, hint: str) -> Iterator[Path]:
    """Hold ``folder`` for this process while it writes there: one writer per folder.

    Parameters
    ----------
    folder:
        The folder; created if missing.
    what:
        What the folder is, for the message (``"run"``, ``"analysis folder"``).
    hint:
        What else the refused user can do, e.g. ``"or write to another --out"``.

    Yields
    ------
    Path
        ``folder``.

    Raises
    ------
    FolderInUseError
        Another process holds the folder; the message names it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / _LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise FolderInUseError(
            f"{what} {folder} is in use by another process ({_owner(folder)}); wait for it to "
            f"finish or stop it, {hint}"
        ) from None
    try:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        write_json_atomic(folder / _OWNER_FILE, owner)
        yield folder
    finally:
        (folder / _OWNER_FILE).unlink(missing_ok=True)
        lock.release()


def _owner(folder: Path) -> str:
    """The holder of a folder's lock, in words, from its owner file."""
    try:
        owner = read_json(folder / _OWNER_FILE, what="the owner of the folder's lock")
        return (
            f"pid {owner['pid']} on {owner['host']}, started {owner['started']}: {owner['command']}"
        )
    except (OSError, ValueError, TypeError, KeyError):
        # The holder has just taken the lock and not yet written its owner file.
        return "owner not known yet"
