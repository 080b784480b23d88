"""Time and peak memory of ``collect`` against the number of inputs.

Each size runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its
own. The baseline is taken after the model, the input tensor and a warm-up run exist;
the reported growth is the peak during ``collect`` above that baseline, minus the bytes of the
returned arrays. Streaming means this residual stays flat as the number of inputs grows.

Run: ``.venv/bin/python benchmarks/bench_collect.py [--sizes 64 256 1024] [--threads 1]
[--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import OrderedDict

N_LOCATIONS = 20
BATCH_SIZE = 32
INPUT_SHAPE = (1, 64, 64)
WARMUP_INPUTS = 8 * BATCH_SIZE
LAYER = "features.7"  # ReLU of the third conv block: 32 channels on a 16×16 map


def _child(n_inputs: int, threads: int, device: str) -> dict[str, float]:
    import torch
    from torch import nn
    from zennit.composites import EpsilonGammaBox

    from zennit_drsa.collect import collect

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    )  # fmt: skip
    head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = nn.Sequential(OrderedDict(features=features, classifier=head)).eval().to(device)
    data = torch.randn(n_inputs, *INPUT_SHAPE)  # on the host: collect moves each batch

    def run(inputs: torch.Tensor):
        return collect(
            model,
            EpsilonGammaBox(low=-4.0, high=4.0),
            LAYER,
            inputs,
            3,
            n_locations=N_LOCATIONS,
            batch_size=BATCH_SIZE,
            device=device,
            progress=False,
        )

    # Warm-up until the allocator's heap has settled (its size wanders by tens of MiB over the
    # first batches); the baseline then excludes it.
    run(torch.randn(WARMUP_INPUTS, *INPUT_SHAPE))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    result = run(data)  # returns host arrays: the device's work is finished
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    output_bytes = sum(
        getattr(result, name).nbytes
        for name in ("activations", "context", "input_index", "location", "target")
    )
    return {
        "n_inputs": n_inputs,
        "rows": result.n_vectors,
        "seconds": seconds,
        "output_bytes": output_bytes,
        "growth_bytes": peak - baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child, args.threads, args.device)))
        return

    mib = 2.0**20
    print(
        f"collect: layer {LAYER} of a 4-block CNN on {INPUT_SHAPE} inputs, EpsilonGammaBox, "
        f"{N_LOCATIONS} locations/input, batch {BATCH_SIZE}, {args.threads} thread(s), "
        f"device {args.device} (peak memory is the host's)"
    )
    print(
        f"{'inputs':>7} {'rows':>7} {'time s':>8} {'ms/input':>9} {'vs first':>9} "
        f"{'outputs MiB':>12} {'peak growth MiB':>16} {'growth - outputs MiB':>21}"
    )
    first = None
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", str(size), "--threads", str(args.threads),
                   "--device", args.device]  # fmt: skip
        stats = json.loads(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout
        )
        per_input = 1000 * stats["seconds"] / size
        first = first or per_input
        print(
            f"{size:>7} {stats['rows']:>7} {stats['seconds']:>8.2f} {per_input:>9.2f} "
            f"{per_input / first:>9.2f} {stats['output_bytes'] / mib:>12.2f} "
            f"{stats['growth_bytes'] / mib:>16.2f} "
            f"{(stats['growth_bytes'] - stats['output_bytes']) / mib:>21.2f}"
        )


if __name__ == "__main__":
    main()
