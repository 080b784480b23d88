"""1 vs 2 processes with torch.distributed: sharded collection and data-parallel DRSA.

Each configuration runs in fresh processes joined as torchrun would join them (gloo on
127.0.0.1; with ``--device cuda`` and one GPU per process, NCCL): 1 process × 1 thread,
1 process × 2 threads and 2 processes × 1 thread. Times exclude starting the processes and
imports (a barrier before and after; the slowest rank counts). Collection:
:func:`collect_shards` on the reference audio CNN (128×128 inputs, layer ``features.13``,
d = 128, 20 locations per input). Fit: DRSA with a fixed amount of work (``tol=0``, so
every configuration runs exactly ``--max-iter`` iterations after the same restart race) on
``--rows`` rows of dimension ``--dim`` with four planted concepts. The largest differences
between the results of 1 and 2 processes are printed too: both compute the same thing, up
to the rounding of float32 sums split differently over the processes.

On a machine with C cores, P processes × 1 thread can be at most min(P, C) times faster than
1 process × 1 thread; 1 process × C threads is the other way to use the same cores.

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--device cpu] [--rows 20000]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# (processes, threads per process)
CONFIGURATIONS = ((1, 1), (1, 2), (2, 1))
TIMEOUT_S = 1800
LAYER = "features.13"  # ReLU of the fifth block of the reference CNN: 128 channels, 8×8 map
N_LOCATIONS = 20
BATCH_SIZE = 16


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _backend(device: str, world_size: int) -> str:
    if device == "cuda" and torch.cuda.device_count() >= world_size:
        return "nccl"
    return "gloo"


def _rank_main(rank: int, world_size: int, threads: int, port: int, options: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    device = options["device"]
    if device == "cuda":
        device = f"cuda:{rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    distributed = world_size > 1
    if distributed:
        dist.init_process_group(
            _backend(options["device"], world_size),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=TIMEOUT_S),
        )
    try:
        result = {
            "collect_s": _time_collection(options, device, distributed),
            "fit_s": _time_fit(options, rank, world_size, device, distributed),
        }
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        Path(options["out"], "timings.json").write_text(json.dumps(result))


def _timed(function, distributed: bool, device: str) -> float:
    """Wall time of ``function()`` on the slowest process."""
    if distributed:
        dist.barrier()
    start = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if distributed:
        dist.barrier()
    return time.perf_counter() - start


def _time_collection(options: dict, device: str, distributed: bool) -> float:
    from audio_cnn.model import AudioCNN
    from zennit_drsa import audio_composite, collect_shards

    torch.manual_seed(0)
    model = AudioCNN.preset("gtzan").eval().to(device)
    data = torch.randn(options["inputs"], 1, 128, 128, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        collect_shards(
            model,
            audio_composite("reference", model),
            LAYER,
            data,
            3,
            Path(options["out"], "shards"),
            shard_size=max(1, options["inputs"] // 4),
            n_locations=N_LOCATIONS,
            batch_size=BATCH_SIZE,
            device=device,
            progress=False,
            distributed=distributed,
        )

    return _timed(run, distributed, device)


def _time_fit(options: dict, rank: int, world_size: int, device: str, distributed: bool) -> float:
    from zennit_drsa import DRSA
    from zennit_drsa.distributed import rank_slice

    activations, context = _planted_concepts(options["rows"], options["dim"])
    rows = rank_slice(options["rows"], rank, world_size)
    drsa = DRSA(
        4,
        max_iter=options["max_iter"],
        tol=0.0,  # a fixed amount of work: every configuration runs max_iter iterations
        n_restarts=4,
        random_state=0,
        device=device,
        distributed=distributed,
    )

    def run() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ConvergenceWarning tol=0 asks for
            drsa.fit(activations[rows], context=context[rows])

    seconds = _timed(run, distributed, device)
    if rank == 0:
        np.save(Path(options["out"], "projectors.npy"), drsa.projectors())
    return seconds


def _planted_concepts(n_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 rows ``(n_rows, dim)`` with four planted concepts: a well-defined optimum.

    On structureless data the optimum is flat and rounding differences (float32 sums split
    over processes differently) grow along the optimisation path; near a strict optimum they
    stay at rounding level, so the comparison of 1 and 2 processes below means something.
    """
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    width = dim // 4
    active = np.zeros((n_rows, dim), dtype=bool)
    for concept in (rng.integers(4, size=n_rows), rng.integers(4, size=n_rows)):
        for k in range(4):
            active[concept == k, k * width : (k + 1) * width] = True
    latent = rng.standard_normal((n_rows, dim)) * active
    noise = 0.1 * rng.standard_normal((2, n_rows, dim))
    activations = (latent + noise[0]) @ rotation.T
    context = (latent + 0.3 * rng.standard_normal((n_rows, dim)) * active + noise[1]) @ rotation.T
    return activations.astype(np.float32), context.astype(np.float32)


def run_configuration(processes: int, threads: int, options: dict) -> dict:
    """Start ``processes`` fresh processes, wait (bounded) and return rank 0's timings."""
    context = mp.start_processes(
        _rank_main,
        args=(processes, threads, _free_port(), options),
        nprocs=processes,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} process(es) did not end in {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return json.loads(Path(options["out"], "timings.json").read_text())


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import machine_check

    from zennit_drsa.collect import ShardedCollection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the DRSA fit")
    parser.add_argument("--dim", type=int, default=128, help="dimension d of the DRSA fit")
    parser.add_argument("--max-iter", type=int, default=100, help="DRSA iterations")
    parser.add_argument("--inputs", type=int, default=256, help="inputs collected")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"bench_distributed: device {args.device}, {cores} CPU cores; collection of "
        f"{args.inputs} inputs (reference CNN, {LAYER}, d = 128, {N_LOCATIONS} locations, "
        f"4 shards); DRSA fit of {args.rows} × {args.dim} rows, K = 4, 4 restarts, "
        f"{args.max_iter} iterations (tol = 0: fixed work)"
    )
    if args.device == "cpu":
        print(
            f"  ceiling: 2 processes × 1 thread can be at most {min(2, cores)}× faster than "
            "1 process × 1 thread; 1 process × 2 threads uses the same 2 cores by threads"
        )
    else:
        gpus = torch.cuda.device_count()
        backend = _backend("cuda", 2)
        sharing = "one GPU each" if gpus >= 2 else "one GPU together"
        print(
            f"  {gpus} GPU(s): 2 processes use {sharing} ({backend}); threads only matter for "
            "the host-side work"
        )
    machine_check(2, "before")
    results = {}
    collections = {}
    projectors = {}
    with tempfile.TemporaryDirectory() as scratch:
        for processes, threads in CONFIGURATIONS:
            out = Path(scratch, f"{processes}x{threads}")
            out.mkdir()
            options = {**vars(args), "out": str(out)}
            results[processes, threads] = run_configuration(processes, threads, options)
            collections[processes, threads] = ShardedCollection.open(out / "shards").read(0, 1)
            projectors[processes, threads] = np.load(out / "projectors.npy")
    machine_check(2, "after")

    base = results[1, 1]
    print(
        f"\n{'configuration':<26} {'collection s':>13} {'speed-up':>9} {'fit s':>9} {'speed-up':>9}"
    )
    for (processes, threads), timing in results.items():
        name = f"{processes} process(es) × {threads} thread(s)"
        print(
            f"{name:<26} {timing['collect_s']:>13.2f} "
            f"{base['collect_s'] / timing['collect_s']:>8.2f}× {timing['fit_s']:>9.2f} "
            f"{base['fit_s'] / timing['fit_s']:>8.2f}×"
        )
    one, two = collections[1, 1], collections[2, 1]
    same_rows = np.array_equal(one.input_index, two.input_index) and np.array_equal(
        one.location, two.location
    )
    vector_error = float(np.abs(one.activations - two.activations).max())
    # Projectors, not basis vectors: the basis inside a subspace is arbitrary, and float32
    # rounding that differs with the split of the rows may rotate it.
    subspace_error = float(np.abs(projectors[1, 1] - projectors[2, 1]).max())
    print(
        f"\n2 processes vs 1: same rows and locations: {same_rows}; max |Δ activation| "
        f"{vector_error:.1e}; max |Δ projector| of the fit {subspace_error:.1e} (float32 data)"
    )


if __name__ == "__main__":
    main()
