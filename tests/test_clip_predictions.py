"""Clip predictions made in parts (one per process) join into the predictions of all clips."""

from __future__ import annotations

import numpy as np

from audio_cnn.evaluate import ClipPredictions, write_scores


def _part(rng, n_clips, chunks_per_clip, skipped):
    clip_index = np.repeat(np.arange(n_clips), chunks_per_clip)
    labels = np.repeat(rng.integers(0, 3, n_clips), chunks_per_clip)
    logits = rng.standard_normal((len(clip_index), 3)).astype(np.float32)
    return ClipPredictions(logits, labels, clip_index, n_clips, skipped)


def test_parts_join_into_the_predictions_of_all_clips(tmp_path):
    rng = np.random.default_rng(0)
    first = _part(rng, 4, 2, {"a.wav": "unreadable"})
    second = _part(rng, 3, 2, {"b.wav": "too short"})
    joined = ClipPredictions.concatenate([first, second])
    assert joined.n_clips == 7
    np.testing.assert_array_equal(joined.clip_index, np.repeat(np.arange(7), 2))
    np.testing.assert_array_equal(joined.logits, np.concatenate([first.logits, second.logits]))
    assert joined.skipped == {"a.wav": "unreadable", "b.wav": "too short"}

    metrics = write_scores(joined, ["x", "y", "z"], split="test", out_dir=tmp_path)
    assert metrics["clip"]["n"] == 7 and metrics["chunk"]["n"] == 14
    assert metrics["skipped_files"] == joined.skipped
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "confusion_clip.png").is_file()
    # Clip-level scores use the mean logit of each clip's own chunks only.
    means = joined.logits.reshape(7, 2, 3).mean(axis=1)
    truth = joined.labels.reshape(7, 2)[:, 0]
    assert metrics["accuracy"] == np.mean(means.argmax(axis=1) == truth)
