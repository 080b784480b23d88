"""Fault cases of the analysis and the plugin core: each ends in a clear message, never silently.

Stale steps after a re-fit or a killed one, damaged records, bad settings and devices, damaged
subspace files and inputs of another dtype.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import audio_concepts.fit
from audio_concepts import Analysis, AnalysisConfig
from audio_concepts.cli import main
from zennit_drsa import PCASubspaces, load, save

pytestmark = [
    pytest.mark.fault,
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def finished(toy, small_analysis, tmp_path_factory) -> Path:
    """An analysis folder after fit, explain and evaluate (read-only; copy to change it)."""
    data, run = toy
    out = tmp_path_factory.mktemp("finished")
    analysis = Analysis.create(run, data, out, small_analysis)
    analysis.fit(progress=False)
    analysis.explain(progress=False)
    analysis.evaluate(progress=False)
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "analysis"))


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1, error
    return error


@pytest.mark.slow
def test_a_refit_with_another_k_makes_old_explanations_stale(finished, toy, tmp_path, capsys):
    data, run = toy
    out = _copy(finished, tmp_path)
    config = AnalysisConfig.from_dict(json.loads((out / "analysis.json").read_text())["config"])
    refit = Analysis.create(run, data, out, dataclasses.replace(config, n_subspaces=4))
    refit.fit(progress=False)
    for command in ("evaluate", "report"):  # both read the explanations of the old fit
        assert main([command, str(out), "--no-progress"]) == 1
        error = _one_line_error(capsys)
        assert "computed from an earlier fit" in error and "K = 4" in error
        assert f"zennit-drsa explain {out}" in error
    assert main(["explain", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--no-progress"]) == 1  # the evaluation is stale too
    assert f"zennit-drsa evaluate {out}" in _one_line_error(capsys)


@pytest.mark.slow
def test_a_killed_refit_leaves_a_folder_the_later_steps_refuse(
    finished, toy, tmp_path, monkeypatch, capsys
):
    data, run = toy
    out = _copy(finished, tmp_path)
    config = AnalysisConfig.from_dict(json.loads((out / "analysis.json").read_text())["config"])
    saved = []

    def killed_after_one(estimator, path, **options):
        if saved:
            raise KeyboardInterrupt  # the user's Ctrl-C, or the machine going down
        saved.append(path)
        return save(estimator, path, **options)

    monkeypatch.setattr(audio_concepts.fit, "save", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        Analysis.create(run, data, out, config).fit(progress=False)
    for command in ("explain", "evaluate", "report"):
        assert main([command, str(out), "--no-progress"]) == 1
        assert "zennit-drsa fit" in _one_line_error(capsys)


def test_results_of_another_fit_are_refused(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    results = json.loads((out / "evaluation" / "results.json").read_text())
    (out / "evaluation" / "results.json").write_text(json.dumps({**results, "fit_id": "other"}))
    assert main(["report", str(out), "--no-progress"]) == 1
    assert "results.json was computed from an earlier fit" in _one_line_error(capsys)


def test_a_subspace_file_of_another_fit_is_refused(finished, tmp_path):
    out = _copy(finished, tmp_path)
    stem = next((out / "subspaces" / "drsa").glob("*/seed0.json")).with_suffix("")
    estimator = load(stem)
    save(estimator, stem, metadata={**estimator.metadata_, "fit_id": "another"})
    with pytest.raises(ValueError, match="computed from an earlier fit"):
        _ = Analysis.open(out).subspaces


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "was not written by zennit-drsa fit"),
        ('{"format": "zennit_drsa.analysis", "layer": "x"}', "lacks"),
    ],
)
def test_a_damaged_analysis_record_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "analysis.json").write_text(content)
    for command in ("explain", "evaluate", "report"):
        assert main([command, str(tmp_path), "--no-progress"]) == 1
        assert message in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "not a torch device"), ("cuda:0", "asks for CUDA")],
)
def test_a_bad_device_is_refused_before_work(toy, tmp_path, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data, run = toy
    out = tmp_path / "out"
    assert main(["fit", str(run), str(data), "--out", str(out), "--device", device]) == 1
    assert message in _one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content", ["[1, 2]", '"K=4"', "3"])
def test_a_settings_file_that_is_not_an_object_is_one_line(toy, tmp_path, capsys, content):
    data, run = toy
    config = tmp_path / "settings.json"
    config.write_text(content)
    out = str(tmp_path / "out")
    assert main(["fit", str(run), str(data), "--out", out, "--config", str(config)]) == 1
    assert "settings.json" in _one_line_error(capsys)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-2, 9), st.text(max_size=4), st.booleans()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(AnalysisConfig)]),
                       _VALUES, max_size=6))  # fmt: skip
def test_any_settings_either_validate_or_are_a_value_error(data):
    try:
        config = AnalysisConfig.from_dict(data)
    except ValueError as error:
        assert str(error).startswith("invalid analysis settings") and "\n" not in str(error)
    else:
        assert AnalysisConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("version", [0, -7, True, "1", None, 1.0])
def test_subspace_files_of_no_written_format_version_are_refused(tmp_path, version):
    estimator = PCASubspaces(n_subspaces=2, subspace_dim=2).fit(
        np.random.default_rng(0).normal(size=(50, 6))
    )
    _, header = save(estimator, tmp_path / "pca")
    content = json.loads(header.read_text())
    header.write_text(json.dumps({**content, "format_version": version}))
    with pytest.raises(ValueError, match="format version"):
        load(tmp_path / "pca")


def test_the_attributor_takes_float64_inputs_in_the_models_dtype():
    from audio_cnn import AudioCNN
    from zennit_drsa import DRSAAttributor, reference_composite

    model = AudioCNN.preset("toy").eval()
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    activations = np.random.default_rng(0).normal(size=(200, 32))
    subspaces = PCASubspaces(n_subspaces=2, subspace_dim=4).fit(activations)
    with DRSAAttributor(model, reference_composite(model), "features.7", subspaces) as attributor:
        wide = attributor.explain(x, target=torch.tensor([0, 1]))
        narrow = attributor.explain(x.float(), target=torch.tensor([0, 1]))
    assert wide.heatmaps.dtype == torch.float32
    torch.testing.assert_close(wide.heatmaps, narrow.heatmaps)


_HOLD = """
import sys
from audio_cnn.ownership import lock_folder

with lock_folder(sys.argv[1], what="analysis folder", hint="or write to another --out"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_of_an_analysis_folder_is_refused_and_told_who(finished, tmp_path, capsys):
    import subprocess
    import sys

    out = _copy(finished, tmp_path)
    before = (out / "analysis.json").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for command in ("explain", "evaluate", "report"):
            assert main([command, str(out), "--no-progress"]) == 1
            error = _one_line_error(capsys)
            assert f"analysis folder {out} is in use by another process (pid {holder.pid}" in error
    finally:
        holder.communicate("", timeout=30)
    assert (out / "analysis.json").read_bytes() == before  # nothing was written
    assert main(["evaluate", str(out), "--no-progress"]) == 0  # free again
