"""Write-then-rename output: complete files or none."""

import os
import stat

import pytest

from atomic_io import atomic_path, write_text_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["file.txt"]


def test_written_file_gets_umask_permissions(tmp_path):
    target = tmp_path / "file.txt"
    write_text_atomic(target, "new")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
