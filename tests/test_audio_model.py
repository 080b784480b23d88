"""The application's interface to the model under study, its folder record and its data path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from audio_cnn.frontend import LogMel
from audio_concepts import (
    Analysis,
    AnalysisConfig,
    AnalysisState,
    AudioModel,
    LogMelFrontend,
    TorchaudioLogMel,
    Workspace,
)
from audio_concepts.sonification import sonify

torchaudio = pytest.importorskip("torchaudio")


@pytest.fixture(scope="module")
def frontend() -> TorchaudioLogMel:
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=8000, n_fft=256, hop_length=128, n_mels=24, power=1.0
    )
    return TorchaudioLogMel(mel, chunk_seconds=0.5)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 12 * 16, 2),
    ).eval()  # fmt: skip


def test_both_front_ends_offer_what_the_analysis_reads(frontend):
    assert isinstance(LogMel.preset("toy"), LogMelFrontend)
    assert isinstance(frontend, LogMelFrontend)
    assert not isinstance(nn.Identity(), LogMelFrontend)


def test_torchaudio_front_end_is_the_log10_of_its_mel_of_its_stft(frontend, rng):
    waveform = torch.as_tensor(
        rng.standard_normal((3, frontend.chunk_samples)), dtype=torch.float32
    )
    logmel = frontend(waveform)
    assert logmel.shape == (3, 1, 24, 32)
    spec = frontend.stft(waveform)
    assert spec.shape == (3, 129, 32) and spec.is_complex()
    mel = frontend.mel_filterbank @ spec.abs().pow(frontend.power)
    expected = torch.log10(mel + frontend.offset).clamp(min=frontend.floor)
    torch.testing.assert_close(logmel[:, 0], expected, atol=1e-4, rtol=1e-4)
    assert float(logmel.min()) >= frontend.floor == pytest.approx(-6.0)
    assert torch.allclose(frontend.istft(spec, waveform.shape[1]), waveform, atol=1e-5)


def test_torchaudio_frame_grid_and_mel_axis(frontend):
    bounds = frontend.frame_bounds(4)
    assert bounds.tolist() == [[-128, 128], [0, 256], [128, 384], [256, 512]]  # centred
    assert frontend.frame_times(3).tolist() == pytest.approx([0.0, 0.016, 0.032])
    bands = frontend.mel_frequencies()
    assert bands.shape == (24,) and np.all(np.diff(bands) > 0) and bands[-1] <= 4000


def test_torchaudio_front_end_refuses_what_it_cannot_invert():
    complex_mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=256, power=None)
    with pytest.raises(ValueError, match="magnitude power"):
        TorchaudioLogMel(complex_mel, chunk_seconds=1.0)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=256)
    with pytest.raises(ValueError, match="offset must be a positive number"):
        TorchaudioLogMel(mel, chunk_seconds=1.0, offset=0.0)
    with pytest.raises(ValueError, match="chunk_seconds"):
        TorchaudioLogMel(mel, chunk_seconds=float("nan"))


def test_concept_heatmaps_on_a_torchaudio_grid_can_be_sonified(frontend, rng):
    waveform = rng.standard_normal((2, frontend.chunk_samples)).astype(np.float32)
    heatmaps = rng.uniform(0, 1, (2, 3, 1, 24, 32)).astype(np.float32)
    audio = sonify(waveform, heatmaps, frontend)
    assert audio.shape == (2, 3, frontend.chunk_samples) and np.isfinite(audio).all()


def test_audio_model_names_every_problem(frontend):
    with pytest.raises(ValueError) as error:
        AudioModel(nn.Identity(), nn.Identity(), ("a", "a"), eval_chunks=0, short_clips="drop")
    message = str(error.value)
    for part in ("frontend Identity lacks", "distinct", "eval_chunks", "short_clips"):
        assert part in message
    with pytest.raises(ValueError, match="two or more"):
        AudioModel(small_cnn(), frontend, ("only",))


def test_layer_shape_runs_a_silent_chunk(frontend):
    model = AudioModel(small_cnn(), frontend, ("a", "b"))
    assert model.layer_shape("1") == (4, 24 * 32)
    assert model.layer_shape("2") == (4, 12 * 16)
    with pytest.raises(ValueError, match="did you mean"):
        model.layer_shape("22")


def test_a_model_without_default_layer_needs_one_named(frontend, tmp_path, toy):
    from audio_concepts import plan_layer

    model = AudioModel(small_cnn(), frontend, ("a", "b"))
    with pytest.raises(ValueError, match="name the layer"):
        plan_layer(model, AnalysisConfig(n_subspaces=2))
    assert plan_layer(model, AnalysisConfig(layer="1", n_subspaces=2)).subspace_dim == 2


def test_analysis_refuses_data_with_other_classes(frontend, toy, tmp_path):
    data, _ = toy
    model = AudioModel(small_cnn(), frontend, ("dog", "cat"))
    with pytest.raises(ValueError, match="has classes"):
        Analysis.create(model, data, tmp_path, AnalysisConfig(layer="1", n_subspaces=2))


@pytest.mark.slow
def test_one_analysis_loads_the_run_once_and_writes_each_record_once(
    toy, small_analysis, tmp_path, monkeypatch
):
    import audio_cnn.checkpoint
    import audio_concepts.analysis

    data, run = toy
    loads, summaries = [], []
    load_run = audio_cnn.checkpoint.load_run
    write = audio_concepts.analysis.write_json_atomic
    monkeypatch.setattr(
        audio_cnn.checkpoint, "load_run", lambda *a, **k: loads.append(a) or load_run(*a, **k)
    )
    monkeypatch.setattr(
        audio_concepts.analysis,
        "write_json_atomic",
        lambda path, data: summaries.append(path) or write(path, data),
    )
    analysis = Analysis.create(run, data, tmp_path, small_analysis)
    analysis.fit(progress=False)
    analysis.explain(progress=False)
    analysis.evaluate(progress=False)
    summary = analysis.report(progress=False, timings={"train": 1.5})
    assert len(loads) == 1
    assert summaries == [tmp_path / "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert list(summary["timings_s"]) == ["train", "fit", "explain", "evaluate", "report"]
    state = Workspace(tmp_path).read_state()
    assert state.timings_s == summary["timings_s"]  # the command line's report shows them too

    # A later session resumes from the folder alone and finds the same figures.
    again = Analysis.open(tmp_path)
    assert again.summary()["methods"] == summary["methods"]
    assert again.explanations.inputs["clips"].tolist() == (
        analysis.explanations.inputs["clips"].tolist()
    )


def test_a_folder_of_a_model_that_is_not_a_run_needs_the_model_again(tmp_path, toy):
    state = AnalysisState(
        model_name="mine", run=None, data_dir=str(toy[0]), data_kind="synthetic",
        class_names=("class0", "class1"), layer="1", channels=4, subspace_dim=2,
        n_locations=4, config=AnalysisConfig(layer="1", n_subspaces=2),
    )  # fmt: skip
    Workspace(tmp_path).write_state(state)
    assert Workspace(tmp_path).read_state() == state
    with pytest.raises(ValueError, match="pass it again"):
        Analysis.open(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": "other"}, "was not written by zennit-drsa fit"),
        ({"format": "zennit_drsa.analysis", "layer": "x"}, "lacks"),
        (
            {
                "format": "zennit_drsa.analysis", "data_dir": "d", "data_kind": "folder",
                "class_names": ["a", "b"], "layer": "l", "channels": "many",
                "subspace_dim": 2, "n_locations": 4, "config": {},
            },
            "is damaged",
        ),
    ],
)  # fmt: skip
def test_a_damaged_analysis_record_is_a_one_line_error(tmp_path, content, message):
    (tmp_path / "analysis.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        Workspace(tmp_path).read_state()
