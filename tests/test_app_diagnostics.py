"""Layers, diagnostics and overlays: the callback bodies as plain functions on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dash import no_update
from latentmap.callbacks import diagnostics, layers, scatter, tasks, url
from latentmap.components import ids
from latentmap.components.figures import TRACE_OFFSET
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.reduce import projection
from latentmap.pipeline.store import Store
from test_app_callbacks import find
from test_app_support import make_dataset


@pytest.fixture
def env(tmp_path):
    store = Store(tmp_path / "cache")
    ds = make_dataset(store, n=60)
    return store, ds


def restore(store, search):
    return url.sync(store, None, None, search, {}, None, None)


def specs(store, search):
    out = restore(store, search)
    return out["spec"], out["diag_spec"]


def run_all(store, spec, diag):
    """Plan and run the background tasks until nothing is missing (as the app does)."""
    pending, done = None, None
    for _ in range(5):
        req = tasks.plan(store, spec, diag, done, pending)
        if req is no_update:
            return done
        done = tasks.run_request(store, req)
        pending = req
    raise AssertionError("tasks did not settle")


def test_diagnostics_tab_plans_runs_and_draws(env):
    store, ds = env
    spec, diag = specs(store, f"?ds={ds}&tab=diag&layer=z")
    assert diag["true_col"] == "label" and diag["pred_col"] == "pred"
    kinds = sorted({t["kind"] for t in tasks.missing_tasks(store, spec, diag)})
    assert kinds == ["confusion", "summary", "trust"]
    # before the job: panels draw what they have, nothing is computed in the request
    note, table, heat, _ = diagnostics.panel(store, diag, None)
    assert "Computing" in str(heat)
    done = run_all(store, spec, diag)
    assert done["errors"] == []
    assert tasks.missing_tasks(store, spec, diag) == []
    note, table, heat, cvd = diagnostics.panel(store, diag, done)
    assert heat["data"][0]["type"] == "heatmap"
    body = table.children[1].children  # Thead, Tbody
    assert [tr.children[0].children for tr in body] == ["z", "z2"]
    assert body[0].className == "current"
    # every number of the current layer is filled in (no "…" left)
    assert "…" not in str(body[0])
    sil, acc, rho_cos = (body[0].children[i].children for i in (2, 3, 4))
    assert -1 <= float(sil.children) <= 1 and -1 <= float(rho_cos) <= 1
    assert float(acc) == pytest.approx((store.metadata(ds).eval("label == pred")).mean(), abs=1e-3)
    assert "Spearman" in str(cvd["layout"]["title"])


def test_cell_click_fills_the_gallery_and_marks_the_map(env):
    store, ds = env
    spec, diag = specs(store, f"?ds={ds}&layer=z&method=pca&tab=diag&ct=c0&cp=c1")
    assert diag["cell"] == ["c0", "c1"]
    meta = store.metadata(ds)
    expect = np.flatnonzero((meta["label"] == "c0") & (meta["pred"] == "c1"))
    assert len(expect) > 0
    assert list(diagnostics.cell_rows(store, diag)) == list(expect)
    style, title, cards = diagnostics.cell_gallery(store, diag)
    assert style != {"display": "none"} and f"{len(expect)} confused" in title
    assert len(cards) == len(expect)
    projection(store, ds, "z", "pca")
    fig = scatter.render(store, spec, None, None, None, None, None, None, diag)[0]
    assert len(fig["data"][1]["x"]) == len(expect)  # the marked-items trace
    # the URL keeps the cell for a teammate
    assert "ct=c0" in url.to_query(url.resolve_view(store, {"ds": ds, "cell": ["c0", "c1"]})[0])


def test_missing_predictions_explained(tmp_path):
    store = Store(tmp_path / "cache")
    z = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    meta = pd.DataFrame({"label": np.arange(20) % 2, "file": [f"f{i}" for i in range(20)]})
    ds = write_dataset(store, name="nopred", vectors={"z": z}, metadata=meta)
    spec, diag = specs(store, f"?ds={ds}&tab=diag")
    assert diag["pred_col"] is None
    run_all(store, spec, diag)
    note, table, heat, _ = diagnostics.panel(store, diag, None)
    assert "No predictions column" in str(note) and "pred_score" in str(note)
    assert table is not None  # silhouette per layer still shown


def test_layers_side_by_side_aligned_and_linked(env):
    store, ds = env
    spec, diag = specs(store, f"?ds={ds}&tab=layers&layer=z")
    assert diag["layers"] == ["z", "z2"]
    run_all(store, spec, diag)
    cells, _ = layers.grid(store, spec, diag, None)
    graphs = [g for c in cells for g in find(c, type(c.children[1]))]
    assert [g.id["view"] for g in graphs] == ["z", "z2"]
    # z2 is z[:, :4] * 2: after Procrustes its PCA map lies on top of z's
    raw = np.asarray(projection(store, ds, "z2", "pca")["coords"])
    ref = np.asarray(projection(store, ds, "z", "pca")["coords"])
    aligned, info = layers.view_coords(store, diag, "z2")
    assert info["disparity"] is not None
    assert np.abs(aligned - ref).mean() < np.abs(raw - ref).mean()
    # hovering item 7 in z rings item 7 in both views
    groups = layers.data.groups(store, {**spec, "layer": "z"})
    c, i = next(
        (c, int(np.flatnonzero(g.rows == 7)[0])) for c, g in enumerate(groups) if 7 in g.rows
    )
    event = {"points": [{"curveNumber": c + TRACE_OFFSET, "pointIndex": i}]}
    rows = layers.linked_rows(store, spec, diag, {"view": "z"}, event)
    assert rows == [7]
    gids = [{"type": ids.LAYER_GRAPH_TYPE, "view": layer} for layer in ("z", "z2")]
    patches = layers.highlight_patches(store, diag, gids, rows)
    xs = [p.to_plotly_json()["operations"][0]["params"]["value"] for p in patches]
    assert xs[0] == [pytest.approx(float(ref[7, 0]))]
    assert xs[1] == [pytest.approx(float(aligned[7, 0]))]


def test_methods_side_by_side_linked(env):
    store, ds = env
    spec, diag = specs(store, f"?ds={ds}&tab=layers&layer=z&method=umap&n_neighbors=5&cmp=methods")
    assert diag["compare"] == "methods"
    kinds = {(t["kind"], t["method"]) for t in tasks.missing_tasks(store, spec, diag)}
    assert {("projection", m) for m in ("pca", "tsne", "umap")} <= kinds
    run_all(store, spec, diag)
    cells, _ = layers.grid(store, spec, diag, None)
    graphs = [g for c in cells for g in find(c, type(c.children[1]))]
    assert sorted(g.id["view"] for g in graphs) == ["pca", "tsne", "umap"]
    assert "computing" not in str(cells)
    # the UMAP view uses the map's parameters, the others their defaults
    umap = next(v for v in tasks.views(diag) if v["method"] == "umap")
    assert umap["params"]["n_neighbors"] == 5 and umap["ref"] == "umap"
    gids = [{"type": ids.LAYER_GRAPH_TYPE, "view": m} for m in ("pca", "tsne", "umap")]
    patches = layers.highlight_patches(store, diag, gids, [3])
    assert all(len(p.to_plotly_json()["operations"][0]["params"]["value"]) == 1 for p in patches)


def test_map_overlays_centroids_and_trust(env):
    store, ds = env
    projection(store, ds, "z", "pca")
    spec, diag = specs(store, f"?ds={ds}&layer=z&method=pca&ov=centroids&ov=ellipses&ov=trust")
    fig, _, _, _, status = scatter.render(store, spec, None, None, None, None, None, None, diag)
    assert "Computing centroids and projection trust" in status
    done = run_all(store, spec, diag)
    fig, _, _, note, status = scatter.render(
        store, spec, None, None, None, None, None, None, diag, done
    )
    names = [t.get("name") for t in fig["data"]]
    assert any("centroid" in (n or "") for n in names)
    cent = next(t for t in fig["data"] if t.get("mode") == "markers+text")
    assert sorted(cent["text"]) == ["c0", "c1", "c2"]
    # PCA is linear: the centroid sits at the 2-D mean of its class
    coords = np.asarray(projection(store, ds, "z", "pca")["coords"])
    meta = store.metadata(ds)
    j = list(cent["text"]).index("c1")
    mean = coords[meta["label"].to_numpy() == "c1"].mean(0)
    assert (cent["x"][j], cent["y"][j]) == (
        pytest.approx(mean[0], abs=1e-4),
        pytest.approx(mean[1], abs=1e-4),
    )
    point = fig["data"][TRACE_OFFSET]
    assert point["marker"].get("cmax") == 1.0  # coloured by k-NN recall
    assert "trustworthiness" in str(note)


def test_failed_task_is_not_requested_again(env):
    store, ds = env
    projection(store, ds, "z", "pca")
    spec, diag = specs(store, f"?ds={ds}&layer=z&method=pca&ov=trust")
    t = tasks.missing_tasks(store, spec, diag)[0]
    done = {"nonce": 1, "errors": [{"task": t, "error": "boom"}]}
    assert tasks.plan(store, spec, diag, done, {"tasks": [t], "nonce": 1}) is no_update
    assert tasks.task_error(done, t) == "boom"
    fig, _, _, note, _ = scatter.render(store, spec, None, None, None, None, None, None, diag, done)
    assert "could not be computed: boom" in str(note)


def test_bad_inputs_200_classes_singletons_integer_labels_constant_layer(tmp_path):
    """200 classes (one with a single member), integer labels vs string predictions, and a
    layer whose output is constant: every panel draws and explains, nothing raises."""
    from latentmap.components.figures import MAX_CATEGORIES

    store = Store(tmp_path / "cache")
    rng = np.random.default_rng(1)
    n = 1201
    labels = np.arange(n) % 200
    labels[-1] = 200  # class 200 has one member
    z = (rng.normal(0, 1, (201, 16))[labels] + rng.normal(0, 0.3, (n, 16))).astype(np.float32)
    pred = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 201).astype(str)  # strings
    meta = pd.DataFrame({"label": labels, "pred": pred})  # integers vs strings
    const = np.ones((n, 4), np.float32)
    ds = write_dataset(store, name="many", vectors={"z": z, "dead": const}, metadata=meta)
    spec, diag = specs(store, f"?ds={ds}&layer=z&method=pca&tab=diag&ov=centroids")
    done = run_all(store, spec, diag)
    assert done is None or done["errors"] == []
    note, table, heat, cvd = diagnostics.panel(store, diag, done)
    z_heat = np.asarray(heat["data"][0]["z"], dtype=float)
    assert z_heat.shape == (201, 201)
    assert abs(np.diag(z_heat).mean() - 0.8) < 0.1  # 3 == "3": the diagonal is filled
    assert "text" not in heat["data"][0] or not heat["data"][0].get("texttemplate")
    rows = {tr.children[0].children: tr for tr in table.children[1].children}
    assert "same vector" in str(rows["dead"]) or "–" in str(rows["dead"])
    # the map with centroids: legend capped, the singleton's centroid drawn, a note about it
    projection(store, ds, "z", "pca")
    fig, _, _, note, _ = scatter.render(store, spec, None, None, None, None, None, None, diag, done)
    legend = [t for t in fig["data"] if t.get("type") == "scattergl" and t.get("showlegend")]
    assert len(legend) <= MAX_CATEGORIES
    cent = next(t for t in fig["data"] if t.get("mode") == "markers+text")
    assert "200" in cent["text"] and len(cent["text"]) == 201
    # the constant layer: PCA map and diagnostics do not crash
    spec2, diag2 = specs(store, f"?ds={ds}&layer=dead&method=pca&tab=diag&ov=centroids&ov=trust")
    done2 = run_all(store, spec2, diag2)
    projection(store, ds, "dead", "pca")
    fig2, _, _, note2, _ = scatter.render(
        store, spec2, None, None, None, None, None, None, diag2, done2
    )
    assert fig2["data"]
    diagnostics.panel(store, diag2, done2)


@pytest.mark.slow
def test_report_button_writes_a_zip_served_by_its_route(demo):
    import io
    import zipfile

    from latentmap.app import create_app
    from latentmap.settings import Settings

    store, ds = demo
    _, diag = specs(store, f"?ds={ds}&tab=diag&layers=head")
    messages = []
    name, notes = diagnostics.write_report_zip(store, diag, messages.append)
    assert diagnostics.REPORT_NAME.match(name) and messages
    client = create_app(Settings(cache_dir=store.root)).server.test_client()
    resp = client.get(f"/reports/{ds}/{name}")
    assert resp.status_code == 200
    files = set(zipfile.ZipFile(io.BytesIO(resp.data)).namelist())
    assert {"report.html", "latent_head.png", "confusion_vs_distance.png"} <= files
    for bad in (f"/reports/{ds}/x.zip", f"/reports/{ds}/report.html", "/reports/a.b/x.zip"):
        assert client.get(bad).status_code == 404, bad
    sneaky = client.get(f"/reports/{ds}/../../etc/passwd")  # normalised to /etc/passwd
    assert b"root:" not in sneaky.data and sneaky.mimetype != "application/zip"
