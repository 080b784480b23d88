"""Numerics for model-randomisation sanity checks (Adebayo et al., NeurIPS 2018).

An explanation that survives randomising the model's weights does not explain the model.
The cascading check randomises the layers from the output downwards, one more each step
(:func:`cascading_randomization`), explains every randomised copy the same way, and
compares each map with the original's: :func:`spearman_similarity` (rank correlation) and
:func:`ssim` (structural similarity). Similarity should fall as soon as the top layers are
randomised.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from torch import nn

__all__ = ["cascading_randomization", "spearman_similarity", "ssim"]


def spearman_similarity(
    first: ArrayLike | torch.Tensor, second: ArrayLike | torch.Tensor, *, absolute: bool = False
) -> float:
    """Spearman rank correlation between two heatmaps of the same shape.

    Parameters
    ----------
    first, second:
        Heatmaps of any one shape, e.g. ``(H, W)`` or ``(C, H, W)``; compared element by
        element (ties get average ranks).
    absolute:
        Compare ``|first|`` and ``|second|``: whether the same places matter, whatever the
        sign (Adebayo et al. report both).

    Returns
    -------
    The correlation in [−1, 1]: 1 for maps ranked alike, −1 for a map and its negation.
    NaN when either map is constant (a rank correlation is then undefined).
    """
    x, y = _pair(first, second)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    x, y = x.ravel(), y.ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def ssim(
    first: ArrayLike | torch.Tensor,
    second: ArrayLike | torch.Tensor,
    *,
    data_range: float | None = None,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004) of two 2-D maps, Gaussian-weighted.

    Local means, variances and the covariance come from a Gaussian window of standard
    deviation ``sigma`` (cut at ``truncate`` standard deviations, reflecting at the
    borders; population, not sample, moments). With ``C1 = (k1 L)²`` and ``C2 = (k2 L)²``
    for the data range ``L``, every pixel gets::

        ((2 μ_x μ_y + C1)(2 σ_xy + C2)) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),

    and the result is the mean over the pixels at least one window radius
    ``r = int(truncate · sigma + 0.5)`` from the border (the others see reflected data).
    These are the choices of scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``.

    Parameters
    ----------
    first, second:
        ``(H, W)`` maps, both at least ``2 r + 1`` (11 by default) on each side. SSIM is
        not scale invariant: bring heatmaps to a common scale first (e.g. divide each by
        its maximum absolute value).
    data_range:
        ``L``; default: the range of both maps together, ``max − min`` over their values.
    sigma, truncate:
        The Gaussian window.
    k1, k2:
        The stabilising constants.

    Returns
    -------
    SSIM in [−1, 1]: 1 for identical maps (also two equal constant maps, whose default
    range is 0); for a constant map ``c`` and its negation, ``(C1 − 2c²) / (C1 + 2c²)``;
    for a map with locally zero means (e.g. a ±1 checkerboard) and its negation, about
    ``(C2 − 2σ²) / (C2 + 2σ²)`` ≈ −1.

    Notes
    -----
    On signed maps the sign enters twice, in the means and in the covariance: where a
    map's local means are far from 0, the map and its negation flip both factors and can
    score *positive* (0.70 for a smooth test map). To ask whether a randomised model still
    points at the same places, compare magnitudes (``ssim(abs(a), abs(b))``); to ask about
    signs, use :func:`spearman_similarity`.
    """
    x, y = _pair(first, second)
    if x.ndim != 2:
        raise ValueError(f"ssim compares 2-D maps (H, W), got shape {x.shape}")
    radius = int(truncate * sigma + 0.5)
    if min(x.shape) < 2 * radius + 1:
        raise ValueError(
            f"maps of shape {x.shape} are smaller than the Gaussian window "
            f"({2 * radius + 1} per side for sigma = {sigma}, truncate = {truncate}); "
            "give a smaller sigma"
        )
    if data_range is None:
        data_range = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        if data_range == 0:
            return 1.0  # two equal constant maps
    elif not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")

    def local_mean(values: np.ndarray) -> np.ndarray:
        return gaussian_filter(values, sigma=sigma, truncate=truncate, mode="reflect")

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x * mean_x
    var_y = local_mean(y * y) - mean_y * mean_y
    cov = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    similarity = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    inner = similarity[radius : x.shape[0] - radius, radius : x.shape[1] - radius]
    return float(inner.mean())


def cascading_randomization(
    model: nn.Module, *, layers: Sequence[str] | None = None, seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Randomise a model's layers from the top down, one more each step, on copies.

    Step ``m`` yields a fresh deep copy of ``model`` whose first ``m + 1`` layers of
    ``layers`` are re-initialised by their own ``reset_parameters()`` (PyTorch's default
    initialisation: the distribution the weights started from), the layers below keeping
    their trained values. ``model`` itself is never changed, and every yielded copy is
    independent (keep or discard it).

    Parameters
    ----------
    model:
        The trained model (any device; its mode and hooks are copied as they are, so
        attach LRP composites to the yielded copies, not before).
    layers:
        Module names (as in ``model.named_modules()``) in the order to randomise them,
        output layer first. Default: every module owning parameters, in reverse
        registration order, which is top-down for models that register their layers in
        the order ``forward`` runs them (e.g. ``nn.Sequential``); give the order otherwise.
    seed:
        Seeds the re-initialisation. A layer's new values depend only on ``seed`` and its
        name, not on its step or the device, and the global random state is left as it was.

    Yields
    ------
    name, randomised:
        The layer randomised at this step and the copy with it and all layers above it
        randomised.

    Raises
    ------
    ValueError
        If a name is unknown, repeated, or a module owns no parameters or has no
        ``reset_parameters()``.
    """
    modules = dict(model.named_modules())
    if layers is None:
        layers = [name for name, module in modules.items() if _owns_parameters(module)][::-1]
    layers = list(layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a name, got {layers}")
    for name in layers:
        if name not in modules:
            raise ValueError(
                f"{name!r} is not a module of the model; names are those of "
                f"model.named_modules(), e.g. {[n for n in modules if n][:5]}"
            )
        if not _owns_parameters(modules[name]):
            raise ValueError(f"module {name!r} owns no parameters; there is nothing to randomise")
        if not callable(getattr(modules[name], "reset_parameters", None)):
            raise ValueError(
                f"module {name!r} ({type(modules[name]).__name__}) has no reset_parameters(); "
                "pass layers= without it"
            )
    return _cascade(model, layers, seed)


def _cascade(model: nn.Module, layers: list[str], seed: int) -> Iterator[tuple[str, nn.Module]]:
    """The generator of :func:`cascading_randomization` (checks run at the call, not here)."""
    working = copy.deepcopy(model)
    modules = dict(working.named_modules())
    for name in layers:
        _reinitialise(modules[name], _layer_seed(seed, name))
        yield name, copy.deepcopy(working)


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise the module's own parameters and buffers, seeded, on any device."""
    # reset_parameters draws from the generator of the tensors' device; drawing on a CPU
    # copy with a forked CPU generator makes the values device-independent and leaves the
    # global random state alone.
    fresh = copy.deepcopy(module).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        fresh.reset_parameters()
    with torch.no_grad():
        for target, source in zip(
            (*module.parameters(recurse=False), *module.buffers(recurse=False)),
            (*fresh.parameters(recurse=False), *fresh.buffers(recurse=False)),
            strict=True,
        ):
            target.copy_(source)


def _layer_seed(seed: int, name: str) -> int:
    """A seed for one layer from the user's seed and the layer's name (stable across runs)."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _pair(
    first: ArrayLike | torch.Tensor, second: ArrayLike | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as finite float64 arrays of one shape, or a ValueError."""
    arrays = []
    for values in (first, second):
        if isinstance(values, torch.Tensor):
            values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
        arrays.append(np.asarray(values, dtype=np.float64))
    x, y = arrays
    if x.shape != y.shape:
        raise ValueError(f"the maps must have the same shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("the maps are empty")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the maps contain NaN/Inf")
    return x, y
