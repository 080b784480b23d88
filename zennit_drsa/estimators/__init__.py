"""Subspace estimators with the scikit-learn API: DRSA and its baselines.

All estimators learn ``K`` orthogonal subspaces of a layer's activation space from
activation vectors ``X`` and aligned LRP context vectors (``fit(X, context=C)``), order
them by mean relevance, and expose ``transform``, ``relevance``, ``projectors`` and
``score``. :class:`OracleSubspaces` is the reference of known quality: one subspace per
concept, from labelled activations of the concepts shown alone (``fit(X, y)``). Fitted
estimators are saved without pickle by :func:`save` / :func:`load`.
"""

from zennit_drsa.estimators._base import MissingContextWarning, SubspaceEstimator
from zennit_drsa.estimators.baselines import DSA, PCASubspaces, RandomSubspaces
from zennit_drsa.estimators.drsa import DRSA
from zennit_drsa.estimators.oracle import OracleSubspaces
from zennit_drsa.estimators.persistence import load, save
from zennit_drsa.estimators.prca import PRCA

__all__ = [
    "DRSA",
    "DSA",
    "PRCA",
    "MissingContextWarning",
    "OracleSubspaces",
    "PCASubspaces",
    "RandomSubspaces",
    "SubspaceEstimator",
    "load",
    "save",
]
