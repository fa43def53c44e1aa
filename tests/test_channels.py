"""Channel analysis: per-category channel statistics, channel values and their figures."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from latentmap.components.channel_figures import (
    cell_from_click,
    channel_from_click,
    channel_heatmap,
    channel_maps_figure,
    map_cell_from_click,
    most_varying_channels,
    write_channel_analysis,
)
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.groups import save_groups
from latentmap.pipeline.spatial import (
    SpatialError,
    channel_analysis,
    channel_stats,
    channel_values,
    ensure_variant,
)

CATS = ["left", "right", "above", "behind", "tall"]


@pytest.fixture
def vae_ds(store):
    """60 items of (5, 4, 8) latents in 5 categories, one missing label and one NaN item."""
    rng = np.random.default_rng(0)
    n = 60
    S = rng.normal(size=(n, 5, 4, 8)).astype(np.float32)
    cats = np.array([CATS[i % 5] for i in range(n)], dtype=object)
    S[cats == "behind", 3] += 2.0  # "behind" lights up channel 3
    S[cats == "tall", 1, :2] -= 1.5  # "tall": the top half of channel 1 is darker
    cats[7] = None
    S[11, 0, 1, 1] = np.nan
    meta = pd.DataFrame({"relation": cats, "idx": np.arange(n)})
    ds = write_dataset(store, name="vae", vectors={"z": S}, metadata=meta, spatial={"z": S})
    return store, ds, S, meta


def _expected(S, labels):
    """Reference per-category stats with pandas groupby (population std)."""
    keep = pd.notna(labels) & np.isfinite(S.reshape(len(S), -1)).all(axis=1)
    m = S.astype(np.float64).mean(axis=(2, 3))
    df = pd.DataFrame(m[keep]).assign(cat=np.asarray(labels)[keep])
    g = df.groupby("cat")
    return g.mean(), g.std(ddof=0), g.size()


def test_channel_analysis_matches_groupby(vae_ds):
    store, ds, S, meta = vae_ds
    e = channel_analysis(store, ds, "z", "relation")
    cats = e.info["categories"]
    assert sorted(cats) == sorted(CATS)
    mean, std, size = _expected(S, meta["relation"].to_numpy())
    np.testing.assert_allclose(e["means"], mean.loc[cats].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e["stds"], std.loc[cats].to_numpy(), rtol=1e-4, atol=1e-6)
    assert e["counts"].tolist() == size.loc[cats].tolist()
    assert e["maps"].shape == (5, 5, 4, 8)
    behind = cats.index("behind")
    keep = (meta["relation"] == "behind").to_numpy() & np.isfinite(S).all(axis=(1, 2, 3))
    np.testing.assert_allclose(e["maps"][behind], S[keep].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert e["means"][behind, 3] > e["means"][:, 3].mean() + 1.0
    tall = cats.index("tall")
    assert e["maps"][tall, 1, :2].mean() < e["maps"][tall, 1, 2:].mean() - 1.0
    assert e.info["spatial"] is True and e.info["shape"] == [5, 4, 8]
    assert any("without a 'relation' value" in n for n in e.info["notes"])


def test_channel_analysis_is_cached(vae_ds):
    store, ds, _, _ = vae_ds
    first = channel_analysis(store, ds, "z", "relation")
    hit = channel_analysis(store.cached_only(), ds, "z", "relation")  # no compute allowed
    np.testing.assert_array_equal(hit["means"], first["means"])
    # a pooling variant is analysed through its base layer: same entry
    var = ensure_variant(store, ds, "z", "max")
    again = channel_analysis(store.cached_only(), ds, var, "relation")
    assert again.info["layer"] == "z"


def test_channel_analysis_by_groups(vae_ds):
    store, ds, S, meta = vae_ds
    mapping = {"Horizontal": ["left", "right"], "Depth": {"categories": ["behind", "nowhere"]}}
    e = channel_analysis(store, ds, "z", "relation", mapping)
    assert e.info["categories"] == ["Horizontal", "Depth", "(other)"]
    rel = meta["relation"].to_numpy()
    grouped = np.array(
        [
            None
            if pd.isna(v)
            else "Horizontal"
            if v in ("left", "right")
            else "Depth"
            if v == "behind"
            else "(other)"
            for v in rel
        ],
        dtype=object,
    )
    mean, std, size = _expected(S, grouped)
    order = e.info["categories"]
    np.testing.assert_allclose(e["means"], mean.loc[order].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e["stds"], std.loc[order].to_numpy(), rtol=1e-4, atol=1e-6)
    assert e["counts"].tolist() == size.loc[order].tolist()
    assert any("unknown category: nowhere" in n for n in e.info["notes"])
    # a stored mapping can be named instead
    save_groups(store, ds, "spatial", mapping)
    named = channel_analysis(store.cached_only(), ds, "z", "relation", "spatial")
    np.testing.assert_array_equal(named["means"], e["means"])


def test_channel_analysis_of_pooled_layer(store):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 6)).astype(np.float32)
    lab = np.array(["x", "y", "z"] * 10)
    ds = write_dataset(store, name="flat", vectors={"e": X}, metadata=pd.DataFrame({"c": lab}))
    e = channel_analysis(store, ds, "e", "c")
    assert "maps" not in e.arrays and e.info["spatial"] is False
    assert any("no stored spatial latents" in n for n in e.info["notes"])
    for i, c in enumerate(e.info["categories"]):
        np.testing.assert_allclose(e["means"][i], X[lab == c].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(e["stds"][i], X[lab == c].std(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(channel_values(store, ds, "e", 4), X[:, 4])


def test_channel_analysis_errors(vae_ds, store):
    _, ds, _, _ = vae_ds
    with pytest.raises(SpatialError, match="no column 'nope'"):
        channel_analysis(store, ds, "z", "nope")
    with pytest.raises(SpatialError, match="distinct values"):
        many = write_dataset(
            store,
            name="many",
            vectors={"e": np.zeros((300, 2), np.float32)},
            metadata=pd.DataFrame({"c": [f"v{i}" for i in range(300)]}),
        )
        channel_analysis(store, many, "e", "c")


def test_channel_values(vae_ds):
    store, ds, S, _ = vae_ds
    v = channel_values(store, ds, "z", 3)
    assert v.dtype == np.float32 and v.shape == (60,)
    np.testing.assert_allclose(v, S[:, 3].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    var = ensure_variant(store, ds, "z", "max:1,2")
    np.testing.assert_allclose(channel_values(store, ds, var, 0), S[:, 0].mean(axis=(1, 2)), 1e-5)
    with pytest.raises(SpatialError, match="channel 5 does not exist: layer 'z' has 5 channels"):
        channel_values(store, ds, "z", 5)
    with pytest.raises(SpatialError, match="not a whole number"):
        channel_values(store, ds, "z", "2")


def test_channel_stats_drops_empty_classes():
    S = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    st = channel_stats(S, ["a", "b"], classes=["b", "zz", "a"], chunk=1)
    assert st["classes"] == ["b", "a"] and st["dropped"] == ["zz"]
    np.testing.assert_allclose(st["means"][1], S[0].mean(axis=(1, 2)))
    np.testing.assert_allclose(st["stds"], 0.0)


# --------------------------------------------------------------------------- figures


def _click(fig, i, j):
    """The clickData plotly.js sends for cell (row i, column j) of a heatmap trace."""
    t = fig["data"][0]
    return {
        "points": [
            {
                "curveNumber": 0,
                "x": t["x"][j],
                "y": t["y"][i],
                "z": t["z"][i][j],
                "customdata": t["customdata"][i][j],
            }
        ]
    }


def test_heatmap_click_round_trip():
    M = np.arange(15, dtype=float).reshape(3, 5) - 7
    fig = channel_heatmap(["Size", "Depth", "Horizontal"], M, title="means", counts=[4, 5, 6])
    json.dumps(fig)  # plain JSON
    t = fig["data"][0]
    assert t["type"] == "heatmap" and t["y"] == ["Size", "Depth", "Horizontal"]
    assert t["zmid"] == 0 and t["colorscale"] == "RdBu_r"  # both signs: diverging
    for i in range(3):
        for j in range(5):
            assert cell_from_click(_click(fig, i, j)) == (t["y"][i], j)
            assert channel_from_click(_click(fig, i, j)) == j
            assert t["z"][i][j] == M[i, j]
    # without customdata the x coordinate (the channel index) is used
    assert channel_from_click({"points": [{"x": 3, "y": "Size"}]}) == 3
    for bad in [None, {}, {"points": []}, {"points": [{"x": "a"}]}, "x", {"points": [None]}]:
        assert channel_from_click(bad) is None
    seq = channel_heatmap(["a"], np.ones((1, 2)), title="stds", channel_names=["u", "v"])
    assert seq["data"][0]["colorscale"] == "Viridis" and "zmid" not in seq["data"][0]
    assert seq["layout"]["xaxis"]["ticktext"] == ["u", "v"]
    hl = channel_heatmap(["a"], np.ones((1, 2)), title="t", highlight_channel=1)
    assert hl["layout"]["shapes"][0]["x0"] == 0.5
    with pytest.raises(ValueError, match="expected"):
        channel_heatmap(["a", "b"], np.ones((3, 2)), title="t")


def test_channel_maps_figure():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 20, 6, 4)).astype(np.float32)
    cats = ["a", "b", "c"]
    fig = channel_maps_figure(cats, maps)
    json.dumps(fig)
    assert len(fig["data"]) == 3 * 16  # max_channels columns by default
    assert fig["layout"]["meta"]["channels"] == list(range(16))
    t = fig["data"][16 + 2]  # row b, channel 2
    z = np.frombuffer(__import__("base64").b64decode(t["z"]["bdata"]), np.float32)
    np.testing.assert_array_equal(z.reshape(6, 4), maps[1, 2])
    assert t["z"]["shape"] == "6, 4"
    assert t["zmin"] == pytest.approx(float(maps[:, 2].min()))
    assert t["xaxis"] == "x19" and "xaxis19" in fig["layout"]
    click = {"points": [{"curveNumber": 18, "x": 1, "y": 2, "z": 0.3}]}
    assert map_cell_from_click(click, cats, fig["layout"]["meta"]["channels"]) == ("b", 2)
    picked = channel_maps_figure(cats, maps, channels=[19, 4])
    assert len(picked["data"]) == 6
    assert map_cell_from_click({"points": [{"curveNumber": 5}]}, cats, [19, 4]) == ("c", 4)
    big = channel_maps_figure(cats, rng.normal(size=(3, 2, 128, 96)), max_side=32)
    assert big["data"][0]["z"]["shape"] == "32, 24"  # block-averaged for display
    with pytest.raises(ValueError, match="channel 20 does not exist"):
        channel_maps_figure(cats, maps, channels=[20])


def test_most_varying_channels():
    M = np.ones((3, 6))
    M[:, 4] = [0, 5, 10]
    M[:, 1] = [1, 1.2, 1.4]
    assert most_varying_channels(M, 2) == [1, 4]
    assert most_varying_channels(M, 10) == list(range(6))


def test_write_channel_analysis(vae_ds, tmp_path):
    store, ds, _, _ = vae_ds
    paths = write_channel_analysis(
        store, ds, "z", "relation", tmp_path / "out", groups={"H": ["left", "right"]}
    )
    assert [p.name for p in paths] == [
        "channel_means.html",
        "channel_stds.html",
        "channel_maps.html",
    ]
    text = paths[0].read_text()
    assert "Plotly.newPlot" in text and "<script src=" not in text  # standalone
    assert "(other)" in text and "relation" in text
    figs = re.findall(r'Plotly\.newPlot\("fig-\d+",(\[.*?\]),\{', paths[0].read_text())
    assert json.loads(figs[0])[0]["y"] == ["H", "(other)"]
    assert paths[2].read_text().count('"type":"heatmap"') == 2 * 5  # 2 groups x 5 channels


def test_write_channel_analysis_pooled_layer(store, tmp_path):
    ds = write_dataset(
        store,
        name="flat",
        vectors={"e": np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)},
        metadata=pd.DataFrame({"c": ["p", "q"] * 5}),
    )
    paths = write_channel_analysis(store, ds, "e", "c", tmp_path)
    assert [p.name for p in paths] == ["channel_means.html", "channel_stds.html"]
    assert "no stored spatial latents" in paths[0].read_text()
