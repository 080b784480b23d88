"""Warnings about settings that do not suit a model, and the seeded subsets of clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audio_cnn.datasets import ClipRecord
from audio_concepts.config import AnalysisConfig
from audio_concepts.data import choose_clips
from audio_concepts.diagnostics import concept_overlap, coverage_warning, overlap_warnings


def test_overlap_is_one_for_equal_maps_zero_for_disjoint_and_ignores_negative_parts():
    a = np.zeros((4, 4))
    a[:2] = 1.0
    b = np.zeros((4, 4))
    b[2:] = 1.0
    heatmaps = np.stack([a, 2 * a, b - a])[None]  # concept 3 is b plus a negative copy of a
    overlap = concept_overlap(heatmaps)
    assert overlap.shape == (3, 3)
    assert overlap[0, 1] == pytest.approx(1.0)
    assert overlap[0, 2] == pytest.approx(0.0)
    np.testing.assert_allclose(np.diag(overlap), 1.0)


def test_overlap_leaves_out_inputs_without_positive_relevance():
    maps = np.ones((2, 2, 3))
    maps[1, 1] = -1.0  # input 1: concept 2 has nothing positive
    overlap = concept_overlap(maps)
    assert overlap[0, 1] == pytest.approx(1.0)  # from input 0 alone
    assert np.isnan(concept_overlap(-np.ones((1, 2, 3)))).all()


def test_coverage_warning_only_when_the_subspaces_fill_the_layer():
    assert coverage_warning("features.7", 32, 4, 7) is None
    text = coverage_warning("features.7", 32, 4, 8)
    assert "span all 32 channels of layer features.7" in text and "smaller K" in text


def test_overlap_warnings_name_the_most_similar_pair():
    matrix = [[1.0, 0.7, 0.2], [0.7, 1.0, 0.9], [0.2, 0.9, 1.0]]
    (text,) = overlap_warnings({"drsa": matrix, "prca": np.eye(3).tolist()})
    assert text.startswith("drsa: 2 of 3 concept pairs overlap")
    assert "concepts 2 and 3: 0.90" in text
    assert overlap_warnings({"drsa": [[1.0, None], [None, 1.0]]}) == []


def _clips(names: list[str]) -> list[ClipRecord]:
    return [ClipRecord(Path(f"/data/digit/{name}.wav"), 0, f"digit/{name}") for name in names]


def test_first_subset_keeps_path_order():
    clips = _clips([f"x{i}" for i in range(5)])
    assert choose_clips(clips, 3, AnalysisConfig(subset="first")) == clips[:3]


def test_random_subset_is_seeded_and_depends_on_the_seed():
    clips = _clips([f"x{i:02d}" for i in range(40)])
    first = choose_clips(clips, 10, AnalysisConfig(seeds=(0,)))
    assert first == choose_clips(clips, 10, AnalysisConfig(seeds=(0,)))
    assert first != choose_clips(clips, 10, AnalysisConfig(seeds=(1,)))
    assert first != clips[:10] and len(set(first)) == 10
    assert choose_clips(clips, None, AnalysisConfig()) == choose_clips(clips, 99, AnalysisConfig())


def test_stratified_subset_takes_every_stratum_before_repeating_one():
    # 19 clips of one accent in path order first, one of each other accent last.
    names = [f"us_{i:02d}" for i in range(19)] + ["uk_00", "in_00", "au_00"]
    config = AnalysisConfig(stratify=r"^([a-z]+)_")
    chosen = choose_clips(_clips(names), 4, config)
    assert sorted(clip.path.name.split("_")[0] for clip in chosen) == ["au", "in", "uk", "us"]
    unstratified = choose_clips(_clips(names), 4, AnalysisConfig())
    assert len(unstratified) == 4
