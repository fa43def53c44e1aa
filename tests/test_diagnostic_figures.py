"""Diagnostic figure functions (pure dicts) and their static / HTML export."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from latentmap.components.diagnostic_figures import (
    CELL_TEXT_MAX,
    GL_MIN_PAIRS,
    NEVER_CONFUSED_COLOR,
    StaticExportError,
    cell_from_click,
    centroid_traces,
    confusion_distance_figure,
    confusion_heatmap,
    ellipse_points,
    pair_from_click,
    render_pngs,
    static_copy,
    write_html,
    write_png,
)
from latentmap.components.figures import typed_array
from latentmap.pipeline.diagnostics import confusion_vs_distance


def _labels(k: int, n: int, seed: int = 0, acc: float = 0.7):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < acc, true, rng.integers(0, k, n))
    return true, pred


def _pairs(k: int, seed: int = 0):
    """confusion_vs_distance output reshaped like confusion_distance_for's arrays."""
    true, pred = _labels(k, 40 * k, seed)
    X = np.random.default_rng(seed).normal(size=(len(true), 8)).astype(np.float32)
    X += np.eye(k, 8, dtype=np.float32)[true % 8] * 3
    out = confusion_vs_distance(X, true, pred)
    classes = out["classes"]
    index = {c: i for i, c in enumerate(classes)}
    p = out["pairs"]
    arrays = {
        "a_idx": np.array([index[a] for a in p["a"]]),
        "b_idx": np.array([index[b] for b in p["b"]]),
        "rate": np.asarray(p["rate"]),
        "count": np.asarray(p["count"]),
        "cosine": np.asarray(p["cosine"]),
        "euclidean": np.asarray(p["euclidean"]),
    }
    return classes, arrays, out


# --------------------------------------------------------------------------- heatmap


def test_heatmap_matches_sklearn_row_normalised_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    true, pred = _labels(7, 500)
    classes = [str(c) for c in range(7)]
    M = confusion_matrix(true, pred, labels=range(7))
    fig = confusion_heatmap(classes, M, true_name="label", pred_name="pred")
    (trace,) = fig["data"]
    expected = confusion_matrix(true, pred, labels=range(7), normalize="true")
    np.testing.assert_allclose(np.array(trace["z"]), expected, atol=1e-6)
    assert trace["y"] == classes and trace["x"] == classes  # rows true, columns predicted
    assert fig["layout"]["yaxis"]["autorange"] == "reversed"  # first class at the top
    custom = np.array(trace["customdata"])
    np.testing.assert_array_equal(custom[..., 0], M)
    np.testing.assert_allclose(custom[..., 1], expected, atol=1e-6)
    assert "→ predicted" in trace["hovertemplate"] and "items" in trace["hovertemplate"]
    assert len(trace["text"]) == 7  # k <= 20: cell text
    counts = confusion_heatmap(classes, M, normalize=False)["data"][0]
    np.testing.assert_array_equal(np.array(counts["z"]), M)


def test_heatmap_click_round_trips_every_cell():
    classes = ["cat", "dog", "7", "bird"]
    M = np.arange(16).reshape(4, 4)
    (trace,) = confusion_heatmap(classes, M)["data"]
    for i, true in enumerate(classes):
        for j, pred in enumerate(classes):
            # what plotly.js puts in clickData for cell (row i, column j)
            click = {"points": [{"curveNumber": 0, "x": trace["x"][j], "y": trace["y"][i]}]}
            assert cell_from_click(click) == (true, pred)
    for bad in (None, {}, {"points": []}, {"points": [{"x": "a"}]}, {"points": "x"}, "junk"):
        assert cell_from_click(bad) is None


def test_heatmap_200_classes_is_readable():
    k = 200
    rng = np.random.default_rng(1)
    M = rng.integers(0, 5, (k, k)) + np.eye(k, dtype=int) * 50
    fig = confusion_heatmap([f"class_{i}" for i in range(k)], M)
    (trace,) = fig["data"]
    assert k > CELL_TEXT_MAX
    assert "text" not in trace and "texttemplate" not in trace
    lay = fig["layout"]
    assert lay["xaxis"]["type"] == lay["yaxis"]["type"] == "category"
    assert lay["xaxis"]["tickfont"]["size"] <= 8
    assert lay["yaxis"]["scaleanchor"] == "x"  # square cells whatever the container
    assert max(lay["width"], lay["height"]) <= 1400
    assert np.array(trace["z"]).shape == (k, k)


def test_heatmap_highlight_outlines_that_cell():
    classes = ["a", "b", "c"]
    fig = confusion_heatmap(classes, np.ones((3, 3)), highlight=("c", "a"))
    (rect,) = fig["layout"]["shapes"]
    assert (rect["x0"], rect["x1"]) == (-0.5, 0.5)  # predicted a = column 0
    assert (rect["y0"], rect["y1"]) == (1.5, 2.5)  # true c = row 2
    assert (
        confusion_heatmap(classes, np.ones((3, 3)), highlight=("x", "a"))["layout"]["shapes"] == []
    )
    with pytest.raises(ValueError, match="shape"):
        confusion_heatmap(classes, np.ones((2, 2)))


# --------------------------------------------------------------------------- confusion vs distance


def test_confusion_distance_points_round_trip_and_style():
    classes, pairs, out = _pairs(6)
    fig = confusion_distance_figure(
        classes, pairs, spearman=out["spearman_cosine"], layer="enc", label_top=4
    )
    never, confused, labels, ring = fig["data"]
    n = len(pairs["rate"])
    assert len(never["x"]) + len(confused["x"]) == n
    assert never["marker"]["color"] == NEVER_CONFUSED_COLOR
    seen = {}
    for trace in (never, confused):
        for x, y, cd in zip(trace["x"], trace["y"], trace["customdata"], strict=True):
            pair = pair_from_click({"points": [{"x": x, "y": y, "customdata": cd}]})
            seen[pair] = (y, x, cd[2])
    for a, b, r, c, d in zip(
        pairs["a_idx"], pairs["b_idx"], pairs["rate"], pairs["count"], pairs["cosine"], strict=True
    ):
        y, x, count = seen[(classes[a], classes[b])]
        assert y == pytest.approx(r) and x == pytest.approx(d) and count == c
    assert all(cd[2] == 0 for cd in never["customdata"])
    assert all(cd[2] > 0 for cd in confused["customdata"])
    # the labelled pairs are the most confused ones, written A→B
    top = sorted(
        zip(pairs["rate"], pairs["a_idx"], pairs["b_idx"], strict=True), key=lambda t: -t[0]
    )[:4]
    assert set(labels["text"]) == {f"{classes[a]}→{classes[b]}" for _, a, b in top}
    assert "→" in confused["hovertemplate"] and "distance" in confused["hovertemplate"]
    rho, p = out["spearman_cosine"]
    assert f"Spearman ρ = {rho:.2f}" in fig["layout"]["title"]["text"]
    assert confused["type"] == "scatter" and ring["x"] == []
    for bad in (None, {"points": [{"customdata": ["a"]}]}, {"points": [{"x": 1}]}):
        assert pair_from_click(bad) is None


def test_confusion_distance_highlight_spearman_na_and_webgl():
    classes, pairs, _ = _pairs(4)
    a, b = classes[pairs["a_idx"][0]], classes[pairs["b_idx"][0]]
    fig = confusion_distance_figure(classes, pairs, highlight=(a, b), metric="euclidean")
    ring = fig["data"][-1]
    assert ring["x"] == [pytest.approx(pairs["euclidean"][0])]
    title = fig["layout"]["title"]["text"]
    assert "Spearman ρ: n/a (not computed)" in title
    none = {**pairs, "rate": np.zeros_like(pairs["rate"]), "count": np.zeros_like(pairs["count"])}
    title = confusion_distance_figure(classes, none, spearman=[None, None])["layout"]["title"]
    assert "n/a (no confusions)" in title["text"]
    big_classes, big, _ = _pairs(80)
    assert len(big["rate"]) > GL_MIN_PAIRS
    fig = confusion_distance_figure(big_classes, big)
    assert {t["type"] for t in fig["data"][:2]} == {"scattergl"}
    assert not any(t["type"] == "scattergl" for t in static_copy(fig)["data"])


# --------------------------------------------------------------------------- centroids


def test_ellipse_of_diagonal_covariance_has_two_sd_semi_axes():
    pts = ellipse_points([10.0, -3.0], np.diag([4.0, 1.0]))
    dx, dy = pts[:, 0] - 10.0, pts[:, 1] + 3.0
    assert dx.max() == pytest.approx(4.0) and dx.min() == pytest.approx(-4.0)  # 2 * sqrt(4)
    assert dy.max() == pytest.approx(2.0, abs=1e-2) and dy.min() == pytest.approx(-2.0, abs=1e-2)
    np.testing.assert_allclose((dx / 4) ** 2 + (dy / 2) ** 2, 1.0, atol=1e-9)
    np.testing.assert_allclose(pts[0], pts[-1])  # closed
    # rotated by 45 degrees: the long axis lies on the diagonal
    c = np.array([[2.5, 1.5], [1.5, 2.5]])  # eigenvalues 4 and 1
    r = np.linalg.norm(ellipse_points([0, 0], c), axis=1)
    assert r.max() == pytest.approx(4.0, abs=1e-2) and r.min() == pytest.approx(2.0, abs=1e-2)
    assert ellipse_points([0, 0], np.full((2, 2), np.nan)) is None


def test_centroid_traces_markers_and_ellipses():
    classes = ["a", "b", "c"]
    xy = np.array([[0.0, 0.0], [5.0, 5.0], [np.nan, np.nan]])
    cov = np.array([np.diag([1.0, 1.0]), np.full((2, 2), np.nan), np.eye(2)])
    lines, marks = centroid_traces(
        classes, xy, {"a": "#ff0000", "b": "#00ff00"}, cov=cov, ellipses=True
    )
    assert marks["text"] == ["a", "b"]  # NaN position left out
    assert marks["marker"]["color"] == ["#ff0000", "#00ff00"]
    assert marks["marker"]["line"]["color"] == "#111111" and marks["marker"]["line"]["width"] >= 2
    assert marks["type"] == "scatter" and "text" in marks["mode"]
    assert lines["hoverinfo"] == "skip" and lines["mode"] == "lines"
    assert lines["x"].count(None) == 1  # only class a has a finite covariance
    xs = np.array([v for v in lines["x"] if v is not None])
    assert xs.max() == pytest.approx(2.0)  # 2 SD of unit variance
    assert centroid_traces(classes, xy, None)[0]["mode"] == "markers+text"  # no ellipses


def test_static_copy_has_no_webgl_and_leaves_the_original():
    fig = {
        "data": [{"type": "scattergl", "x": typed_array(np.arange(3.0))}, {"type": "heatmap"}],
        "layout": {"paper_bgcolor": "rgba(0,0,0,0)"},
    }
    out = static_copy(fig)
    assert [t["type"] for t in out["data"]] == ["scatter", "heatmap"]
    assert out["data"][0]["x"] == fig["data"][0]["x"]  # typed arrays kept
    assert fig["data"][0]["type"] == "scattergl"
    assert out["layout"]["paper_bgcolor"] == "#ffffff"


# --------------------------------------------------------------------------- export


def test_write_html_is_standalone(tmp_path):
    classes, pairs, out = _pairs(4)
    figs = [
        ("heat </script> map", confusion_heatmap(classes, out["matrix"])),
        ("pairs", confusion_distance_figure(classes, pairs)),
        ("nan", {"data": [{"type": "scatter", "x": [1.0, float("nan")], "y": [1, 2]}]}),
    ]
    path = write_html(figs, tmp_path / "r.html", title="T <1>")
    text = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)
    assert "Plotly.newPlot" in text and text.count("<h2>") == 3
    assert "heat &lt;/script&gt; map" in text and "<title>T &lt;1&gt;</title>" in text
    assert "NaN" not in text.split("Plotly.newPlot", 1)[1]
    payload = text.split('Plotly.newPlot("fig-2",', 1)[1].split(",{", 1)[0]
    assert json.loads(payload)[0]["x"] == [1.0, None]
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a plain file's mode, not 0600


def test_missing_browser_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(StaticExportError, match="apt install chromium"):
        write_png({"data": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_png_renders_typed_arrays_with_system_chromium(tmp_path):
    """scattergl + base64 typed arrays -> static_copy -> kaleido: the points land where the
    data says (typed arrays need no conversion to lists)."""
    from PIL import Image

    fig = {
        "data": [
            {
                "type": "scattergl",
                "mode": "markers",
                "x": typed_array(np.array([0.0, 1.0])),
                "y": typed_array(np.array([0.0, 1.0])),
                "marker": {"size": 30, "color": "#ff0000"},
            }
        ],
        "layout": {
            "xaxis": {"range": [-1, 2], "visible": False},
            "yaxis": {"range": [-1, 2], "visible": False},
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "showlegend": False,
        },
    }
    path = write_png(fig, tmp_path / "p.png", width=300, height=300, scale=2)
    im = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert im.shape == (600, 600, 3)
    red = (im[..., 0] > 200) & (im[..., 1] < 80) & (im[..., 2] < 80)
    # (0, 0) -> pixel (200, 400), (1, 1) -> (400, 200) with y pointing up
    assert red[395:405, 195:205].all() and red[195:205, 395:405].all()
    assert not red[295:305, 295:305].any()
    (png,) = render_pngs([(confusion_heatmap(["a", "b"], np.eye(2)), 400, 300)], scale=1)
    assert Image.open(io.BytesIO(png)).size == (400, 300)


def test_png_export_tries_again_only_while_kaleidos_page_was_not_ready():
    from latentmap.components.diagnostic_figures import _retry_page_not_ready

    class JavascriptError(Exception):  # the name kaleido's error class has
        pass

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise JavascriptError("ReferenceError: kaleido_scopes is not defined")
        return b"png"

    assert _retry_page_not_ready(flaky) == b"png" and len(calls) == 3
    calls.clear()
    with pytest.raises(JavascriptError):  # not ready on the last try: the error stays
        _retry_page_not_ready(flaky, attempts=2)
    assert len(calls) == 2

    def broken():
        calls.append(1)
        raise JavascriptError("TypeError: figure is invalid")

    calls.clear()
    with pytest.raises(JavascriptError, match="invalid"):  # any other error: no second try
        _retry_page_not_ready(broken)
    assert len(calls) == 1
