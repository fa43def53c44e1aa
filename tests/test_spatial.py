"""Pooling spatial latents after encoding, and per-channel analysis."""

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.spatial import (
    SpatialError,
    channel_stats,
    ensure_variant,
    parse_variant,
    pool_spatial,
)


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
    for bad in ["median", "max:", "max:a", "p200", "../x"]:
        with pytest.raises(SpatialError):
            parse_variant(bad)


def test_pool_spatial_matches_numpy(spatial_ds):
    _, _, S = spatial_ds
    np.testing.assert_allclose(pool_spatial(S, "max"), S.max(axis=(2, 3)))
    np.testing.assert_allclose(
        pool_spatial(S, "p90"), np.percentile(S.reshape(40, 4, -1), 90, axis=2), rtol=1e-5
    )
    np.testing.assert_allclose(
        pool_spatial(S, "mean", (1, 3), chunk=7), S[:, [1, 3]].mean(axis=(2, 3)), rtol=1e-5
    )
    assert pool_spatial(S, "flatten").shape == (40, 4 * 36)
    with pytest.raises(SpatialError, match="channel 9"):
        pool_spatial(S, "mean", (9,))


def test_variant_becomes_a_layer(spatial_ds):
    store, ds, S = spatial_ds
    name = ensure_variant(store, ds, "z", "max:2")
    assert name == "z@max:2"
    assert name in store.layers(ds)
    np.testing.assert_allclose(store.vectors(ds, name)[:, 0], S[:, 2].max(axis=(1, 2)))
    assert ensure_variant(store, ds, "z", "max:2") == name  # idempotent
    assert ensure_variant(store, ds, "z", "mean") == "z"  # the stored pooling itself
    # the variant works with the neighbour search like any layer
    from latentmap.pipeline.neighbors import nearest

    assert len(nearest(store, ds, name, 0, k=3)) == 3


def test_variant_without_spatial_is_explained(store):
    ds = write_dataset(
        store,
        name="flat",
        vectors={"e": np.ones((3, 2), np.float32)},
        metadata=pd.DataFrame({"x": [1, 2, 3]}),
    )
    with pytest.raises(SpatialError, match="no stored spatial"):
        ensure_variant(store, ds, "e", "max")


def test_channel_stats(spatial_ds):
    _, _, S = spatial_ds
    st = channel_stats(S, ["a"] * 20 + ["b"] * 20, chunk=9)
    assert st["classes"] == ["a", "b"]
    np.testing.assert_allclose(
        st["means"][0], S[:20].mean(axis=(2, 3)).mean(0), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(st["stds"][1], S[20:].mean(axis=(2, 3)).std(0), rtol=1e-4, atol=1e-5)
    assert st["means"][0, 2] > st["means"][1, 2] + 2.5
    assert st["maps"].shape == (2, 4, 6, 6)
    np.testing.assert_allclose(st["maps"][1], S[20:].mean(0), rtol=1e-4, atol=1e-5)
