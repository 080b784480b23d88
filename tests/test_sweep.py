"""Sweeps over layers and K: every pair and method in table, JSON and figure; resume; checks."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest

from audio_cnn.model import AudioCNN
from audio_concepts.analysis import Analysis, AnalysisConfig
from audio_concepts.cli import main
from audio_concepts.sweep import (
    SweepResult,
    SweepRow,
    best_pair,
    choice_measures,
    choice_pairs,
    format_sweep,
    load_sweep,
    plot_sweep,
    selectivity_agreement,
    sweep_concepts,
)

pytestmark = [
    pytest.mark.slow,
    # A few solver iterations keep the test fast; convergence is not what it checks.
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

_TOY = AudioCNN.preset("toy")
LAYERS = [_TOY.block_output(-2), _TOY.block_output(-1)]  # features.10, features.13
KS = [2, 3]
METHODS = ["drsa", "prca"]
FLAGS = [
    "--methods", ",".join(METHODS),
    "--fit-clips-per-class", "3",
    "--eval-clips-per-class", "2",
    "--eval-split", "val",
    "--n-locations", "4",
    "--max-iter", "10",
    "--n-restarts", "1",
    "--seeds", "0",
    "--no-progress",
]  # fmt: skip
CONFIG = AnalysisConfig(
    methods=tuple(METHODS),
    fit_clips_per_class=3,
    eval_clips_per_class=2,
    eval_split="val",
    n_locations=4,
    max_iter=10,
    n_restarts=1,
)


@pytest.fixture(scope="module")
def swept(toy, tmp_path_factory) -> tuple[Path, str]:
    """A sweep written by the command (treat as read-only), and what the command printed."""
    data, run = toy
    out = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", str(run), str(data), "--out", str(out), "--layers", *LAYERS]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--k", *map(str, KS), *FLAGS]) == 0
    return out, printed.getvalue()


def test_json_and_table_hold_every_pair_and_method(swept):
    out, printed = swept
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["layers"] == LAYERS and saved["n_subspaces"] == KS
    assert saved["eval_split"] == "val" and saved["settings"]["eval_split"] == "val"
    expected = set(itertools.product(LAYERS, KS, [*METHODS, "standard"]))
    rows = saved["rows"]
    assert {(r["layer"], r["n_subspaces"], r["method"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert row["aupc"] is None or 0.0 <= row["aupc"] <= 2.0
        if row["method"] == "standard":
            assert row["recovery"] is None
        elif row["recovery"] is not None:  # None only if no val clip had two objects
            assert 0.0 <= row["recovery"] <= 1.0 and 0.0 < row["chance"] <= 0.5
    # The printed table has a line per row, each naming its layer, K and method.
    lines = [line.split() for line in printed.splitlines()]
    assert printed.startswith("val accuracy")
    assert {(w[0], int(w[1]), w[2]) for w in lines if w and w[0] in LAYERS} == expected
    # Every pair is a complete analysis directory on the validation split.
    for layer, k in itertools.product(LAYERS, KS):
        state = json.loads((out / f"{layer}_K{k}" / "analysis.json").read_text())
        assert state["layer"] == layer and state["config"]["n_subspaces"] == k
        assert state["config"]["eval_split"] == "val"


def test_figure_has_a_line_per_method_and_layer_and_chance(swept):
    out, _ = swept
    image = matplotlib.image.imread(out / "sweep.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image[..., :3].std() > 0
    result = _result(out)
    aupc, recovery = plot_sweep(result).axes
    labels = {f"{m} · {layer}" for m in [*METHODS, "standard"] for layer in LAYERS}
    assert {line.get_label() for line in aupc.lines} == labels
    assert [t.get_text() for t in aupc.get_xticklabels()] == ["2", "3"]
    recovery_labels = {line.get_label() for line in recovery.lines}
    if any(row.chance is not None for row in result.rows):
        assert "chance" in recovery_labels
    assert "standard · " + LAYERS[0] not in recovery_labels


def test_resume_skips_finished_pairs(swept, toy, tmp_path, monkeypatch):
    out = shutil.copytree(swept[0], tmp_path / "sweep", copy_function=shutil.copy2)
    data, run = toy
    entry = out / f"{LAYERS[0]}_K2" / "sweep_entry.json"
    before = entry.stat().st_mtime_ns
    fitted = []
    fit = Analysis.fit

    def counting_fit(self, **options):
        fitted.append(self.workspace.root.name)
        return fit(self, **options)

    monkeypatch.setattr(Analysis, "fit", counting_fit)
    # batch_size changes how, not what, is computed: finished pairs are still reused.
    config = dataclasses.replace(CONFIG, batch_size=7)
    result = sweep_concepts(
        run, data, out, layers=LAYERS[:1], n_subspaces=[2, 4], config=config, progress=False
    )
    assert fitted == [f"{LAYERS[0]}_K4"]
    assert result.computed == ((LAYERS[0], 4),) and result.reused == ((LAYERS[0], 2),)
    assert entry.stat().st_mtime_ns == before
    assert {(r.layer, r.n_subspaces) for r in result.rows} == {(LAYERS[0], 2), (LAYERS[0], 4)}
    assert json.loads((out / "sweep.json").read_text())["n_subspaces"] == [2, 4]
    text = format_sweep(result)
    assert text.count(LAYERS[0]) == 2 * (len(METHODS) + 1)


def test_finished_pair_with_other_settings_is_an_error(swept, toy):
    out, _ = swept
    data, run = toy
    config = dataclasses.replace(CONFIG, n_locations=3)
    with pytest.raises(ValueError, match="other settings \\(n_locations differ\\)"):
        sweep_concepts(run, data, out, layers=LAYERS, n_subspaces=KS, config=config)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--layers", "features.10", "features.10", "--k", "2"], "layers must be distinct"),
        (["--layers", "features.10", "--k", "2", "2"], "n_subspaces must be distinct"),
        (["--layers", "features.10", "--k", "0"], "positive ints"),
        (["--layers", "features.99", "--k", "2"], "no layer named 'features.99'"),
        (["--layers", "features.10", "--k", "2", "64"], "do not fit"),
        (["--layers", "features.10", "--k", "2", "--eval-split", "train"], "eval_split"),
        (["--layers", "features.10", "--k", "2", "--methods", "pca"], "methods"),
    ],
)
def test_bad_settings_fail_before_any_work(toy, tmp_path, capsys, arguments, message):
    data, run = toy
    out = tmp_path / "out"
    assert main(["sweep", str(run), str(data), "--out", str(out), *arguments]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_layer_and_k_flags_are_swept_not_fixed(toy, tmp_path, capsys):
    data, run = toy
    argv = ["sweep", str(run), str(data), "--out", str(tmp_path), "--layers", "features.10"]
    with pytest.raises(SystemExit):
        main([*argv, "--k", "2", "--n-subspaces", "3"])
    assert "unrecognized arguments: --n-subspaces" in capsys.readouterr().err


def _result(out: Path) -> SweepResult:
    saved = json.loads((out / "sweep.json").read_text())
    rows = tuple(SweepRow(**row) for row in saved["rows"])
    return SweepResult(
        out_dir=out,
        layers=tuple(saved["layers"]),
        n_subspaces=tuple(saved["n_subspaces"]),
        eval_split=saved["eval_split"],
        accuracy=saved["accuracy"],
        rows=rows,
        computed=(),
        reused=(),
        settings=saved["settings"],
    )


def test_load_sweep_reads_back_what_the_sweep_wrote(swept):
    out, _ = swept
    loaded = load_sweep(out / "sweep.json")
    saved = json.loads((out / "sweep.json").read_text())
    assert loaded.to_dict() == saved
    assert loaded.reused == tuple(itertools.product(LAYERS, KS)) and loaded.computed == ()


@pytest.mark.parametrize(
    "content, message",
    [("{", "not valid JSON"), ('{"format": "other"}', "not a sweep"),
     ('{"format": "zennit_drsa.sweep", "rows": []}', "not a complete sweep")],
)  # fmt: skip
def test_load_sweep_rejects_other_files(tmp_path, content, message):
    path = tmp_path / "sweep.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_sweep(path)


def _row(
    layer: str,
    k: int,
    method: str,
    aupc: float | None,
    recovery: float | None,
    validated: tuple[str, ...] = ("recovery", "deletion_round_robin"),
):
    measures = {"recovery": recovery, "deletion_round_robin": aupc, "insertion": 0.5}
    flags = {name: name in validated for name in measures}
    return SweepRow(layer, k, method, aupc, aupc, 0.01, recovery, 0.4, 10, measures, flags)


def test_best_pair_uses_only_the_methods_own_figures_on_validated_measures():
    rows = (
        _row("a", 2, "drsa", 0.30, 0.60),
        _row("a", 4, "drsa", 0.10, 0.55),  # lower AUPC, but recovery decides first
        _row("b", 2, "drsa", 0.20, 0.60),  # ties with (a, 2) on recovery, lower AUPC
        _row("b", 4, "prca", 0.01, 0.90),  # other methods are not looked at
    )
    result = SweepResult(Path("."), ("a", "b"), (2, 4), "val", 1.0, rows, (), (), {})
    assert choice_measures(result) == ["recovery", "deletion_round_robin"]
    assert best_pair(result) == ("b", 2)
    assert best_pair(result, "prca") == ("b", 4)
    # Recovery not validated at (a, 2): that pair takes no part; recovery decides among the
    # others, and the tie-breaker is what is validated at all of those.
    partly = dataclasses.replace(result, rows=(
        _row("a", 2, "drsa", 0.30, 0.99, ("deletion_round_robin",)), *rows[1:]
    ))  # fmt: skip
    assert choice_pairs(partly) == [("a", 4), ("b", 2), ("b", 4)]
    assert choice_measures(partly) == ["recovery", "deletion_round_robin"]
    assert best_pair(partly) == ("b", 2)  # (a, 2)'s untrusted 0.99 is not looked at
    # Recovery validated nowhere: the first measure validated somewhere decides.
    no_recovery = dataclasses.replace(result, rows=tuple(
        dataclasses.replace(row, validated={"deletion_round_robin": True}) for row in rows
    ))  # fmt: skip
    assert choice_measures(no_recovery) == ["deletion_round_robin"]
    assert best_pair(no_recovery) == ("a", 4)
    # No measure validated anywhere: no choice, and the error says what to do.
    none = dataclasses.replace(result, rows=tuple(
        dataclasses.replace(row, validated={}) for row in rows
    ))  # fmt: skip
    with pytest.raises(ValueError, match="no measure is validated at any swept layer"):
        best_pair(none)
    with pytest.raises(ValueError, match="no evaluated rows of method 'dsa'"):
        best_pair(result, "dsa")


def test_selectivity_agreement_is_the_rank_correlation_over_rows():
    rows = tuple(
        dataclasses.replace(
            _row("a", k, "drsa", 0.2, recovery),
            measures={"recovery": recovery, "selectivity": selectivity},
        )
        for k, recovery, selectivity in (
            (2, 0.4, 0.1),
            (4, 0.5, 0.3),
            (8, 0.7, 0.2),
            (16, 0.9, 0.9),
        )
    )
    result = SweepResult(Path("."), ("a",), (2, 4, 8, 16), "val", 1.0, rows, (), (), {})
    agreement = selectivity_agreement(result)
    assert agreement["recovery"]["n"] == 4
    assert agreement["recovery"]["rho"] == pytest.approx(0.8)  # ranks 1,3,2,4 vs 1,2,3,4
    assert "interventional_recovery" not in agreement
    assert selectivity_agreement(dataclasses.replace(result, rows=rows[:2])) is None
