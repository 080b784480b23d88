"""The settings reader both command lines share: a --config JSON file with the flags over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_cnn.command import read_settings

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SETTINGS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)
FLAGS = st.dictionaries(st.text(max_size=8), st.none() | JSON_VALUES, max_size=6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("settings")


def _config(folder: Path, content: str | bytes) -> Path:
    path = folder / "settings.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_flags_override_the_file_and_none_flags_leave_it(folder: Path) -> None:
    config = _config(folder, json.dumps({"epochs": 5, "lr": 0.1, "seed": 3}))
    flags = {"epochs": 7, "lr": None, "device": "cpu", "seed": None}
    merged = read_settings(config, flags, what="training settings")
    assert merged == {"epochs": 7, "lr": 0.1, "seed": 3, "device": "cpu"}


def test_without_a_file_the_settings_are_the_given_flags() -> None:
    assert read_settings(None, {"epochs": 2, "lr": None}, what="training settings") == {"epochs": 2}


def test_bad_json_is_a_one_line_error_naming_the_file(folder: Path) -> None:
    config = _config(folder, '{"epochs": 5,')
    with pytest.raises(ValueError, match=r"settings\.json is not valid JSON") as caught:
        read_settings(config, {}, what="training settings")
    assert "a JSON object of training settings" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "shown"), [("[1, 2]", r"\[1, 2\]"), ("3", "3"), ("null", "null"), ('"a"', '"a"')]
)
def test_a_file_that_is_not_an_object_is_refused_showing_what_it_holds(
    folder: Path, content: str, shown: str
) -> None:
    config = _config(folder, content)
    expected = rf"settings\.json holds {shown}, not a JSON object of analysis settings$"
    with pytest.raises(ValueError, match=expected):
        read_settings(config, {}, what="analysis settings")


def test_a_long_non_object_is_shown_shortened(folder: Path) -> None:
    config = _config(folder, json.dumps(list(range(100))))
    with pytest.raises(ValueError, match=r"holds \[0, 1, 2, .*\.\.\., not a JSON object") as caught:
        read_settings(config, {}, what="analysis settings")
    assert "99" not in str(caught.value)


def test_a_missing_or_unreadable_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nothing\.json does not exist"):
        read_settings(tmp_path / "nothing.json", {}, what="training settings")
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        read_settings(tmp_path, {}, what="training settings")  # a directory


def test_both_command_lines_report_a_bad_config_in_one_line(folder: Path, capsys) -> None:
    from audio_cnn.cli import main as audio_cnn_main
    from audio_concepts.cli import main as zennit_drsa_main

    config = _config(folder, "[]")
    out = str(folder / "out")
    assert audio_cnn_main(["train", str(folder), "--out", out, "--config", str(config)]) == 1
    assert "holds [], not a JSON object of training settings" in capsys.readouterr().err
    assert (
        zennit_drsa_main(["fit", str(folder), str(folder), "--out", out, "--config", str(config)])
        == 1
    )
    assert "holds [], not a JSON object of analysis settings" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(stored=SETTINGS, flags=FLAGS)
def test_any_settings_object_is_read_back_with_the_given_flags_over_it(
    folder: Path, stored: dict, flags: dict
) -> None:
    config = _config(folder, json.dumps(stored))
    merged = read_settings(config, flags, what="settings")
    assert merged == {**stored, **{k: v for k, v in flags.items() if v is not None}}


@settings(max_examples=200, deadline=None)
@given(content=JSON_VALUES.map(json.dumps) | st.text() | st.binary(), flags=FLAGS)
def test_any_file_content_gives_a_dict_or_a_value_error(
    folder: Path, content: str | bytes, flags: dict
) -> None:
    config = _config(folder, content)
    try:
        merged = read_settings(config, flags, what="settings")
    except ValueError as error:
        assert str(config) in str(error) and "\n" not in str(error)
    else:
        assert isinstance(merged, dict)
