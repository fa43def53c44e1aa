"""Callback bodies called as plain functions on small real datasets (no browser)."""

from __future__ import annotations

import numpy as np
import pytest
from dash import html, no_update
from latentmap.callbacks import data, datasets, neighbors, reduction, scatter, url
from latentmap.components import ids
from latentmap.components.figures import TRACE_OFFSET
from latentmap.pipeline.neighbors import nearest
from latentmap.pipeline.reduce import cached_projection, projection
from latentmap.pipeline.store import DatasetNotFound, Store
from test_app_support import make_dataset


@pytest.fixture
def env(tmp_path):
    store = Store(tmp_path / "cache")
    ds = make_dataset(store, n=45, nan_rows=(5,))
    projection(store, ds, "z2", "pca")
    return store, ds


def restore(store, search, **kw):
    return url.sync(store, None, None, search, {}, None, None, **kw)


def spec_of(store, search=""):
    return restore(store, search)["spec"]


def find(component, cls):
    """All descendants of a Dash component tree that are instances of cls."""
    out = []
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, cls):
            out.append(c)
        kids = getattr(c, "children", None)
        if isinstance(kids, (list, tuple)):
            stack.extend(kids)
        elif kids is not None and not isinstance(kids, str):
            stack.append(kids)
    return out


# --------------------------------------------------------------------------- URL callback


def test_restore_from_url_sets_controls_without_rewriting_the_url(env):
    store, ds = env
    out = restore(store, f"?ds={ds}&layer=z&method=umap&n_neighbors=5&color=split&sel=3&k=7")
    assert out["search"] is no_update
    c = out["controls"]
    assert (c["ds"], c["layer"], c["method"], c["n_neighbors"], c["color"], c["sel"], c["k"]) == (
        ds,
        "z",
        "umap",
        5,
        "split",
        3,
        7,
    )
    assert out["spec"]["method"] == "umap" and out["notices"] == []
    assert out["options"][ids.LAYER] == ["z", "z2"]
    assert "split" in out["options"][ids.SYMBOL]
    assert "score" in out["options"][ids.COLOR] and "score" not in out["options"][ids.FILTER_COL]


def test_restore_bad_values_gives_notices_and_a_view(env):
    store, ds = env
    out = restore(store, "?ds=gone&k=-1&method=../../etc&sel=10000&cam=a")
    assert len(out["notices"]) == 5
    assert out["spec"]["dataset"] == ds and out["spec"]["method"] == "pca"


def test_user_change_writes_url_and_resets_camera(env):
    store, ds = env
    first = restore(store, f"?ds={ds}&cam=0,1,0,1&sel=4")
    values = {k: (None if v is no_update else v) for k, v in first["controls"].items()}
    values["method"] = "tsne"
    out = url.sync(store, None, ids.METHOD, "", values, None, first["spec"])
    assert out["search"].startswith("?ds=") and "method=tsne" in out["search"]
    assert "cam=" not in out["search"] and "sel=4" in out["search"]
    assert out["controls"]["cam"] is None
    assert out["spec"]["method"] == "tsne"
    assert out["camera_restore"] is no_update


def test_changing_dataset_resets_layer_selection_and_filter(env, tmp_path):
    store, ds = env
    other = make_dataset(store, n=12, name="other", seed=3)
    first = restore(store, f"?ds={ds}&layer=z&sel=4&filter=label&fv=c1")
    values = {k: (None if v is no_update else v) for k, v in first["controls"].items()}
    values["ds"] = other
    out = url.sync(store, None, ids.DATASET, "", values, None, first["spec"])
    assert out["spec"]["dataset"] == other and out["spec"]["layer"] == "z2"
    assert out["controls"]["sel"] is None
    assert out["spec"]["filter_col"] is None
    assert out["notices"] == []


def test_back_forward_restores_camera(env):
    store, ds = env
    out = url.sync(store, None, ids.LOCATION, f"?ds={ds}&cam=0,1,2,3", {}, None, None)
    assert out["camera_restore"] == {"camera": [0.0, 1.0, 2.0, 3.0]}


def test_cancel_reverts_controls_to_the_shown_projection(env):
    store, ds = env
    shown = {**spec_of(store, f"?ds={ds}&method=pca"), "n_groups": 4}
    want = restore(store, f"?ds={ds}&method=tsne")
    values = {k: (None if v is no_update else v) for k, v in want["controls"].items()}
    out = url.sync(store, None, ids.REDUCE_CANCEL, "", values, shown, want["spec"])
    assert out["controls"]["method"] == "pca" and out["spec"]["method"] == "pca"


def test_dataset_deleted_while_open_falls_back_with_notice(env):
    store, ds = env
    other = make_dataset(store, n=12, name="other", seed=3)
    first = restore(store, f"?ds={ds}")
    store.delete_dataset(ds)
    values = {k: (None if v is no_update else v) for k, v in first["controls"].items()}
    values["color"] = "split"
    out = url.sync(store, None, ids.COLOR, "", values, None, first["spec"])
    assert out["spec"]["dataset"] == other
    assert any("not in the cache" in n for n in out["notices"])


# --------------------------------------------------------------------------- figure callback


def test_render_cached_projection(env):
    store, ds = env
    spec = spec_of(store, f"?ds={ds}&method=pca")
    fig, shown, request, _, status = scatter.render(store, spec, None, None, None, None, None, None)
    assert request is no_update and status == ""
    assert shown["method"] == "pca" and shown["n_groups"] == 3
    n_points = sum(len(t["x"]["bdata"]) > 0 for t in fig["data"][TRACE_OFFSET : TRACE_OFFSET + 3])
    assert n_points == 3
    groups = data.groups(store, shown)
    assert sum(len(g.rows) for g in groups) == 44  # the NaN row is left out


def test_render_uncached_requests_a_job_and_keeps_the_old_map(env):
    store, ds = env
    shown = scatter.render(store, spec_of(store, f"?ds={ds}"), None, None, None, None, None, None)[
        1
    ]
    spec = spec_of(store, f"?ds={ds}&method=tsne&color=split")
    fig, new_shown, request, _, status = scatter.render(
        store, spec, None, shown, None, None, 0, None
    )
    assert request["proj"]["method"] == "tsne" and request["nonce"] == 1 and request["cancels"] == 0
    assert "Computing t-SNE" in status and "PCA" in status
    assert new_shown["method"] == "pca" and new_shown["color"] == "split"  # recoloured old map
    assert fig["data"][TRACE_OFFSET]["name"] in ("test", "train")
    # the same pending request is not sent again ...
    assert scatter.render(store, spec, None, shown, None, request, 0, None)[2] is no_update
    # ... unless it was cancelled meanwhile
    assert scatter.render(store, spec, None, shown, None, request, 1, None)[2]["nonce"] == 2
    # a failed job shows its error and is not retried in a loop
    failed = {"nonce": 1, "proj": request["proj"], "error": "boom"}
    _, _, again, note, _ = scatter.render(store, spec, failed, shown, None, request, 0, None)
    assert again is no_update and "boom" in str(note)


def test_render_without_dataset_and_after_deletion(env):
    store, ds = env
    fig, shown, *_ = scatter.render(store, None, None, None, None, None, None, None)
    assert shown is None and fig["data"] == []
    spec = spec_of(store, f"?ds={ds}")
    store.delete_dataset(ds)
    with pytest.raises(DatasetNotFound):
        scatter.render(store, spec, None, None, None, None, None, None)


def test_hover_tooltip_has_thumbnail_and_metadata(env):
    store, ds = env
    shown = scatter.render(store, spec_of(store, f"?ds={ds}"), None, None, None, None, None, None)[
        1
    ]
    groups = data.groups(store, shown)
    event = {
        "points": [
            {
                "curveNumber": TRACE_OFFSET + 1,
                "pointIndex": 2,
                "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2},
            }
        ]
    }
    show, bbox, body = scatter.hover(store, event, shown, ["score"])
    row = int(groups[1].rows[2])
    assert show is True and bbox["x0"] == 1
    img = find(body, html.Img)
    assert img and img[0].src == f"/thumb/{ds}/{row}.png"
    text = str(body)
    assert f"img_{row:03d}.png" in text and "score" in text and "pred" in text
    assert (
        scatter.hover(store, {"points": [{"curveNumber": 0, "pointIndex": 0}]}, shown, None)[0]
        is False
    )
    assert scatter.hover(store, None, shown, None)[0] is False


def test_hover_without_thumbnails_shows_metadata_only(tmp_path):
    store = Store(tmp_path / "c")
    ds = make_dataset(store, n=12, thumbnails=False)
    projection(store, ds, "z2", "pca")
    shown = scatter.render(store, spec_of(store), None, None, None, None, None, None)[1]
    event = {"points": [{"curveNumber": TRACE_OFFSET, "pointIndex": 0, "bbox": {"x0": 0}}]}
    show, _, body = scatter.hover(store, event, shown, None)
    assert show and not find(body, html.Img) and "label" in str(body)


# --------------------------------------------------------------------------- neighbours


def test_click_maps_point_and_cards(env):
    store, ds = env
    shown = scatter.render(store, spec_of(store, f"?ds={ds}"), None, None, None, None, None, None)[
        1
    ]
    groups = data.groups(store, shown)
    click = {"points": [{"curveNumber": TRACE_OFFSET + 2, "pointIndex": 1}]}
    assert neighbors.clicked_row(store, ids.GRAPH, click, click, shown) == int(groups[2].rows[1])
    card = {"type": ids.CARD_TYPE, "row": 17}
    assert neighbors.clicked_row(store, card, 1, None, shown) == 17
    assert neighbors.clicked_row(store, card, 0, None, shown) is no_update  # just rendered
    assert neighbors.clicked_row(store, ids.GRAPH, {"points": []}, None, shown) is no_update


def test_neighbours_gallery_matches_latent_nearest(env):
    store, ds = env
    spec = spec_of(store, f"?ds={ds}")
    stored, gallery, title, note = neighbors.neighbours_view(store, 7, 5, spec)
    expected = nearest(store, ds, spec["layer"], 7, k=5)
    assert stored["rows"] == [7] + [r for r, _ in expected]
    assert [c.id["row"] for c in gallery] == stored["rows"]
    labels = store.metadata(ds)["label"].tolist()
    assert [c.to_plotly_json()["props"]["data-label"] for c in gallery] == [
        labels[r] for r in stored["rows"]
    ]
    assert "5 nearest" in title and note is None
    assert neighbors.neighbours_view(store, None, 5, spec)[0] is None
    # bad k from the control falls back to 12
    assert neighbors.neighbours_view(store, 7, -3, spec)[0]["k"] == 12


def test_neighbours_of_a_nan_row_is_an_expected_error(env):
    from latentmap.pipeline.neighbors import NeighborsError

    store, ds = env
    with pytest.raises(NeighborsError):
        neighbors.neighbours_view(store, 5, 5, spec_of(store, f"?ds={ds}"))


def test_highlight_patch_updates_trace_zero(env):
    store, ds = env
    shown = scatter.render(store, spec_of(store, f"?ds={ds}"), None, None, None, None, None, None)[
        1
    ]
    patch = neighbors.highlight_patch(
        store, {"dataset": ds, "layer": "z2", "rows": [1, 2, 3]}, shown
    )
    ops = patch.to_plotly_json()["operations"]
    assert {tuple(o["location"]) for o in ops} == {
        ("data", 0, "x"),
        ("data", 0, "y"),
        ("data", 0, "marker", "size"),
    }
    xs = next(o for o in ops if o["location"][-1] == "x")["params"]["value"]
    coords = cached_projection(store, ds, "z2", "pca")["coords"]
    assert np.allclose(xs, coords[[1, 2, 3], 0])
    empty = neighbors.highlight_patch(store, None, shown).to_plotly_json()["operations"]
    assert next(o for o in empty if o["location"][-1] == "x")["params"]["value"] == []


def test_selection_gallery_counts_and_caps(env):
    store, ds = env
    shown = scatter.render(store, spec_of(store, f"?ds={ds}"), None, None, None, None, None, None)[
        1
    ]
    groups = data.groups(store, shown)
    pts = [
        {"curveNumber": TRACE_OFFSET + c, "pointIndex": i}
        for c, g in enumerate(groups)
        for i in range(len(g.rows))
    ]
    title, style, cards = neighbors.selection_view(store, {"points": pts}, shown)
    assert (
        title.startswith("Selection: 44 items") and style["display"] == "block" and len(cards) == 44
    )
    assert neighbors.selection_view(store, None, shown)[1]["display"] == "none"


# --------------------------------------------------------------------------- background jobs


def test_reduction_job_computes_and_reports_progress(env):
    store, ds = env
    seen = []
    proj = {"dataset": ds, "layer": "z", "method": "pca", "params": {}}
    token = reduction.run_request(store, {"proj": proj, "nonce": 3}, seen.append)
    assert token == {"nonce": 3, "proj": proj}
    assert cached_projection(store, ds, "z", "pca") is not None
    assert seen and seen[-1][0] == "100"
    bad = reduction.run_request(store, {"proj": {**proj, "layer": "nope"}, "nonce": 4})
    assert "nope" in bad["error"]
    assert reduction.run_request(store, None) is None


def test_encode_form_validation_and_errors(tmp_path):
    from latentmap.pipeline.jobs import EncodeError

    with pytest.raises(EncodeError):
        datasets.encode_request("  ", "pixels", None, None, "mean", None, None)
    req = datasets.encode_request(" /data ", "", "", "a, b,", "max", "", "x")
    assert (req.source, req.model, req.layers, req.pool, req.checkpoint, req.name) == (
        "/data",
        "pixels",
        ("a", "b"),
        "max",
        None,
        "x",
    )
    store = Store(tmp_path / "c")
    body, ok = datasets.run_encode(
        store,
        datasets.encode_request(
            str(tmp_path / "missing"), "pixels", None, None, "mean", None, None
        ),
    )
    assert ok is False and "Encode failed" in str(body)


def test_encode_embeddings_file_lists_new_dataset(tmp_path):
    store = Store(tmp_path / "c")
    path = tmp_path / "emb.npy"
    np.save(path, np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32))
    seen = []
    body, ok = datasets.run_encode(
        store,
        datasets.encode_request(str(path), "pixels", None, None, "mean", None, "emb"),
        seen.append,
    )
    assert ok, body
    [info] = store.list_datasets()
    assert info.name == "emb" and info.n == 20
    assert f"?ds={info.id}" in str(body)


def test_density_view_above_the_threshold_and_points_when_zoomed_in(env, monkeypatch):
    """At scale (threshold lowered to 20 points here) the map is a 2-D histogram; zoomed in
    until few enough points are in view, exactly those are drawn and clicks map to them."""
    from latentmap.components import figures

    monkeypatch.setattr(figures, "DENSITY_MIN", 20)
    monkeypatch.setattr(figures, "POINTS_IN_VIEW", 15)
    store, ds = env
    spec = spec_of(store, f"?ds={ds}&method=pca")
    fig, shown, _, _, status = scatter.render(store, spec, None, None, None, None, None, None)
    heat = [t for t in fig["data"] if t.get("type") == "heatmap"]
    assert len(heat) == 1 and shown["view"]["mode"] == "density" and shown["view"]["n"] == 44
    assert "44 points drawn as a density" in status
    assert not any(t.get("type") == "scattergl" and t.get("x", {}).get("bdata")
                   for t in fig["data"][TRACE_OFFSET:])  # fmt: skip
    assert data.groups(store, shown) == []  # nothing to hover or click at that zoom
    # the density counts every point (none sampled away)
    import base64

    z = np.frombuffer(base64.b64decode(heat[0]["z"]["bdata"]), np.float32)
    assert np.nansum(10 ** z[np.isfinite(z)]) == pytest.approx(44, rel=1e-4)
    # zoom on a box holding < 15 points: exactly those are drawn, clicks map to them
    coords = data.projection_coords(store, ds, "z2", "pca", shown["params"])[0]
    c = coords[0]
    ok = np.isfinite(coords).all(axis=1)
    r = float(np.sort(np.abs(coords[ok] - c).max(axis=1))[6])  # ~7 points around row 0
    box = [float(c[0] - r), float(c[0] + r), float(c[1] - r), float(c[1] + r)]
    inside = figures.in_box(coords, np.flatnonzero(np.isfinite(coords).all(axis=1)), box)
    assert 0 < len(inside) <= 15
    fig, shown, _, _, status = scatter.render(store, spec, None, shown, box, None, None, None)
    assert shown["view"]["mode"] == "window" and f"the {len(inside)} points in view" in status
    groups = data.groups(store, shown)
    assert sorted(np.concatenate([g.rows for g in groups]).tolist()) == sorted(inside.tolist())
    g = next(i for i, gr in enumerate(groups) if len(gr.rows))
    click = {"points": [{"curveNumber": TRACE_OFFSET + g, "pointIndex": 0}]}
    assert neighbors.clicked_row(store, ids.GRAPH, click, click, shown) == int(groups[g].rows[0])
    # below the threshold nothing changes
    monkeypatch.setattr(figures, "DENSITY_MIN", 500_000)
    fig, shown, _, _, _ = scatter.render(store, spec, None, None, None, None, None, None)
    assert shown["view"] is None and not any(t.get("type") == "heatmap" for t in fig["data"])


def test_shared_server_form_refuses_python_model_code(monkeypatch):
    from latentmap.pipeline.jobs import EncodeError
    from latentmap.settings import Settings

    monkeypatch.delenv("LATENTMAP_ALLOW_CODE", raising=False)
    shared = Settings(users="ana:secret")
    assert datasets.allows_code(Settings()) and not datasets.allows_code(shared)
    with pytest.raises(EncodeError, match="Python code: on a shared server"):
        datasets.encode_request("/data", "evil.py:Net", None, None, "mean", None, None,
                                allow_code=False)  # fmt: skip
    ok = datasets.encode_request("/data", "model.ts", None, None, "mean", None, None,
                                 allow_code=False)  # fmt: skip
    assert ok.model == "model.ts"
    monkeypatch.setenv("LATENTMAP_ALLOW_CODE", "1")
    assert datasets.allows_code(shared)
    with pytest.raises(EncodeError, match="names a user that does not exist"):
        datasets.encode_request("~no_such_user_xyz/imgs", "", None, None, "mean", None, None)
