"""Write-then-rename output (complete files or none) and the JSON writer and reader."""

import math
import os
import stat

import pytest

from atomic_io import atomic_path, read_json, write_json_atomic, write_text_atomic


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


def test_json_round_trips_with_a_final_newline(tmp_path):
    target = tmp_path / "sub" / "data.json"
    data = {"name": "ä", "values": [1, 2.5, None, True], "nested": {"k": []}}
    write_json_atomic(target, data)
    assert target.read_text(encoding="utf-8").endswith("}\n")
    assert read_json(target, what="test data") == data
    write_json_atomic(target, [1, 2], indent=None)
    assert target.read_text() == "[1, 2]\n"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_json_refuses_nan_and_infinity_naming_the_file_and_keeps_the_old_one(tmp_path, bad):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"accuracy": 0.5})
    with pytest.raises(ValueError, match=r"metrics\.json.*no NaN or infinity"):
        write_json_atomic(target, {"accuracy": bad})
    assert read_json(target, what="metrics") == {"accuracy": 0.5}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_json_refuses_values_it_has_no_form_for(tmp_path):
    with pytest.raises(TypeError, match=r"x\.json.*not JSON serializable"):
        write_json_atomic(tmp_path / "x.json", {"when": object()})
    assert os.listdir(tmp_path) == []


def test_json_file_gets_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "x.json", {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640


def test_reading_a_missing_file_names_it_and_what_it_should_hold(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.json does not exist; expected a manifest"):
        read_json(tmp_path / "none.json", what="a manifest")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", r"bad\.json is not valid JSON \(.*line 1.*\); expected a manifest$"),
        (b"\xff\xfe{}", r"bad\.json is not valid JSON \(.*utf-8.*\); expected a manifest$"),
        (b"[" * 100_000, r"bad\.json nests too deeply to decode; expected a manifest$"),
    ],
)
def test_reading_a_corrupt_file_is_one_line_value_error(tmp_path, content, message):
    (tmp_path / "bad.json").write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        read_json(tmp_path / "bad.json", what="a manifest")
    assert "\n" not in str(caught.value)
