"""Exact interventions on synthetic clips (audio_concepts.interventions)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from audio_concepts.config import AnalysisConfig
from audio_concepts.data import AudioData
from audio_concepts.interventions import (
    REFERENCE_KINDS,
    Interventions,
    build_interventions,
    fit_layer_references,
    interventional_scores,
    layer_relevance_fn,
    task_fitness,
)
from audio_concepts.model import AudioModel
from audio_concepts.planning import plan_layer
from audio_concepts.workspace import AnalysisState
from zennit_drsa.composites import audio_composite
from zennit_drsa.evaluation import concept_selectivity

# ----- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def opened(toy, tmp_path_factory) -> AudioData:
    """The toy folder opened for the toy run's model, on the CPU."""
    data_dir, run = toy
    model = AudioModel.from_run(run, device="cpu")
    return AudioData.open(data_dir, model, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def explained(opened, small_analysis):
    """The evaluation chunks as explain.py cuts them: waveforms, log-mels, clip paths."""
    chunks = opened.chunks(opened.evaluation_clips(small_analysis), 1)
    items = [chunks[i] for i in range(len(chunks))]
    waveform = torch.stack([w for w, _, _ in items])
    clips = [opened.relative_name(chunks.clips[clip].path) for *_, clip in items]
    labels = np.array([label for _, label, _ in items])
    return waveform, opened.model.input_of(waveform), clips, labels


@pytest.fixture(scope="module")
def many(opened):
    """Interventions on every test clip and the first ten training clips (more multi-object
    clips than the evaluation's three per class)."""
    splits = opened.dataset.splits
    clips = [opened.relative_name(c.path) for c in [*splits["test"], *splits["train"][:10]]]
    return build_interventions(opened, clips)


def hand_made(values: list[tuple[float, float]], labels: list[int]) -> Interventions:
    """Interventions whose rows are 1 × 1 × 2 "log-mels": row = the logits of an identity
    network; per input a mix row and a background row (no objects), ``values`` giving the
    target logit before and after (the other class's logit is 0)."""
    rows = []
    for (before, after), label in zip(values, labels, strict=True):
        for value in (before, after):
            row = [0.0, 0.0]
            row[label] = value
            rows.append(row)
    n = len(values)
    return Interventions(
        clips=tuple(f"c/{i}.wav" for i in range(n)),
        labels=np.array(labels),
        object_names=((),) * n,
        waveform=torch.zeros(2 * n, 1),
        logmel=torch.tensor(rows).reshape(2 * n, 1, 1, 2),
        mix_row=np.arange(0, 2 * n, 2),
        removal_rows=tuple(np.zeros(0, dtype=np.int64) for _ in range(n)),
        background_row=np.arange(1, 2 * n, 2),
    )


# ----- (a) the interventions are exact ----------------------------------------------------------


@pytest.mark.slow
def test_mix_rows_are_the_explained_chunks(opened, explained):
    waveform, logmel, clips, labels = explained
    interventions = build_interventions(opened, clips)
    mix = torch.from_numpy(interventions.mix_row)
    assert interventions.clips == tuple(clips)
    np.testing.assert_array_equal(interventions.labels, labels)
    # The explained chunk was read from a 16-bit WAV, the mix row regenerated: they differ by
    # the WAV's rounding (observed under 2 steps of 2**-15, rounding plus a half-step offset).
    error = interventions.waveform[mix] - waveform
    assert error.abs().max() <= 4 * 2.0**-15
    # Log-mel tolerance derived from that error, not picked: the STFT is linear, so by the
    # triangle inequality each |STFT| bin moves by at most |STFT(error)| there, and the
    # (non-negative) mel filterbank and the floor clamp keep that bound: |10**a - 10**b| <=
    # 10**input_of(error) in linear mel units (the front-end has power 1). Only float32
    # rounding of the STFT, relative to each frame's whole energy, comes on top: 1e-5 of the
    # frame's summed mel values. In log10 units the two agree to < 0.03 in 99.9 % of bins;
    # only the lowest mel bin, whose energy is near the rounding noise's, differs more.
    frontend = opened.model.frontend
    assert frontend.power == 1
    bound = 10 ** opened.model.input_of(error).double()
    linear = 10 ** logmel.double()
    slack = 1e-5 * linear.sum(dim=2, keepdim=True)
    difference = (10 ** interventions.logmel[mix].double() - linear).abs()
    assert (difference <= bound + slack).all()
    # Every row's log-mel is the front-end's output of its waveform.
    np.testing.assert_allclose(
        interventions.logmel[:4], opened.model.input_of(interventions.waveform[:4]), atol=1e-5
    )


@pytest.mark.slow
def test_removals_take_out_one_source_each_and_background_is_mix_minus_all(opened, many):
    chunk = opened.model.frontend.chunk_samples
    for i, path in enumerate(many.clips):
        clip = opened.synthetic_clip(path)
        peak = np.abs(clip.waveform).max()
        mix = many.waveform[many.mix_row[i]].numpy()
        sources = clip.sources[:, :chunk] / peak
        assert many.object_names[i] == clip.object_names
        assert len(many.removal_rows[i]) == len(clip.object_names) >= 1
        removed = many.waveform[torch.from_numpy(many.removal_rows[i])].numpy()
        # Exact removal, and no renormalisation: the other sounds keep their level.
        np.testing.assert_allclose(mix - removed, sources, atol=1e-6)
        background = many.waveform[many.background_row[i]].numpy()
        np.testing.assert_allclose(mix - sources.sum(axis=0), background, atol=1e-6)
        np.testing.assert_allclose(background, clip.background[:chunk] / peak, atol=1e-6)
    # Each input's rows: mix, its removals, its background, and nothing else.
    rows = np.concatenate([many.mix_row, many.background_row, *many.removal_rows])
    assert sorted(rows) == list(range(many.logmel.shape[0]))


def test_build_interventions_needs_synthetic_data():
    assert build_interventions(SimpleNamespace(kind="gtzan"), ["a.wav"]) is None


# ----- (b) task fitness -------------------------------------------------------------------------


def test_task_fitness_on_known_logits():
    # Class 0: halved (passes, also exactly at half), not halved, non-positive; class 1: both
    # pass, one by going negative.
    values = [(4.0, 1.0), (4.0, 2.0), (4.0, 2.5), (-1.0, -3.0), (2.0, 0.5), (3.0, -1.0)]
    labels = [0, 0, 0, 0, 1, 1]
    fitness = task_fitness(nn.Flatten(), hand_made(values, labels))
    json.dumps(fitness, allow_nan=False)
    assert [entry["passes"] for entry in fitness["inputs"]] == [
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    assert fitness["classes"]["0"] == {
        "label": 0,
        "n": 4,
        "n_passing": 2,
        "share_passing": 0.5,
        "n_nonpositive": 1,
        "mean_before": pytest.approx(11 / 4),
        "mean_after": pytest.approx(2.5 / 4),
    }
    assert fitness["classes"]["1"]["share_passing"] == 1.0
    assert (fitness["n"], fitness["n_passing"], fitness["n_nonpositive"]) == (6, 4, 1)
    assert fitness["share_passing"] == pytest.approx(4 / 6)
    assert fitness["fit"] is False
    assert task_fitness(nn.Flatten(), hand_made(values, labels), threshold=0.5)["fit"] is True
    # Explicit labels pick the other logit, 0 everywhere: never positive, nothing passes.
    other = task_fitness(nn.Flatten(), hand_made(values, labels), labels=[1, 1, 1, 1, 0, 0])
    assert other["n_passing"] == 0 and other["n_nonpositive"] == 6


@pytest.mark.slow
def test_task_fitness_names_the_model_classes(opened, many):
    fitness = task_fitness(opened, many)
    json.dumps(fitness, allow_nan=False)
    assert set(fitness["classes"]) == set(opened.model.class_names)
    assert fitness["n"] == many.n_inputs
    assert fitness["threshold"] == 0.9


# ----- (c) interventional scores with planted relevances ------------------------------------------


def band_relevance(data: AudioData):
    """Planted relevance: concept k of class c is the linear mel energy in the primary band of
    the class's object k, which no other object of the class occupies; logits: total energy."""
    frontend = data.model.frontend
    filterbank = frontend.mel_filterbank.double()
    freqs = torch.arange(filterbank.shape[1], dtype=torch.float64)
    freqs *= frontend.sample_rate / frontend.n_fft
    objects = data.synthetic_task.class_objects
    weights = torch.zeros(len(objects), len(objects[0]), filterbank.shape[0], dtype=torch.float64)
    for c, class_objects in enumerate(objects):
        for k, obj in enumerate(class_objects):
            low, high = obj.bands[0]
            inside = (freqs >= low) & (freqs <= high)
            weights[c, k] = filterbank[:, inside].sum(1) / filterbank.sum(1)

    def relevance_and_logits(x, targets):
        energy = 10 ** x.double()[:, 0]
        relevance = torch.einsum("nkm,nmf->nk", weights[targets], energy)
        total = relevance.sum(1)
        return relevance, torch.stack([total, total], dim=1)

    return relevance_and_logits


@pytest.mark.slow
def test_planted_band_relevance_recovers_every_object(opened, many):
    planted = band_relevance(opened)
    scores = interventional_scores(planted, many, batch_size=7)
    eligible = [s for s in scores if s.eligible]
    assert len(eligible) >= 3
    for score in scores:
        assert score.score >= 0.99
        # The logit here is the concepts' total: its drops are the columns' sums.
        np.testing.assert_allclose(score.logit_drops, score.relevance.sum(axis=0), rtol=1e-9)

    def swapped(x, targets):
        relevance, logits = planted(x, targets)
        return relevance[:, [2, 0, 3, 1]], logits

    def entangled(x, targets):
        relevance, logits = planted(x, targets)
        one = torch.zeros_like(relevance)
        one[:, 0] = relevance.sum(1)
        return one, logits

    # Matching does not care which concept holds an object; one concept holding all is chance.
    for planted_score, swapped_score in zip(
        scores, interventional_scores(swapped, many), strict=True
    ):
        assert swapped_score.score == pytest.approx(planted_score.score)
    for score in interventional_scores(entangled, many, batch_size=64):
        assert score.score == pytest.approx(score.chance)


def test_inputs_without_objects_get_no_score():
    interventions = hand_made([(1.0, 0.0)], [0])

    def never_called(x, targets):
        raise AssertionError("an input without objects needs no relevances")

    assert interventional_scores(never_called, interventions) == [None]


# ----- (d) the layer references -------------------------------------------------------------------


@pytest.fixture(scope="module")
def references(opened, small_analysis):
    config = dataclasses.replace(small_analysis, fit_clips_per_class=None)
    model = opened.model
    plan = plan_layer(model, config)
    state = AnalysisState(
        model_name="toy",
        run=None,
        data_dir=str(opened.root),
        data_kind=opened.kind,
        class_names=model.class_names,
        layer=plan.layer,
        channels=plan.channels,
        subspace_dim=plan.subspace_dim,
        n_locations=plan.n_locations,
        config=config,
    )
    return state, fit_layer_references(opened, state)


@pytest.mark.slow
def test_layer_references_have_one_subspace_per_object(references):
    state, (estimators, description) = references
    json.dumps(description, allow_nan=False)
    assert set(estimators) == set(REFERENCE_KINDS)
    d, k_o = state.channels, description["n_objects"]
    assert k_o == 4
    d_o = description["subspace_dim"]
    assert d_o == max(1, min(state.subspace_dim, d // k_o, description["rank"] // k_o))
    for label in range(len(state.class_names)):
        oracle = estimators["oracle_subspaces"][label]
        assert oracle.subspace_sizes_.tolist() == [d_o] * k_o
        assert oracle.components_.shape == (k_o * d_o, d)
        assert sorted(oracle.group_order_.tolist()) == list(range(k_o))
        assert estimators["random_subspaces"][label].subspace_sizes_.tolist() == [d_o] * k_o
        assert estimators["entangled_subspace"][label].subspace_sizes_.tolist() == [d]
    for name, entry in description["classes"].items():
        assert len(entry["objects"]) == k_o
        assert min(entry["vectors_per_object"].values()) >= d_o, name


@pytest.mark.slow
def test_entangled_reference_holds_the_whole_layer(opened, references, explained):
    state, (estimators, _) = references
    _, logmel, _, labels = explained
    network = opened.model.network
    composite = audio_composite(state.config.composite, network)
    totals = {}
    for kind in ("oracle_subspaces", "entangled_subspace"):
        fn = layer_relevance_fn(network, composite, state.layer, estimators[kind])
        full, logits = fn.propagate(logmel, labels)
        assert fn(logmel, labels).shape == (len(labels), fn.n_subspaces)
        assert logits.shape == (len(labels), len(state.class_names))
        totals[kind] = full
    entangled, oracle = totals["entangled_subspace"], totals["oracle_subspaces"]
    assert entangled.shape[1] == 2 and oracle.shape[1] == 5
    scale = oracle.abs().sum(1).max()
    # The one subspace is the whole layer: no residual, and its R is the layer's LRP total,
    # which does not depend on the decomposition.
    torch.testing.assert_close(entangled[:, 0], entangled.sum(1), atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(entangled[:, 0], oracle.sum(1), atol=1e-5 * scale, rtol=0)
    # The callable is reusable and leaves the network without hooks.
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in network.modules())


@pytest.mark.slow
def test_layer_relevance_drives_interventional_scores_and_selectivity(
    opened, references, many, explained
):
    state, (estimators, _) = references
    network = opened.model.network
    composite = audio_composite(state.config.composite, network)
    fn = layer_relevance_fn(network, composite, state.layer, estimators["oracle_subspaces"])
    scores = interventional_scores(fn, many, batch_size=16)
    assert len(scores) == many.n_inputs
    for score, n_objects in zip(scores, many.n_objects, strict=True):
        assert score.relevance.shape == (4, n_objects)
        assert -1.0 <= score.score <= 1.0
    # It is concept_selectivity's relevance_fn as it stands.
    _, logmel, _, labels = explained
    heatmaps = torch.rand(2, 4, *logmel.shape[1:], generator=torch.Generator().manual_seed(0))
    result = concept_selectivity(
        fn, logmel[:2], heatmaps, removal=-4.0, targets=labels[:2], batch_size=4
    )
    assert result.drops.shape == (2, 4, 4)
    assert np.isfinite(result.baseline).all()


def test_references_need_equal_object_counts():
    task = SimpleNamespace(class_objects=[("a", "b"), ("c",)])
    data = SimpleNamespace(
        kind="synthetic",
        synthetic_task=task,
        model=SimpleNamespace(device="cpu", network=None),
    )
    state = SimpleNamespace(config=AnalysisConfig(), channels=8)
    with pytest.warns(UserWarning, match="different numbers of sound objects"):
        estimators, description = fit_layer_references(data, state, composite=object())
    assert estimators == {} and "skipped" in description


def test_references_are_skipped_for_other_data():
    estimators, description = fit_layer_references(SimpleNamespace(kind="gtzan"), None)
    assert estimators == {} and "synthetic" in description["skipped"]
