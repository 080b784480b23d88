"""Benchmark: the default DRSA solver against the fixed-step reference algorithm.

Both solvers optimise the same objective on the same synthetic data with the same
normalisation, in the same run. The reference runs its fixed number of iterations; the
default solver runs to its own stopping rule while every iteration is timestamped, so the
table reports how long it took to reach 99.9 % of the objective the reference reached
(measured from its start, restarts and data transfer included) and the speed-up ratio.

Example::

    python benchmarks/bench_drsa_solver.py --threads 2 --dims 128 512
"""

from __future__ import annotations

import argparse
import os
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--samples", type=int, default=10_000, help="vector pairs n")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512], help="feature dims d")
    parser.add_argument("--subspaces", type=int, default=4, help="number of subspaces K")
    parser.add_argument("--subspace-dim", type=int, default=32, help="subspace dimension d_k")
    parser.add_argument("--reference-iter", type=int, default=2000, help="reference iterations")
    parser.add_argument("--reference-trials", type=int, default=3, help="reference trials")
    parser.add_argument("--restarts", type=int, default=None, help="default solver restarts")
    parser.add_argument("--target", type=float, default=0.999, help="fraction of reference J")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: torch default)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    return parser.parse_args()


_ARGS = _parse()
# BLAS reads these when numpy and torch load, so they must be set before the imports below.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = str(_ARGS.threads)

import inspect  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from zennit_drsa.estimators._validation import resolve_device, resolve_dtype  # noqa: E402
from zennit_drsa.estimators.objective import RelevanceProblem  # noqa: E402
from zennit_drsa.estimators.solvers import solve_reference, solve_riemannian  # noqa: E402


def synthetic_layer(
    rng: np.random.Generator, n: int, d: int, n_concepts: int = 4, rank: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Activation and context vectors ``(n, d)`` float32 resembling a ReLU layer.

    Concepts are random ``rank``-dimensional subspaces, each present in about a third of
    the samples; activations are rectified (about half zero) with a log-normal per-sample
    scale, and the context agrees with the activation inside present concepts, scaled by a
    concept-specific weight, plus noise everywhere.
    """
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    hidden = 0.3 * rng.standard_normal((n, d))
    context = 0.3 * rng.standard_normal((n, d))
    for concept in range(n_concepts):
        block = rotation[:, concept * rank : (concept + 1) * rank]
        present = rng.random(n) < 0.35
        latent = rng.standard_normal((n, rank)) * present[:, None]
        weight = 0.5 + 0.5 * concept / n_concepts
        hidden += latent @ block.T
        context += weight * (latent + 0.5 * rng.standard_normal((n, rank))) @ block.T
    scale = rng.lognormal(0.0, 0.5, size=n)[:, None]
    activations = np.maximum(hidden + 0.2, 0.0) * scale
    # Units that are off still pass some context (the LRP context is non-zero there).
    context = context * np.where(activations > 0, 1.0, 0.7)
    return activations.astype(np.float32), context.astype(np.float32)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """The estimators' normalisation: divide by ``rms · d^¼``."""
    rms = np.sqrt(np.mean(np.square(vectors, dtype=np.float64)))
    return vectors / (rms * vectors.shape[1] ** 0.25)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(d: int, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Benchmark one dimension; return the table rows."""
    rng = np.random.default_rng(args.seed)
    activations, context = synthetic_layer(rng, args.samples, d, args.subspaces)
    dtype = resolve_dtype(args.dtype)
    problem = RelevanceProblem(
        torch.as_tensor(_normalise(activations), dtype=dtype, device=device),
        torch.as_tensor(_normalise(context), dtype=dtype, device=device),
        (args.subspace_dim,) * args.subspaces,
        p=2.0,
        q=0.5,
    )

    _synchronise(device)
    start = time.perf_counter()
    reference = solve_reference(
        problem,
        np.random.default_rng(args.seed + 1),
        max_iter=args.reference_iter,
        n_restarts=args.reference_trials,
    )
    _synchronise(device)
    reference_time = time.perf_counter() - start
    target = args.target * reference.objective

    restarts = args.restarts
    if restarts is None:
        restarts = inspect.signature(solve_riemannian).parameters["n_restarts"].default
    stamps: list[tuple[float, int, float]] = []
    start = time.perf_counter()
    result = solve_riemannian(
        problem,
        np.random.default_rng(args.seed + 2),
        n_restarts=restarts,
        callback=lambda iteration, best: stamps.append(
            (time.perf_counter() - start, iteration, best)
        ),
    )
    default_time = time.perf_counter() - start
    reached = [(elapsed, iteration) for elapsed, iteration, best in stamps if best >= target]

    shape = f"{d:>4} {args.subspaces:>2} {args.subspace_dim:>4} {args.samples:>6}"
    rows = [
        f"{shape}  reference   {args.reference_trials:>8} {reference.n_iter:>10} "
        f"{reference_time:>9.2f} {reference.objective:>10.5f}          -        -",
        f"{shape}  riemannian  {restarts:>8} {result.n_iter:>10} "
        f"{default_time:>9.2f} {result.objective:>10.5f}",
    ]
    if reached:
        elapsed, iteration = reached[0]
        rows[1] += f" {elapsed:>9.2f} {iteration:>5} {reference_time / elapsed:>8.1f}x"
    else:
        rows[1] += "   not reached"
    return rows


def main() -> None:
    torch.set_num_threads(_ARGS.threads)
    device = resolve_device(_ARGS.device, None)
    print(
        f"threads={_ARGS.threads} device={device} dtype={_ARGS.dtype} seed={_ARGS.seed}; "
        f"target = {_ARGS.target:.1%} of the reference objective after "
        f"{_ARGS.reference_iter} iterations"
    )
    header = (
        "   d  K  d_k      n  solver      restarts iterations  time [s]  objective "
        "t_target [s]  iter  speed-up"
    )
    print(header)
    print("-" * len(header))
    with threadpool_limits(_ARGS.threads):
        for d in _ARGS.dims:
            for row in run(d, _ARGS, device):
                print(row, flush=True)
    race = inspect.signature(solve_riemannian).parameters["prune_after"].default
    print(
        f"riemannian: iterations on all samples; before them its restarts race for {race} "
        "iterations on a subsample (time included). t_target and iter: when the best "
        "objective so far first reached the target; speed-up = reference time / t_target."
    )


if __name__ == "__main__":
    main()
