"""The DRSA objective, its gradient and both solvers, checked against hand computations."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from zennit_drsa.estimators import _ascent
from zennit_drsa.estimators._linalg import (
    haar_orthonormal,
    polar_newton_schulz,
    symmetric_decorrelation,
)
from zennit_drsa.estimators.objective import RelevanceProblem, pool_relevance
from zennit_drsa.estimators.solvers import solve_reference, solve_riemannian


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run on one torch thread: these problems are tiny, and on busy shared cores the
    synchronisation of even two threads costs more than the work (measured: 60× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blocks(sizes):
    offsets = np.cumsum((0, *sizes))
    return [slice(offsets[k], offsets[k + 1]) for k in range(len(sizes))]


def _hand_objective(a, c, u, sizes, p, q):
    """J(U) written out with numpy, independently of the library."""
    za, zc = a @ u, c @ u
    relevance = np.stack([(za[:, b] * zc[:, b]).sum(axis=1) for b in _blocks(sizes)], axis=1)
    scores = np.mean(np.maximum(relevance, 0) ** p, axis=0) ** (1 / p)
    return np.mean(scores**q) ** (1 / q), relevance, scores


def _hand_gradient(a, c, u, sizes, p, q):
    """Closed-form ∂J/∂U by the chain rule through both power means."""
    n, k = len(a), len(sizes)
    objective, relevance, scores = _hand_objective(a, c, u, sizes, p, q)
    za, zc = a @ u, c @ u
    gradient = np.zeros_like(u)
    for index, block in enumerate(_blocks(sizes)):
        if scores[index] == 0:
            continue
        d_score = objective ** (1 - q) * scores[index] ** (q - 1) / k
        clipped = np.maximum(relevance[:, index], 0)
        d_relevance = d_score * scores[index] ** (1 - p) * clipped ** (p - 1) / n
        d_relevance = np.where(relevance[:, index] > 0, d_relevance, 0.0)[:, None]
        gradient[:, block] = a.T @ (d_relevance * zc[:, block]) + c.T @ (d_relevance * za[:, block])
    return gradient


def _tiny_problem(rng, n=9, d=5, sizes=(2, 1)):
    a = rng.standard_normal((n, d))
    c = a + 0.8 * rng.standard_normal((n, d))
    u = haar_orthonormal(rng, d, sum(sizes))[0]
    return a, c, u


def _problem(a, c, sizes, p=2.0, q=0.5, dtype=torch.float64):
    context = None if c is None else torch.as_tensor(c, dtype=dtype)
    return RelevanceProblem(torch.as_tensor(a, dtype=dtype), context, sizes, p, q)


def test_hand_gradient_matches_finite_differences(rng):
    a, c, u = _tiny_problem(rng)
    gradient = _hand_gradient(a, c, u, (2, 1), 2.0, 0.5)
    numeric = np.zeros_like(u)
    for index in np.ndindex(u.shape):
        step = np.zeros_like(u)
        step[index] = 1e-6
        plus = _hand_objective(a, c, u + step, (2, 1), 2.0, 0.5)[0]
        minus = _hand_objective(a, c, u - step, (2, 1), 2.0, 0.5)[0]
        numeric[index] = (plus - minus) / 2e-6
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("p, q", [(2.0, 0.5), (1.0, 1.0), (3.0, 2.0)])
@pytest.mark.parametrize("sizes", [(2, 1), (1, 1, 1), (3,)])
def test_problem_gradient_matches_hand_gradient(rng, p, q, sizes):
    a, c, u = _tiny_problem(rng, sizes=sizes)
    problem = _problem(a, c, sizes, p, q)
    evaluation = problem.evaluate(torch.as_tensor(u[None]))
    expected_objective = _hand_objective(a, c, u, sizes, p, q)[0]
    assert float(evaluation.objective[0]) == pytest.approx(expected_objective, rel=1e-12)
    np.testing.assert_allclose(
        problem.gradient(evaluation)[0].numpy(), _hand_gradient(a, c, u, sizes, p, q), rtol=1e-10
    )


def test_symmetric_problem_is_the_problem_with_context_equal_to_activations(rng):
    a, _, u = _tiny_problem(rng)
    symmetric, explicit = _problem(a, None, (2, 1)), _problem(a, a, (2, 1))
    bases = torch.as_tensor(u[None])
    one, two = symmetric.evaluate(bases), explicit.evaluate(bases)
    assert float(one.objective[0]) == pytest.approx(float(two.objective[0]), rel=1e-12)
    torch.testing.assert_close(symmetric.gradient(one), explicit.gradient(two))


def test_dead_subspace_has_zero_gradient_and_no_nan():
    relevance = torch.tensor([[[1.0, -1.0]], [[2.0, 0.0]], [[0.5, -3.0]]], dtype=torch.float64)
    objective, scores, weights = pool_relevance(relevance, 2.0, 0.5)
    assert torch.isfinite(weights).all()
    assert scores[0, 1] == 0 and (weights[:, 0, 1] == 0).all()
    live = np.sqrt(np.mean(np.array([1.0, 2.0, 0.5]) ** 2))
    assert float(objective[0]) == pytest.approx(((np.sqrt(live) + 0) / 2) ** 2)
    # Clipped samples carry no gradient either.
    assert (weights[:, 0, 0] > 0).all()


def test_reference_iteration_matches_hand_update(rng):
    a, c, u = _tiny_problem(rng)
    a, c = a / 3.0, c / 3.0  # keep the unit step from overshooting
    result = solve_reference(_problem(a, c, (2, 1)), rng, max_iter=1, init=u)
    moved = u + _hand_gradient(a, c, u, (2, 1), 2.0, 0.5)
    eigenvalues, eigenvectors = np.linalg.eigh(moved.T @ moved)
    expected = moved @ eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T
    np.testing.assert_allclose(result.basis, expected, rtol=1e-10, atol=1e-12)
    assert result.trace[0] == pytest.approx(_hand_objective(a, c, u, (2, 1), 2.0, 0.5)[0])
    assert result.trace[1] == pytest.approx(_hand_objective(a, c, expected, (2, 1), 2.0, 0.5)[0])
    assert result.n_iter == 1 and result.converged is None


def test_reference_starts_share_one_orthogonal_matrix(rng):
    a, c, _ = _tiny_problem(rng, d=6)
    problem = _problem(a, c, (1, 1))
    # Replay the reference's draws: one Haar rotation, then a column selection per trial.
    generator = np.random.default_rng(7)
    rotation = haar_orthonormal(generator, 6, 6)[0]
    starts = [rotation[:, generator.permutation(6)[:2]] for _ in range(3)]
    result = solve_reference(problem, np.random.default_rng(7), max_iter=1, n_restarts=3)
    candidates = [solve_reference(problem, rng, max_iter=1, init=start) for start in starts]
    assert result.objective == pytest.approx(max(r.objective for r in candidates), rel=1e-12)


@pytest.mark.parametrize("alpha, beta", [(2.0, 0.5), (0.1, 30.0)])
def test_objective_is_bilinear_in_activations_and_context(rng, alpha, beta):
    a, c, u = _tiny_problem(rng)
    bases = torch.as_tensor(u[None])
    base = float(_problem(a, c, (2, 1)).evaluate(bases).objective[0])
    scaled = float(_problem(alpha * a, beta * c, (2, 1)).evaluate(bases).objective[0])
    assert scaled == pytest.approx(alpha * beta * base, rel=1e-12)


def _layer(rng, n=400, d=12):
    """Small data with a few relevant directions, active on different samples."""
    a = 0.2 * rng.standard_normal((n, d))
    c = 0.2 * rng.standard_normal((n, d))
    for direction in range(4):
        active = rng.random(n) < 0.4
        value = rng.standard_normal(n) * active
        a[:, direction] += value
        c[:, direction] += value + 0.3 * rng.standard_normal(n) * active
    rotation = haar_orthonormal(rng, d, d)[0]
    return (a @ rotation.T) / d**0.25, (c @ rotation.T) / d**0.25


def test_both_solvers_improve_the_objective(rng):
    a, c = _layer(rng)
    problem = _problem(a, c, (2, 2), dtype=torch.float32)
    reference = solve_reference(problem, np.random.default_rng(0), max_iter=200, n_restarts=2)
    default = solve_riemannian(problem, np.random.default_rng(0), max_iter=200)
    # The reference has no line search; it may dip, but rarely and it ends higher.
    assert reference.trace[-1] > reference.trace[0]
    assert np.mean(np.diff(reference.trace) < -1e-6 * reference.trace[-1]) < 0.05
    # The default solver reports the best objective so far: monotone by construction.
    assert np.all(np.diff(default.trace) >= 0)
    assert default.trace[-1] > default.trace[0]
    assert default.objective >= reference.objective * (1 - 1e-3)
    assert default.n_iter < 200 and default.converged


def test_batched_restarts_equal_separate_runs(rng):
    a, c = _layer(rng)
    problem = _problem(a, c, (3, 2))
    starts = haar_orthonormal(rng, 12, 5, 3)
    options = {"max_iter": 60, "prune_after": None, "exchange": False}
    batched = solve_riemannian(problem, rng, init=starts, **options)
    separate = [solve_riemannian(problem, rng, init=start, **options) for start in starts]
    assert batched.objective == pytest.approx(max(r.objective for r in separate), rel=1e-9)


def test_riemannian_solver_is_deterministic(rng):
    a, c = _layer(rng)
    problem = _problem(a, c, (2, 2), dtype=torch.float32)
    first = solve_riemannian(problem, np.random.default_rng(3), max_iter=50)
    second = solve_riemannian(problem, np.random.default_rng(3), max_iter=50)
    np.testing.assert_array_equal(first.basis, second.basis)
    np.testing.assert_array_equal(first.trace, second.trace)


def test_tolerance_and_iteration_budget(rng):
    a, c = _layer(rng)
    problem = _problem(a, c, (2, 2))
    loose = solve_riemannian(problem, np.random.default_rng(0), max_iter=500, tol=1e-2)
    capped = solve_riemannian(problem, np.random.default_rng(0), max_iter=5, tol=0.0)
    assert loose.converged and loose.n_iter < 100
    assert not capped.converged and capped.n_iter == 5 and len(capped.trace) == 6


def test_callback_sees_every_iteration(rng):
    a, c = _layer(rng)
    seen = []
    result = solve_riemannian(
        _problem(a, c, (2, 2)),
        np.random.default_rng(0),
        max_iter=40,
        callback=lambda iteration, best: seen.append((iteration, best)),
    )
    assert [iteration for iteration, _ in seen] == list(range(1, result.n_iter + 1))
    assert seen[-1][1] == pytest.approx(result.objective)


def test_dead_subspace_is_revived_by_default_solver_only(rng):
    n, d = 300, 6
    a = np.zeros((n, d))
    a[:, :3] = rng.standard_normal((n, 3))
    c = a + 0.1 * rng.standard_normal((n, d)) * (np.arange(d) < 3)
    problem = _problem(a, c, (1, 1))
    # The second column lies where no sample has relevance: dead, zero gradient.
    start = np.eye(d)[:, [0, 4]]
    dead = problem.evaluate(torch.as_tensor(start[None])).scores[0]
    assert dead[0] > 0 and dead[1] == 0
    reference = solve_reference(problem, rng, max_iter=20, init=start)
    revived = solve_riemannian(problem, rng, max_iter=100, init=start)
    final = problem.evaluate(torch.as_tensor(reference.basis[None])).scores[0]
    assert final[1] == 0
    scores = problem.evaluate(torch.as_tensor(revived.basis[None])).scores[0]
    assert revived.n_revived >= 1 and (scores > 0).all()


def planted_concepts(rng, n=1500, d=16, n_concepts=3, size=4, noise=0.1):
    """Activation and context vectors with ``n_concepts`` planted subspaces of equal strength.

    Every sample activates one concept, and a second one with probability 0.3. Inside an
    active concept the context follows the activation (positive relevance); elsewhere both
    are independent noise.

    Returns
    -------
    activations, context : numpy.ndarray
        ``(n, d)``.
    blocks : list of numpy.ndarray
        ``n_concepts`` orthonormal ``(d, size)`` bases of the planted subspaces.
    """
    rotation = haar_orthonormal(rng, d, d)[0]
    blocks = [rotation[:, k * size : (k + 1) * size] for k in range(n_concepts)]
    active = np.zeros((n, n_concepts), dtype=bool)
    active[np.arange(n), rng.integers(n_concepts, size=n)] = True
    active[np.arange(n), rng.integers(n_concepts, size=n)] |= rng.random(n) < 0.3
    activations = noise * rng.standard_normal((n, d))
    context = noise * rng.standard_normal((n, d))
    for k, block in enumerate(blocks):
        latent = rng.standard_normal((n, size)) * active[:, k : k + 1]
        activations += latent @ block.T
        context += (latent + 0.3 * rng.standard_normal((n, size)) * active[:, k : k + 1]) @ block.T
    return activations, context, blocks


def matched_overlap(blocks, projectors):
    """Mean overlap ``‖P_true P_est‖_F² / d_k`` of planted and estimated subspaces after a
    one-to-one (Hungarian) matching; 1 means every planted subspace was found exactly."""
    overlaps = np.array(
        [[np.sum((block.T @ projector) ** 2) / block.shape[1] for projector in projectors]
         for block in blocks]
    )  # fmt: skip
    rows, columns = linear_sum_assignment(-overlaps)
    return float(overlaps[rows, columns].mean())


def _projectors(basis, sizes):
    return [basis[:, block] @ basis[:, block].T for block in _blocks(sizes)]


def test_exchange_leaves_assignment_local_maxima():
    """Gradient ascent from a random start ends with subspaces that hold parts of several
    concepts (a local maximum of J); exchanging directions between subspaces finds them."""
    rng = np.random.default_rng(1)
    activations, context, blocks = planted_concepts(rng)
    sizes = (4, 4, 4)
    problem = _problem(activations, context, sizes, dtype=torch.float32)
    start = haar_orthonormal(rng, 16, 12)[0]
    stuck = solve_riemannian(problem, rng, max_iter=500, init=start, exchange=False)
    freed = solve_riemannian(problem, rng, max_iter=500, init=start)
    assert matched_overlap(blocks, _projectors(stuck.basis, sizes)) < 0.9
    assert matched_overlap(blocks, _projectors(freed.basis, sizes)) > 0.98
    assert freed.objective > stuck.objective


def test_subset_problem_is_the_problem_on_those_samples(rng):
    a, c, u = _tiny_problem(rng, n=12)
    rows = np.array([0, 3, 4, 10])
    sub = _problem(a, c, (2, 1)).subset(rows)
    direct = _problem(a[rows], c[rows], (2, 1))
    bases = torch.as_tensor(u[None])
    assert float(sub.evaluate(bases).objective[0]) == float(direct.evaluate(bases).objective[0])


def test_restarts_race_on_a_subsample_when_data_are_plentiful(rng):
    """With 2 · 2048 samples or more, restarts are ranked on a subsample; the leader then
    runs on all samples, and the objective reported is the full-data one."""
    activations, context, blocks = planted_concepts(rng, n=5000, d=8, n_concepts=2, size=2)
    problem = _problem(activations, context, (2, 2), dtype=torch.float32)
    result = solve_riemannian(problem, np.random.default_rng(0), n_restarts=3, prune_after=20)
    again = solve_riemannian(problem, np.random.default_rng(0), n_restarts=3, prune_after=20)
    np.testing.assert_array_equal(result.basis, again.basis)
    start = problem.evaluate(torch.as_tensor(result.basis[None])).objective
    assert result.objective == pytest.approx(float(start[0]), rel=1e-6)
    assert np.all(np.diff(result.trace) >= 0) and result.converged
    assert matched_overlap(blocks, _projectors(result.basis, (2, 2))) > 0.95


# Tensor methods that copy a value to the host; on an accelerator each one waits for the
# device to finish its queue.
_HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"}


class _Calls(torch.overrides.TorchFunctionMode):
    """Counts the calls of the torch functions and tensor methods ``names`` in the block."""

    def __init__(self, *names):
        super().__init__()
        self.names = set(names)
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.names
        return func(*args, **(kwargs or {}))


def _checks_every(monkeypatch, n):
    monkeypatch.setattr(_ascent, "check_interval", lambda device: n)


@pytest.mark.parametrize("every", [5, 8])
@pytest.mark.parametrize("samples", [400, 5000])
def test_checking_every_few_iterations_changes_no_result(monkeypatch, every, samples):
    """On accelerators the ascent looks at its state only every few iterations; what it
    returns (basis, trace, iteration count, convergence, progress reports) is the same as
    when it looks every iteration: with restarts pruned in the ascent (400 samples) or
    raced on a subsample first (5000), and with exchanges."""
    rng = np.random.default_rng(7)
    activations, context, _ = planted_concepts(rng, n=samples, d=8, n_concepts=2, size=2)
    problem = _problem(activations, context, (2, 2), dtype=torch.float32)
    results = {}
    for interval in (1, every):
        _checks_every(monkeypatch, interval)
        seen = []
        result = solve_riemannian(
            problem,
            np.random.default_rng(0),
            n_restarts=3,
            prune_after=20,
            callback=lambda iteration, best, seen=seen: seen.append((iteration, best)),
        )
        results[interval] = result, seen
    (first, first_seen), (second, second_seen) = results[1], results[every]
    assert first.n_iter % every != 0  # the last restart stops between two checks
    np.testing.assert_array_equal(first.basis, second.basis)
    np.testing.assert_array_equal(first.trace, second.trace)
    assert (first.n_iter, first.converged) == (second.n_iter, second.converged)
    assert first_seen == second_seen


def test_ascent_reads_the_device_only_at_its_checks(rng):
    a, c = _layer(rng, n=2000, d=40)
    problem = _problem(a, c, (4, 4, 4), dtype=torch.float32)
    start = torch.as_tensor(haar_orthonormal(rng, 40, 12, 2))
    reads = {}
    # A negative tolerance never stops early: all 48 iterations run.
    for every in (1, 8):
        with _Calls(*_HOST_READS) as counter:
            result = _ascent.ascend(
                problem, start, rng, 48, -1.0, None, 0, _ascent.Reporter(None), every
            )
        assert result.n_iter == 48
        reads[every] = counter.count
    # Checking every iteration reads the stopping and revival flags every time; checking
    # every 8 iterations makes 6 checks of at most 2 reads, plus 2 at the start (looking for
    # dead subspaces) and 7 at the end (copying the result out).
    assert reads[1] >= 2 * 48
    assert reads[8] <= 2 * 6 + 2 + 7


@pytest.mark.parametrize("every", [1, 8])
def test_a_leader_that_stopped_before_the_pruning_ends_the_ascent_there(monkeypatch, every):
    """Restart 0 starts at a maximum and stops after the convergence window; the others are
    still climbing when the restarts are pruned to the leader (restart 0), which ends the
    ascent at that iteration, whichever the check interval."""
    rng = np.random.default_rng(3)
    activations, context, _ = planted_concepts(rng, n=1500, d=8, n_concepts=2, size=2)
    problem = _problem(activations, context, (2, 2))
    optimum = solve_riemannian(problem, np.random.default_rng(0), max_iter=400).basis
    starts = np.stack([optimum, *haar_orthonormal(rng, 8, 4, 2)])
    _checks_every(monkeypatch, every)
    seen = []
    result = solve_riemannian(
        problem,
        rng,
        init=starts,
        prune_after=14,
        exchange=False,
        callback=lambda iteration, best: seen.append(iteration),
    )
    assert result.n_iter == 14 and len(result.trace) == 15
    assert seen == list(range(1, 15))
    np.testing.assert_allclose(result.basis, optimum, atol=1e-9)


def _tangent_steps(rng, d=24, m=6, batch=3, rank=None):
    """Orthonormal bases ``(B, d, m)`` and unit tangent directions at them (of rank
    ``rank`` when given: a few large eigenvalues in the step's Gram matrix)."""
    bases = torch.as_tensor(haar_orthonormal(rng, d, m, batch))
    width = m if rank is None else rank
    raw = torch.as_tensor(rng.standard_normal((batch, d, width)) @ rng.standard_normal((width, m)))
    inner = bases.mT @ raw
    tangent = raw - bases @ ((inner + inner.mT) / 2)
    return bases, tangent / torch.linalg.matrix_norm(tangent)[:, None, None]


@pytest.mark.parametrize("rank", [None, 1])
@pytest.mark.parametrize("size", [0.0, 1e-6, 1e-2, 1.0, 30.0, 1e3])
def test_newton_schulz_polar_factor_is_the_eigendecomposition_s(rng, rank, size):
    bases, tangent = _tangent_steps(rng, rank=rank)
    moved = bases + size * tangent
    polar, defect = polar_newton_schulz(moved)
    np.testing.assert_allclose(polar, symmetric_decorrelation(moved), atol=1e-10)
    assert float(defect.max()) < 1e-9
    identity = torch.eye(moved.shape[-1], dtype=torch.float64)
    assert float((polar.mT @ polar - identity).abs().max()) < 1e-9


def test_newton_schulz_says_when_its_steps_did_not_converge(rng):
    """A step whose Gram matrix has condition number 1e10 is beyond 24 steps."""
    bases, tangent = _tangent_steps(rng, rank=1)
    _, defect = polar_newton_schulz(bases + 1e5 * tangent)
    assert float(defect.min()) > 1e-3
    _, defect = polar_newton_schulz(bases + 1e5 * tangent, steps=60)
    assert float(defect.max()) < 1e-6


@pytest.mark.parametrize("samples", [400, 5000])
def test_the_accelerator_path_finds_what_the_cpu_path_finds(monkeypatch, samples):
    """Newton–Schulz re-orthonormalisation and checks every 8 iterations (the path taken on
    accelerators), forced on the CPU: the same solution as eigendecompositions checked
    every iteration, up to rounding."""
    rng = np.random.default_rng(11)
    activations, context, blocks = planted_concepts(rng, n=samples, d=10, n_concepts=3, size=2)
    problem = _problem(activations, context, (2, 2, 2))
    cpu = solve_riemannian(problem, np.random.default_rng(0), n_restarts=3)
    _checks_every(monkeypatch, 8)
    monkeypatch.setattr(_ascent, "uses_newton_schulz", lambda device: True)
    accelerator = solve_riemannian(problem, np.random.default_rng(0), n_restarts=3)
    assert accelerator.objective == pytest.approx(cpu.objective, rel=1e-9)
    # The same subspaces, possibly in another order (J does not depend on it).
    found = [cpu.basis[:, block] for block in _blocks((2, 2, 2))]
    assert matched_overlap(found, _projectors(accelerator.basis, (2, 2, 2))) > 1 - 1e-6
    assert matched_overlap(blocks, _projectors(accelerator.basis, (2, 2, 2))) > 0.95


def test_the_accelerator_path_needs_no_eigendecomposition(rng):
    """torch.linalg.eigh makes the host wait for a CUDA device; the accelerator path never
    calls it (the CPU path once per iteration)."""
    a, c = _layer(rng, n=2000, d=40)
    problem = _problem(a, c, (4, 4, 4), dtype=torch.float32)
    start = torch.as_tensor(haar_orthonormal(rng, 40, 12, 2))
    calls = {}
    for newton_schulz in (False, True):
        with _Calls("linalg_eigh") as counter:
            result = _ascent.ascend(problem, start, rng, 24, -1.0, None, 0, None, 8, newton_schulz)
        assert result.n_iter == 24
        calls[newton_schulz] = counter.count
    assert calls == {False: 24, True: 0}
