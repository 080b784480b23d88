"""Saving and loading fitted estimators as .npz + .json, without pickle."""

import hashlib
import io
import json
import os
import stat

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from test_drsa_solvers import one_torch_thread  # noqa: F401 (autouse fixture, applies here)

from zennit_drsa.estimators import DRSA, DSA, PRCA, PCASubspaces, RandomSubspaces, load, save
from zennit_drsa.estimators.persistence import FORMAT_VERSION


def _layer(rng, n=120, d=6):
    activations = rng.standard_normal((n, d))
    return activations, activations + 0.5 * rng.standard_normal((n, d))


def _fitted(rng, cls=DRSA):
    activations, context = _layer(rng)
    params = {"n_subspaces": 2, "subspace_dim": (2, 1)}
    if cls in (DRSA, DSA):
        params.update(max_iter=300, tol=1e-4, n_restarts=2, random_state=3, q=0.25)
    return cls(**params).fit(activations, context=context), activations, context


@pytest.mark.parametrize("cls", [DRSA, DSA, PRCA, PCASubspaces, RandomSubspaces])
def test_roundtrip_restores_a_working_estimator(tmp_path, rng, cls):
    estimator, activations, context = _fitted(rng, cls)
    arrays, header = save(estimator, tmp_path / "layer4", metadata={"layer": "features.14"})
    assert (arrays.name, header.name) == ("layer4.npz", "layer4.json")
    loaded = load(tmp_path / "layer4")
    assert type(loaded) is cls
    assert loaded.get_params() == estimator.get_params()
    for name in ("components_", "subspace_sizes_", "subspace_relevance_", "objective_trace_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(estimator, name))
    for name in ("objective_", "n_iter_", "scale_activations_", "scale_context_"):
        assert getattr(loaded, name) == getattr(estimator, name)
    assert loaded.n_features_in_ == 6
    assert loaded.metadata_ == {"layer": "features.14"}
    np.testing.assert_array_equal(loaded.transform(activations), estimator.transform(activations))
    np.testing.assert_array_equal(
        loaded.relevance(activations, context), estimator.relevance(activations, context)
    )
    assert loaded.score(activations, context=context) == estimator.score(
        activations, context=context
    )


def test_json_describes_the_subspaces(tmp_path, rng):
    estimator, _, _ = _fitted(rng)
    _, header_path = save(estimator, tmp_path / "drsa.json")  # a suffix is dropped
    header = json.loads(header_path.read_text())
    assert header["format_version"] == FORMAT_VERSION and header["class"] == "DRSA"
    assert header["subspace_sizes"] == estimator.subspace_sizes_.tolist()
    assert header["n_subspaces"] == 2 and header["n_features_in"] == 6
    assert header["pooling_orders"] == {"p": 2.0, "q": 0.25}
    assert header["params"]["subspace_dim"] == [2, 1] and header["params"]["q"] == 0.25
    assert header["scale_context"] == estimator.scale_context_
    assert header["objective_trace_length"] == len(estimator.objective_trace_)
    assert "library_version" in header and header["params_not_saved"] == []
    assert sorted(os.listdir(tmp_path)) == ["drsa.json", "drsa.npz"]


def test_unsaveable_parameters_are_listed_and_reset(tmp_path, rng):
    estimator, _, _ = _fitted(rng, RandomSubspaces)
    estimator.set_params(random_state=np.random.RandomState(0))
    save(estimator, tmp_path / "random")
    header = json.loads((tmp_path / "random.json").read_text())
    assert header["params_not_saved"] == ["random_state"]
    assert load(tmp_path / "random").random_state is None


def test_unfitted_and_unknown_estimators_are_refused(tmp_path):
    with pytest.raises(NotFittedError):
        save(DRSA(), tmp_path / "x")

    class Custom(PRCA):
        pass

    with pytest.raises(TypeError, match="cannot save a Custom"):
        save(Custom(), tmp_path / "x")
    assert os.listdir(tmp_path) == []


def test_bad_metadata_writes_nothing(tmp_path, rng):
    estimator, _, _ = _fitted(rng)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save(estimator, tmp_path / "x", metadata={"model": object()})
    assert os.listdir(tmp_path) == []


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path, rng):
    first, _, _ = _fitted(rng)
    save(first, tmp_path / "x")
    second, _, _ = _fitted(rng, PRCA)
    save(second, tmp_path / "x")
    assert sorted(os.listdir(tmp_path)) == ["x.json", "x.npz"]
    assert type(load(tmp_path / "x")) is PRCA


def test_saved_files_get_the_umask_permissions_like_every_other_output(tmp_path, rng):
    estimator, _, _ = _fitted(rng)
    previous = os.umask(0o022)
    try:
        written = save(estimator, tmp_path / "x")
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(path.stat().st_mode) for path in written] == [0o644, 0o644]


def _rewrite(tmp_path, arrays=None, header=None):
    """Replace the saved arrays and/or header entries, keeping the checksum consistent."""
    header_path, arrays_path = tmp_path / "x.json", tmp_path / "x.npz"
    stored = json.loads(header_path.read_text())
    if arrays is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        arrays_path.write_bytes(buffer.getvalue())
        stored["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    stored.update(header or {})
    header_path.write_text(json.dumps(stored))


def _saved_arrays(tmp_path):
    with np.load(tmp_path / "x.npz") as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture
def saved(tmp_path, rng):
    estimator, _, _ = _fitted(rng)
    save(estimator, tmp_path / "x")
    return tmp_path


def test_load_rejects_a_mismatched_pair(saved):
    (saved / "x.npz").write_bytes((saved / "x.npz").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="checksum differs"):
        load(saved / "x")


def test_load_rejects_non_orthonormal_components(saved):
    arrays = _saved_arrays(saved)
    arrays["components"] = arrays["components"] * 1.01
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="not orthonormal"):
        load(saved / "x")


def test_load_rejects_non_finite_values(saved):
    arrays = _saved_arrays(saved)
    arrays["subspace_relevance"][0] = np.nan
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="NaN or Inf"):
        load(saved / "x")


def test_load_rejects_wrong_shapes(saved):
    arrays = _saved_arrays(saved)
    arrays["components"] = arrays["components"][:2]
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="components has shape"):
        load(saved / "x")


def test_load_never_unpickles(saved):
    arrays = _saved_arrays(saved)
    arrays["components"] = np.array([{"not": "numbers"}], dtype=object)
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        load(saved / "x")


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"format_version": FORMAT_VERSION + 1}, "upgrade zennit-drsa"),
        ({"class": "Pickled"}, "holds a 'Pickled'"),
        ({"format": "other"}, "not a zennit-drsa subspace file"),
        ({"subspace_sizes": [3, 0]}, "subspace sizes differ"),
        ({"scale_context": None}, "finite numbers"),
        ({"params": {"n_subspaces": 2, "learning_rate": 0.1}}, "parameters do not fit"),
    ],
)
def test_load_rejects_bad_headers(saved, entries, message):
    _rewrite(saved, header=entries)
    with pytest.raises(ValueError, match=message):
        load(saved / "x")


def test_load_reports_missing_and_corrupt_files(saved):
    (saved / "x.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"x\.npz does not exist"):
        load(saved / "x")
    (saved / "y.json").write_text("{not json")
    (saved / "y.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(saved / "y")
