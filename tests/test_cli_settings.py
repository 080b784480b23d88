"""The settings reader both command lines share: a --config JSON file with the flags over it."""

from __future__ import annotations

import json
import re
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


def _help_text(argv: list[str], capsys) -> str:
    from audio_cnn.cli import main as audio_cnn_main

    with pytest.raises(SystemExit) as exited:
        audio_cnn_main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _help_entries(text: str) -> dict[str, str]:
    """Argument (as written in its help entry) → its help, over the argument sections."""
    entries: dict[str, str] = {}
    current, in_section = None, False
    for line in text.splitlines():
        if line in ("positional arguments:", "options:"):
            in_section, current = True, None
        elif not line.startswith("  "):  # a blank line or another heading ends the section
            in_section, current = False, None
        elif in_section and re.match(r"^  \S", line):
            current, _, meaning = line.strip().partition("  ")
            entries[current] = meaning.strip()
        elif in_section and current is not None:
            entries[current] = f"{entries[current]} {line.strip()}".strip()
    return entries


@pytest.mark.parametrize("command", ["synth", "train", "evaluate", "predict"])
def test_every_audio_cnn_argument_has_a_meaning_and_every_option_its_default(
    command: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    text = _help_text([command], capsys)
    entries = _help_entries(text)
    usage = text.split("\n\n")[0]
    flags = set(re.findall(r"(--[a-z][a-z-]*)", usage)) - {"--help"}
    described = {flag for entry in entries for flag in re.findall(r"--[a-z][a-z-]*", entry)}
    assert flags <= described, f"options without a help entry: {sorted(flags - described)}"
    for entry, meaning in entries.items():
        assert meaning, f"{command} {entry} has no help"
        if entry.startswith("-") and entry != "-h, --help":
            assert "(default: " in meaning or "(required)" in meaning, f"{entry}: {meaning}"
            assert "(default: None)" not in meaning, f"{entry} hides its real default"


def test_training_flags_show_the_defaults_of_both_presets(monkeypatch, capsys) -> None:
    from audio_cnn.train import TrainConfig

    monkeypatch.setenv("COLUMNS", "100")
    entries = _help_entries(_help_text(["train"], capsys))
    toy, gtzan = TrainConfig.preset("toy"), TrainConfig.preset("gtzan")
    patience = entries["--patience PATIENCE"]
    assert f"{toy.patience} with the toy preset, {gtzan.patience} with the gtzan preset" in patience
    assert "(default: adamw)" in entries["--optimizer OPTIMIZER"]
