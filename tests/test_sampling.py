"""Latent sampling: fitted moments, nearest-item search vs brute force, edge cases, the
store-backed sampling / map placement / interpolation on the real demo."""

import numpy as np
import pytest
from latentmap.pipeline.reduce import projection
from latentmap.pipeline.sampling import (
    MAX_SAMPLES,
    TOPK,
    SamplingError,
    fit_distribution,
    interpolate,
    interpolate_path,
    nearest_items,
    place_on_map,
    random_baseline,
    sample_latents,
    samples_key,
    summarize_hits,
    unit_rows,
)
from latentmap.pipeline.store import Store


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


# --------------------------------------------------------------------------- fitting edge cases


def test_singular_covariance_duplicated_rows_more_dims_than_items():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(5, 40))
    X = np.repeat(base, 4, axis=0).astype(np.float32)  # 20 rows, rank 4, D = 40 > N
    d = fit_distribution(X, "full")
    assert d.n_fit == 20 and 0 < d.shrinkage <= 1
    assert np.all(np.linalg.eigvalsh(d.cov) > 0)  # shrinkage makes it positive definite
    s = d.sample(40000, seed=2)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s.mean(0), X.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(s.T), d.cov, atol=0.05 * np.abs(d.cov).max())
    for kind in ("diag", "gmm"):
        assert np.isfinite(fit_distribution(X, kind, components=3).sample(50, 0)).all()


def test_gmm_components_clamped_to_rows_and_nan_rows_left_out():
    X = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 3.0], [np.nan, 1.0], [np.inf, 0.0]])
    d = fit_distribution(X, "gmm", components=5)
    assert len(d.weights) == 3 and d.n_fit == 3
    assert any("reduced to 3" in n for n in d.notes)
    assert any("2 items with NaN/Inf" in n for n in d.notes)
    assert np.isfinite(d.sample(100, 0)).all()
    full = fit_distribution(X, "full")
    np.testing.assert_allclose(full.mean, X[:3].mean(0))


def test_identical_rows_give_a_point_mass_with_a_note():
    X = np.tile(np.array([[1.0, 2.0, 3.0]]), (6, 1))
    d = fit_distribution(X, "full")
    assert any("same latent" in n for n in d.notes)
    np.testing.assert_allclose(d.sample(4, 0), np.tile(X[:1], (4, 1)), atol=1e-6)


# --------------------------------------------------------------------------- store-backed


def brute_force(X: np.ndarray, valid: np.ndarray, Q: np.ndarray, k: int):
    """Top-k cosine rows by float64 brute force; ties to the lower row."""
    rows = np.flatnonzero(valid)
    A = X[rows].astype(np.float64)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    q = Q.astype(np.float64) / np.linalg.norm(Q, axis=1, keepdims=True)
    S = q @ A.T
    order = np.lexsort((np.broadcast_to(rows, S.shape), -S), axis=1)[:, :k]
    return rows[order], np.take_along_axis(S, order, axis=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """30 items in 6-d, rows 3 and 7 NaN, labels a/b/c: a real import through encode()."""
    from latentmap.pipeline.jobs import EncodeRequest, encode

    tmp = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(30, 6)) + 2.0).astype(np.float32)
    X[[3, 7]] = np.nan
    np.savez(tmp / "e.npz", latents=X, label=np.array(list("abc") * 10))
    store = Store(tmp / "cache")
    ds = encode(store, EncodeRequest(source=str(tmp / "e.npz"))).ds_id
    return store, ds, store.layers(ds)[0], X


def test_sample_latents_on_the_demo(demo):
    store, ds = demo
    e = sample_latents(store, ds, "encoder", n=25, dist="full", seed=4)
    X = np.asarray(store.vectors(ds, "encoder"))
    valid = store.valid_mask(ds, "encoder")
    assert e["latents"].shape == (25, 32) and e["latents"].dtype == np.float32
    assert e["nearest"].shape == (25, TOPK) and e["nearest"].dtype == np.int64
    assert e["sims"].shape == (25, TOPK) and e["sims"].dtype == np.float32
    want_rows, want_sims = brute_force(X, valid, e["latents"], TOPK)
    np.testing.assert_array_equal(e["nearest"], want_rows)
    np.testing.assert_allclose(e["sims"], want_sims, atol=1e-5)
    i = e.info
    assert (i["n"], i["dist"], i["k"], i["seed"], i["region"]) == (25, "full", 3, 4, None)
    assert i["fit_rows"] == int(valid.sum()) and i["topk"] == TOPK
    s = i["summary"]
    assert s["distinct"] == len(np.unique(e["nearest"][:, 0]))
    assert s["mean_similarity"] == pytest.approx(float(e["sims"][:, 0].mean()), abs=1e-6)
    assert sum(v["hits"] for v in s["labels"].values()) == 25
    assert sum(v["data_share"] for v in s["labels"].values()) == pytest.approx(1.0)
    for row, count in s["hubs"]:
        assert count == int((e["nearest"][:, 0] == row).sum()) > 1
    b = i["baseline"]
    assert len(b["rows"]) == 25 == len(set(b["rows"]))  # without replacement
    np.testing.assert_array_equal(e["baseline_rows"], b["rows"])
    assert all(r != o for r, o in zip(b["rows"], b["nearest_other"], strict=True))
    assert 0 < b["mean_similarity"] <= 1
    # cached: the same request is a lookup, the info reads back identically
    again = sample_latents(store.cached_only(), ds, "encoder", n=25, dist="full", seed=4)
    np.testing.assert_array_equal(again["latents"], e["latents"])
    assert again.info == e.info
    key = samples_key(ds, "encoder", n=25, dist="full", k=3, seed=4, region=None)
    assert store.lookup(key) is not None
    other = sample_latents(store, ds, "encoder", n=25, dist="full", seed=5)
    assert not np.array_equal(other["latents"], e["latents"])


def test_demo_samples_have_the_fitted_moments(demo):
    """Large n through the store: the samples' mean / covariance match the Ledoit-Wolf fit."""
    from sklearn.covariance import LedoitWolf

    store, ds = demo
    e = sample_latents(store, ds, "encoder", n=5000, dist="full", seed=0)
    assert e.info["n"] == MAX_SAMPLES == len(e["latents"])
    assert any(f"n 5,000 reduced to {MAX_SAMPLES:,}" in n for n in e.info["notes"])
    X = np.asarray(store.vectors(ds, "encoder"), dtype=np.float64)
    lw = LedoitWolf().fit(X)
    S = e["latents"].astype(np.float64)
    sd = np.sqrt(np.diag(lw.covariance_))
    np.testing.assert_allclose(S.mean(0), X.mean(0), atol=0.15 * sd.max())
    np.testing.assert_allclose(
        np.cov(S.T), lw.covariance_, atol=0.15 * np.abs(lw.covariance_).max()
    )
    assert e.info["shrinkage"] == pytest.approx(lw.shrinkage_, rel=1e-6)


def test_diag_and_gmm_and_region_by_label(demo):
    store, ds = demo
    meta = store.metadata(ds)
    n3 = int((meta["label"].astype(str) == "3").sum())
    e = sample_latents(
        store, ds, "encoder", n=40, dist="gmm", k=4, region={"column": "label", "value": 3}
    )
    assert e.info["region"] == {"column": "label", "value": "3"}
    assert e.info["fit_rows"] == n3 and e.info["components"] == 4
    labels = meta["label"].astype(str).to_numpy()
    assert (labels[e["nearest"][:, 0]] == "3").mean() >= 0.8  # samples stay in the class
    assert e.info["summary"]["labels"]["3"]["hits"] >= 32
    d = sample_latents(store, ds, "features", n=10, dist="diag", seed=1)
    assert d.info["dist"] == "diag" and np.isfinite(d["latents"]).all()
    rows = sample_latents(store, ds, "encoder", n=5, region={"rows": [9, 2, 2, 5, 7]})
    assert rows.info["region"] == {"rows": [2, 5, 7, 9]} and rows.info["fit_rows"] == 4


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"region": {"rows": [4]}},
            "a region needs at least 2 items with finite latents, got 1",
        ),
        (
            {"region": {"column": "file", "value": "digit_0000.png"}},
            "a region needs at least 2 items with finite latents, got 1",
        ),
        ({"region": {"column": "label", "value": "42"}}, "no item has label = '42'"),
        ({"region": {"column": "colour", "value": "red"}}, "no metadata column 'colour'"),
        ({"region": {"rows": [1, 99999]}}, "out of range"),
        ({"region": {"label": 3}}, "a region is"),
        ({"n": 0}, "n must be at least 1, got 0"),
        ({"dist": "cauchy"}, "unknown distribution 'cauchy'"),
        ({"k": 0, "dist": "gmm"}, "at least 1"),
        ({"layer": "nope"}, "has no layer 'nope'"),
    ],
)
def test_bad_requests_say_what_is_wrong(demo, kw, message):
    store, ds = demo
    kw = dict(kw)
    layer = kw.pop("layer", "encoder")
    with pytest.raises(SamplingError) as e:
        sample_latents(store, ds, layer, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_n_larger_than_the_dataset_and_nan_rows(small):
    store, ds, layer, X = small
    valid = store.valid_mask(ds, layer)
    assert valid.sum() == 28
    e = sample_latents(store, ds, layer, n=100, seed=0)
    assert e.info["n"] == 100 and e.info["fit_rows"] == 28
    assert any("at most 28 distinct items can be hit" in n for n in e.info["notes"])
    assert e.info["summary"]["distinct"] <= 28 and e.info["summary"]["max_distinct"] == 28
    assert e["nearest"].shape == (100, 12)
    assert not np.isin(e["nearest"], [3, 7]).any()  # NaN rows are never neighbours
    want, _ = brute_force(np.nan_to_num(X), valid, e["latents"], 12)
    np.testing.assert_array_equal(e["nearest"], want)
    assert len(e.info["baseline"]["rows"]) == 100  # with replacement, valid rows only
    assert set(e.info["baseline"]["rows"]) <= set(np.flatnonzero(valid).tolist())
    # a region that holds a NaN row: it is left out of the fit, with a note
    r = sample_latents(store, ds, layer, n=5, region={"rows": [0, 1, 3, 7]})
    assert r.info["fit_rows"] == 2
    assert any("2 items of the region with NaN/Inf" in n for n in r.info["notes"])
    with pytest.raises(SamplingError, match="got 1"):
        sample_latents(store, ds, layer, n=5, region={"rows": [0, 3, 7]})
    with pytest.raises(SamplingError, match="item 3 has NaN/Inf latents"):
        interpolate_path(store, ds, layer, 0, 3)


def test_place_on_map_pca_is_exact(demo):
    from sklearn.decomposition import PCA

    store, ds = demo
    coords = projection(store, ds, "encoder", "pca")["coords"]
    X = np.asarray(store.vectors(ds, "encoder"), dtype=np.float32)
    rows = np.array([0, 5, 17, 400, 1796])
    got = place_on_map(store, ds, "encoder", "pca", None, X[rows])
    scale = np.abs(coords).max()
    np.testing.assert_allclose(got, coords[rows], atol=1e-5 * scale)
    e = sample_latents(store, ds, "encoder", n=30, seed=2)
    placed = place_on_map(store, ds, "encoder", "pca", None, e["latents"])
    pca = PCA(2, svd_solver="full", random_state=0).fit(X)
    np.testing.assert_allclose(placed, pca.transform(e["latents"]), atol=1e-5 * scale)
    # cached: a cached-only store answers without computing
    again = place_on_map(store.cached_only(), ds, "encoder", "pca", None, e["latents"])
    np.testing.assert_array_equal(again, placed)


def test_pca_placement_recovers_the_map_by_least_squares_when_refit_differs():
    from latentmap.pipeline.sampling import _pca_place
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    pca = PCA(2, svd_solver="full").fit(X)
    flipped = pca.transform(X) * np.array([-1.0, 1.0])  # another sign convention
    Q = rng.normal(size=(7, 6)).astype(np.float32)
    got = _pca_place(X, flipped.astype(np.float32), Q, seed=0)
    np.testing.assert_allclose(got, pca.transform(Q) * np.array([-1.0, 1.0]), atol=1e-4)


def test_place_on_map_tsne(demo):
    store, ds = demo
    coords = projection(store, ds, "encoder", "tsne")["coords"]
    e = sample_latents(store, ds, "encoder", n=12, seed=3)
    xy = place_on_map(store, ds, "encoder", "tsne", None, e["latents"])
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    lo, hi = coords.min(0), coords.max(0)
    assert np.all((xy >= lo) & (xy <= hi))  # weighted means of map points
    with pytest.raises(SamplingError, match="must be"):
        place_on_map(store, ds, "encoder", "tsne", None, np.zeros((2, 5)))
    with pytest.raises(SamplingError, match="unknown projection method"):
        place_on_map(store, ds, "encoder", "mds", None, e["latents"])


def test_place_on_map_umap_puts_items_near_their_own_position(demo):
    store, ds = demo
    coords = projection(store, ds, "encoder", "umap")["coords"]
    X = np.asarray(store.vectors(ds, "encoder"), dtype=np.float32)
    rows = np.arange(0, 1797, 60)
    xy = place_on_map(store, ds, "encoder", "umap", None, X[rows])
    assert np.isfinite(xy).all()
    extent = np.ptp(coords, axis=0).max()
    assert np.median(np.linalg.norm(xy - coords[rows], axis=1)) < 0.05 * extent


def test_interpolate_path(demo):
    store, ds = demo
    X = np.asarray(store.vectors(ds, "encoder"))
    p = interpolate_path(store, ds, "encoder", 0, 5, steps=6, how="slerp")
    assert p["latents"].shape == (6, 32) and len(p["nearest"]) == 6 == len(p["sims"])
    np.testing.assert_allclose(p["latents"][[0, -1]], X[[0, 5]], atol=1e-5)
    assert p["sims"][0] == pytest.approx(1.0, abs=1e-5)
    assert p["sims"][-1] == pytest.approx(1.0, abs=1e-5)
    want, _ = brute_force(X, store.valid_mask(ds, "encoder"), p["latents"], 1)
    np.testing.assert_array_equal(p["nearest"], want[:, 0])
    assert len(p["labels"]) == 6
    lin = interpolate_path(store, ds, "encoder", 0, 5, steps=3, how="linear")
    np.testing.assert_allclose(lin["latents"][1], (X[0] + X[5]) / 2, atol=1e-5)
    with pytest.raises(SamplingError, match="steps must be at least 2"):
        interpolate_path(store, ds, "encoder", 0, 5, steps=1)
    with pytest.raises(SamplingError, match="out of range"):
        interpolate_path(store, ds, "encoder", 0, 10**6)
    with pytest.raises(SamplingError, match="unknown interpolation"):
        interpolate_path(store, ds, "encoder", 0, 5, how="cubic")
