"""Exact cosine kNN: in-memory functions against brute force, and the store-backed versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.neighbors import (
    NeighborsError,
    cosine_knn,
    knn_graph,
    knn_key,
    nearest,
    nearest_to_vectors,
    normalize_rows,
    norms_key,
    row_norms,
)
from latentmap.pipeline.store import Store, StoreError
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data.astype(np.float32)


def brute_sims(X: np.ndarray, Q: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities in float64 (zero rows -> 0)."""
    X = np.asarray(X, dtype=np.float64)
    Q = X if Q is None else np.asarray(Q, dtype=np.float64)
    nx = np.linalg.norm(X, axis=1)
    nq = np.linalg.norm(Q, axis=1)
    S = Q @ X.T
    with np.errstate(invalid="ignore", divide="ignore"):
        S = S / nq[:, None] / nx[None, :]
    return np.nan_to_num(S, nan=0.0, posinf=0.0, neginf=0.0)


def assert_matches_brute(idx: np.ndarray, sims: np.ndarray, S: np.ndarray, k: int) -> None:
    """idx/sims are a correct top-k of S: sims equal S at idx, sorted, nothing better left out."""
    assert idx.shape == sims.shape == (len(S), k)
    np.testing.assert_allclose(sims, np.take_along_axis(S, idx, axis=1), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    kth = np.sort(S, axis=1)[:, ::-1][:, k - 1]
    np.testing.assert_allclose(sims[:, -1], kth, atol=1e-5)


# --------------------------------------------------------------------------- normalize_rows


def test_normalize_rows_units_and_zero_rows():
    X = np.array([[3, 4], [0, 0], [-1, 0]], dtype=np.float64)
    U = normalize_rows(X)
    assert U.dtype == np.float32
    np.testing.assert_allclose(U, [[0.6, 0.8], [0, 0], [-1, 0]], atol=1e-7)
    assert np.isfinite(U).all()
    assert X[0, 0] == 3  # input untouched


# --------------------------------------------------------------------------- cosine_knn


def test_cosine_knn_equals_brute_force_on_digits(digits):
    idx, sims = cosine_knn(digits, 10, block=256)
    assert idx.dtype == np.int64 and sims.dtype == np.float32
    S = brute_sims(digits)
    np.fill_diagonal(S, -np.inf)
    assert_matches_brute(idx, sims, S, 10)
    assert not (idx == np.arange(len(digits))[:, None]).any()  # self excluded
    # same neighbour sets as scikit-learn's exact cosine search (self is its first hit)
    nn = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(digits)
    _, ref = nn.kneighbors(digits)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref, strict=True)])
    assert agree > 0.99  # digits has exact duplicate rows, tie order may differ


def test_cosine_knn_independent_of_block_size(digits):
    a = cosine_knn(digits[:500], 7, block=500)
    b = cosine_knn(digits[:500], 7, block=33)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_cosine_knn_ties_lower_index_first():
    X = np.array([[1, 0], [2, 0], [3, 0], [1, 0], [0, 1], [0, 5]], dtype=np.float32)
    idx, sims = cosine_knn(X, 3)
    assert idx[0].tolist() == [1, 2, 3]
    assert idx[3].tolist() == [0, 1, 2]
    assert idx[4].tolist() == [5, 0, 1]
    np.testing.assert_allclose(sims[4], [1, 0, 0], atol=1e-7)


def test_cosine_knn_clamps_k_and_handles_tiny_inputs():
    idx, sims = cosine_knn(np.ones((1, 4), np.float32), 5)
    assert idx.shape == (1, 0) and sims.shape == (1, 0)
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    idx, sims = cosine_knn(X, 10)
    assert idx.shape == (3, 2)
    for i in range(3):
        assert sorted(idx[i].tolist()) == sorted(set(range(3)) - {i})
    assert cosine_knn(np.zeros((0, 4), np.float32), 3)[0].shape == (0, 0)


def test_cosine_knn_zero_rows_have_zero_similarity():
    X = np.array([[0, 0], [1, 0], [1, 1]], dtype=np.float32)
    idx, sims = cosine_knn(X, 2)
    assert np.isfinite(sims).all()
    np.testing.assert_allclose(sims[0], [0, 0])


def test_cosine_knn_rejects_bad_input():
    with pytest.raises(NeighborsError, match="NaN"):
        cosine_knn(np.array([[1, np.nan], [1, 0]], np.float32), 1)
    with pytest.raises(NeighborsError, match="k must be"):
        cosine_knn(np.ones((3, 2), np.float32), -1)
    with pytest.raises(NeighborsError, match="2-D"):
        cosine_knn(np.ones(3, np.float32), 1)


def test_cosine_knn_reports_progress(digits):
    calls = []
    cosine_knn(digits, 5, block=400, progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) == 5


# --------------------------------------------------------------------------- nearest_to_vectors


def test_nearest_to_vectors_on_memmap_with_valid_and_exclude(digits, tmp_path: Path):
    path = tmp_path / "x.npy"
    np.save(path, digits)
    X = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(1)
    valid = rng.random(len(X)) > 0.2
    Q = digits[[3, 100, 900]] + rng.normal(0, 1, (3, 64)).astype(np.float32)
    exclude = [5, 6, 7, int(np.flatnonzero(valid)[0])]
    norms = np.linalg.norm(digits, axis=1).astype(np.float32)
    idx, sims = nearest_to_vectors(X, Q, 8, valid=valid, exclude=exclude, norms=norms)
    S = brute_sims(digits, Q)
    S[:, ~valid] = -np.inf
    S[:, exclude] = -np.inf
    assert_matches_brute(idx, sims, S, 8)
    assert valid[idx].all() and not np.isin(idx, exclude).any()
    # norms computed internally give the same answer; X was not modified
    idx2, _ = nearest_to_vectors(X, Q, 8, valid=valid, exclude=exclude)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(np.asarray(X), digits)


def test_nearest_to_vectors_single_query_clamp_and_zero_query():
    X = np.array([[1, 0], [0, 1], [1, 1], [np.nan, 1], [0, 0]], dtype=np.float32)
    idx, sims = nearest_to_vectors(X, np.array([1, 0.1]), 10, exclude=[0])
    assert idx.shape == (1, 3)  # NaN row and excluded row are not eligible
    assert idx[0].tolist() == [2, 1, 4]
    idx, sims = nearest_to_vectors(X, np.zeros(2), 2)
    np.testing.assert_array_equal(sims, [[0, 0]])
    assert idx[0].tolist() == [0, 1]


def test_nearest_to_vectors_rejects_bad_input():
    X = np.ones((4, 3), np.float32)
    with pytest.raises(NeighborsError, match="3 columns"):
        nearest_to_vectors(X, np.ones(2), 1)
    with pytest.raises(NeighborsError, match="k must be"):
        nearest_to_vectors(X, np.ones(3), 0)
    with pytest.raises(NeighborsError, match="valid"):
        nearest_to_vectors(X, np.ones(3), 1, valid=np.ones(3, bool))


# --------------------------------------------------------------------------- store-backed


@pytest.fixture
def digits_store(tmp_path: Path, digits) -> tuple[Store, str, np.ndarray]:
    """600 digits in a real store; rows 5, 17 and 300 have NaN/Inf latents in layer "fc"."""
    X = digits[:600].copy()
    X[5, 3] = np.nan
    X[17, :] = np.inf
    X[300, 0] = np.nan
    store = Store(tmp_path / "cache")
    meta = pd.DataFrame({"label": load_digits().target[:600]})
    ds = write_dataset(store, name="digits", vectors={"fc": X, "raw": digits[:600]}, metadata=meta)
    return store, ds, X


def test_knn_graph_full_row_indexing_and_invalid_rows(digits_store):
    store, ds, X = digits_store
    assert store.lookup(knn_key(ds, "fc", 10)) is None
    g = knn_graph(store, ds, "fc", k=10)
    assert g.info["k"] == 10
    idx, sims = g["idx"], g["sims"]
    assert idx.shape == (600, 10) and idx.dtype == np.int64 and sims.dtype == np.float32
    bad = [5, 17, 300]
    assert (idx[bad] == -1).all() and np.isnan(sims[bad]).all()
    good = np.setdiff1d(np.arange(600), bad)
    assert not np.isin(idx[good], bad).any()
    S = brute_sims(np.nan_to_num(X, nan=0, posinf=0))
    S[:, bad] = -np.inf
    np.fill_diagonal(S, -np.inf)
    assert_matches_brute(idx[good], sims[good], S[good], 10)
    # second call is a store hit with identical arrays
    assert store.lookup(knn_key(ds, "fc", 10)) is not None
    g2 = knn_graph(store, ds, "fc", k=10)
    np.testing.assert_array_equal(g2["idx"], idx)


def test_knn_graph_clamps_k(tmp_path: Path):
    store = Store(tmp_path / "c")
    X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    ds = write_dataset(store, name="tiny", vectors={"l": X}, metadata=pd.DataFrame({"a": range(4)}))
    g = knn_graph(store, ds, "l", k=15)
    assert g.info["k"] == 3 and g["idx"].shape == (4, 3)
    with pytest.raises(NeighborsError):
        knn_graph(store, ds, "l", k=0)


def test_nearest_matches_brute_force_and_excludes(digits_store):
    store, ds, X = digits_store
    res = nearest(store, ds, "fc", 42, k=12)
    assert len(res) == 12
    rows = [r for r, _ in res]
    assert 42 not in rows and not set(rows) & {5, 17, 300}
    S = brute_sims(np.nan_to_num(X, nan=0, posinf=0), X[42:43])[0]
    S[[5, 17, 300, 42]] = -np.inf
    np.testing.assert_allclose([s for _, s in res], np.sort(S)[::-1][:12], atol=1e-5)
    assert all(isinstance(r, int) and isinstance(s, float) for r, s in res)
    assert store.lookup(norms_key(ds, "fc")) is not None  # norms were cached
    # clamped k: every other valid row
    assert len(nearest(store, ds, "fc", 42, k=10_000)) == 600 - 3 - 1


def test_nearest_errors(digits_store):
    store, ds, _ = digits_store
    with pytest.raises(NeighborsError, match="item 5 has NaN/Inf latents in layer fc"):
        nearest(store, ds, "fc", 5)
    with pytest.raises(NeighborsError, match="out of range"):
        nearest(store, ds, "fc", 600)
    with pytest.raises(NeighborsError, match="out of range"):
        nearest(store, ds, "fc", -1)
    with pytest.raises(NeighborsError, match="k must be"):
        nearest(store, ds, "fc", 1, k=0)
    with pytest.raises(StoreError):
        nearest(store, ds, "nope", 1)
    assert len(nearest(store, ds, "raw", 5, k=3)) == 3  # row 5 is fine in the other layer


def test_row_norms_cached(digits_store):
    store, ds, _ = digits_store
    assert store.lookup(norms_key(ds, "raw")) is None
    n = row_norms(store, ds, "raw")
    np.testing.assert_allclose(n, np.linalg.norm(load_digits().data[:600], axis=1), rtol=1e-6)
    assert store.lookup(norms_key(ds, "raw")) is not None
