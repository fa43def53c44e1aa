"""Pooling spatial latents after encoding, as cached layers of their own."""

import time

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.spatial import (
    SpatialError,
    ensure_variant,
    layer_has_spatial,
    parse_channels,
    parse_variant,
    pool_spatial,
    spatial_latents,
    spatial_layers,
)
from latentmap.pipeline.store import NotCached


@pytest.fixture
def spatial_ds(store):
    rng = np.random.default_rng(0)
    S = rng.normal(size=(40, 4, 6, 6)).astype(np.float32)
    S[:20, 2] += 3.0  # category "a" lights up channel 2
    meta = pd.DataFrame({"cat": ["a"] * 20 + ["b"] * 20})
    ds = write_dataset(store, name="vae", vectors={"z": S}, metadata=meta, spatial={"z": S})
    return store, ds, S


def test_parse_variant():
    assert parse_variant("max") == ("max", None)
    assert parse_variant("p90:0,3") == ("p90", (0, 3))
    assert parse_variant(" P50 ") == ("p50", None)
    for bad in ["median", "max:", "max:a", "p200", "../x", "none"]:
        with pytest.raises(SpatialError, match="unknown pooling"):
            parse_variant(bad)


def test_parse_channels():
    assert parse_channels(None) is None
    assert parse_channels("5,0, 2") == (0, 2, 5)
    assert parse_channels("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_channels([3, 1, 1]) == (1, 3)
    for bad in ["a", "3-1", [-1], [1.5], []]:
        with pytest.raises(SpatialError):
            parse_channels(bad)


def test_pool_spatial_matches_numpy(spatial_ds):
    _, _, S = spatial_ds
    np.testing.assert_allclose(pool_spatial(S, "max"), S.max(axis=(2, 3)))
    np.testing.assert_allclose(pool_spatial(S, "mean"), S.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        pool_spatial(S, "p90"), np.percentile(S.reshape(40, 4, -1), 90, axis=2), rtol=1e-5
    )
    np.testing.assert_allclose(
        pool_spatial(S, "p12.5", chunk=3),
        np.percentile(S.reshape(40, 4, -1), 12.5, axis=2),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        pool_spatial(S, "mean", (1, 3), chunk=7), S[:, [1, 3]].mean(axis=(2, 3)), rtol=1e-5
    )
    np.testing.assert_array_equal(pool_spatial(S, "flatten"), S.reshape(40, -1))
    np.testing.assert_array_equal(
        pool_spatial(S, "flatten", (2,), chunk=9), S[:, 2].reshape(40, -1)
    )
    with pytest.raises(SpatialError, match="channel 9 does not exist"):
        pool_spatial(S, "mean", (9,))
    with pytest.raises(SpatialError, match="unknown pooling"):
        pool_spatial(S, "median")


def test_pool_spatial_streams_a_memmap(tmp_path):
    """Chunked reads of a memory-mapped file give the same result as pooling in memory."""
    rng = np.random.default_rng(1)
    S = rng.normal(size=(101, 3, 5, 7)).astype(np.float32)
    path = tmp_path / "s.npy"
    np.save(path, S)
    M = np.load(path, mmap_mode="r")
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=(101, 3))
    seen = []
    pool_spatial(M, "max", chunk=10, out=out, progress=lambda d, n, _m: seen.append((d, n)))
    np.testing.assert_array_equal(np.asarray(out), S.max(axis=(2, 3)))
    assert seen[0] == (10, 101) and seen[-1] == (101, 101) and len(seen) == 11


@pytest.mark.parametrize(
    ("pool", "channels", "expect_name", "reference"),
    [
        ("max", None, "z@max", lambda S: S.max(axis=(2, 3))),
        ("p75", None, "z@p75", lambda S: np.percentile(S.reshape(40, 4, -1), 75, axis=2)),
        ("flatten", None, "z@flatten", lambda S: S.reshape(40, -1)),
        ("mean", "1,3", "z@mean:1,3", lambda S: S[:, [1, 3]].mean(axis=(2, 3))),
        ("max:2", None, "z@max:2", lambda S: S[:, [2]].max(axis=(2, 3))),
        ("p50", [3, 0], "z@p50:0,3", lambda S: np.median(S[:, [0, 3]].reshape(40, 2, -1), axis=2)),
    ],
)
def test_variant_becomes_a_layer(spatial_ds, pool, channels, expect_name, reference):
    store, ds, S = spatial_ds
    name = ensure_variant(store, ds, "z", pool, channels)
    assert name == expect_name
    assert name in store.layers(ds)
    got = store.vectors(ds, name)
    np.testing.assert_allclose(got, reference(S), rtol=1e-5, atol=1e-6)
    info = store.manifest(ds)["layers"][name]
    assert info["variant_of"] == "z" and info["pooled_from"] == [4, 6, 6]
    assert store.valid_mask(ds, name).all()


def test_variant_is_cached_and_reused(spatial_ds):
    store, ds, S = spatial_ds
    name = ensure_variant(store, ds, "z", "max", "2")
    path = store.vectors_path(ds, name)
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert ensure_variant(store, ds, "z", "max:2") == name
    assert ensure_variant(store, ds, name, "max", [2]) == name  # from the variant itself
    assert time.perf_counter() - t0 < 0.05
    assert path.stat().st_mtime_ns == mtime  # not recomputed
    assert ensure_variant(store, ds, "z", "mean") == "z"  # the stored pooling itself
    assert ensure_variant(store, ds, "z", "mean", "0-3") == "z"  # all channels = no subset
    # a cached-only view (what request handlers use) never computes
    with pytest.raises(NotCached):
        ensure_variant(store.cached_only(), ds, "z", "p10")
    assert ensure_variant(store.cached_only(), ds, "z", "max:2") == name
    # the variant works with the neighbour search like any layer
    from latentmap.pipeline.neighbors import nearest

    assert len(nearest(store, ds, name, 0, k=3)) == 3


def test_variant_errors(spatial_ds):
    store, ds, _ = spatial_ds
    with pytest.raises(SpatialError, match="channel 4 does not exist: layer 'z' has 4 channels"):
        ensure_variant(store, ds, "z", "max", "1,4")
    with pytest.raises(SpatialError, match="unknown pooling 'median'"):
        ensure_variant(store, ds, "z", "median")
    with pytest.raises(SpatialError, match="no layer 'q'"):
        ensure_variant(store, ds, "q", "max")
    with pytest.raises(SpatialError, match="channels given twice"):
        ensure_variant(store, ds, "z", "max:1", "2")


def test_variant_without_spatial_is_explained(store):
    rng = np.random.default_rng(2)
    ds = write_dataset(
        store,
        name="flat",
        vectors={"e": np.ones((3, 2), np.float32), "conv": rng.normal(size=(3, 4, 5, 5))},
        metadata=pd.DataFrame({"x": [1, 2, 3]}),
    )
    with pytest.raises(SpatialError, match="'e' has no spatial latents"):
        ensure_variant(store, ds, "e", "max")
    with pytest.raises(SpatialError, match=r"'conv' was stored pooled \(mean of 4x5x5\)"):
        ensure_variant(store, ds, "conv", "max")
    assert ensure_variant(store, ds, "e", "mean") == "e"
    assert spatial_layers(store, ds) == {}
    assert not layer_has_spatial(store, ds, "conv")


def test_spatial_layers_and_flatten_encoded_layer(store, spatial_ds):
    _, ds, S = spatial_ds
    ensure_variant(store, ds, "z", "max")
    assert spatial_layers(store, ds) == {"z": (4, 6, 6)}  # variants are not listed
    # a layer encoded with --pool flatten keeps its (C, H, W) layout in the vectors
    flat_ds = write_dataset(
        store,
        name="flat-encoded",
        vectors={"f": S.reshape(40, -1)},
        metadata=pd.DataFrame({"cat": ["a"] * 40}),
    )
    layers = store.manifest(flat_ds)["layers"]
    layers["f"].update(pool="flatten", pooled_from=[4, 6, 6])
    store.update_manifest(flat_ds, layers=layers)
    assert spatial_layers(store, flat_ds) == {"f": (4, 6, 6)}
    np.testing.assert_array_equal(spatial_latents(store, flat_ds, "f"), S)
    name = ensure_variant(store, flat_ds, "f", "max")
    np.testing.assert_allclose(store.vectors(flat_ds, name), S.max(axis=(2, 3)))


def test_variant_flags_nan_rows(store):
    S = np.ones((5, 2, 3, 3), np.float32)
    S[3, 1, 0, 0] = np.nan
    ds = write_dataset(
        store,
        name="nan",
        vectors={"z": np.zeros((5, 2), np.float32)},
        metadata=pd.DataFrame({"c": list("abcde")}),
        spatial={"z": S},
    )
    name = ensure_variant(store, ds, "z", "max")
    assert store.valid_mask(ds, name).tolist() == [True, True, True, False, True]
    assert store.manifest(ds)["layers"][name]["n_invalid"] == 1
