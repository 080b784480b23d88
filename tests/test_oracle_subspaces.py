"""OracleSubspaces: one subspace per labelled concept, the reference of known quality."""

import hashlib
import io
import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import subspace_angles
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from test_drsa_solvers import one_torch_thread  # noqa: F401 (autouse fixture, applies here)

from zennit_drsa import OracleSubspaces as TopLevelOracle
from zennit_drsa.estimators import OracleSubspaces, load, save
from zennit_drsa.estimators._linalg import haar_orthonormal


def grouped_activations(rng, spans, labels, n=40, noise=1e-7):
    """Rows of each group drawn inside its span (``(d, d_k)``), of mean energy exactly ``(k + 1)²``.

    Returns ``X`` ``(n·K, d)`` and ``y`` ``(n·K,)`` with ``labels[k]`` marking ``spans[k]``.
    """
    d = spans[0].shape[0]
    rows, y = [], []
    for k, (span, label) in enumerate(zip(spans, labels, strict=True)):
        latent = rng.standard_normal((n, span.shape[1]))
        latent *= (k + 1) / np.sqrt(np.mean(np.sum(latent**2, axis=1)))
        rows.append(latent @ span.T + noise * rng.standard_normal((n, d)))
        y += [label] * n
    return np.vstack(rows), np.asarray(y)


def fitted_blocks(estimator):
    """The fitted subspaces as ``{label: (d, d_k) orthonormal basis}``."""
    offsets = np.cumsum((0, *estimator.subspace_sizes_))
    return {
        label: estimator.components_[offsets[k] : offsets[k + 1]].T
        for k, label in enumerate(estimator.group_order_.tolist())
    }


def misalignment(bases, spans):
    """``Σ_k Σ_i (1 − cos θ_ki)`` over the principal angles of ``bases[k]`` to ``spans[k]``:
    half the squared distance ``min_R ‖Q_k R − B_k‖²``, which Löwdin's basis minimises."""
    return sum(
        np.sum(1 - np.cos(subspace_angles(basis, span)))
        for basis, span in zip(bases, spans, strict=True)
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    labels=st.lists(st.integers(-1000, 1000), min_size=4, max_size=4, unique=True),
)
def test_orthogonal_planted_groups_are_recovered_exactly(seed, sizes, labels):
    rng = np.random.default_rng(seed)
    d = 12
    rotation = haar_orthonormal(rng, d, d)[0]
    offsets = np.cumsum((0, *sizes))
    spans = [rotation[:, offsets[k] : offsets[k + 1]] for k in range(len(sizes))]
    labels = labels[: len(sizes)]
    activations, y = grouped_activations(rng, spans, labels)
    # subspace_dim lists d_k in the sorted order of the labels.
    by_label = dict(zip(labels, spans, strict=True))
    oracle = OracleSubspaces(len(sizes), [by_label[label].shape[1] for label in sorted(labels)])
    oracle.fit(activations, y)

    assert sorted(oracle.group_order_.tolist()) == sorted(labels)
    for label, basis in fitted_blocks(oracle).items():
        assert np.max(subspace_angles(basis, by_label[label])) < 1e-4
    # Ordered by relevance like every estimator: the strongest group (largest k) first.
    assert oracle.group_order_.tolist() == labels[::-1]
    assert np.all(np.diff(oracle.subspace_relevance_) <= 0)


def test_non_orthogonal_groups_get_the_closest_orthonormal_basis():
    rng = np.random.default_rng(1)
    d, labels = 8, [0, 1, 2]
    # Random 2-D spans: pairwise principal angles well below 90°.
    spans = [np.linalg.qr(rng.standard_normal((d, 2)))[0] for _ in labels]
    activations, y = grouped_activations(rng, spans, labels, n=60, noise=0.0)
    oracle = OracleSubspaces(3, 2).fit(activations, y)

    np.testing.assert_allclose(oracle.components_ @ oracle.components_.T, np.eye(6), atol=1e-12)
    blocks = fitted_blocks(oracle)
    for label, basis in blocks.items():
        angles = [np.sum(subspace_angles(basis, span) ** 2) for span in spans]
        assert np.argmin(angles) == label
    fitted = misalignment([blocks[label] for label in labels], spans)
    assert fitted > 1e-3  # the groups overlap, so no orthonormal basis matches them all
    # Gram–Schmidt in any order keeps the first group and pays for it with the others.
    for order in itertools.permutations(labels):
        q = np.linalg.qr(np.hstack([spans[k] for k in order]))[0]
        gram_schmidt = {k: q[:, 2 * i : 2 * i + 2] for i, k in enumerate(order)}
        assert fitted < misalignment([gram_schmidt[k] for k in labels], spans)
    # Nor does any nearby orthonormal basis do better.
    basis = np.hstack([blocks[label] for label in labels])
    for _ in range(20):
        nearby = np.linalg.qr(basis + 0.01 * rng.standard_normal(basis.shape))[0]
        assert fitted <= misalignment([nearby[:, 2 * k : 2 * k + 2] for k in labels], spans)


def test_the_order_and_values_of_the_labels_do_not_matter():
    rng = np.random.default_rng(2)
    spans = [np.linalg.qr(rng.standard_normal((10, 3)))[0] for _ in range(3)]
    activations, y = grouped_activations(rng, spans, [0, 1, 2], noise=0.05)
    oracle = OracleSubspaces(3, 3).fit(activations, y)
    # Other label values in another sorted order, rows shuffled.
    relabel = np.array([7, -4, 3])
    shuffle = rng.permutation(len(y))
    other = OracleSubspaces(3, 3).fit(activations[shuffle], relabel[y[shuffle]])

    assert other.group_order_.tolist() == relabel[oracle.group_order_].tolist()
    np.testing.assert_allclose(other.projectors(), oracle.projectors(), atol=1e-10)
    np.testing.assert_allclose(other.subspace_relevance_, oracle.subspace_relevance_, rtol=1e-10)


def test_a_sequence_of_sizes_follows_the_sorted_labels():
    rng = np.random.default_rng(3)
    spans = np.split(haar_orthonormal(rng, 6, 4)[0], [1], axis=1)  # 1-D and 3-D
    # Label 9 marks the 1-D span, label 2 the 3-D one: sorted, 2 comes first.
    activations, y = grouped_activations(rng, spans, [9, 2])
    oracle = OracleSubspaces(2, (3, 1)).fit(activations, y)
    sizes = dict(zip(oracle.group_order_.tolist(), oracle.subspace_sizes_.tolist(), strict=True))
    assert sizes == {2: 3, 9: 1}
    assert np.max(subspace_angles(fitted_blocks(oracle)[9], spans[0])) < 1e-4


def test_context_orders_the_subspaces_but_leaves_the_basis():
    rng = np.random.default_rng(4)
    spans = np.split(haar_orthonormal(rng, 6, 4)[0], 2, axis=1)
    activations, y = grouped_activations(rng, spans, [0, 1])
    # Relevance only in group 0's span, though group 1 is the stronger one.
    context = activations @ spans[0] @ spans[0].T
    plain = OracleSubspaces(2, 2).fit(activations, y)
    relevant = OracleSubspaces(2, 2).fit(activations, y, context=context)
    assert plain.group_order_.tolist() == [1, 0]
    assert relevant.group_order_.tolist() == [0, 1]
    np.testing.assert_allclose(relevant.projectors()[::-1], plain.projectors(), atol=1e-12)


def test_torch_inputs_and_sklearn_plumbing():
    rng = np.random.default_rng(5)
    spans = np.split(haar_orthonormal(rng, 6, 4)[0], 2, axis=1)
    activations, y = grouped_activations(rng, spans, [0, 1])
    oracle = OracleSubspaces(2, 2)
    assert TopLevelOracle is OracleSubspaces
    assert oracle.get_params() == {"n_subspaces": 2, "subspace_dim": 2, "distributed": False}
    assert clone(oracle).get_params() == oracle.get_params()
    assert oracle.__sklearn_tags__().target_tags.required
    from_torch = clone(oracle).fit(torch.from_numpy(activations).float(), torch.from_numpy(y))
    np.testing.assert_allclose(
        from_torch.projectors(), oracle.fit(activations, y).projectors(), atol=1e-5
    )
    coordinates = make_pipeline(clone(oracle)).fit_transform(activations, y)
    np.testing.assert_allclose(coordinates, oracle.transform(activations))
    # Whole numbers stored as floats are integer labels.
    as_floats = clone(oracle).fit(activations, y.astype(float))
    assert as_floats.group_order_.dtype == np.int64
    np.testing.assert_array_equal(as_floats.components_, oracle.components_)


def test_save_and_load_keep_the_group_order(tmp_path):
    rng = np.random.default_rng(6)
    spans = np.split(haar_orthonormal(rng, 8, 6)[0], 3, axis=1)
    activations, y = grouped_activations(rng, spans, [30, 10, 20], noise=0.01)
    oracle = OracleSubspaces(3, 2).fit(activations, y)
    save(oracle, tmp_path / "oracle", metadata={"layer": "features.13"})
    loaded = load(tmp_path / "oracle")
    assert type(loaded) is OracleSubspaces and loaded.get_params() == oracle.get_params()
    np.testing.assert_array_equal(loaded.group_order_, oracle.group_order_)
    np.testing.assert_array_equal(loaded.components_, oracle.components_)
    np.testing.assert_array_equal(loaded.transform(activations), oracle.transform(activations))
    assert loaded.metadata_ == {"layer": "features.13"}


def test_a_saved_group_order_that_repeats_a_label_is_refused(tmp_path):
    rng = np.random.default_rng(7)
    spans = np.split(haar_orthonormal(rng, 4, 4)[0], 2, axis=1)
    activations, y = grouped_activations(rng, spans, [0, 1])
    arrays_path, header_path = save(OracleSubspaces(2, 2).fit(activations, y), tmp_path / "o")
    with np.load(arrays_path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["group_order"] = np.array([1, 1])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    arrays_path.write_bytes(buffer.getvalue())
    header = json.loads(header_path.read_text())
    header["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    header_path.write_text(json.dumps(header))
    with pytest.raises(ValueError, match="group_order repeats a label"):
        load(tmp_path / "o")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "requires y to be passed, but the target y is None"),
        (np.zeros(5, dtype=int), r"y has shape \(5,\) but X has 40 rows"),
        (np.zeros((40, 1), dtype=int), r"shape \(40, 1\)"),
        (np.r_[np.zeros(20), np.full(20, 0.5)], "integer group labels, got dtype float64"),
        (np.r_[np.zeros(39), np.nan], "integer group labels, got dtype float64"),
        (np.repeat([False, True], 20), "integer group labels, got dtype bool"),
        (np.array(["a", "b"] * 20), "integer group labels"),
        (np.arange(40) % 3, r"3 distinct label\(s\) \(0, 1, 2\) but n_subspaces=2"),
        (np.r_[np.zeros(39, dtype=int), 1], "group 1 has 1 row"),
    ],
)
def test_bad_labels_are_refused_with_what_to_do(labels, message):
    activations = np.random.default_rng(8).standard_normal((40, 6))
    with pytest.raises(ValueError, match=message):
        OracleSubspaces(2, 2).fit(activations, labels)


def test_groups_sharing_a_direction_are_refused():
    rng = np.random.default_rng(9)
    shared = rng.standard_normal((30, 5))
    activations = np.vstack([shared, 2 * shared])  # the same span under two labels
    y = np.repeat([0, 1], 30)
    with pytest.raises(ValueError, match="share a direction"):
        OracleSubspaces(2, 2).fit(activations, y)


def test_a_group_spanning_fewer_dimensions_than_asked_warns_at_the_caller():
    rng = np.random.default_rng(10)
    spans = np.split(haar_orthonormal(rng, 8, 4)[0], [1], axis=1)  # 1-D and 3-D
    activations, y = grouped_activations(rng, spans, [0, 1], noise=0.0)
    with pytest.warns(UserWarning, match="group 0 span 1 dimension") as caught:
        OracleSubspaces(2, 3).fit(activations, y)
    assert caught[0].filename == __file__


def test_a_failed_fit_leaves_the_previous_fit():
    rng = np.random.default_rng(11)
    spans = np.split(haar_orthonormal(rng, 6, 4)[0], 2, axis=1)
    activations, y = grouped_activations(rng, spans, [4, 5])
    oracle = OracleSubspaces(2, 2).fit(activations, y)
    before = {key: np.copy(value) for key, value in vars(oracle).items() if key.endswith("_")}
    for bad in (y[:-1], np.where(y == 4, 6, y) + (y == 5)):  # wrong length; three groups
        with pytest.raises(ValueError):
            oracle.fit(activations[:, :5], bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError):
            oracle.fit(np.full_like(activations, np.nan), y)
    after = {key: value for key, value in vars(oracle).items() if key.endswith("_")}
    assert after.keys() == before.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    assert not hasattr(oracle, "_labels")


def test_a_distributed_fit_needs_a_process_group():
    rng = np.random.default_rng(5)
    spans = np.split(haar_orthonormal(rng, 6, 4)[0], 2, axis=1)
    activations, y = grouped_activations(rng, spans, [0, 1])
    with pytest.raises(RuntimeError, match="init_process_group"):
        OracleSubspaces(2, 2, distributed=True).fit(activations, y)
