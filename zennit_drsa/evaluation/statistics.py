"""Paired comparisons of two methods on the same inputs, and the validation of a measure.

Two decompositions evaluated on the same inputs are compared through their per-input
differences ``d = a − b``: the mean difference with a seeded percentile-bootstrap
confidence interval and a two-sided Wilcoxon signed-rank p-value. Seeds are explicit:
scores of shape ``(n_seeds, n_inputs)`` pair ``a[s, i]`` with ``b[s, i]`` (the same input
``i`` under seed ``s``; a 1-D array is a method without a seed and pairs with every seed).
Each seed gets its own figures; the pooled figures treat the *inputs* as the independent
units and use each input's difference averaged over the seeds, so repeating a fit under
more seeds does not multiply the sample size. The pooled mean difference is therefore the
mean of the per-seed mean differences.

:func:`validate_measure` applies this to the meta-evaluation of METHOD §5: a measure is
trusted on a task only if it ranks the oracle decomposition ahead of random subspaces, and
random ahead of or level with the entangled one (one concept holding everything). Measures
for which "one concept holding everything" is undefined (e.g. concept selectivity, which
needs ``K >= 2`` concepts) are judged on oracle against random alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata, wilcoxon

__all__ = [
    "MeasureValidation",
    "PairedComparison",
    "min_pairs",
    "paired_comparison",
    "validate_measure",
]

Better = Literal["lower", "higher"]
Verdict = Literal["a_ahead", "b_ahead", "level", "undecided"]
_BETTER: tuple[str, ...] = ("lower", "higher")
# Bootstrap resamples are drawn in blocks of about this many values to bound memory.
_BOOTSTRAP_BLOCK = 2**22


@dataclass(frozen=True)
class PairedComparison:
    """Two methods compared on the same inputs through the differences ``d = a − b``.

    Attributes
    ----------
    n:
        Pairs used (inputs with both values finite; pooled: finite under every seed).
    n_dropped:
        Pairs left out because a value is NaN (e.g. inputs with ``f(x_0) <= 0``).
    mean_a, mean_b:
        Means of the two methods over the pairs used (units of the measure).
    mean_difference:
        Mean of ``a − b``.
    median_difference:
        Median of ``a − b``.
    ci_low, ci_high:
        Percentile-bootstrap confidence interval of the mean difference (NaN without pairs).
    confidence:
        Its level, e.g. 0.95.
    p_value:
        Two-sided Wilcoxon signed-rank p-value (zero differences dropped, SciPy's default
        ``zero_method="wilcox"``); 1.0 when every difference is 0; NaN without pairs.
    signed_rank_sum:
        ``Σ sign(d_i) · rank(|d_i|)`` over the non-zero differences (tied ranks averaged):
        its sign is the direction the test detects, positive when ``a`` tends to be larger.
    per_seed:
        One comparison per seed when the scores had a seed axis, else empty.
    """

    n: int
    n_dropped: int
    mean_a: float
    mean_b: float
    mean_difference: float
    median_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    signed_rank_sum: float
    per_seed: tuple[PairedComparison, ...] = ()

    def verdict(self, *, better: Better, alpha: float = 0.05) -> Verdict:
        """Whether ``a`` is ahead of ``b``, behind, level, or the data cannot tell.

        Parameters
        ----------
        better:
            ``"lower"`` or ``"higher"``: which values of the measure are better.
        alpha:
            Significance level of the two-sided test.

        Returns
        -------
        ``"a_ahead"`` / ``"b_ahead"`` when ``p_value < alpha``, in the direction of
        ``signed_rank_sum`` read through ``better``; otherwise ``"level"``, or
        ``"undecided"`` when there are too few pairs for any outcome to reach ``alpha``
        (fewer than :func:`min_pairs`) or no p-value.
        """
        _check_better(better)
        _check_alpha(alpha)
        if math.isnan(self.p_value):
            return "undecided"
        if self.p_value < alpha:
            a_larger = self.signed_rank_sum > 0
            return "a_ahead" if a_larger == (better == "higher") else "b_ahead"
        return "level" if self.n >= min_pairs(alpha) else "undecided"

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-safe dict (NaN as ``None``), per seed under ``"per_seed"``."""
        return {
            "n": self.n,
            "n_dropped": self.n_dropped,
            "mean_a": _json_float(self.mean_a),
            "mean_b": _json_float(self.mean_b),
            "mean_difference": _json_float(self.mean_difference),
            "median_difference": _json_float(self.median_difference),
            "ci": [_json_float(self.ci_low), _json_float(self.ci_high)],
            "ci_method": "percentile bootstrap",
            "confidence": self.confidence,
            "p_value": _json_float(self.p_value),
            "test": "Wilcoxon signed-rank, two-sided",
            "signed_rank_sum": _json_float(self.signed_rank_sum),
            "per_seed": [s.to_dict() for s in self.per_seed],
        }


def min_pairs(alpha: float) -> int:
    """Fewest pairs with which the two-sided signed-rank test can give ``p < alpha``.

    With ``n`` non-zero differences the smallest exact two-sided p-value is ``2 / 2**n``
    (all differences of one sign), so fewer pairs can never show a difference: 8 for
    ``alpha = 0.01``, 6 for 0.05.
    """
    _check_alpha(alpha)
    n = 1
    while 2.0 ** (1 - n) >= alpha:
        n += 1
    return n


def paired_comparison(
    a: ArrayLike,
    b: ArrayLike,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two methods' scores on the same inputs.

    Parameters
    ----------
    a, b:
        Per-input scores, ``(n_inputs,)`` or ``(n_seeds, n_inputs)``; a 1-D array next to a
        2-D one is the same for every seed (a method without a seed, e.g. the standard
        heatmap). NaN marks a missing value; that pair is dropped (pooled: the input is
        dropped unless both values are finite under every seed).
    confidence:
        Level of the bootstrap interval, in (0, 1).
    n_bootstrap:
        Bootstrap resamples of the inputs (with replacement).
    seed:
        Seed of the bootstrap; the same seed gives the same intervals. Seeds of the
        per-seed comparisons are derived from it.

    Returns
    -------
    :class:`PairedComparison` of the pooled differences, with ``per_seed`` filled for 2-D
    scores.

    Raises
    ------
    ValueError
        On shapes that do not pair, Inf values, or bad options.
    """
    a_values, b_values = _paired_arrays(a, b)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive int, got {n_bootstrap!r}")
    options = {"confidence": confidence, "n_bootstrap": n_bootstrap}
    if a_values.ndim == 1:
        return _compare(a_values, b_values, rng=np.random.default_rng(seed), **options)
    streams = np.random.SeedSequence(seed).spawn(a_values.shape[0] + 1)
    per_seed = tuple(
        _compare(a_row, b_row, rng=np.random.default_rng(stream), **options)
        for a_row, b_row, stream in zip(a_values, b_values, streams[1:], strict=True)
    )
    complete = np.isfinite(a_values).all(axis=0) & np.isfinite(b_values).all(axis=0)
    pooled = _compare(
        np.where(complete, a_values, np.nan).mean(axis=0),
        np.where(complete, b_values, np.nan).mean(axis=0),
        rng=np.random.default_rng(streams[0]),
        **options,
    )
    return dataclasses.replace(pooled, per_seed=per_seed)


@dataclass(frozen=True)
class MeasureValidation:
    """Whether a measure ranks decompositions of known quality correctly (METHOD §5).

    Attributes
    ----------
    validated:
        Oracle ahead of random, and random ahead of or level with entangled, both by the
        paired Wilcoxon test at ``alpha``; without an entangled reference, oracle ahead of
        random alone.
    reason:
        One sentence saying why (or why not), and that the entangled reference is missing
        when it is.
    better:
        ``"lower"`` or ``"higher"``: the measure's direction.
    alpha:
        Significance level used.
    oracle_vs_random, random_vs_entangled:
        The paired comparisons (``a`` the first named); ``random_vs_entangled`` is ``None``
        without an entangled reference.
    oracle_vs_random_verdict, random_vs_entangled_verdict:
        Their verdicts (see :meth:`PairedComparison.verdict`); ``None`` where there is no
        comparison.
    """

    validated: bool
    reason: str
    better: Better
    alpha: float
    oracle_vs_random: PairedComparison
    random_vs_entangled: PairedComparison | None
    oracle_vs_random_verdict: Verdict
    random_vs_entangled_verdict: Verdict | None

    def to_dict(self) -> dict[str, Any]:
        """The verdict and the paired figures behind it as a JSON-safe dict
        (``"random_vs_entangled": None`` without an entangled reference)."""
        second = None
        if self.random_vs_entangled is not None:
            second = {
                "verdict": self.random_vs_entangled_verdict,
                **self.random_vs_entangled.to_dict(),
            }
        return {
            "validated": self.validated,
            "reason": self.reason,
            "better": self.better,
            "alpha": self.alpha,
            "oracle_vs_random": {
                "verdict": self.oracle_vs_random_verdict,
                **self.oracle_vs_random.to_dict(),
            },
            "random_vs_entangled": second,
        }


def validate_measure(
    oracle: ArrayLike,
    random: ArrayLike,
    entangled: ArrayLike | None,
    *,
    better: Better,
    alpha: float = 0.01,
    confidence: float = 0.95,
    n_bootstrap: int = 10_000,
    seed: int = 0,
) -> MeasureValidation:
    """Check that a measure ranks oracle > random ≥ entangled on the same inputs.

    Parameters
    ----------
    oracle, random, entangled:
        The measure's per-input scores for the three decompositions, each ``(n_inputs,)``
        or ``(n_seeds, n_inputs)`` (e.g. random subspaces under several seeds; 1-D scores
        pair with every seed), NaN for missing values, as in :func:`paired_comparison`.
        ``entangled=None`` for a measure with no entangled reference (e.g. concept
        selectivity: with one concept holding everything there is no second concept to be
        selective against); the verdict then rests on oracle against random alone, and the
        ``reason`` says so.
    better:
        ``"lower"`` (e.g. deletion AUPC) or ``"higher"`` (e.g. recovery, selectivity).
    alpha:
        Significance level of the paired Wilcoxon tests (METHOD: 0.01).
    confidence, n_bootstrap, seed:
        For the bootstrap intervals reported alongside (they do not enter the verdict).

    Returns
    -------
    :class:`MeasureValidation`; ``.to_dict()`` gives the JSON-safe record.
    """
    _check_better(better)
    options = {"confidence": confidence, "n_bootstrap": n_bootstrap, "seed": seed}
    first = paired_comparison(oracle, random, **options)
    first_verdict = first.verdict(better=better, alpha=alpha)
    oracle_ahead = first_verdict == "a_ahead"
    second: PairedComparison | None = None
    second_verdict: Verdict | None = None
    if entangled is not None:
        second = paired_comparison(random, entangled, **options)
        second_verdict = second.verdict(better=better, alpha=alpha)
    random_not_behind = second_verdict in (None, "a_ahead", "level")
    if not oracle_ahead:
        reason = (
            f"oracle is not ahead of random: {first_verdict} (p = {first.p_value:.3g}, "
            f"n = {first.n}) at alpha = {alpha}"
        )
    elif second is None:
        reason = (
            f"oracle ahead of random (p = {first.p_value:.3g}, n = {first.n}) at alpha = {alpha}"
        )
    elif random_not_behind:
        reason = (
            f"oracle ahead of random (p = {first.p_value:.3g}) and random "
            f"{'ahead of' if second_verdict == 'a_ahead' else 'level with'} entangled "
            f"(p = {second.p_value:.3g}) at alpha = {alpha}"
        )
    else:
        reason = (
            f"random is not ahead of or level with entangled: {second_verdict} "
            f"(p = {second.p_value:.3g}, n = {second.n}) at alpha = {alpha}"
        )
    if second is None:
        reason += (
            "; no entangled reference was given, so the verdict rests on oracle vs random alone"
        )
    return MeasureValidation(
        validated=oracle_ahead and random_not_behind,
        reason=reason,
        better=better,
        alpha=alpha,
        oracle_vs_random=first,
        random_vs_entangled=second,
        oracle_vs_random_verdict=first_verdict,
        random_vs_entangled_verdict=second_verdict,
    )


def _compare(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> PairedComparison:
    """Figures of one set of pairs ``(n,)``; NaN pairs are dropped."""
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    differences = a - b
    nan = float("nan")
    if differences.size == 0:
        return PairedComparison(
            0, int((~keep).sum()), nan, nan, nan, nan, nan, nan, confidence, nan, nan
        )
    low, high = _bootstrap_interval(differences, confidence, n_bootstrap, rng)
    nonzero = differences[differences != 0]
    signs = np.sign(nonzero)
    return PairedComparison(
        n=int(differences.size),
        n_dropped=int((~keep).sum()),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_difference=float(differences.mean()),
        median_difference=float(np.median(differences)),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        # No non-zero difference is no evidence of one (SciPy's answer varies by version).
        p_value=float(wilcoxon(nonzero).pvalue) if nonzero.size else 1.0,
        signed_rank_sum=float((signs * rankdata(np.abs(nonzero))).sum()),
    )


def _bootstrap_interval(
    differences: np.ndarray, confidence: float, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``differences``."""
    n = differences.size
    means = np.empty(n_bootstrap)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _paired_arrays(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both score arrays as float64 of one shape, ``(n,)`` or ``(n_seeds, n)``."""
    arrays = []
    for name, values in (("a", a), ("b", b)):
        array = np.asarray(values, dtype=np.float64)
        if array.ndim not in (1, 2):
            raise ValueError(
                f"scores {name} must be (n_inputs,) or (n_seeds, n_inputs), got shape {array.shape}"
            )
        if np.isinf(array).any():
            raise ValueError(f"scores {name} contain Inf; mark missing values with NaN")
        arrays.append(array)
    first, second = arrays
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(
            f"scores are not paired: {first.shape[-1]} inputs against {second.shape[-1]}; "
            "give both methods' scores on the same inputs, in the same order"
        )
    if first.ndim == 2 and second.ndim == 2 and first.shape != second.shape:
        raise ValueError(
            f"scores have {first.shape[0]} and {second.shape[0]} seeds; give the same seeds "
            "to both, or a 1-D array for a method without a seed"
        )
    if first.ndim != second.ndim:
        shape = first.shape if first.ndim == 2 else second.shape
        first, second = np.broadcast_to(first, shape), np.broadcast_to(second, shape)
    return first, second


def _check_better(better: str) -> None:
    if better not in _BETTER:
        raise ValueError(
            f"better must be one of {_BETTER} (the measure's direction), got {better!r}"
        )


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _json_float(value: float) -> float | None:
    """``value`` as a float, NaN as ``None`` (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)
