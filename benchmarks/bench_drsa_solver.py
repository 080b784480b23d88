"""Benchmark: the default DRSA solver against the fixed-step reference algorithm.

Both solvers optimise the same objective on the same synthetic data with the same
normalisation, in the same run. The reference runs its fixed number of iterations; the
default solver runs to its own stopping rule. Its trace gives the first iteration at which
its best objective reached 99.9 % of the reference's final objective; the default solver is
then run again, from the same seed, for exactly that many iterations, and that whole run is
timed (warm-up race and restarts included). Timing a rerun rather than stamping iterations
as they are reported keeps the figure exact on accelerators, where the solver reports its
progress only every few iterations.

A second table times one iteration of the default solver at a large size (by default
n = 200,000 samples, d = 512, one restart, no stopping) both ways it can run (polar factor
by eigendecomposition with checks every iteration, the CPU's default; by Newton–Schulz
steps with checks every 8 iterations, the accelerators' default) against the matrix
products the iteration needs alone (the projection of the stacked data on the basis and the
gradient's product back), with the same shapes, dtype and device; on CUDA it also counts
the host synchronisations per iteration.

Example::

    python benchmarks/bench_drsa_solver.py --threads 2 --dims 128 512
    python benchmarks/bench_drsa_solver.py --device cuda --dims 128 512
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
    parser.add_argument(
        "--iteration-samples", type=int, default=200_000, help="n of the per-iteration table"
    )
    parser.add_argument(
        "--iteration-dim", type=int, default=512, help="d of the per-iteration table"
    )
    parser.add_argument(
        "--iterations", type=int, default=10, help="iterations timed in the per-iteration table"
    )
    parser.add_argument("--skip-race", action="store_true", help="only the per-iteration table")
    return parser.parse_args()


_ARGS = _parse()
# BLAS reads these when numpy and torch load, so they must be set before the imports below.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = str(_ARGS.threads)

import inspect  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from zennit_drsa.estimators._ascent import (  # noqa: E402
    Reporter,
    ascend,
    check_interval,
    uses_newton_schulz,
)
from zennit_drsa.estimators._linalg import haar_orthonormal  # noqa: E402
from zennit_drsa.estimators._validation import resolve_device, resolve_dtype  # noqa: E402
from zennit_drsa.estimators.objective import RelevanceProblem  # noqa: E402
from zennit_drsa.estimators.solvers import solve_reference, solve_riemannian  # noqa: E402
from zennit_drsa.precision import lrp_precision  # noqa: E402


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


def _problem(d: int, n: int, args: argparse.Namespace, device: torch.device) -> RelevanceProblem:
    rng = np.random.default_rng(args.seed)
    activations, context = synthetic_layer(rng, n, d, args.subspaces)
    dtype = resolve_dtype(args.dtype)
    return RelevanceProblem(
        torch.as_tensor(_normalise(activations), dtype=dtype, device=device),
        torch.as_tensor(_normalise(context), dtype=dtype, device=device),
        (args.subspace_dim,) * args.subspaces,
        p=2.0,
        q=0.5,
    )


def _timed(device: torch.device, work):
    """``(result, seconds)`` of ``work()``, waiting for the device before and after."""
    _synchronise(device)
    start = time.perf_counter()
    result = work()
    _synchronise(device)
    return result, time.perf_counter() - start


def run(d: int, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Benchmark one dimension; return the table rows."""
    problem = _problem(d, args.samples, args, device)
    reference, reference_time = _timed(
        device,
        lambda: solve_reference(
            problem,
            np.random.default_rng(args.seed + 1),
            max_iter=args.reference_iter,
            n_restarts=args.reference_trials,
        ),
    )
    target = args.target * reference.objective

    restarts = args.restarts
    if restarts is None:
        restarts = inspect.signature(solve_riemannian).parameters["n_restarts"].default

    def default(**options):
        return solve_riemannian(
            problem, np.random.default_rng(args.seed + 2), n_restarts=restarts, **options
        )

    result, default_time = _timed(device, default)
    shape = f"{d:>4} {args.subspaces:>2} {args.subspace_dim:>4} {args.samples:>6}"
    rows = [
        f"{shape}  reference   {args.reference_trials:>8} {reference.n_iter:>10} "
        f"{reference_time:>9.2f} {reference.objective:>10.5f}          -        -",
        f"{shape}  riemannian  {restarts:>8} {result.n_iter:>10} "
        f"{default_time:>9.2f} {result.objective:>10.5f}",
    ]
    reached = np.flatnonzero(result.trace >= target)
    if len(reached):
        iteration = int(reached[0])
        rerun, elapsed = _timed(device, lambda: default(max_iter=max(iteration, 1)))
        rows[1] += f" {elapsed:>9.2f} {iteration:>5} {reference_time / elapsed:>8.1f}x"
        if rerun.objective < target:
            rows[1] += f" (rerun ended at {rerun.objective:.5f}, below the target)"
    else:
        rows[1] += "   not reached"
    return rows


# The iteration's two ways: (name, re-orthonormalise by Newton–Schulz, check interval).
PATHS = (
    ("eigendecomposition, checks every iteration", False, 1),
    ("Newton–Schulz, checks every 8 iterations", True, 8),
)


def iteration_cost(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Time one iteration of the default solver, both ways, against its matrix products."""
    n, d, iterations = args.iteration_samples, args.iteration_dim, args.iterations
    problem = _problem(d, n, args, device)
    width = args.subspaces * args.subspace_dim
    start = torch.as_tensor(
        haar_orthonormal(np.random.default_rng(args.seed), d, width), device=device
    )
    rng = np.random.default_rng(args.seed + 3)
    data = torch.cat([problem.project(torch.eye(d, device=device, dtype=torch.float64))[0]] * 2)
    basis = start[0].to(data.dtype)
    cotangent = torch.empty(len(data), width, dtype=data.dtype, device=device).normal_()

    def products():
        for _ in range(iterations):
            data @ basis  # projections: (2n, d) @ (d, m)
            data.mT @ cotangent  # gradient: (d, 2n) @ (2n, m)

    products()
    _, product_seconds = _timed(device, products)
    per_product = product_seconds / iterations
    rows = [
        f"n={n} d={d} m={width} {args.dtype}, {iterations} iterations timed (the difference "
        f"of runs of 1 and {1 + iterations}, so set-up is not counted); the iteration's "
        f"matrix products alone: {per_product * 1e3:.1f} ms"
    ]
    default = (uses_newton_schulz(device), check_interval(device))
    for name, newton_schulz, every in PATHS:

        def ascent(steps: int, every: int = every, newton_schulz: bool = newton_schulz):
            # A negative tolerance never stops: every iteration runs.
            return ascend(
                problem, start, rng, steps, -1.0, None, 0, Reporter(None), every, newton_schulz
            )

        ascent(2)  # warm-up: allocator, kernels, BLAS threads
        _, seconds_one = _timed(device, lambda: ascent(1))
        result, seconds = _timed(device, lambda: ascent(1 + iterations))
        assert result.n_iter == 1 + iterations
        per_iteration = (seconds - seconds_one) / iterations
        mark = " (the default here)" if (newton_schulz, every) == default else ""
        row = (
            f"{name}{mark}: one iteration {per_iteration * 1e3:.1f} ms, "
            f"{per_iteration / per_product:.2f}x its matrix products"
        )
        if device.type == "cuda":
            one = _synchronisations(lambda: ascent(1))
            many = _synchronisations(lambda: ascent(1 + iterations))
            row += f"; host synchronisations per iteration {(many - one) / iterations:.2f}"
        rows.append(row)
    if device.type == "cuda":
        rows.append("synchronisations counted by torch.cuda.set_sync_debug_mode('warn')")
    return rows


def _synchronisations(work) -> int:
    """How many times ``work()`` made the host wait for the CUDA device."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            work()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(warning.message) for warning in caught)


def main() -> None:
    torch.set_num_threads(_ARGS.threads)
    device = resolve_device(_ARGS.device, None)
    print(
        f"threads={_ARGS.threads} device={device} dtype={_ARGS.dtype} seed={_ARGS.seed}; "
        f"target = {_ARGS.target:.1%} of the reference objective after "
        f"{_ARGS.reference_iter} iterations"
    )
    # Both solvers in full float32 on CUDA, whatever the global TF32 settings.
    with threadpool_limits(_ARGS.threads), lrp_precision():
        if not _ARGS.skip_race:
            header = (
                "   d  K  d_k      n  solver      restarts iterations  time [s]  objective "
                "t_target [s]  iter  speed-up"
            )
            print(header)
            print("-" * len(header))
            for d in _ARGS.dims:
                for row in run(d, _ARGS, device):
                    print(row, flush=True)
            race = inspect.signature(solve_riemannian).parameters["prune_after"].default
            print(
                f"riemannian: iterations on all samples; before them its restarts race for "
                f"{race} iterations on a subsample (time included). iter: the first iteration "
                "whose best objective reached the target; t_target: a rerun of the default "
                "solver stopped at that iteration, timed whole; speed-up = reference time / "
                "t_target."
            )
        print("per-iteration cost of the default solver:")
        for row in iteration_cost(_ARGS, device):
            print("  " + row, flush=True)


if __name__ == "__main__":
    main()
