"""The one-command demo: the recorded sweep it chooses from, and a small run end to end."""

from __future__ import annotations

import json

import pytest

import audio_concepts.demo
from audio_cnn.model import AudioCNN
from audio_concepts.analysis import METHODS
from audio_concepts.demo import DEMO_BLOCKS, DEMO_KS, DEMO_SEEDS, recorded_sweep, run_demo
from audio_concepts.sweep import best_pair

_TOY = AudioCNN.preset("toy")


def test_recorded_sweep_covers_the_demo_grid_on_validation_clips():
    sweep = recorded_sweep()
    assert sweep.layers == tuple(_TOY.block_output(block) for block in DEMO_BLOCKS)
    assert sweep.n_subspaces == DEMO_KS and sweep.eval_split == "val"
    assert sweep.settings["seeds"] == list(DEMO_SEEDS)
    cells = {(row.layer, row.n_subspaces, row.method) for row in sweep.rows}
    for layer in sweep.layers:
        for k in DEMO_KS:
            assert {(layer, k, method) for method in (*METHODS, "standard")} <= cells
    assert all(row.recovery is not None for row in sweep.rows if row.method != "standard")
    layer, k = best_pair(sweep)
    assert layer in sweep.layers and k in DEMO_KS


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sweep", [False, True])
def test_small_demo_writes_report_and_summary(tmp_path, monkeypatch, small_analysis, sweep):
    # A one-pair grid keeps the sweep variant short; the full grid is the recorded one.
    monkeypatch.setattr(audio_concepts.demo, "DEMO_BLOCKS", (5,))
    monkeypatch.setattr(audio_concepts.demo, "DEMO_KS", (2,))
    summary = run_demo(
        tmp_path, clips_per_class=12, epochs=1, sweep=sweep, config=small_analysis, progress=False
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert set(summary["methods"]) == {*METHODS, "standard"}
    recovery = summary["methods"]["drsa"]["recovery"]
    assert recovery is None or 0.0 <= recovery <= 1.0
    demo = summary["demo"]
    assert (demo["layer"], demo["n_subspaces"]) == (small_analysis.layer, 2)
    assert demo["sweep_origin"] == ("computed" if sweep else "recorded")
    steps = {"synthesise", "train", "fit", "explain", "evaluate", "report"}
    assert set(summary["timings_s"]) >= steps  # every step, the report included
    html = (tmp_path / "report.html").read_text()
    assert "Choice of layer and K" in html
    assert ("computed by this demo" in html) == sweep
    assert (tmp_path / "sweep" / "sweep.json").is_file() == sweep
