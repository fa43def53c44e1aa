"""Spatial pooling control, Channels tab and category groups (callback bodies, real data)."""

from __future__ import annotations

import numpy as np
import pytest
from dash import no_update
from latentmap.callbacks import channels, data, scatter, tasks, url
from latentmap.cli import main
from latentmap.pipeline.store import Store
from test_cli_channels import seed002_npz


@pytest.fixture
def env(tmp_path):
    src = seed002_npz(tmp_path / "cache.npz")
    assert main(["--cache-dir", str(tmp_path / "c"), "encode", str(src)]) == 0
    store = Store(tmp_path / "c")
    return store, store.list_datasets()[-1].id


def sync(store, search):
    out = url.sync(store, None, None, search, {}, None, None)
    return out["spec"], out["diag_spec"], out


def settle(store, spec, diag):
    pending, done = None, None
    for _ in range(5):
        req = tasks.plan(store, spec, diag, done, pending)
        if req is no_update:
            return done
        done, pending = tasks.run_request(store, req), req
    raise AssertionError("tasks did not settle")


def test_pooling_control_pools_in_the_background_then_shows_the_variant(env):
    from latentmap.pipeline.reduce import projection

    store, ds = env
    layer = store.layers(ds)[0]
    spec, diag, out = sync(store, f"?ds={ds}&layer={layer}&method=pca&pool=max&pchan=")
    assert spec["pool_pending"] == [layer, "max"] and spec["layer"] == layer
    projection(store, ds, layer, "pca")
    status = scatter.render(store, spec, None, None, None, None, None, None, diag)[4]
    assert "pooled by max" in status
    settle(store, spec, diag)
    spec, diag, out = sync(store, f"?ds={ds}&layer={layer}&method=pca&pool=max:0,2")
    assert spec["pool_pending"] == [layer, "max:0,2"]
    settle(store, spec, diag)
    spec, _, out = sync(store, f"?ds={ds}&layer={layer}&method=pca&pool=max:0,2")
    assert spec["layer"] == f"{layer}@max:0,2" and not spec["pool_pending"]
    assert out["controls"]["pool"] == "max" and out["controls"]["pchan"] == "0,2"
    from latentmap.callbacks.state import parse_query, resolve_view, to_query

    q = to_query(resolve_view(store, parse_query(f"?ds={ds}&layer={layer}&pool=max:0,2")[0])[0])
    assert "pool=max%3A0%2C2" in q and f"layer={layer}&" in q  # the link names the base layer
    X = store.vectors(ds, spec["layer"])
    S = np.asarray(store.spatial(ds, layer))
    assert np.allclose(X, S[:, [0, 2]].max(axis=(2, 3)), atol=1e-6)
    # bad pooling / channels fall back with a notice
    _, _, out = sync(store, f"?ds={ds}&layer={layer}&pool=median7")
    assert any("unknown pooling" in n for n in out["notices"])
    _, _, out = sync(store, f"?ds={ds}&layer={layer}&pool=max:9")
    assert any("Channel 9" in n for n in out["notices"])


def test_channels_tab_heatmap_click_colours_the_map(env):
    from latentmap.components.channel_figures import channel_from_click
    from latentmap.pipeline.reduce import projection

    store, ds = env
    layer = store.layers(ds)[0]
    spec, diag, _ = sync(store, f"?ds={ds}&layer={layer}&method=pca&tab=chan&ccol=relation")
    note, fig = channels.panel(store, diag, None)
    assert "Computing" in str(fig)
    settle(store, spec, diag)
    note, fig = channels.panel(store, diag, None)
    z = np.asarray(fig["data"][0]["z"], dtype=float)
    assert z.shape == (4, 4)
    assert np.argmax(np.ptp(z, axis=0)) == 0  # channel 0 separates the relations
    # a click on channel 0's cell -> the map is coloured by that channel
    x0 = fig["data"][0]["x"][0]
    click = {
        "points": [
            {"x": x0, "y": fig["data"][0]["y"][0], "customdata": fig["data"][0]["customdata"][0][0]}
        ]
    }
    assert channel_from_click(click) == 0
    spec, diag, _ = sync(store, f"?ds={ds}&layer={layer}&method=pca&chan=0")
    projection(store, ds, layer, "pca")
    figm = scatter.render(store, spec, None, None, None, None, None, None, diag)[0]
    marker = next(t for t in figm["data"] if t.get("type") == "scattergl")["marker"]
    assert marker["colorscale"] == "Viridis" and marker["showscale"]
    # maps and std
    _, diag, _ = sync(store, f"?ds={ds}&layer={layer}&tab=chan&ccol=relation&cstat=maps")
    _, figmaps = channels.panel(store, diag, None)
    assert figmaps["data"] and figmaps["data"][0]["type"] == "heatmap"


def test_groups_saved_in_the_app_colour_by_group(env):
    store, ds = env
    msg, bump = channels.save_mapping(store, ds, "coarse", '{"low": ["r0", "r1"], "x": ["zz"]}')
    assert bump == 1 and "applies to relation" in str(msg) and "zz" in str(msg)
    col = f"relation{data.GROUP_SEP}coarse"
    assert data.columns(store, ds)[col]["values"] == ["(other)", "low"]
    spec, diag, out = sync(store, f"?ds={ds}&color={col}&tab=chan&cgrp=coarse&ccol=relation")
    assert spec["color"] == col and out["notices"] == []
    settle(store, spec, diag)
    _, fig = channels.panel(store, diag, None)
    assert list(fig["data"][0]["y"]) == ["low", "(other)"]
    msg, bump = channels.save_mapping(store, ds, "dup", '{"a": ["r0"], "b": ["r0"]}')
    assert bump is no_update and "r0" in str(msg)


def test_centroids_of_a_grouped_column(env):
    from latentmap.pipeline.reduce import projection

    store, ds = env
    layer = store.layers(ds)[0]
    channels.save_mapping(store, ds, "coarse", '{"low": ["r0", "r1"], "high": ["r2", "r3"]}')
    col = f"relation{data.GROUP_SEP}coarse"
    projection(store, ds, layer, "pca")
    spec, diag, _ = sync(store, f"?ds={ds}&layer={layer}&method=pca&color={col}&ov=centroids")
    assert spec["centroid_col"] == col
    done = settle(store, spec, diag)
    assert not (done or {}).get("errors")
    fig, _, _, note, status = scatter.render(
        store, spec, None, None, None, None, None, None, diag, done
    )
    cent = next(t for t in fig["data"] if t.get("mode") == "markers+text")
    assert sorted(cent["text"]) == ["high", "low"] and "Computing" not in status
