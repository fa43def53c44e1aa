"""URL state: parse / write round trip, and every kind of bad value falling back with a notice."""

from __future__ import annotations

import pytest
from latentmap.callbacks.state import (
    DEFAULT_K,
    View,
    parse_query,
    raw_from_view,
    resolve_view,
    to_query,
)
from latentmap.pipeline.store import Store
from test_app_support import make_dataset


@pytest.fixture
def ds_store(tmp_path):
    store = Store(tmp_path / "cache")
    return store, make_dataset(store, n=30)


def test_parse_query_keeps_known_keys_and_repeated_filter_values():
    raw, notices = parse_query("?ds=abc&fv=a&fv=b%20c&k=5&bogus=1")
    assert raw == {"ds": "abc", "fv": ["a", "b c"], "k": "5"}
    assert notices and "bogus" in notices[0]
    assert parse_query("") == ({}, [])
    assert parse_query(None) == ({}, [])


def test_parse_query_truncates_huge_values():
    raw, _ = parse_query("?ds=" + "x" * 100_000)
    assert len(raw["ds"]) <= 300


def test_round_trip(ds_store):
    store, ds = ds_store
    view = View(
        ds,
        "z",
        "umap",
        {"n_neighbors": 7, "min_dist": 0.25, "metric": "cosine"},
        "label",
        "split",
        "label",
        ("c0", "c2"),
        "hide",
        11,
        5,
        (-1.5, 2.0, 0.0, 3.25),
        tab="diag",
        overlays=("centroids", "trust"),
        layers=("z",),
        align="init",
        true_col="split",
        pred_col="label",
        cnorm=False,
        dmetric="euclidean",
        cell=("c 1", "c&2"),
        centroid_col="label",
    )
    query = to_query(view)
    raw, notices = parse_query(query)
    back, more = resolve_view(store, raw)
    assert notices == [] and more == []
    assert back == view
    assert to_query(back) == query
    assert resolve_view(store, raw_from_view(view))[0] == view


def test_diagnostic_fields_fall_back_with_notices(ds_store):
    store, ds = ds_store
    raw, _ = parse_query(
        f"?ds={ds}&tab=nope&ov=centroids&ov=bogus&layers=zz&align=x&true=missing&dmetric=l1&ct=a"
    )
    view, notices = resolve_view(store, raw)
    assert view.tab == "map" and view.overlays == ("centroids",)
    assert view.layers == tuple(store.layers(ds))  # unknown layer: the default set
    assert view.align == "procrustes" and view.dmetric == "cosine"
    assert view.true_col == "label" and view.cell is None
    text = " ".join(notices)
    for word in ("tab", "bogus", "zz", "alignment", "missing", "distance", "cell"):
        assert word in text, word
    # defaults are left out of the link
    plain, _ = resolve_view(store, {"ds": ds})
    q = to_query(plain)
    assert "tab=" not in q and "layers=" not in q and "true=" not in q


def test_centroids_follow_a_categorical_colour_else_the_labels(ds_store):
    store, ds = ds_store
    assert resolve_view(store, {"ds": ds, "color": "split"})[0].centroid_col == "split"
    assert resolve_view(store, {"ds": ds, "color": "none"})[0].centroid_col == "label"


def test_defaults_without_query(ds_store):
    store, ds = ds_store
    view, notices = resolve_view(store, {})
    assert notices == []
    assert (view.dataset, view.layer, view.method, view.color, view.k) == (
        ds,
        "z2",
        "pca",
        "label",
        DEFAULT_K,
    )


def test_no_color_is_kept(ds_store):
    store, ds = ds_store
    view, _ = resolve_view(store, parse_query(f"?ds={ds}&color=none")[0])
    assert view.color is None
    assert "color=none" in to_query(view)


def test_dataset_by_name(ds_store):
    store, ds = ds_store
    assert resolve_view(store, {"ds": "blobs"})[0].dataset == ds


@pytest.mark.parametrize(
    ("query", "expect_notice", "check"),
    [
        ("ds=nope", "not in the cache", lambda v, ds: v.dataset == ds),
        ("ds=../../etc", "not in the cache", lambda v, ds: v.dataset == ds),
        ("layer=../../etc", "Layer", lambda v, ds: v.layer == "z2"),
        ("method=../../etc", "Unknown projection", lambda v, ds: v.method == "pca"),
        ("method=tsne&perplexity=abc", "perplexity", lambda v, ds: v.params == {"perplexity": 9.0}),
        ("method=tsne&perplexity=-3", "perplexity", lambda v, ds: v.params["perplexity"] > 0),
        (
            "method=umap&n_neighbors=1e400",
            "n_neighbors",
            lambda v, ds: v.params["n_neighbors"] == 15,
        ),
        ("method=umap&min_dist=7", "min_dist", lambda v, ds: v.params["min_dist"] == 0.1),
        ("k=-4", "k must be", lambda v, ds: v.k == DEFAULT_K),
        ("k=0", "k must be", lambda v, ds: v.k == DEFAULT_K),
        ("k=99999999999999999999", "k must be", lambda v, ds: v.k == DEFAULT_K),
        ("k=2.5", "k must be", lambda v, ds: v.k == DEFAULT_K),
        ("k=%3Cscript%3E", "k must be", lambda v, ds: v.k == DEFAULT_K),
        ("sel=-1", "does not exist", lambda v, ds: v.selected is None),
        ("sel=30", "does not exist", lambda v, ds: v.selected is None),
        ("sel=abc", "does not exist", lambda v, ds: v.selected is None),
        ("color=../../etc", "No column", lambda v, ds: v.color == "label"),
        ("symbol=nope", "No column", lambda v, ds: v.symbol is None),
        ("filter=label&fv=zzz", "not found", lambda v, ds: v.filter_values == ()),
        ("filter=label&fv=c1&fmode=explode", "filter mode", lambda v, ds: v.filter_mode == "dim"),
        ("cam=1,2,x,4", "zoom", lambda v, ds: v.camera is None),
        ("cam=5,1,0,1", "zoom", lambda v, ds: v.camera is None),
        ("cam=1,2,3", "zoom", lambda v, ds: v.camera is None),
        ("cam=nan,1,0,1", "zoom", lambda v, ds: v.camera is None),
    ],
)
def test_bad_values_fall_back_with_notice(ds_store, query, expect_notice, check):
    store, ds = ds_store
    raw, notices = parse_query("?" + query)
    view, more = resolve_view(store, raw)
    text = " ".join(notices + more)
    assert expect_notice in text
    assert check(view, ds)
    assert view.dataset == ds  # still a working view


def test_perplexity_clamped_for_small_data_with_notice(ds_store):
    store, _ = ds_store
    view, notices = resolve_view(store, {"method": "tsne", "perplexity": "50"})
    assert view.params["perplexity"] < 10
    assert any("reduced" in n for n in notices)


def test_empty_cache_gives_empty_view_with_notice(tmp_path):
    view, notices = resolve_view(Store(tmp_path / "empty"), {"ds": "x"})
    assert view.dataset is None and view.spec() is None
    assert any("No datasets" in n for n in notices)
    assert to_query(view) == ""


def test_quiet_mode_drops_column_notices(ds_store):
    store, _ = ds_store
    _, notices = resolve_view(store, {"color": "gone", "symbol": "gone"}, quiet=True)
    assert notices == []


def test_spec_leaves_out_per_click_state(ds_store):
    store, ds = ds_store
    view, _ = resolve_view(store, {"sel": "3", "k": "4", "cam": "0,1,0,1"})
    spec = view.spec()
    assert (
        spec["dataset"] == ds
        and "selected" not in spec
        and "camera" not in spec
        and "k" not in spec
    )
