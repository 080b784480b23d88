"""Model-parameter randomisation sanity checks of concept heatmaps (Adebayo et al. 2018).

A concept heatmap that stays the same when the model's weights are replaced by random ones
does not explain the model. :func:`sanity_checks` runs two checks on a small set of inputs:

* **Cascading randomisation.** The network's parameter layers are re-initialised from the
  output downwards, one more each step
  (:func:`~zennit_drsa.evaluation.cascading_randomization`); every randomised copy explains
  the same inputs for the same (true) class with the same subspaces, and each of the K concept
  heatmaps is compared with the trained model's. Layers below the analysed layer are
  randomised too (the subspaces then see a changed representation); each step records
  whether its layer is above the analysed layer.
* **Random class.** Each input is explained for another class drawn at random (with that
  class's subspaces) on the trained model, and compared with its true-class concept maps.

Similarities, per input and concept: the signed Spearman rank correlation (the verdicts use
it), the Spearman correlation of the absolute maps, and SSIM of the absolute maps each scaled
to a maximum of 1 (SSIM is not scale invariant, and on signed maps the sign enters twice; see
:func:`~zennit_drsa.evaluation.ssim`). The standard map (the sum of all K + 1 maps, plus any
relevance bypassing the layer) is compared the same way for reference.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from zennit_drsa import DRSAAttributor
from zennit_drsa.composites import audio_composite
from zennit_drsa.evaluation import cascading_randomization, mean_sem, spearman_similarity, ssim
from zennit_drsa.layers import resolve_layer

__all__ = ["METRICS", "sanity_checks"]

METRICS: tuple[str, ...] = ("spearman", "spearman_abs", "ssim")
"""The similarities reported per map pair (see the module's docstring)."""

REPRODUCIBLE = 0.99
"""Least mean Spearman of the unrandomised copy with the original for the check to count."""
TOP_BOUND = 0.9
"""The 95 % CI of the mean Spearman after randomising the top layer must lie below this."""
FINAL_BOUND = 0.5
"""The 95 % CI of the mean Spearman after the last step must lie below this."""
CLASS_BOUND = 0.9
"""The 95 % CI of the mean Spearman with a random class's explanation must lie below this."""
_Z95 = 1.959963984540054  # two-sided 95 % normal quantile
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5


def sanity_checks(
    network: nn.Module,
    composite_name: str,
    layer: str,
    per_class_estimators: Any,
    logmel: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    n_classes: int,
    *,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    randomize: list[str] | None = None,
    composite_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cascading model randomisation and random-class checks of concept heatmaps.

    Verdict rules (fixed before any numbers were seen). A check "passes" when the two-sided
    95 % confidence interval of the mean signed Spearman correlation, ``mean ± 1.96 s.e.m.``,
    lies wholly below a bound:

    * cascading: ``passes`` needs all three of

      - ``reproducible``: the unrandomised copy (step 0, explained through the same code
        path as every randomised copy: deep copy, fresh composite) reproduces the original,
        mean Spearman ≥ 0.99; otherwise differences could come from the procedure itself;
      - ``top``: after randomising the top (output) layer alone, the CI lies below 0.9.
        A ranking correlation of 0.9 or more means practically the same map: the known
        failure of some LRP rules (Sixt et al. 2020) is maps that ignore the top layers;
      - ``final``: after randomising every layer, the CI lies below 0.5: maps of a wholly
        random network that still correlate more than moderately with the trained model's
        are explained by the input, not by the model;

    * random class: ``passes`` when the CI lies below 0.9 (the maps for another class, with
      that class's subspaces, are not practically those of the true class).

    SSIM and the absolute-map Spearman are reported but not judged (SSIM has no scale on
    which "the same" is a fixed number). The s.e.m. pools inputs × concepts, and the
    concepts of one input are not independent: the CIs are somewhat optimistic.

    Parameters
    ----------
    network:
        ``(B, 1, M, F)`` → logits, in eval mode. Left untouched: the checks run on copies.
    composite_name:
        The LRP composite (:func:`~zennit_drsa.composites.audio_composite`); it is built
        afresh for every copy, since a composite attaches to one module instance.
    layer:
        The analysed layer (its output is what the subspaces decompose).
    per_class_estimators:
        Class index → fitted estimator (as :class:`~zennit_drsa.DRSAAttributor` takes
        them), or one estimator for all classes.
    logmel:
        ``(N, 1, M, F)`` inputs (a small subset, e.g. 16: every step is one explain pass).
    labels:
        ``(N,)`` their true classes, explained in every cascading step.
    n_classes:
        The number of classes of the model (the random class is drawn among the others).
    seed:
        Seeds the re-initialisation and the random classes.
    batch_size:
        Inputs explained together.
    device:
        Where to run; default: the network's device.
    randomize:
        Layers to randomise, top (output) first; default: every module that owns parameters
        and has ``reset_parameters()`` and runs in the forward pass, in reverse order of
        the forward pass.
    composite_kwargs:
        Further arguments of the composite (e.g. ``low``/``high`` of box rules).
    progress:
        Show a progress bar.

    Returns
    -------
    dict
        JSON-safe (``None`` where a number is undefined). ``settings``: layer, composite,
        seed, ``n_inputs``, ``n_concepts``, ``metrics``, the SSIM window ``ssim_sigma``.
        ``cascading``: ``steps``, one per step, step 0 the unrandomised copy (``randomized``
        ``None``), each with ``randomized`` (the layer randomised at that step; all earlier
        ones stay randomised), ``above_layer`` (whether it runs after the analysed layer;
        ``None`` at step 0), and for ``concepts`` (pairs of concept maps) and ``standard``
        (of standard maps) per metric ``{"mean", "sem", "n"}`` over the defined pairs plus
        ``n_undefined``; ``not_randomized`` (modules owning parameters that were left out,
        with the reason); ``n_above``; ``verdict`` (``reproducible``, ``top``, ``final``,
        each with its numbers, and ``passes``). ``random_class``: ``classes`` drawn per
        input, ``concepts`` and ``standard`` as for a step, ``ci95`` of the concepts' mean
        Spearman, ``bound``, ``passes`` — or ``{"skipped": True, "note": ...}`` when no
        other class exists.

    Notes
    -----
    A pair in which either map is constant (e.g. a concept with no relevance on an input)
    has no rank correlation; such pairs are left out of every metric's mean and counted in
    ``n_undefined``.
    """
    logmel, labels = _check_inputs(logmel, labels, n_classes, batch_size)
    if device is None:
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    base = copy.deepcopy(network).to(device)
    layer, _ = resolve_layer(base, layer)
    order = _forward_order(base, logmel[:1].to(device))
    not_randomized: list[dict[str, str]] = []
    if randomize is None:
        randomize, not_randomized = _default_layers(base, order)
    else:
        randomize = list(randomize)
    if layer not in order:
        raise ValueError(f"layer {layer!r} does not run in the network's forward pass")
    above = {name: order.get(name, -1) > order[layer] for name in randomize}

    def explain(model: nn.Module, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return _explain(
            model,
            composite_name,
            dict(composite_kwargs or {}),
            layer,
            per_class_estimators,
            logmel,
            targets,
            batch_size,
            device,
        )

    # Checks the names now, before any explaining; copies are made while iterating.
    cascade = cascading_randomization(base, layers=randomize, seed=seed)
    bar = tqdm(total=len(randomize) + 3, desc="sanity checks", disable=not progress)
    try:
        concepts, standard = explain(base, labels)
        bar.update()
        sigma = _ssim_sigma(concepts.shape[-2:])
        steps = [{"step": 0, "randomized": None, "above_layer": None}]
        steps[0].update(_compare(concepts, standard, *explain(copy.deepcopy(base), labels), sigma))
        bar.update()
        for index, (name, randomized) in enumerate(cascade, start=1):
            step = {"step": index, "randomized": name, "above_layer": above[name]}
            step.update(_compare(concepts, standard, *explain(randomized, labels), sigma))
            steps.append(step)
            del randomized
            bar.update()
        random_class = _random_class(
            concepts,
            standard,
            labels,
            per_class_estimators,
            n_classes,
            seed,
            sigma,
            lambda classes: explain(base, classes),
        )
        bar.update()
    finally:
        bar.close()
    return {
        "settings": {
            "layer": layer,
            "composite": composite_name,
            "seed": int(seed),
            "n_inputs": int(logmel.shape[0]),
            "n_concepts": int(concepts.shape[1]),
            "metrics": list(METRICS),
            "ssim_sigma": sigma,
        },
        "cascading": {
            "steps": steps,
            "n_above": int(sum(above.values())),
            "not_randomized": not_randomized,
            "verdict": _cascading_verdict(steps),
        },
        "random_class": random_class,
    }


# ----- explaining and comparing --------------------------------------------------------------


def _explain(
    model: nn.Module,
    composite_name: str,
    composite_kwargs: dict[str, Any],
    layer: str,
    estimators: Any,
    logmel: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
) -> tuple[np.ndarray, np.ndarray]:
    """Concept maps ``(N, K, M, F)`` and standard maps ``(N, M, F)`` of ``model``."""
    composite = audio_composite(composite_name, model, **composite_kwargs)
    concepts, standard = [], []
    with DRSAAttributor(model, composite, layer, estimators) as attributor:
        for x, y in zip(logmel.split(batch_size), targets.split(batch_size), strict=True):
            explanation = attributor.explain(x.to(device), target=y.to(device))
            concepts.append(explanation.concepts[:, :, 0].double().cpu())
            standard.append(explanation.standard[:, 0].double().cpu())
    return torch.cat(concepts).numpy(), torch.cat(standard).numpy()


def _compare(
    concepts: np.ndarray,
    standard: np.ndarray,
    other_concepts: np.ndarray,
    other_standard: np.ndarray,
    sigma: float | None,
) -> dict[str, Any]:
    """Similarity summaries of concept-map pairs and of standard-map pairs."""
    n, k = concepts.shape[:2]
    return {
        "concepts": _summarise(
            [
                _similarities(concepts[i, j], other_concepts[i, j], sigma)
                for i in range(n)
                for j in range(k)
            ]
        ),
        "standard": _summarise(
            [_similarities(standard[i], other_standard[i], sigma) for i in range(n)]
        ),
    }


def _similarities(first: np.ndarray, second: np.ndarray, sigma: float | None) -> dict[str, float]:
    """Every metric of one pair of maps; NaN for all when either map is constant."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return dict.fromkeys(METRICS, math.nan)
    values = {
        "spearman": spearman_similarity(first, second),
        "spearman_abs": spearman_similarity(first, second, absolute=True),
        "ssim": math.nan,
    }
    if sigma is not None:
        scaled = [np.abs(m) / np.abs(m).max() for m in (first, second)]
        values["ssim"] = ssim(*scaled, data_range=1.0, sigma=sigma, truncate=_SSIM_TRUNCATE)
    return values


def _summarise(pairs: list[dict[str, float]]) -> dict[str, Any]:
    """Per metric mean, s.e.m. and count over the pairs where it is defined."""
    summary: dict[str, Any] = {}
    for metric in METRICS:
        values = np.array([pair[metric] for pair in pairs], dtype=np.float64)
        summary[metric] = _mean_sem(values[np.isfinite(values)])
    summary["n_undefined"] = int(sum(1 for pair in pairs if not math.isfinite(pair["spearman"])))
    return summary


def _mean_sem(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"mean": None, "sem": None, "n": 0}
    mean, sem = mean_sem(values)
    return {"mean": _number(mean), "sem": _number(sem), "n": int(values.size)}


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ----- the random-class check and the verdicts -----------------------------------------------


def _random_class(
    concepts: np.ndarray,
    standard: np.ndarray,
    labels: torch.Tensor,
    estimators: Any,
    n_classes: int,
    seed: int,
    sigma: float | None,
    explain: Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Explain every input (on the trained model) for another class, drawn uniformly."""
    candidates = sorted(int(c) for c in estimators) if isinstance(estimators, Mapping) else None
    if candidates is None:
        candidates = list(range(n_classes))
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the cascade's
    drawn = []
    for label in labels.tolist():
        others = [c for c in candidates if c != label]
        if not others:
            return {
                "skipped": True,
                "note": f"no class other than {label} to explain for "
                f"({n_classes} class(es), subspaces of {candidates})",
            }
        drawn.append(int(rng.choice(others)))
    classes = torch.tensor(drawn, dtype=labels.dtype)
    result: dict[str, Any] = {"skipped": False, "classes": drawn}
    result.update(_compare(concepts, standard, *explain(classes), sigma))
    ci = _ci95(result["concepts"]["spearman"])
    result["ci95"] = ci
    result["bound"] = CLASS_BOUND
    result["passes"] = ci is not None and ci[1] < CLASS_BOUND
    result["rule"] = (
        f"95% CI of the mean Spearman of concept maps (true vs random class) below {CLASS_BOUND}"
    )
    return result


def _cascading_verdict(steps: list[dict[str, Any]]) -> dict[str, Any]:
    original = steps[0]["concepts"]["spearman"]
    reproducible = original["mean"] is not None and original["mean"] >= REPRODUCIBLE
    verdict: dict[str, Any] = {
        "reproducible": {"mean": original["mean"], "bound": REPRODUCIBLE, "passes": reproducible}
    }
    for key, index, bound in (("top", 1, TOP_BOUND), ("final", len(steps) - 1, FINAL_BOUND)):
        if index >= len(steps) or index == 0:
            verdict[key] = {"randomized": None, "ci95": None, "bound": bound, "passes": False}
            continue
        ci = _ci95(steps[index]["concepts"]["spearman"])
        verdict[key] = {
            "randomized": steps[index]["randomized"],
            "mean": steps[index]["concepts"]["spearman"]["mean"],
            "ci95": ci,
            "bound": bound,
            "passes": ci is not None and ci[1] < bound,
        }
    verdict["passes"] = all(verdict[key]["passes"] for key in ("reproducible", "top", "final"))
    verdict["rule"] = (
        f"unrandomised copy reproduces the maps (mean Spearman >= {REPRODUCIBLE}); 95% CI of "
        f"the mean Spearman of concept maps below {TOP_BOUND} after randomising the top layer "
        f"and below {FINAL_BOUND} after randomising all"
    )
    return verdict


def _ci95(summary: dict[str, Any]) -> list[float] | None:
    if summary["mean"] is None or summary["sem"] is None:
        return None
    return [summary["mean"] - _Z95 * summary["sem"], summary["mean"] + _Z95 * summary["sem"]]


# ----- the network's layers -------------------------------------------------------------------


def _forward_order(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Module name → position at which its forward pass first finished (one input)."""
    order: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if name:

            def hook(_module: nn.Module, _input: Any, _output: Any, name: str = name) -> None:
                order.setdefault(name, len(order))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _default_layers(
    model: nn.Module, order: dict[str, int]
) -> tuple[list[str], list[dict[str, str]]]:
    """Parameter layers that run, latest first; and those left out, with the reason."""
    chosen, skipped = [], []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if not callable(getattr(module, "reset_parameters", None)):
            skipped.append({"name": name, "reason": "no reset_parameters()"})
        elif name not in order:
            skipped.append({"name": name, "reason": "does not run in the forward pass"})
        else:
            chosen.append(name)
    return sorted(chosen, key=lambda name: order[name], reverse=True), skipped


# ----- checks ---------------------------------------------------------------------------------


def _check_inputs(
    logmel: torch.Tensor, labels: torch.Tensor | np.ndarray, n_classes: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    logmel = torch.as_tensor(logmel)
    labels = torch.as_tensor(np.asarray(labels)).long()
    if logmel.dim() != 4 or logmel.shape[1] != 1 or logmel.shape[0] == 0:
        raise ValueError(
            f"logmel must have shape (N, 1, M, F) with N >= 1, got {tuple(logmel.shape)}"
        )
    if labels.shape != (logmel.shape[0],):
        raise ValueError(
            f"labels must have shape ({logmel.shape[0]},), one per input, got {tuple(labels.shape)}"
        )
    if n_classes < 1 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.unique().tolist()}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return logmel.float(), labels


def _ssim_sigma(shape: tuple[int, ...]) -> float | None:
    """SSIM's window: the usual 1.5, narrower for maps too small for it (None: no SSIM)."""
    radius = (min(shape) - 1) // 2
    if int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) <= radius:
        return _SSIM_SIGMA
    return radius / _SSIM_TRUNCATE if radius >= 1 else None
