"""Concept subspaces of a layer's channel space: checked bases and relevance projections.

A fitted subspace estimator (DRSA, PRCA, ...) describes ``K`` orthonormal subspaces of the
``d``-dimensional channel space of a layer: ``components_`` ``(Σd_k, d)`` holds an orthonormal
basis row-wise, grouped by subspace, and ``subspace_sizes_`` the ``K`` block sizes ``d_k``.
With ``U_k`` the rows of block ``k``, the projector onto subspace ``k`` is ``P_k = U_kᵀ U_k``
and the residual projector ``P_res = I − Σ_k P_k``.

At every location of the layer's map, with activation ``a`` and context ``c`` (so that the
LRP relevance is ``a ⊙ c``), the relevance splits into ``a ⊙ (P_k c)`` for ``k = 1..K`` and
``a ⊙ (P_res c)``. The residual is computed as the remainder ``c − Σ_k P_k c``, so the
``K + 1`` parts sum to ``a ⊙ c`` up to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ConceptBasis", "ConceptSubspaces", "classes_from_attr_output"]

# Largest |U Uᵀ − I| entry accepted as orthonormal (fits are orthonormalised in float64; this
# leaves room for bases stored in float32).
_ORTHONORMAL_TOL = 1e-4


@dataclass(frozen=True)
class ConceptBasis:
    """One set of ``K`` orthonormal subspaces.

    Attributes
    ----------
    components:
        ``(Σd_k, d)`` float64 CPU tensor with orthonormal rows, grouped by subspace.
    sizes:
        ``K`` positive block sizes ``d_k`` summing to ``Σd_k``.
    """

    components: torch.Tensor
    sizes: tuple[int, ...]

    @property
    def n_subspaces(self) -> int:
        """Number of subspaces ``K``."""
        return len(self.sizes)

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the channel space."""
        return self.components.shape[1]

    @classmethod
    def from_estimator(cls, estimator: Any, where: str = "subspaces") -> ConceptBasis:
        """Read and check ``components_`` and ``subspace_sizes_`` of a fitted estimator.

        Parameters
        ----------
        estimator:
            Anything with ``components_`` ``(Σd_k, d)`` (array or tensor) and
            ``subspace_sizes_`` (``K`` ints).
        where:
            How error messages refer to the estimator.

        Raises
        ------
        TypeError
            If ``estimator`` has neither attribute and no ``fit`` method.
        ValueError
            If it is not fitted, or the basis is not finite, not orthonormal, or does not match
            the sizes.
        """
        if not (hasattr(estimator, "components_") and hasattr(estimator, "subspace_sizes_")):
            if hasattr(estimator, "fit"):
                raise ValueError(
                    f"{where} ({type(estimator).__name__}) is not fitted: call fit(X, "
                    "context=C) before explaining with it"
                )
            raise TypeError(
                f"{where} must be a fitted subspace estimator (anything with components_ and "
                "subspace_sizes_, e.g. zennit_drsa.estimators.DRSA after fit) or a mapping "
                f"class index → estimator; got {type(estimator).__name__}"
            )
        components = _as_float64(estimator.components_, f"{where}.components_")
        if components.ndim != 2 or 0 in components.shape:
            raise ValueError(
                f"{where}.components_ must be a non-empty 2-D array (Σd_k, d), got shape "
                f"{tuple(components.shape)}"
            )
        if not torch.isfinite(components).all():
            raise ValueError(f"{where}.components_ contains NaN or Inf; refit the estimator")
        n_rows, dim = components.shape
        if n_rows > dim:
            raise ValueError(
                f"{where}.components_ has {n_rows} rows but only {dim} columns; at most d "
                "orthonormal directions exist in d dimensions"
            )
        gram = components @ components.T
        deviation = float((gram - torch.eye(n_rows, dtype=torch.float64)).abs().max())
        if deviation > _ORTHONORMAL_TOL:
            raise ValueError(
                f"the rows of {where}.components_ are not orthonormal (largest |UUᵀ − I| entry "
                f"{deviation:.2e}, tolerance {_ORTHONORMAL_TOL:g}); pass the fitted basis "
                "unchanged or orthonormalise it (e.g. with a QR decomposition)"
            )
        sizes = _as_sizes(estimator.subspace_sizes_, f"{where}.subspace_sizes_")
        if sum(sizes) != n_rows:
            raise ValueError(
                f"{where}.subspace_sizes_ {list(sizes)} sums to {sum(sizes)} but components_ "
                f"has {n_rows} rows"
            )
        return cls(components=components, sizes=sizes)

    def project(self, activation: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Split the relevance ``a ⊙ c`` into its ``K`` subspace parts and the residual.

        Parameters
        ----------
        activation, context:
            ``(B, d, *map)`` layer activation ``a`` and context ``c`` (``(B, d)`` for dense
            layers); channels on axis 1.

        Returns
        -------
        torch.Tensor
            ``(K + 1, B, d, *map)``, in the inputs' dtype and device: ``a ⊙ (P_k c)`` for each
            subspace in order, then ``a ⊙ (P_res c)``.
        """
        basis = self.components.to(device=context.device, dtype=context.dtype)
        channels_last = context.movedim(1, -1)
        coefficients = channels_last @ basis.T
        parts = []
        start = 0
        for size in self.sizes:
            block = slice(start, start + size)
            parts.append(coefficients[..., block] @ basis[block])
            start += size
        parts.append(channels_last - sum(parts))
        return torch.stack(parts).movedim(-1, 2) * activation


class ConceptSubspaces:
    """The subspaces used to explain a batch: one basis for all samples, or one per class.

    Parameters
    ----------
    subspaces:
        A fitted estimator (anything with ``components_`` and ``subspace_sizes_``), or a
        non-empty mapping from class index to such an estimator, so that each sample is
        explained with the subspaces of the class it is explained for. All bases of a mapping
        must have the same number of subspaces ``K`` and the same dimension ``d``.

    Raises
    ------
    TypeError, ValueError
        For anything else, naming the offending entry.
    """

    def __init__(self, subspaces: Any) -> None:
        if isinstance(subspaces, Mapping):
            if not subspaces:
                raise ValueError("the mapping class index → subspaces is empty")
            self.bases = {
                _as_class(key): ConceptBasis.from_estimator(value, f"subspaces[{key!r}]")
                for key, value in subspaces.items()
            }
            self.per_class = True
        else:
            self.bases = {None: ConceptBasis.from_estimator(subspaces)}
            self.per_class = False
        shapes = {(basis.n_subspaces, basis.dim) for basis in self.bases.values()}
        if len(shapes) > 1:
            described = {key: (b.n_subspaces, b.dim) for key, b in self.bases.items()}
            raise ValueError(
                "all per-class subspaces must have the same number of subspaces K and the same "
                f"dimension d, got (K, d) per class {described}"
            )
        ((self.n_subspaces, self.dim),) = shapes

    def check_layer(self, activation: torch.Tensor, layer: str) -> None:
        """Raise unless the layer output ``(B, d, ...)`` has the subspaces' ``d`` channels."""
        if activation.shape[1] != self.dim:
            raise ValueError(
                f"the subspaces live in d={self.dim} dimensions but layer {layer!r} has "
                f"{activation.shape[1]} channels; fit them on vectors collected at this layer"
            )

    def project(
        self, activation: torch.Tensor, context: torch.Tensor, classes: torch.Tensor | None
    ) -> torch.Tensor:
        """Subspace parts of the relevance, each sample with its class's basis.

        Parameters
        ----------
        activation, context:
            ``(B, d, *map)`` layer activation and context.
        classes:
            ``(B,)`` class explained for each sample; required for per-class subspaces,
            ignored otherwise.

        Returns
        -------
        torch.Tensor
            ``(K + 1, B, d, *map)``: the subspace parts, then the residual
            (see :meth:`ConceptBasis.project`).

        Raises
        ------
        ValueError
            If a sample's class has no subspaces.
        """
        if not self.per_class:
            return self.bases[None].project(activation, context)
        if classes is None:
            raise ValueError("per-class subspaces need the class explained for every sample")
        parts = activation.new_empty((self.n_subspaces + 1, *activation.shape))
        classes = classes.to(activation.device)
        for label in classes.unique().tolist():
            basis = self.bases.get(label)
            if basis is None:
                first = int(torch.nonzero(classes == label)[0, 0])
                raise ValueError(
                    f"sample {first} is explained for class {label}, which has no subspaces; "
                    f"the mapping covers classes {sorted(self.bases)}"
                )
            rows = classes == label
            parts[:, rows] = basis.project(activation[rows], context[rows])
        return parts


def classes_from_attr_output(attr_output: torch.Tensor) -> torch.Tensor:
    """The class each sample is explained for: the one non-zero entry of its output relevance.

    Parameters
    ----------
    attr_output:
        ``(B, n_classes)`` relevance placed on the model output (one-hot rows, or a one-hot
        mask times the output).

    Returns
    -------
    torch.Tensor
        ``(B,)`` int64 class indices.

    Raises
    ------
    ValueError
        If the output is not 2-D or a row does not have exactly one non-zero entry.
    """
    if attr_output.dim() != 2:
        raise ValueError(
            "per-class subspaces need a model output of shape (B, n_classes), got "
            f"{tuple(attr_output.shape)}"
        )
    support = attr_output != 0
    counts = support.sum(dim=1)
    bad = torch.nonzero(counts != 1)
    if bad.numel():
        sample = int(bad[0, 0])
        raise ValueError(
            "per-class subspaces need one explained class per sample (one non-zero entry per "
            f"row of the output relevance); sample {sample} has {int(counts[sample])}. Pass a "
            "class index or per-sample labels as target"
        )
    return support.to(torch.int8).argmax(dim=1)


def _as_float64(values: Any, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return torch.as_tensor(array, dtype=torch.float64)


def _as_sizes(values: Any, name: str) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    array = np.asarray(values)
    if (
        array.ndim != 1
        or array.size == 0
        or not np.issubdtype(array.dtype, np.integer)
        or (array < 1).any()
    ):
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of positive ints (one size d_k per "
            f"subspace), got {values!r}"
        )
    return tuple(int(size) for size in array)


def _as_class(key: Any) -> int:
    if isinstance(key, bool | np.bool_) or not isinstance(key, int | np.integer):
        raise TypeError(f"the keys of a subspace mapping must be class indices (int), got {key!r}")
    return int(key)
