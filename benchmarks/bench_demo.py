"""Wall time of the README's main job (the demo) and of its toy training, against budgets.

Two issue targets are absolute times on 2 CPU cores: the whole ``zennit-drsa demo`` within
6 minutes, and training the toy CNN with the defaults (2000 clips per class, the toy preset)
within 5 minutes. The demo trains exactly that model, so one run measures both: it runs
``zennit-drsa demo`` in a fresh temporary directory (a subprocess, as a user would), reads the
stage timings it stores in ``summary.json``, and prints each stage with the ratio of the
measured time to its budget (below 1 meets it). A machine check before and after tells
whether other processes kept the cores busy, which inflates such absolute times several-fold.

Example::

    python benchmarks/bench_demo.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_check

DEMO_BUDGET_S = 6 * 60
TRAIN_BUDGET_S = 5 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    parser.add_argument("--keep", type=Path, help="write the demo here instead of a temp dir")
    args = parser.parse_args()

    print(f"zennit-drsa demo (defaults), {args.threads} threads")
    machine_check(args.threads, "before")
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or Path(scratch) / "demo"
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        command = [sys.executable, "-m", "audio_concepts.cli", "demo", "--out", str(out)]
        start = time.perf_counter()
        subprocess.run([*command, "--no-progress"], check=True, env=environment)
        total = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
    machine_check(args.threads, "after")

    stages = summary["timings_s"]
    print(f"\n{'stage':<12} {'seconds':>8}")
    for name, seconds in stages.items():
        print(f"{name:<12} {seconds:8.1f}")
    print(f"{'total':<12} {total:8.1f}  (process start and imports included)")
    print(
        f"\ndemo / 6-minute budget:     {total / DEMO_BUDGET_S:.2f}"
        f"\ntraining / 5-minute budget: {stages['train'] / TRAIN_BUDGET_S:.2f}"
        f"\ntest accuracy {summary['accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
