"""The static report (seed 001's outputs) on the real demo, from Python and from the CLI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latentmap.cli import main
from latentmap.components.diagnostic_figures import confusion_heatmap
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.store import Store
from latentmap.report import (
    CVD_COLS,
    CVD_H,
    CVD_W,
    LEGEND_W,
    PANEL_H,
    PANEL_W,
    SCALE,
    TITLE_H,
    ReportError,
    grid_figure,
    write_report,
)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def _no_external_scripts(text: str) -> bool:
    return re.search(r"<script[^>]*\bsrc\s*=", text) is None


@pytest.fixture(scope="module")
def nopred(tmp_path_factory) -> tuple[Store, str]:
    """A small labelled dataset without a predictions column (two layers, odd layer name)."""
    rng = np.random.default_rng(0)
    n = 60
    label = np.repeat(["cat", "dog", "owl"], n // 3)
    centers = {"cat": 0, "dog": 1, "owl": 2}
    base = np.eye(3, 6)[[centers[v] for v in label]] * 4
    vectors = {
        "block/1": (base + rng.normal(size=(n, 6))).astype(np.float32),
        "out": (base[:, :4] + rng.normal(size=(n, 4))).astype(np.float32),
    }
    store = Store(tmp_path_factory.mktemp("nopred-cache"))
    ds = write_dataset(
        store, name="nopred", vectors=vectors, metadata=pd.DataFrame({"label": label})
    )
    return store, ds


# --------------------------------------------------------------------------- pure layout


def test_grid_figure_places_panels_and_shows_each_legend_group_once():
    panel = {
        "data": [{"type": "scatter", "name": "a", "legendgroup": "a", "x": [0], "y": [0]}],
        "layout": {"xaxis": {"visible": False}, "yaxis": {"visible": False}},
    }
    fig = grid_figure(
        [[panel, panel], [panel, None]], [["1", "2"], ["3", ""]], panel_w=100, panel_h=80
    )
    lay = fig["layout"]
    assert (lay["width"], lay["height"]) == (2 * 100 + LEGEND_W, 2 * 80 + TITLE_H)
    assert [(t["xaxis"], t["yaxis"]) for t in fig["data"]] == [
        ("x", "y"),
        ("x2", "y2"),
        ("x3", "y3"),
    ]
    assert [t.get("showlegend", True) for t in fig["data"]] == [True, False, False]
    assert lay["xaxis2"]["domain"][0] > lay["xaxis"]["domain"][1]  # side by side
    assert lay["yaxis3"]["domain"][1] < lay["yaxis"]["domain"][0]  # second row below
    assert [a["text"] for a in lay["annotations"]] == ["1", "2", "3"]


# --------------------------------------------------------------------------- the demo report


@pytest.mark.slow
def test_report_on_demo_writes_every_output(demo, tmp_path):
    store, ds = demo
    out = tmp_path / "deep" / "report"
    (out.parent).mkdir()
    calls = []
    res = write_report(store, ds, out, progress=lambda f, m: calls.append((f, m)))
    layers = store.layers(ds)
    names = {p.name for p in res.files}
    expected = {f"latent_{x}.png" for x in layers} | {
        "latent_spaces_static.png",
        "confusion_vs_distance.png",
        "confusion_matrix.png",
        "report.html",
    }
    assert names == expected
    assert all(p.parent == out and p.is_file() for p in res.files)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temp files left
    # PNG pixel sizes follow the layout: panels x methods (+ legend), x SCALE
    for layer in layers:
        assert _png_size(out / f"latent_{layer}.png") == (
            (2 * PANEL_W + LEGEND_W) * SCALE,
            (PANEL_H + TITLE_H) * SCALE,
        )
    assert _png_size(out / "latent_spaces_static.png") == (
        (2 * PANEL_W + LEGEND_W) * SCALE,
        (len(layers) * PANEL_H + TITLE_H) * SCALE,
    )
    cols = min(CVD_COLS, len(layers))
    rows = math.ceil(len(layers) / cols)
    assert _png_size(out / "confusion_vs_distance.png") == (
        (cols * CVD_W + LEGEND_W) * SCALE,
        (rows * CVD_H + TITLE_H) * SCALE,
    )
    heat = confusion_heatmap([str(i) for i in range(10)], np.eye(10))["layout"]
    assert _png_size(out / "confusion_matrix.png") == (
        heat["width"] * SCALE,
        heat["height"] * SCALE,
    )
    text = (out / "report.html").read_text()
    assert _no_external_scripts(text)
    for layer in layers:
        assert f"Layer {layer}:" in text and f"Confusion vs centroid distance: {layer}" in text
    assert "Confusion matrix" in text and "trustworthiness" in text and "Spearman" in text
    assert text.count("Plotly.newPlot(") == 2 * len(layers) + 1
    # progress went from start to done, never backwards
    fracs = [f for f, _ in calls]
    assert fracs[-1] == 1.0 and fracs == sorted(fracs)
    # a second run overwrites in place
    before = (out / "confusion_matrix.png").stat().st_mtime_ns
    write_report(store, ds, out, layers=["head"], methods=["pca"])
    assert (out / "confusion_matrix.png").stat().st_mtime_ns > before


def test_report_rejects_unknown_layer_method_column(demo, tmp_path):
    store, ds = demo
    with pytest.raises(ReportError, match="no layer 'nope'"):
        write_report(store, ds, tmp_path, layers=["nope"])
    with pytest.raises(ValueError, match="unknown projection method 'tsnee'"):
        write_report(store, ds, tmp_path, methods=["tsnee"])
    with pytest.raises(ReportError, match="no column 'colour'"):
        write_report(store, ds, tmp_path, color="colour")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_report_writes_files_and_exits_0(demo, tmp_path, capsys):
    store, ds = demo
    out = tmp_path / "r"
    code, stdout, err = run(
        capsys,
        "--cache-dir",
        store.root,
        "report",
        "digits-demo",
        "--out",
        out,
        "--layers",
        "encoder",
        "--methods",
        "tsne",
    )
    assert code == 0, err
    wrote = [
        line.removeprefix("wrote ") for line in stdout.splitlines() if line.startswith("wrote")
    ]
    assert {Path(p).name for p in wrote} == {
        "latent_encoder.png",
        "latent_spaces_static.png",
        "confusion_vs_distance.png",
        "confusion_matrix.png",
        "report.html",
    }
    assert all(Path(p).is_file() for p in wrote)
    assert _png_size(out / "latent_encoder.png") == (
        (PANEL_W + LEGEND_W) * SCALE,
        (PANEL_H + TITLE_H) * SCALE,
    )
    assert "report" in err  # progress on stderr, not stdout
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "no-such-dataset", "--out", "{out}"], "no dataset 'no-such-dataset'"),
        (["report", "{ds}", "--out", "{out}", "--methods", "tsne,pcaa"], "'pcaa'"),
        (["report", "{ds}", "--out", "{out}", "--layers", "encoder,fc9"], "no layer 'fc9'"),
        (["report", "{ds}", "--out", "{out}", "--pred", "prediction"], "'prediction'"),
        (["report", "{ds}", "--out", "{out}", "--true", "klass"], "'klass'"),
        (["report", "{ds}", "--out", "{out}", "--methods", ","], "at least one"),
    ],
)
def test_cli_report_user_errors_are_one_line(demo, tmp_path, capsys, args, message):
    store, ds = demo
    argv = [a.format(ds=ds, out=tmp_path / "out") for a in args]
    code, stdout, err = run(capsys, "--cache-dir", store.root, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentmap: error: "), err
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_report_without_predictions_writes_maps_and_a_note(nopred, tmp_path, capsys):
    store, ds = nopred
    out = tmp_path / "r"
    code, stdout, err = run(
        capsys, "--cache-dir", store.root, "report", ds, "--out", out, "--methods", "pca"
    )
    assert code == 0, err
    files = sorted(p.name for p in out.iterdir())
    # "block/1" is sanitised for the file name
    assert files == [
        "latent_block_1.png",
        "latent_out.png",
        "latent_spaces_static.png",
        "report.html",
    ]
    notes = [line for line in stdout.splitlines() if line.startswith("note: ")]
    assert any("no predictions column 'pred'" in n and "--predictions" in n for n in notes)
    text = (out / "report.html").read_text()
    assert "no predictions column" in text and "block/1" in text
    assert _no_external_scripts(text)
    assert _png_size(out / "latent_spaces_static.png") == (
        (PANEL_W + LEGEND_W) * SCALE,
        (2 * PANEL_H + TITLE_H) * SCALE,
    )


def test_report_without_chromium_still_writes_the_html(nopred, tmp_path, capsys, monkeypatch):
    store, ds = nopred
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing-chromium"))
    out = tmp_path / "r"
    code, stdout, err = run(
        capsys, "--cache-dir", store.root, "report", ds, "--out", out, "--methods", "pca"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("latentmap: error: PNG export needs Chromium")
    assert "apt install chromium" in lines[-1] and "report.html" in lines[-1]
    assert not [x for x in lines if x.startswith("latentmap:")][:-1]  # one error line
    assert (out / "report.html").is_file()
    assert not list(out.glob("*.png"))
