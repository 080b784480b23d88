"""1 vs 2 processes for the analysis steps ``explain`` and ``evaluate`` under ``torchrun``.

Builds a small toy analysis once (synthetic data, a short training, one fit on one
process), then times ``zennit-drsa explain`` and ``zennit-drsa evaluate`` on copies of that
fitted folder, launched as a user would: ``torchrun --nproc-per-node P --no-python
zennit-drsa ...`` with P processes of T threads: 1 × 1, 1 × 2 and 2 × 1. Every
configuration runs ``--repeats`` times in alternating order and the medians are printed
side by side with two ratios:

* 2 processes × 1 thread over 1 process × 1 thread: how much of a step is shared by the
  ranks (ceiling 2× when every part is shared and 2 cores are free; the parts one process
  does alone, and each process's start, keep it below);
* 2 processes × 1 thread over 1 process × 2 threads: what a user of 2 cores gains by
  processes instead of threads (ceiling about 1×: the same cores do the same work, and only
  torch's intra-op threading inefficiency can be won back).

Times are whole commands: process start, imports, loading the run and the data included,
as the user waits for them.

Run: ``.venv/bin/python benchmarks/bench_sharded_analysis.py [--clips-per-class 60]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_check

# (processes, threads per process)
CONFIGURATIONS = ((1, 1), (1, 2), (2, 1))
STEPS = ("explain", "evaluate")


def _binary(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _prepare(root: Path, clips_per_class: int, eval_clips: int) -> Path:
    """Data, a short training and one fit; the fitted analysis folder."""
    from audio_cnn import SyntheticTask, TrainConfig, train, write_synthetic_dataset
    from audio_concepts.analysis import AnalysisConfig, fit_concepts

    data = write_synthetic_dataset(
        root / "data", SyntheticTask.toy(), clips_per_class=clips_per_class, progress=False
    )
    train(data, root / "run", config=TrainConfig.preset("toy", epochs=3), progress=False)
    config = AnalysisConfig(
        layer="features.7",
        n_subspaces=2,
        fit_clips_per_class=40,
        eval_clips_per_class=eval_clips,
        min_objects=1,
        max_iter=100,
        n_restarts=1,
        seeds=(0, 1),
        sanity_inputs=4,
    )
    fit_concepts(root / "run", data, root / "fitted", config, progress=False)
    return root / "fitted"


def _run(fitted: Path, work: Path, processes: int, threads: int) -> dict[str, float]:
    """Seconds of each step on a fresh copy of the fitted folder."""
    folder = work / f"p{processes}-{time.monotonic_ns()}"
    shutil.copytree(fitted, folder)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TEST_TORCH_THREADS": str(threads)}
    seconds = {}
    for step in STEPS:
        command = [
            _binary("torchrun"),
            "--standalone",
            f"--nproc-per-node={processes}",
            "--no-python",
            _binary("zennit-drsa"),
            step,
            str(folder),
            "--no-progress",
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        seconds[step] = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=60)
    parser.add_argument("--eval-clips-per-class", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        fitted = _prepare(root, args.clips_per_class, args.eval_clips_per_class)
        print(
            f"toy analysis: layer features.7, K = 2, seeds 0 1, "
            f"{2 * args.eval_clips_per_class} evaluation clips at most, 4 methods; "
            f"{args.repeats} alternating rounds (medians); whole commands under torchrun"
        )
        machine_check(2, "before")
        times: dict[tuple[int, int], list[dict[str, float]]] = {c: [] for c in CONFIGURATIONS}
        for round_index in range(args.repeats):
            order = CONFIGURATIONS if round_index % 2 == 0 else CONFIGURATIONS[::-1]
            for processes, threads in order:
                times[(processes, threads)].append(_run(fitted, root, processes, threads))
        machine_check(2, "after")
    medians = {
        config: {step: statistics.median(r[step] for r in runs) for step in STEPS}
        for config, runs in times.items()
    }
    print(f"{'configuration':<26}" + "".join(f"{step + ' s':>12}" for step in STEPS))
    for (processes, threads), row in medians.items():
        name = f"{processes} process(es) × {threads} thread(s)"
        print(f"{name:<26}" + "".join(f"{row[step]:>12.1f}" for step in STEPS))
    single, threaded, sharded = (medians[config] for config in CONFIGURATIONS)
    for name, base, ceiling in (
        ("1 process × 1 thread", single, "2× when every part is shared"),
        ("1 process × 2 threads", threaded, "about 1×: same cores, same work"),
    ):
        print(
            f"speed-up of 2 processes × 1 thread over {name}: "
            + ", ".join(f"{step} {base[step] / sharded[step]:.2f}×" for step in STEPS)
            + f" (ceiling {ceiling})"
        )


if __name__ == "__main__":
    main()
