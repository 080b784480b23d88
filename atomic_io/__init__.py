"""Write-then-rename file output, so a killed process never leaves a half-written file.

Also the one JSON writer and reader of the project: :func:`write_json_atomic` refuses what
JSON cannot hold (NaN, infinities, arbitrary objects) before touching the file, and
:func:`read_json` turns a missing or corrupt file into a one-line error that names the file
and what it should hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "read_json", "write_json_atomic", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary name is unique, so concurrent writers of the same file are safe: the last
    complete write wins and readers only ever see complete files. On error the temporary file
    is removed and ``path`` is left untouched. Parent directories are created, and the file
    gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (UTF-8, ending in a newline) to ``path`` atomically.

    Parameters
    ----------
    path:
        The file to write; parent directories are created.
    data:
        JSON values only: dicts with string keys, lists, tuples, strings, finite numbers,
        booleans and ``None``.
    indent:
        Spaces per nesting level; ``None`` writes one line.

    Raises
    ------
    ValueError
        If ``data`` holds NaN or an infinity (not JSON; the file would not load elsewhere)
        or refers to itself. Nothing is written.
    TypeError
        If ``data`` holds a value JSON has no form for (e.g. a NumPy array). Nothing is
        written.
    """
    try:
        text = json.dumps(data, indent=indent, allow_nan=False)
    except ValueError as error:
        raise ValueError(
            f"cannot write {path}: {error}; JSON has no NaN or infinity, store None for a "
            "missing number"
        ) from error
    except TypeError as error:
        raise TypeError(
            f"cannot write {path}: {error}; convert it to a list, str, number or None first"
        ) from error
    write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """The JSON value stored in ``path``, with one-line errors that name the file.

    Parameters
    ----------
    path:
        The file to read (UTF-8 JSON).
    what:
        What the file should hold, for the messages, e.g. ``"a JSON object of training
        settings"`` or ``"the metadata of a synthetic dataset; regenerate it"``.

    Returns
    -------
    Any
        The decoded value (dict, list, str, number, bool or None); checking its shape is the
        caller's job.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not UTF-8 JSON (or nests too deeply to decode).
    OSError
        Other failures to read the file (permissions, a directory), as raised by the system.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; expected {what}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected {what}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected {what}") from error
    except RecursionError as error:
        raise ValueError(f"{path} nests too deeply to decode; expected {what}") from error
