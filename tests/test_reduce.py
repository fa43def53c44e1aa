"""2-D reductions on real small data: parameters, edge cases, quality, determinism, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.neighbors import cosine_knn, knn_key
from latentmap.pipeline.reduce import (
    METHODS,
    ReduceError,
    cached_projection,
    default_params,
    normalize_params,
    projection,
    projection_key,
    reduce,
)
from latentmap.pipeline.store import Store, StoreError
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness


@pytest.fixture(scope="module")
def digits500() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return d.data[:500].astype(np.float32), d.target[:500]


def blobs(n: int, d: int = 16, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


# --------------------------------------------------------------------------- parameters


def test_defaults():
    assert METHODS == ("pca", "tsne", "umap")
    assert default_params("pca") == {}
    assert default_params("tsne") == {"perplexity": 30.0}
    assert default_params("umap") == {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"}


def test_normalize_params_fills_defaults_and_accepts_strings():
    assert normalize_params("tsne", None, 1000) == ({"perplexity": 30.0}, [])
    p, notes = normalize_params("tsne", {"perplexity": "12.5"}, 1000)
    assert p == {"perplexity": 12.5} and notes == []
    p, notes = normalize_params(
        "umap", {"n_neighbors": "30", "min_dist": "0", "metric": "Euclidean"}, 1000
    )
    assert p == {"n_neighbors": 30, "min_dist": 0.0, "metric": "euclidean"}
    assert isinstance(p["n_neighbors"], int)
    assert normalize_params("umap", {"n_neighbors": 8.0}, 100)[0]["n_neighbors"] == 8
    assert normalize_params("pca", {}, 3) == ({}, [])


def test_normalize_params_clamps_for_small_n():
    p, notes = normalize_params("tsne", {}, 12)
    assert p["perplexity"] == 3.0
    assert notes == ["perplexity 30 reduced to 3 for 12 points"]
    assert p["perplexity"] < (12 - 1) / 3
    for n in range(5, 200):
        q = normalize_params("tsne", {}, n)[0]["perplexity"]
        assert 0 < q < (n - 1) / 3
    p, notes = normalize_params("umap", {"n_neighbors": 15}, 5)
    assert p["n_neighbors"] == 4
    assert notes == ["n_neighbors 15 reduced to 4 for 5 points"]


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("spectral", {}, "spectral"),
        ("tsne", {"perplexty": 5}, "perplexty"),
        ("pca", {"n_components": 3}, "n_components"),
        ("tsne", {"perplexity": "abc"}, "abc"),
        ("tsne", {"perplexity": 0}, "perplexity must be > 0, got 0"),
        ("tsne", {"perplexity": -3}, "-3"),
        ("tsne", {"perplexity": "nan"}, "finite"),
        ("tsne", {"perplexity": True}, "True"),
        ("umap", {"n_neighbors": 1}, "n_neighbors must be at least 2, got 1"),
        ("umap", {"n_neighbors": "2.5"}, "2.5"),
        ("umap", {"min_dist": 1.5}, "1.5"),
        ("umap", {"min_dist": -0.1}, "-0.1"),
        ("umap", {"metric": "manhattan"}, "manhattan"),
    ],
)
def test_normalize_params_rejects(method, params, match):
    with pytest.raises(ReduceError, match=match):
        normalize_params(method, params, 100)


# --------------------------------------------------------------------------- PCA and edge cases


def test_pca_on_digits(digits500):
    X, _ = digits500
    Y, info = reduce(X, "pca")
    assert Y.shape == (500, 2) and Y.dtype == np.float32
    assert info["params"] == {} and info["notices"] == [] and info["seconds"] >= 0
    assert trustworthiness(X, Y, n_neighbors=10) > 0.75
    Y2, _ = reduce(X, "pca")
    np.testing.assert_array_equal(Y, Y2)
    # first coordinate has the most variance
    assert Y[:, 0].var() >= Y[:, 1].var()


def test_pca_randomized_path_on_wide_data():
    X = blobs(800, d=100)
    Y, _ = reduce(X, "pca", seed=3)
    np.testing.assert_array_equal(Y, reduce(X, "pca", seed=3)[0])
    assert trustworthiness(X, Y, n_neighbors=10) > 0.85


@pytest.mark.parametrize("method", METHODS)
def test_tiny_inputs(method):
    Y, _ = reduce(np.ones((1, 8), np.float32), method)
    np.testing.assert_array_equal(Y, [[0, 0]])
    assert reduce(np.zeros((0, 8), np.float32), method)[0].shape == (0, 2)
    Y, info = reduce(blobs(2), method)
    assert Y.shape == (2, 2) and np.isfinite(Y).all()
    Y, info = reduce(blobs(3), method)
    assert Y.shape == (3, 2) and np.isfinite(Y).all()
    if method != "pca":
        assert any("showing PCA" in n for n in info["notices"])


def test_pca_one_dimension_and_identical_rows():
    X = np.arange(6, dtype=np.float32)[:, None]
    Y, _ = reduce(X, "pca")
    assert (Y[:, 1] == 0).all() and np.ptp(Y[:, 0]) > 0
    np.testing.assert_array_equal(reduce(np.full((20, 4), 3.0, np.float32), "pca")[0], 0)


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_identical_or_constant_rows_fall_back_to_pca(method):
    for X in (np.full((40, 8), 2.0, np.float32), np.zeros((40, 8), np.float32)):
        Y, info = reduce(X, method)
        assert Y.shape == (40, 2) and np.isfinite(Y).all()
        assert any("same latent" in n and "showing PCA" in n for n in info["notices"])


def test_reduce_rejects_bad_input():
    with pytest.raises(ReduceError, match="NaN"):
        reduce(np.array([[1, np.nan], [1, 2]], np.float32), "pca")
    with pytest.raises(ReduceError, match="shape"):
        reduce(np.ones(5, np.float32), "pca")
    with pytest.raises(ReduceError, match="method"):
        reduce(np.ones((5, 2), np.float32), "lda")
    with pytest.raises(ReduceError, match="seed"):
        reduce(np.ones((5, 2), np.float32), "pca", seed="x")


# --------------------------------------------------------------------------- t-SNE


@pytest.mark.slow
def test_tsne_digits_quality_determinism_progress(digits500):
    X, _ = digits500
    calls: list[tuple[float, str]] = []
    Y, info = reduce(X, "tsne", seed=7, progress=lambda f, m: calls.append((f, m)))
    assert Y.shape == (500, 2) and Y.dtype == np.float32
    assert info["params"] == {"perplexity": 30.0} and info["notices"] == []
    assert trustworthiness(X, Y, n_neighbors=10) > 0.9
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("iteration" in m for _, m in calls) and len(calls) > 20
    Y2, _ = reduce(X, "tsne", seed=7)
    np.testing.assert_array_equal(Y, Y2)
    Y3, _ = reduce(X, "tsne", seed=8)
    assert not np.array_equal(Y, Y3)


@pytest.mark.slow
def test_tsne_small_n_and_zero_rows():
    Y, info = reduce(blobs(12), "tsne")
    assert Y.shape == (12, 2) and np.isfinite(Y).all()
    assert info["notices"] == ["perplexity 30 reduced to 3 for 12 points"]
    X = blobs(60)
    X[:5] = 0  # dead units: zero vectors must not become NaN under the cosine geometry
    Y, _ = reduce(X, "tsne")
    assert np.isfinite(Y).all()


# --------------------------------------------------------------------------- UMAP


@pytest.fixture(scope="module")
def umap_digits(digits500):
    """One UMAP fit of 500 digits (pays the numba JIT once for the module)."""
    X, _ = digits500
    return reduce(X, "umap", seed=0)


@pytest.mark.slow
def test_umap_digits_quality_and_determinism(digits500, umap_digits):
    X, _ = digits500
    Y, info = umap_digits
    assert Y.shape == (500, 2) and Y.dtype == np.float32 and np.isfinite(Y).all()
    assert info["params"] == default_params("umap")
    assert trustworthiness(X, Y, n_neighbors=10) > 0.9
    Y2, _ = reduce(X, "umap", seed=0)
    np.testing.assert_array_equal(Y, Y2)


@pytest.mark.slow
def test_umap_reuses_precomputed_cosine_knn(digits500, umap_digits):
    X, _ = digits500
    knn = cosine_knn(X, 15)
    Y, info = reduce(X, "umap", seed=0, knn=knn)
    assert np.isfinite(Y).all()
    assert trustworthiness(X, Y, n_neighbors=10) > 0.9
    # exact kNN instead of NN-descent: same map up to approximation in the graph
    Y0, _ = umap_digits
    assert (
        abs(trustworthiness(X, Y, n_neighbors=10) - trustworthiness(X, Y0, n_neighbors=10)) < 0.02
    )
    # a graph with too few neighbours is ignored (UMAP searches its own)
    Ys, _ = reduce(X[:100], "umap", {"n_neighbors": 10}, knn=cosine_knn(X[:100], 3))
    assert np.isfinite(Ys).all()


@pytest.mark.slow
def test_umap_reports_its_epochs_and_a_raising_report_stops_it(digits500, umap_digits, tmp_path):
    X, _ = digits500
    seen: list[tuple[float, str]] = []
    reduce(X, "umap", {"min_dist": 0.3}, seed=0, progress=lambda f, m: seen.append((f, m)))
    epochs = [(f, m) for f, m in seen if "epoch" in m]
    assert epochs and epochs[-1][1] == "UMAP: epoch 500/500"
    fracs = [f for f, _ in epochs]
    assert fracs == sorted(fracs) and fracs[0] >= 0.15 and fracs[-1] <= 0.99

    class Cancelled(BaseException):  # like localworker.CallerGone: no except Exception stops it
        pass

    def cancel(_f: float, m: str) -> None:
        if "epoch" in m:
            raise Cancelled

    store = Store(tmp_path / "cache")
    ds = write_dataset(store, name="d", vectors={"z": X}, metadata=pd.DataFrame({"i": range(500)}))
    with pytest.raises(Cancelled):
        projection(store, ds, "z", "umap", {"min_dist": 0.4}, progress=cancel)
    assert cached_projection(store, ds, "z", "umap", {"min_dist": 0.4}) is None  # nothing kept


@pytest.mark.slow
def test_umap_small_n_clamps(umap_digits):
    Y, info = reduce(blobs(5), "umap")
    assert Y.shape == (5, 2) and np.isfinite(Y).all()
    assert info["notices"] == ["n_neighbors 15 reduced to 4 for 5 points"]


# --------------------------------------------------------------------------- store-backed


@pytest.fixture
def digits_ds(tmp_path: Path, digits500) -> tuple[Store, str, np.ndarray]:
    X, y = digits500
    X = X[:300].copy()
    X[[4, 40]] = np.nan
    X[41, 2] = np.inf
    store = Store(tmp_path / "cache")
    ds = write_dataset(
        store,
        name="digits",
        vectors={"fc": X, "dead": np.zeros((300, 8), np.float32)},
        metadata=pd.DataFrame({"label": y[:300]}),
    )
    return store, ds, X


def test_projection_pca_nan_rows_and_cache_hit(digits_ds):
    store, ds, X = digits_ds
    assert cached_projection(store, ds, "fc", "pca") is None
    e = projection(store, ds, "fc", "pca")
    c = e["coords"]
    assert c.shape == (300, 2) and c.dtype == np.float32
    assert np.isnan(c[[4, 40, 41]]).all()
    assert np.isfinite(np.delete(c, [4, 40, 41], axis=0)).all()
    assert e.info["method"] == "pca" and e.info["params"] == {}
    assert "3 items with NaN/Inf latents were left out" in e.info["notices"]
    # identical to reducing the valid rows directly
    good = np.delete(X, [4, 40, 41], axis=0)
    np.testing.assert_array_equal(np.delete(c, [4, 40, 41], axis=0), reduce(good, "pca")[0])
    # stored under the key; second call is a hit
    key = projection_key(ds, "fc", "pca", {}, 0)
    assert key["kind"] == "projection" and isinstance(key["version"], int)
    assert store.lookup(key) is not None
    hit = cached_projection(store, ds, "fc", "pca")
    np.testing.assert_array_equal(hit["coords"], c)
    np.testing.assert_array_equal(projection(store, ds, "fc", "pca")["coords"], c)
    assert cached_projection(store, ds, "fc", "pca", seed=1) is None


def test_projection_constant_layer_and_errors(digits_ds):
    store, ds, _ = digits_ds
    e = projection(store, ds, "dead", "pca")
    np.testing.assert_array_equal(e["coords"], 0)
    with pytest.raises(StoreError):
        projection(store, ds, "nope", "pca")
    with pytest.raises(ReduceError, match="perplexity"):
        projection(store, ds, "fc", "tsne", {"perplexity": -1})
    with pytest.raises(ReduceError, match="umap2"):
        cached_projection(store, ds, "fc", "umap2")


def test_projection_all_invalid_layer(tmp_path: Path):
    store = Store(tmp_path / "c")
    X = np.full((5, 3), np.nan, np.float32)
    ds = write_dataset(store, name="bad", vectors={"l": X}, metadata=pd.DataFrame({"a": range(5)}))
    with pytest.raises(ReduceError, match="NaN/Inf"):
        projection(store, ds, "l", "pca")


@pytest.mark.slow
def test_projection_tsne_params_from_strings_share_the_entry(digits_ds):
    store, ds, _ = digits_ds
    e = projection(store, ds, "fc", "tsne", {"perplexity": 20})
    assert e.info["params"] == {"perplexity": 20.0}
    hit = cached_projection(store, ds, "fc", "tsne", {"perplexity": "20"})
    assert hit is not None
    np.testing.assert_array_equal(hit["coords"], e["coords"])


@pytest.mark.slow
def test_projection_umap_builds_and_reuses_knn_graph(digits_ds, umap_digits):
    store, ds, _ = digits_ds
    calls: list[float] = []
    e = projection(
        store, ds, "fc", "umap", {"n_neighbors": "10"}, progress=lambda f, m: calls.append(f)
    )
    assert e.info["params"]["n_neighbors"] == 10
    g = store.lookup(knn_key(ds, "fc", 10))
    assert g is not None and g.info["k"] == 10
    c = e["coords"]
    assert np.isnan(c[[4, 40, 41]]).all() and np.isfinite(np.delete(c, [4, 40, 41], axis=0)).all()
    assert calls == sorted(calls) and calls[-1] == 1.0
    assert cached_projection(store, ds, "fc", "umap", {"n_neighbors": 10}) is not None
