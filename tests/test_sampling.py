"""Latent sampling: fitted moments, nearest-item search vs brute force, edge cases."""

import numpy as np
import pytest
from latentmap.pipeline.sampling import (
    SamplingError,
    fit_distribution,
    interpolate,
    nearest_items,
    random_baseline,
    summarize_hits,
    unit_rows,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    return (rng.normal(size=(4000, 8)) @ A + 3.0).astype(np.float32)


@pytest.mark.parametrize("kind", ["full", "diag", "gmm"])
def test_samples_have_the_fitted_moments(data, kind):
    dist = fit_distribution(data, kind, components=3)
    s = dist.sample(20000, seed=1)
    np.testing.assert_allclose(s.mean(0), data.mean(0), atol=0.15 * data.std(0).max())
    if kind == "diag":
        np.testing.assert_allclose(s.var(0), data.var(0), rtol=0.1)
    else:
        np.testing.assert_allclose(
            np.cov(s.T), np.cov(data.T), atol=0.1 * np.abs(np.cov(data.T)).max()
        )


def test_same_seed_same_samples(data):
    d = fit_distribution(data, "full")
    np.testing.assert_array_equal(d.sample(5, 7), d.sample(5, 7))
    assert not np.array_equal(d.sample(5, 7), d.sample(5, 8))


def test_fewer_items_than_dimensions_and_one_item():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 50)).astype(np.float32)  # N < D: Ledoit-Wolf keeps it well-posed
    d = fit_distribution(X, "full")
    assert 0 < d.shrinkage <= 1
    assert np.isfinite(d.sample(10, 0)).all()
    one = fit_distribution(X[:1], "full")
    np.testing.assert_allclose(one.sample(3, 0), np.repeat(X[:1], 3, 0), atol=1e-5)
    with pytest.raises(SamplingError, match="finite"):
        fit_distribution(np.full((3, 2), np.nan), "full")
    with pytest.raises(SamplingError, match="unknown"):
        fit_distribution(X, "cauchy")


def test_nearest_items_equal_brute_force(data):
    rows = np.arange(100, 100 + len(data))
    Xu = unit_rows(data)
    q = fit_distribution(data, "full").sample(20, 3)
    got_rows, got_sims = nearest_items(Xu, rows, q, k=5)
    sims = unit_rows(q) @ Xu.T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got_rows, rows[want])
    np.testing.assert_allclose(got_sims, np.take_along_axis(sims, want, 1), rtol=1e-5)
    with pytest.raises(SamplingError, match="NaN"):
        nearest_items(Xu, rows, np.full((1, 8), np.nan), k=1)


def test_summary_and_baseline():
    s = summarize_hits(
        np.array([3, 3, 3, 5]),
        np.array([0.9, 0.8, 0.7, 0.6]),
        np.array(["a"] * 4 + ["b"] * 4),
        n_total=8,
    )
    assert s["distinct"] == 2 and s["hubs"] == [(3, 3)]
    assert (
        s["labels"]["a"]["hits"] == 3
        and s["labels"]["b"]["hits"] == 1
        and s["labels"]["b"]["data_share"] == 0.5
    )
    b = random_baseline(np.arange(10), 20, seed=0)  # N larger than the dataset
    assert len(b) == 20 and set(b) <= set(range(10))
    assert len(set(random_baseline(np.arange(10), 5, seed=0))) == 5


def test_interpolation():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    lin = interpolate(a, b, 5, "linear")
    np.testing.assert_allclose(lin[[0, -1]], [a, b])
    sl = interpolate(a, b, 5, "slerp")
    np.testing.assert_allclose(sl[[0, -1]], [a, b], atol=1e-6)
    assert np.all(np.linalg.norm(sl, axis=1) >= 0.99)  # no dip through the origin
    with pytest.raises(SamplingError):
        interpolate(a, b, 1)
