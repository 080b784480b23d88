"""Throughput of the LogMel front-end against librosa, measured side by side in one run.

LogMel converts a batch of clips in one call; librosa (the reference pipeline) converts one clip
at a time. Both run with the same number of threads (torch for LogMel, BLAS/OpenMP for librosa
through threadpoolctl). The two measurements alternate for several rounds and the medians are
compared, so a change in machine load affects both alike. Rates are reported per wall-clock
second and per CPU second of this process (the latter is steadier on a shared machine;
with one thread and an idle machine they agree).

Example::

    python benchmarks/bench_frontend.py --threads 1 --batch 64 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from audio_cnn.frontend import LogMel, LogMelConfig, librosa_logmel


def _timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``run()``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for both (default 1)")
    parser.add_argument("--batch", type=int, default=64, help="clips per LogMel call")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--preset", default="gtzan", choices=LogMelConfig.PRESETS)
    parser.add_argument("--device", default="cpu", help="device for LogMel (librosa: CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = LogMelConfig.preset(args.preset)
    logmel = LogMel(config).to(args.device)
    rng = np.random.default_rng(args.seed)
    clips = rng.uniform(-1, 1, (args.batch, config.chunk_samples)).astype(np.float32)
    batch = torch.from_numpy(clips).to(args.device)
    cpu = torch.device("cpu")

    with threadpool_limits(limits=args.threads):
        # Check agreement once (also a warm-up for both).
        check = logmel(batch[:2]).cpu().numpy()[:, 0]
        expected = np.stack([librosa_logmel(clip, config) for clip in clips[:2]])
        max_diff = float(np.abs(check - expected).max())
        ours, reference = [], []
        for _ in range(args.repeats):
            with torch.no_grad():
                ours.append(_timed(lambda: logmel(batch), batch.device))
            reference.append(_timed(lambda: [librosa_logmel(clip, config) for clip in clips], cpu))

    print(
        f"preset {args.preset}: {args.batch} clips of {config.chunk_seconds:g} s "
        f"-> 1x{config.n_mels}x{config.n_frames}, threads {args.threads}, "
        f"LogMel on {batch.device}, median of {args.repeats} alternating rounds"
    )
    print(f"{'method':<32}{'clips/s':>10}{'clips/CPU-s':>13}")
    rates = {}
    for name, times in ((f"LogMel (batch {args.batch})", ours), ("librosa (per clip)", reference)):
        wall = statistics.median(t[0] for t in times)
        cpu_s = statistics.median(t[1] for t in times)
        rates[name] = (args.batch / wall, args.batch / cpu_s)
        print(f"{name:<32}{rates[name][0]:>10.1f}{rates[name][1]:>13.1f}")
    (ours_wall, ours_cpu), (ref_wall, ref_cpu) = rates.values()
    print(
        f"ratio LogMel / librosa: {ours_wall / ref_wall:.2f}x (wall clock), "
        f"{ours_cpu / ref_cpu:.2f}x (CPU time)"
    )
    print(f"max |LogMel - librosa| on 2 clips (float32, log10 units): {max_diff:.2e}")


if __name__ == "__main__":
    main()
