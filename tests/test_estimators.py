"""DRSA and its baselines as scikit-learn estimators."""

import warnings

import numpy as np
import pytest
import sklearn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_drsa_solvers import (
    matched_overlap,
    one_torch_thread,  # noqa: F401 (autouse fixture, applies here)
    planted_concepts,
)

from zennit_drsa.estimators import (
    DRSA,
    DSA,
    PRCA,
    MissingContextWarning,
    PCASubspaces,
    RandomSubspaces,
)

ALL = [DRSA, DSA, PRCA, PCASubspaces, RandomSubspaces]
FAST = {"max_iter": 300, "tol": 1e-5, "n_restarts": 2, "random_state": 0}


def _make(cls, **params):
    """An instance with small solver budgets; parameters the class lacks are dropped."""
    accepted = cls().get_params()
    return cls(**{k: v for k, v in {**FAST, **params}.items() if k in accepted})


def _layer(rng, n=200, d=8):
    activations = rng.standard_normal((n, d))
    context = activations @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    return activations, context


@parametrize_with_checks(
    [
        DRSA(n_subspaces=2, max_iter=15, n_restarts=2, random_state=0),
        DRSA(n_subspaces=1, solver="reference", max_iter=5, n_restarts=1, random_state=0),
        DSA(n_subspaces=2, max_iter=15, n_restarts=2, random_state=0),
        PRCA(n_subspaces=2),
        PCASubspaces(n_subspaces=2),
        RandomSubspaces(n_subspaces=2, random_state=0),
    ]
)
@pytest.mark.filterwarnings("ignore::zennit_drsa.estimators.MissingContextWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_conformance(estimator, check):
    check(estimator)


def test_planted_subspaces_are_recovered_by_drsa_but_not_prca():
    rng = np.random.default_rng(0)
    activations, context, blocks = planted_concepts(rng, n=2000, d=24)
    drsa = DRSA(n_subspaces=3, subspace_dim=4, random_state=0).fit(activations, context=context)
    prca = PRCA(n_subspaces=3, subspace_dim=4).fit(activations, context=context)
    drsa_overlap = matched_overlap(blocks, drsa.projectors())
    prca_overlap = matched_overlap(blocks, prca.projectors())
    assert drsa_overlap >= 0.9
    # Equal strengths make PRCA's spectrum degenerate: its blocks mix the concepts.
    assert prca_overlap < 0.75
    # PRCA still finds the span of all concepts; it only fails to separate them.
    span = sum(block @ block.T for block in blocks)
    assert np.trace(span @ prca.projectors().sum(axis=0)) / 12 > 0.95


@pytest.mark.parametrize("cls", ALL)
def test_fitted_attributes(rng, cls):
    activations, context = _layer(rng)
    estimator = _make(cls, n_subspaces=3, subspace_dim=2).fit(activations, context=context)
    rows = estimator.components_
    assert rows.shape == (6, 8) and rows.dtype == np.float64
    np.testing.assert_allclose(rows @ rows.T, np.eye(6), atol=1e-10)
    np.testing.assert_array_equal(estimator.subspace_sizes_, [2, 2, 2])
    assert estimator.n_features_in_ == 8
    assert estimator.objective_trace_.shape == (estimator.n_iter_ + 1,)
    assert estimator.objective_trace_[-1] == pytest.approx(estimator.objective_)
    assert estimator.scale_activations_ > 0 and estimator.scale_context_ > 0
    # Subspaces are ordered by decreasing mean relevance on the training data.
    relevance = estimator.relevance(activations, context)
    np.testing.assert_allclose(estimator.subspace_relevance_, relevance.mean(axis=0))
    assert np.all(np.diff(estimator.subspace_relevance_) <= 0)
    np.testing.assert_allclose(estimator.transform(activations), activations @ rows.T)


@pytest.mark.parametrize("cls", [DRSA, PRCA, RandomSubspaces])
def test_objective_in_input_units_is_the_score(rng, cls):
    activations, context = _layer(rng)
    estimator = _make(cls, n_subspaces=2).fit(activations, context=context)
    scale = estimator.scale_activations_ * estimator.scale_context_
    assert estimator.score(activations, context=context) == pytest.approx(
        estimator.objective_ * scale, rel=1e-5
    )


def test_dsa_objective_ignores_the_context(rng):
    activations, context = _layer(rng)
    with_context = _make(DSA, n_subspaces=2).fit(activations, context=context)
    without = _make(DSA, n_subspaces=2).fit(activations)
    assert with_context.objective_ == pytest.approx(without.objective_)
    # Without context the score is DSA's own objective, in input units.
    assert without.score(activations) == pytest.approx(
        without.objective_ * without.scale_activations_**2, rel=1e-5
    )


@pytest.mark.parametrize("cls", ALL)
def test_unequal_sizes_and_residual(rng, cls):
    activations, context = _layer(rng, d=9)
    estimator = _make(cls, n_subspaces=3, subspace_dim=(3, 1, 2))
    estimator.fit(activations, context=context)
    assert sorted(estimator.subspace_sizes_.tolist()) == [1, 2, 3]
    relevance = estimator.relevance(activations, context, residual=True)
    assert relevance.shape == (200, 4)
    np.testing.assert_allclose(relevance.sum(axis=1), np.sum(activations * context, axis=1))
    projectors = estimator.projectors(residual=True)
    assert projectors.shape == (4, 9, 9)
    np.testing.assert_allclose(projectors.sum(axis=0), np.eye(9), atol=1e-10)
    ranks = [round(np.trace(projector)) for projector in projectors]
    assert ranks == [*estimator.subspace_sizes_.tolist(), 3]
    # Each projector matches its block of components.
    rows = estimator.components_[: estimator.subspace_sizes_[0]]
    np.testing.assert_allclose(projectors[0], rows.T @ rows, atol=1e-12)


@pytest.mark.parametrize("cls", ALL)
def test_full_partition_leaves_no_residual(rng, cls):
    activations, context = _layer(rng)
    estimator = _make(cls, n_subspaces=4).fit(activations, context=context)
    residual = estimator.relevance(activations, context, residual=True)[:, -1]
    np.testing.assert_allclose(residual, 0.0, atol=1e-10)
    np.testing.assert_allclose(estimator.inverse_transform(estimator.transform(activations)),
                               activations, atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("alpha, beta", [(3.0, 0.25), (1e-3, 50.0)])
def test_score_is_bilinear(rng, alpha, beta):
    activations, context = _layer(rng)
    drsa = _make(DRSA, n_subspaces=2).fit(activations, context=context)
    base = drsa.score(activations, context=context)
    assert drsa.score(alpha * activations, context=beta * context) == pytest.approx(
        alpha * beta * base
    )
    # Fitting on rescaled data finds the same subspaces: the data are normalised first.
    rescaled = _make(DRSA, n_subspaces=2).fit(alpha * activations, context=beta * context)
    np.testing.assert_allclose(rescaled.projectors(), drsa.projectors(), atol=1e-4)
    assert rescaled.objective_ == pytest.approx(drsa.objective_, rel=1e-4)


@pytest.mark.parametrize("cls", [DRSA, DSA, RandomSubspaces])
def test_random_state_makes_fits_identical(rng, cls):
    activations, context = _layer(rng)
    first = _make(cls, n_subspaces=2, random_state=5).fit(activations, context=context)
    second = _make(cls, n_subspaces=2, random_state=5).fit(activations, context=context)
    other = _make(cls, n_subspaces=2, random_state=6).fit(activations, context=context)
    np.testing.assert_array_equal(first.components_, second.components_)
    np.testing.assert_array_equal(first.objective_trace_, second.objective_trace_)
    assert not np.allclose(first.components_, other.components_)


@pytest.mark.parametrize("solver", ["riemannian", "reference"])
def test_both_solvers_through_the_estimator(rng, solver):
    activations, context = _layer(rng)
    drsa = DRSA(n_subspaces=2, solver=solver, max_iter=40, tol=1e-3, random_state=0)
    drsa.fit(activations, context=context)
    assert drsa.objective_trace_[-1] > drsa.objective_trace_[0]
    if solver == "reference":
        assert drsa.n_iter_ == 40


def test_torch_input_matches_numpy(rng):
    activations, context = _layer(rng)
    reference = _make(DRSA, n_subspaces=2).fit(activations, context=context)
    tensors = _make(DRSA, n_subspaces=2).fit(
        torch.from_numpy(activations), context=torch.from_numpy(context)
    )
    np.testing.assert_array_equal(tensors.components_, reference.components_)
    coordinates = tensors.transform(torch.from_numpy(activations))
    assert isinstance(coordinates, np.ndarray)
    np.testing.assert_allclose(coordinates, reference.transform(activations))
    relevance = tensors.relevance(torch.from_numpy(activations), torch.from_numpy(context))
    np.testing.assert_allclose(relevance, reference.relevance(activations, context))


def test_half_precision_is_upcast(rng):
    activations, context = _layer(rng)
    half = activations.astype(np.float16)
    drsa = _make(DRSA, n_subspaces=2).fit(half, context=context.astype(np.float16))
    assert drsa.components_.dtype == np.float64 and np.isfinite(drsa.components_).all()
    assert drsa.transform(half).dtype == np.float32
    bfloat = torch.from_numpy(activations).to(torch.bfloat16)
    assert drsa.transform(bfloat).dtype == np.float32


def test_transform_preserves_float32(rng):
    activations, context = _layer(rng)
    drsa = _make(PRCA, n_subspaces=2).fit(activations, context=context)
    assert drsa.transform(activations.astype(np.float32)).dtype == np.float32
    assert drsa.transform(activations).dtype == np.float64


def test_non_contiguous_inputs(rng):
    activations, context = _layer(rng, d=16)
    strided, strided_context = activations[::2, ::2], context[::2, ::2]
    fortran = np.asfortranarray(strided)
    first = _make(DRSA, n_subspaces=2).fit(strided, context=strided_context)
    second = _make(DRSA, n_subspaces=2).fit(fortran, context=np.asfortranarray(strided_context))
    np.testing.assert_allclose(first.components_, second.components_, atol=1e-12)
    np.testing.assert_allclose(first.transform(fortran), first.transform(strided.copy()))


def test_missing_context_warns_once_and_uses_activations(rng):
    activations, _ = _layer(rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drsa = _make(DRSA, n_subspaces=2).fit(activations)
    assert [w.category for w in caught] == [MissingContextWarning]
    np.testing.assert_allclose(
        drsa.subspace_relevance_, drsa.relevance(activations, activations).mean(axis=0)
    )
    assert (drsa.relevance(activations, activations) >= 0).all()
    assert drsa.scale_context_ == drsa.scale_activations_
    # Estimators whose objective has no context do not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PCASubspaces(n_subspaces=2).fit(activations)


def test_all_dead_subspaces_are_an_error(rng):
    activations, _ = _layer(rng)
    with pytest.raises(ValueError, match="every subspace is dead"):
        _make(DRSA, n_subspaces=2).fit(activations, context=-activations)


_BAD_INPUTS = [
    ("nan", lambda a, c: (np.where(np.eye(*a.shape) > 0, np.nan, a), c), "NaN"),
    ("inf context", lambda a, c: (a, np.where(np.eye(*c.shape) > 0, np.inf, c)), "infinity"),
    ("1-d", lambda a, c: (a[:, 0], c), "2D array"),
    ("3-d", lambda a, c: (a[None], c), "dim 3"),
    ("one sample", lambda a, c: (a[:1], c[:1]), "minimum of 2"),
    ("context shape", lambda a, c: (a, c[:, :-1]), "context has shape"),
    ("context rows", lambda a, c: (a, c[:-1]), "context has shape"),
    ("zero context", lambda a, c: (a, np.zeros_like(c)), "context vectors are all zero"),
    ("zero activations", lambda a, c: (np.zeros_like(a), c), "activations .X. are all zero"),
]


@pytest.mark.parametrize("case, corrupt, message", _BAD_INPUTS, ids=[b[0] for b in _BAD_INPUTS])
@pytest.mark.parametrize("cls", [DRSA, PRCA])
def test_bad_inputs_are_rejected_clearly(rng, cls, case, corrupt, message):
    activations, context = corrupt(*_layer(rng))
    estimator = _make(cls, n_subspaces=2)
    with pytest.raises(ValueError, match=message):
        estimator.fit(activations, context=context)
    assert not hasattr(estimator, "components_")


_BAD_PARAMS = [
    ({"n_subspaces": 0}, ValueError, "at least 1"),
    ({"n_subspaces": 2.5}, TypeError, "must be an int"),
    ({"n_subspaces": 3, "subspace_dim": 3}, ValueError, "need 9 dimensions .* n_features=8"),
    ({"n_subspaces": 9}, ValueError, "n_subspaces=9 exceeds n_features=8"),
    ({"n_subspaces": 2, "subspace_dim": (2, 2, 2)}, ValueError, "lists 3 sizes"),
    ({"n_subspaces": 2, "subspace_dim": (2, 0)}, ValueError, "at least 1"),
    ({"p": 0.5}, ValueError, "p must be"),
    ({"q": 0.0}, ValueError, "q must be"),
    ({"solver": "adam"}, ValueError, "solver must be one of"),
    ({"max_iter": 0}, ValueError, "max_iter must be"),
    ({"tol": -1.0}, ValueError, "tol must be"),
    ({"dtype": "float16"}, ValueError, "dtype must be"),
]


@pytest.mark.parametrize("params, error, message", _BAD_PARAMS)
def test_bad_parameters_are_rejected_at_fit(rng, params, error, message):
    activations, context = _layer(rng)
    estimator = DRSA(**params)  # __init__ only stores
    with pytest.raises(error, match=message):
        estimator.fit(activations, context=context)


def test_unfitted_estimator_refuses_to_work(rng):
    activations, context = _layer(rng)
    for method in ("transform", "inverse_transform", "score"):
        with pytest.raises(NotFittedError):
            getattr(DRSA(), method)(activations)
    with pytest.raises(NotFittedError):
        DRSA().relevance(activations, context)
    with pytest.raises(NotFittedError):
        DRSA().projectors()


def test_context_is_routed_through_pipeline_and_cross_validate(rng):
    activations, context = _layer(rng)
    with sklearn.config_context(enable_metadata_routing=True):
        drsa = _make(DRSA, n_subspaces=2).set_fit_request(context=True)
        drsa.set_score_request(context=True)
        pipeline = Pipeline([("identity", "passthrough"), ("drsa", drsa)])
        with warnings.catch_warnings():
            warnings.simplefilter("error", MissingContextWarning)
            pipeline.fit(activations, context=context)
            scores = cross_validate(
                pipeline, activations, params={"context": context}, cv=KFold(3)
            )["test_score"]
    fitted = pipeline.named_steps["drsa"]
    direct = _make(DRSA, n_subspaces=2).fit(activations, context=context)
    np.testing.assert_allclose(fitted.components_, direct.components_)
    # The test score is DRSA's objective on the held-out fold, with its context.
    train, test = list(KFold(3).split(activations))[-1]
    last = _make(DRSA, n_subspaces=2).fit(activations[train], context=context[train])
    assert scores[-1] == pytest.approx(last.score(activations[test], context=context[test]))


def test_grid_search_selects_by_score_with_context(rng):
    activations, context = _layer(rng)
    with sklearn.config_context(enable_metadata_routing=True):
        drsa = _make(DRSA).set_fit_request(context=True).set_score_request(context=True)
        search = GridSearchCV(drsa, {"n_subspaces": [1, 2], "q": [0.5, 1.0]}, cv=2)
        search.fit(activations, context=context)
    assert search.best_params_["n_subspaces"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.n_subspaces == search.best_params_["n_subspaces"]


def test_clone_and_params_roundtrip():
    drsa = DRSA(n_subspaces=3, subspace_dim=(1, 2, 3), q=0.25, solver="reference")
    copy = clone(drsa)
    assert copy.get_params() == drsa.get_params()
    copy.set_params(q=1.0, n_restarts=7)
    assert copy.q == 1.0 and copy.n_restarts == 7 and drsa.q == 0.25


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 7), data=st.data())
def test_random_shapes_give_orthonormal_conserving_subspaces(n, d, data):
    k = data.draw(st.integers(1, d))
    sizes = data.draw(st.lists(st.integers(1, d // k), min_size=k, max_size=k))
    cls = data.draw(st.sampled_from(ALL))
    generator = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    activations = generator.standard_normal((n, d))
    context = activations + generator.standard_normal((n, d))
    estimator = _make(cls, n_subspaces=k, subspace_dim=sizes, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        try:
            estimator.fit(activations, context=context)
        except ValueError as error:
            # Few samples may carry no positive relevance at all; DRSA must say so.
            assert cls is DRSA and "every subspace is dead" in str(error)
            return
    rows = estimator.components_
    np.testing.assert_allclose(rows @ rows.T, np.eye(sum(sizes)), atol=1e-8)
    relevance = estimator.relevance(activations, context, residual=True)
    np.testing.assert_allclose(
        relevance.sum(axis=1), np.sum(activations * context, axis=1), atol=1e-9
    )


def test_score_sample_weight_repeats_samples(rng):
    activations, context = _layer(rng)
    drsa = _make(PRCA, n_subspaces=2).fit(activations, context=context)
    counts = rng.integers(0, 3, size=len(activations))
    counts[0] = 1
    repeated = drsa.score(
        np.repeat(activations, counts, axis=0), context=np.repeat(context, counts, axis=0)
    )
    assert drsa.score(activations, sample_weight=counts, context=context) == pytest.approx(repeated)
    uniform = drsa.score(activations, sample_weight=np.full(200, 3.0), context=context)
    assert uniform == pytest.approx(drsa.score(activations, context=context))
    with pytest.raises(ValueError, match="non-negative"):
        drsa.score(activations, sample_weight=-np.ones(200), context=context)
    with pytest.raises(ValueError, match="one weight per sample"):
        drsa.score(activations, sample_weight=np.ones(3), context=context)


def test_failed_refit_keeps_the_previous_fit(rng):
    activations, context = _layer(rng)
    drsa = _make(PRCA, n_subspaces=2).fit(activations, context=context)
    before = drsa.components_.copy()
    narrow = activations[:, :5]
    with pytest.raises(ValueError, match="context has shape"):
        drsa.fit(narrow, context=context)
    assert drsa.n_features_in_ == 8
    np.testing.assert_array_equal(drsa.components_, before)
    np.testing.assert_allclose(drsa.transform(activations), activations @ before.T)


def test_subspace_dim_may_be_a_numpy_array(rng):
    activations, context = _layer(rng)
    prca = PRCA(n_subspaces=2, subspace_dim=np.array([3, 1])).fit(activations, context=context)
    assert sorted(prca.subspace_sizes_.tolist()) == [1, 3]
