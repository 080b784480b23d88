"""Sonification throughput: all inputs and concepts in one call vs one call per concept.

:func:`audio_concepts.sonification.sonify` masks, inverts (mel → STFT by NNLS) and
resynthesises every concept heatmap of every input in batched tensor operations. The
alternative is a Python loop with one call per input and concept. Both run here side by
side on the same random inputs and heatmaps, alternating for several rounds; the medians are
compared, so a change in machine load affects both alike. Rates are per wall-clock second and
per CPU second of this process (the latter is steadier on a shared machine).

Example::

    python benchmarks/bench_sonify.py --preset gtzan --batch 4 --concepts 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from audio_cnn.frontend import LogMel, LogMelConfig
from audio_concepts.sonification import sonify


def _timed(run: Callable[[], np.ndarray], device: torch.device) -> tuple[float, float, np.ndarray]:
    """Wall-clock seconds, process CPU seconds and the result of ``run()``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()  # sonify returns NumPy arrays, so the device work has finished
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gtzan", choices=LogMelConfig.PRESETS)
    parser.add_argument("--batch", type=int, default=4, help="inputs (default 4)")
    parser.add_argument("--concepts", type=int, default=5, help="heatmaps per input (K + 1)")
    parser.add_argument("--method", default="nnls", choices=["nnls", "pinv"])
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    logmel = LogMel.preset(args.preset).to(args.device)
    config = logmel.config
    rng = np.random.default_rng(args.seed)
    waveforms = rng.uniform(-1, 1, (args.batch, config.chunk_samples)).astype(np.float32)
    shape = (args.batch, args.concepts, 1, config.n_mels, config.n_frames)
    heatmaps = rng.standard_normal(shape).astype(np.float32)
    device = torch.device(args.device)

    def batched() -> np.ndarray:
        return sonify(waveforms, heatmaps, logmel, method=args.method)

    def looped() -> np.ndarray:
        return np.stack(
            [
                np.concatenate(
                    [
                        sonify(waveforms[b], heatmaps[b, k : k + 1], logmel, method=args.method)
                        for k in range(args.concepts)
                    ]
                )
                for b in range(args.batch)
            ]
        )

    batched()  # warm-up (first LAPACK and FFT calls)
    rounds: dict[str, list[tuple[float, float]]] = {"batched": [], "loop": []}
    for _ in range(args.repeats):
        wall, cpu, ours = _timed(batched, device)
        rounds["batched"].append((wall, cpu))
        wall, cpu, reference = _timed(looped, device)
        rounds["loop"].append((wall, cpu))
    max_diff = float(np.abs(ours - reference).max() / np.abs(reference).max())

    n = args.batch * args.concepts
    print(
        f"preset {args.preset}: {args.batch} inputs x {args.concepts} heatmaps "
        f"({config.n_mels}x{config.n_frames}, {config.chunk_seconds:g} s), method {args.method}, "
        f"threads {args.threads}, device {device}, median of {args.repeats} alternating rounds"
    )
    print(f"{'method':<36}{'sounds/s':>10}{'sounds/CPU-s':>14}")
    rates = {}
    labels = {"batched": "batched (one call)", "loop": f"loop ({n} calls, one per concept)"}
    for name, times in rounds.items():
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        rates[name] = (n / wall, n / cpu)
        print(f"{labels[name]:<36}{rates[name][0]:>10.2f}{rates[name][1]:>14.2f}")
    print(
        f"ratio batched / loop: {rates['batched'][0] / rates['loop'][0]:.2f}x (wall clock), "
        f"{rates['batched'][1] / rates['loop'][1]:.2f}x (CPU time)"
    )
    print(f"max |batched - loop| / max |loop|: {max_diff:.1e}")


if __name__ == "__main__":
    main()
