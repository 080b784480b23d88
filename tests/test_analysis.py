"""The concept-analysis pipeline and the zennit-drsa command, end to end on a tiny toy run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio_concepts.analysis import METHODS, AnalysisConfig
from audio_concepts.cli import main
from zennit_drsa.estimators import DRSA, load

pytestmark = [
    pytest.mark.slow,
    # A few solver iterations keep the test fast; convergence is not what it checks.
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

K = 2
EXAMPLES = 1
FIT_FLAGS = [
    "--n-subspaces", str(K),
    "--fit-clips-per-class", "14",  # all: every object shows up for the layer references
    "--eval-clips-per-class", "2",
    "--n-locations", "4",
    "--max-iter", "15",
    "--n-restarts", "1",
    "--seeds", "0", "1",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def analysed(toy, tmp_path_factory) -> Path:
    data, run = toy
    out = tmp_path_factory.mktemp("out")
    assert main(["fit", str(run), str(data), "--out", str(out), *FIT_FLAGS]) == 0
    assert main(["explain", str(out), "--no-progress"]) == 0
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    flags = ["--examples-per-class", str(EXAMPLES), "--no-progress"]
    assert main(["report", str(out), *flags]) == 0
    return out


def test_summary_has_every_method_with_finite_numbers(analysed):
    summary = json.loads((analysed / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["seeds"] == [0, 1]
    assert summary["settings"]["n_subspaces"] == K
    assert set(summary["methods"]) == {*METHODS, "standard"}
    for method, entry in summary["methods"].items():
        assert math.isfinite(entry["aupc"]), method
        if method == "standard":
            assert entry["recovery"] is None
        elif entry["recovery"] is not None:  # None only if no test clip had two objects
            assert 0.0 <= entry["recovery"] <= 1.0
            assert 0.0 < entry["chance"] <= 0.5
    # Seeded methods are evaluated once per seed, PRCA and the standard map once.
    n = summary["settings"]["n_inputs"]
    assert summary["methods"]["random"]["n"] + summary["methods"]["random"]["n_excluded"] == 2 * n
    assert summary["methods"]["prca"]["n"] + summary["methods"]["prca"]["n_excluded"] == n


def test_references_score_exactly_what_they_are_built_to(analysed):
    results = json.loads((analysed / "evaluation" / "results.json").read_text())
    references = results["references"]
    eligible = references["eligible"]
    assert len(eligible) == results["n_inputs"] and any(eligible)
    oracle = references["oracle"][0]["measures"]
    entangled = references["entangled"][0]["measures"]
    for i, chosen in enumerate(eligible):
        if chosen:
            # Disjoint masks: each object's relevance lies in its own map only.
            assert oracle["recovery"][i] == pytest.approx(1.0)
            # One concept holding everything scores the chance level, 1 / #objects.
            assert entangled["recovery"][i] == pytest.approx(entangled["chance"][i])
        else:
            assert oracle["recovery"][i] is None
    # The entangled split is the standard map: the same flipping figures.
    standard = results["methods"]["standard"][0]["measures"]
    assert standard["deletion_union"] == entangled["deletion_union"]
    assert "recovery" not in standard
    # Layer references: K_o = 4 objects per toy class; one subspace for the entangled one.
    assert references["layer"]["n_objects"] == 4
    assert references["entangled_subspace"][0]["measures"]["selectivity"] == [None] * len(eligible)
    for name in ("oracle_subspaces", "random_subspaces"):
        values = references[name][0]["measures"]["interventional_recovery"]
        assert any(v is not None for v in values), name
    assert set(results["measures"]) >= {"recovery", "interventional_recovery", "selectivity",
                                        "deletion_union", "deletion_round_robin",
                                        "deletion_positive_sum", "insertion"}  # fmt: skip
    summary = json.loads((analysed / "summary.json").read_text())
    for name, entry in summary["validation"].items():
        assert entry["validated"] == summary["measures"][name]["validated"]
        assert entry["map"] is not None or entry["layer"] is not None
    assert summary["fitness"]["threshold"] == 0.9
    assert summary["sanity"]["cascading"]["steps"][0]["concepts"]["spearman"]["mean"] == (
        pytest.approx(1.0)
    )
    html = (analysed / "report.html").read_text()
    for title in ("Which measures can be believed", "Sanity checks", "Headline"):
        assert title in html


def test_subspaces_are_saved_per_method_class_and_seed(analysed):
    state = json.loads((analysed / "analysis.json").read_text())
    for name in state["class_names"]:
        for seed in (0, 1):
            drsa = load(analysed / "subspaces" / "drsa" / name / f"seed{seed}")
            assert isinstance(drsa, DRSA)
            assert drsa.subspace_sizes_.tolist() == [state["subspace_dim"]] * K
            assert drsa.metadata_["layer"] == state["layer"]
        assert (analysed / "subspaces" / "prca" / name / "seed0.npz").is_file()
        assert not (analysed / "subspaces" / "prca" / name / "seed1.npz").exists()


def test_report_is_self_contained_with_a_player_per_concept(analysed):
    page = (analysed / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//|file:)", page, re.I)
    assert "http://" not in page and "https://" not in page
    state = json.loads((analysed / "analysis.json").read_text())
    n_classes = len(state["class_names"])
    # Per shown example: the original and one player per concept.
    assert page.count("<audio") == n_classes * EXAMPLES * (K + 1)
    assert page.count('src="data:audio/') == n_classes * EXAMPLES * (K + 1)
    for name in state["class_names"]:
        assert f">{name}</h3>" in page
    assert "chance" in page and "AUPC" in page


def test_report_names_the_split_and_shows_prototypes_per_class(analysed):
    summary = json.loads((analysed / "summary.json").read_text())
    assert summary["settings"]["eval_split"] == "test"
    page = (analysed / "report.html").read_text()
    assert "Accuracy on the test split" in page and "eval_split" in page
    for name in json.loads((analysed / "analysis.json").read_text())["class_names"]:
        assert (analysed / "report_media" / f"{name}_prototypes.png").is_file()
        assert f"Prototypes of {name} (drsa)" in page


def test_missing_fit_output_is_a_clear_error(tmp_path, capsys):
    for command in ("explain", "evaluate", "report"):
        assert main([command, str(tmp_path / "nothing"), "--no-progress"]) == 1
        assert "zennit-drsa fit" in capsys.readouterr().err


def test_fit_rejects_bad_settings_and_paths(toy, tmp_path, capsys):
    data, run = toy
    out = str(tmp_path / "out")
    assert main(["fit", str(run), str(data), "--out", out, "--methods", "drsa,nope"]) == 1
    assert "methods" in capsys.readouterr().err
    assert main(["fit", str(run), str(data), "--out", out, "--n-subspaces", "0"]) == 1
    assert "n_subspaces" in capsys.readouterr().err
    assert main(["fit", str(run), str(data), "--out", out, "--subspace-dim", "1000"]) == 1
    assert "do not fit" in capsys.readouterr().err
    assert main(["fit", str(run), str(data), "--out", out, "--eval-split", "train"]) == 1
    assert "eval_split must be one of ('test', 'val')" in capsys.readouterr().err
    assert main(["fit", str(run), str(tmp_path / "missing"), "--out", out]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(tmp_path), str(data), "--out", out]) == 1
    assert "best.pt" in capsys.readouterr().err
    config = tmp_path / "settings.json"
    config.write_text('{"n_subspace": 3}')
    assert main(["fit", str(run), str(data), "--out", out, "--config", str(config)]) == 1
    assert "unknown analysis settings" in capsys.readouterr().err
    assert not (tmp_path / "out" / "analysis.json").exists()


def test_demo_rejects_too_few_clips(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--clips-per-class", "2"]) == 1
    assert "clips-per-class" in capsys.readouterr().err


def test_corrupt_state_is_reported(tmp_path, capsys):
    (tmp_path / "analysis.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 1
    assert "not valid JSON" in capsys.readouterr().err


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "n_subspaces": st.integers(-2, 6),
            "ordering": st.sampled_from(["round_robin", "union", "zigzag"]),
            "seeds": st.lists(st.integers(-1, 3), max_size=3),
            "removal": st.floats(allow_nan=True, allow_infinity=True),
            "patch_size": st.lists(st.integers(-1, 9), min_size=1, max_size=3),
        },
    )
)
def test_config_accepts_exactly_the_valid_settings(settings):
    valid = (
        settings.get("n_subspaces", 1) > 0
        and settings.get("ordering", "union") != "zigzag"
        and (
            "seeds" not in settings
            or (
                settings["seeds"]
                and min(settings["seeds"]) >= 0
                and len(set(settings["seeds"])) == len(settings["seeds"])
            )
        )
        and math.isfinite(settings.get("removal", 0.0))
        and ("patch_size" not in settings or (
            len(settings["patch_size"]) == 2 and min(settings["patch_size"]) > 0
        ))
    )  # fmt: skip
    if valid:
        config = AnalysisConfig.from_dict(settings)
        assert AnalysisConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    else:
        with pytest.raises(ValueError, match="invalid analysis settings"):
            AnalysisConfig.from_dict(settings)
