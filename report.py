"""A static report of a dataset, as seed 001 writes after training: per layer the t-SNE and
UMAP maps side by side with class centroids, one grid of every map, the classifier's
confusion matrix, confusion rate vs latent centroid distance per layer, and one standalone
interactive HTML page with all of it plus a per-layer table (silhouette, Spearman, accuracy,
trustworthiness, k-NN recall).

The maps are built from the same ``trace_groups`` / ``scatter_figure`` traces the app draws,
laid out as subplots; PNGs come from kaleido driving the system Chromium.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[float, str], None]

PANEL_W = 480  # one map panel, CSS pixels (PNG pixels = x SCALE)
PANEL_H = 440
LEGEND_W = 150  # right margin holding the legend
TITLE_H = 60  # top margin holding the figure title
CVD_W = 480  # one confusion-vs-distance panel
CVD_H = 420
CVD_COLS = 3  # panels per row in confusion_vs_distance.png
SCALE = 2
# Maps with more points than this stay WebGL in the HTML page (SVG is fine below).
HTML_SVG_MAX_POINTS = 20_000


class ReportError(ValueError):
    """A report request that cannot be honoured (unknown layer, method or column)."""


@dataclass
class ReportResult:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- subplot grids


def _axis_name(kind: str, n: int) -> tuple[str, str]:
    """('x2', 'xaxis2') for the n-th (0-based) axis; ('x', 'xaxis') for the first."""
    suffix = "" if n == 0 else str(n + 1)
    return f"{kind}{suffix}", f"{kind}axis{suffix}"


def grid_figure(
    panels: Sequence[Sequence[dict[str, Any] | None]],
    titles: Sequence[Sequence[str]],
    *,
    panel_w: int,
    panel_h: int,
    title: str = "",
    frame: bool = True,
    pad: tuple[int, int] = (0, 0),
    legend_title: str = "",
) -> dict[str, Any]:
    """Lay figure dicts out as a rows x columns grid of subplots (one figure dict).

    Each panel's traces move to its own x/y axes, its ``xaxis``/``yaxis`` settings come along
    with a domain, its title becomes an annotation above it; a legend group shows once.
    ``pad`` (left, bottom) pixels inside each cell leave room for visible tick labels and
    axis titles. Size: (columns * panel_w + LEGEND_W) x (rows * panel_h + TITLE_H) CSS pixels.
    """
    n_rows = len(panels)
    n_cols = max((len(r) for r in panels), default=0)
    width = n_cols * panel_w + LEGEND_W
    height = n_rows * panel_h + TITLE_H
    gap_x = 12 / max(n_cols * panel_w, 1)
    gap_top = 34 / max(n_rows * panel_h, 1)  # room for the panel title
    gap_bottom = 14 / max(n_rows * panel_h, 1)
    data: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "width": width,
        "height": height,
        "margin": {"l": 10, "r": LEGEND_W, "t": TITLE_H, "b": 10},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hovermode": "closest",
        "showlegend": True,
        "legend": {
            "x": 1.01,
            "xanchor": "left",
            "y": 1,
            "yanchor": "top",
            "itemsizing": "constant",
            "font": {"size": 11},
            "title": {"text": legend_title},
        },
    }
    if title:
        layout["title"] = {"text": title, "x": 0.5, "xanchor": "center", "font": {"size": 17}}
    seen_groups: set[str] = set()
    scale_shown = False
    n = 0
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            if panel is None:
                continue
            xref, xkey = _axis_name("x", n)
            yref, ykey = _axis_name("y", n)
            x0 = c / n_cols + gap_x + pad[0] / (n_cols * panel_w)
            x1 = (c + 1) / n_cols - gap_x
            y0 = 1 - (r + 1) / n_rows + gap_bottom + pad[1] / (n_rows * panel_h)
            y1 = 1 - r / n_rows - gap_top
            playout = panel.get("layout", {})
            xa = {k: v for k, v in playout.get("xaxis", {}).items() if k != "domain"}
            ya = {k: v for k, v in playout.get("yaxis", {}).items() if k != "domain"}
            ya.pop("scaleanchor", None)
            layout[xkey] = {**xa, "domain": [x0, x1], "anchor": yref}
            layout[ykey] = {**ya, "domain": [y0, y1], "anchor": xref}
            for trace in panel.get("data", []):
                t = dict(trace)
                t["xaxis"], t["yaxis"] = xref, yref
                group = t.get("legendgroup") or t.get("name")
                if t.get("showlegend", True) and group is not None:
                    if group in seen_groups:
                        t["showlegend"] = False
                    else:
                        seen_groups.add(group)
                marker = t.get("marker")
                if isinstance(marker, dict) and marker.get("showscale"):
                    if scale_shown:
                        t["marker"] = {**marker, "showscale": False}
                    else:
                        scale_shown = True
                data.append(t)
            text = titles[r][c] if r < len(titles) and c < len(titles[r]) else ""
            if text:
                annotations.append(
                    {
                        "text": text,
                        "xref": "paper",
                        "yref": "paper",
                        "x": (x0 + x1) / 2,
                        "y": y1,
                        "xanchor": "center",
                        "yanchor": "bottom",
                        "showarrow": False,
                        "font": {"size": 13},
                    }
                )
            if frame:
                shapes.append(
                    {
                        "type": "rect",
                        "xref": "paper",
                        "yref": "paper",
                        "x0": x0,
                        "x1": x1,
                        "y0": y0,
                        "y1": y1,
                        "line": {"color": "#d5d8de", "width": 1},
                        "layer": "below",
                    }
                )
            n += 1
    layout["annotations"] = annotations
    layout["shapes"] = shapes
    return {"data": data, "layout": layout}


# --------------------------------------------------------------------------- helpers


def _method_label(method: str) -> str:
    from latentmap.pipeline.reduce import _LABELS

    return _LABELS.get(method, method)


def _file_stems(layers: Sequence[str]) -> dict[str, str]:
    """layer -> file-system safe stem, unique even when two names sanitise alike."""
    from latentmap.pipeline.store import safe_name

    out: dict[str, str] = {}
    used: set[str] = set()
    for layer in layers:
        base = safe_name(layer)
        stem, i = base, 2
        while stem.lower() in used:
            stem, i = f"{base}_{i}", i + 1
        used.add(stem.lower())
        out[layer] = stem
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"


def _check_request(store, ds_id: str, layers, methods, meta, color) -> tuple[list[str], list[str]]:
    from latentmap.pipeline.reduce import _check_method

    all_layers = store.layers(ds_id)
    layers = list(layers if layers else all_layers)
    for layer in layers:
        if layer not in all_layers:
            raise ReportError(
                f"dataset {ds_id} has no layer {layer!r}; it has: {', '.join(all_layers)}"
            )
    if not layers:
        raise ReportError(f"dataset {ds_id} has no layers")
    methods = [_check_method(m) for m in methods]
    if not methods:
        raise ReportError("no projection method given: use tsne, umap and/or pca")
    methods = list(dict.fromkeys(methods))
    if color is not None and color not in meta.columns:
        raise ReportError(
            f"dataset {ds_id} has no column {color!r}; columns: {', '.join(map(str, meta.columns))}"
        )
    return list(dict.fromkeys(layers)), methods


class _Steps:
    """Progress over weighted steps: ``step(weight, message)`` returns a sub-progress."""

    def __init__(self, progress: Progress | None, total: float):
        self.progress = progress
        self.total = max(total, 1e-9)
        self.done = 0.0

    def say(self, message: str, within: float = 0.0, weight: float = 0.0) -> None:
        if self.progress is not None:
            frac = (self.done + within * weight) / self.total
            self.progress(float(min(max(frac, 0.0), 1.0)), message)

    def advance(self, weight: float) -> None:
        self.done += weight


# --------------------------------------------------------------------------- the report


def write_report(
    store,
    ds_id: str,
    out_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    methods: Sequence[str] = ("tsne", "umap"),
    true_col: str = "label",
    pred_col: str = "pred",
    color: str | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Write the seed-001 outputs of ``ds_id`` into ``out_dir`` (created; files replaced
    atomically) and return the files written and notes (what was skipped and why).

    Missing projections are computed (with progress). Without a ``pred_col`` column the maps
    are still written and the confusion outputs are skipped with a note; without a
    ``true_col`` column the maps are uncoloured and have no centroids.
    """
    from latentmap.components.diagnostic_figures import (
        StaticExportError,
        centroid_traces,
        confusion_distance_figure,
        confusion_heatmap,
        render_pngs,
        save_file,
        static_copy,
        write_html,
    )
    from latentmap.components.figures import TRACE_OFFSET, scatter_figure, trace_groups
    from latentmap.pipeline import diagnostics as dg
    from latentmap.pipeline.reduce import cached_projection, projection

    t_start = time.perf_counter()
    meta = store.metadata(ds_id)
    layers, methods = _check_request(store, ds_id, layers, methods, meta, color)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult()
    notes = result.notes
    columns = ", ".join(map(str, meta.columns))
    has_true = true_col in meta.columns
    has_pred = has_true and pred_col in meta.columns
    if not has_true:
        notes.append(
            f"no label column '{true_col}' (columns: {columns}): maps are drawn without "
            "class colours or centroids and the confusion outputs are skipped; pick the "
            "label column with --true COL"
        )
    elif not has_pred:
        notes.append(
            f"no predictions column '{pred_col}': confusion_matrix.png and "
            "confusion_vs_distance.png are skipped. To add predictions, encode again with "
            "--predictions LAYER (the classifier's output layer; its argmax becomes 'pred') "
            f"or add a '{pred_col}' column to the labels table (--labels), or name the "
            "column with --pred COL"
        )
    color = color if color is not None else (true_col if has_true else None)

    missing = [
        (layer, m)
        for layer in layers
        for m in methods
        if cached_projection(store, ds_id, layer, m) is None
    ]
    n_views = len(layers) * len(methods)
    steps = _Steps(progress, 10.0 * len(missing) + 2.0 * n_views + 2.0 * len(layers) + 6.0)

    # ---- projections (computed when missing) and the map panels
    for i, (layer, method) in enumerate(missing):
        label = f"{_method_label(method)} of {layer} ({i + 1}/{len(missing)})"
        steps.say(f"computing {label}")

        def sub(f: float, msg: str, label: str = label) -> None:
            steps.say(f"{label}: {msg}", f, 10.0)

        projection(store, ds_id, layer, method, progress=sub)
        steps.advance(10.0)

    stems = _file_stems(layers)
    hover = None
    if len(meta) <= HTML_SVG_MAX_POINTS:
        col = next((c for c in ("file", "id") if c in meta.columns), None)
        if col is not None:
            hover = meta[col].astype(str).to_numpy(dtype=object)
    map_panels: dict[str, list[dict[str, Any]]] = {}
    trust: dict[tuple[str, str], dict[str, Any]] = {}
    for layer in layers:
        entries = {m: projection(store, ds_id, layer, m) for m in methods}
        valid = store.valid_mask(ds_id, layer).copy()
        for e in entries.values():
            valid &= np.isfinite(e["coords"]).all(axis=1)
            for notice in e.info.get("notices", []):
                notes.append(f"{_method_label(e.info.get('method', ''))} of {layer}: {notice}")
        groups = trace_groups(meta, valid, color=color)
        colors = {g.name: g.color for g in groups if g.color}
        panels = []
        for method, entry in entries.items():
            steps.say(f"drawing {_method_label(method)} map of {layer}")
            fig = scatter_figure(entry["coords"], groups, meta, color=color)
            data = fig["data"][TRACE_OFFSET:]
            if hover is not None:  # the standalone page has no app tooltip: name each point
                for g, t in zip(groups, data, strict=False):
                    t["hovertext"] = hover[g.rows].tolist()
                    t["hoverinfo"] = "name+text"
            if has_true:
                try:
                    cm = dg.centroid_map(store, ds_id, layer, method, None, true_col)
                except dg.DiagnosticsError as e:
                    notes.append(f"centroids of {layer} / {method}: {e}")
                else:
                    data += centroid_traces(
                        cm.info["classes"],
                        cm["xy"],
                        colors if color == true_col else None,
                        cov=cm["cov"],
                        ellipses=True,
                        label=cm.info.get("label", "centroids"),
                    )
                    for note in cm.info.get("notes", []):
                        notes.append(f"centroids of {layer} / {_method_label(method)}: {note}")
            for t in data:
                if t.get("mode") == "lines":  # spread ellipses: off by default, one toggle
                    t["visible"] = "legendonly"
                    t["showlegend"] = True
                    t["name"] = "class spread (2 SD)"
                    t["legendgroup"] = "class spread"
            fig["data"] = data
            panels.append(fig)
            steps.advance(1.0)
            steps.say(f"trustworthiness of the {_method_label(method)} map of {layer}")
            try:
                trust[(layer, method)] = dict(dg.trust_for(store, ds_id, layer, method).info)
            except ValueError as e:  # too few items for k neighbours, ...
                notes.append(f"trustworthiness of {layer} / {_method_label(method)}: {e}")
            steps.advance(1.0)
        map_panels[layer] = panels

    # ---- per-layer diagnostics
    summaries: dict[str, dict[str, Any]] = {}
    cvd: dict[str, dict[str, Any]] = {}
    for layer in layers:
        steps.say(f"diagnostics of {layer}")
        if has_true:
            try:
                summaries[layer] = dg.layer_summary(store, ds_id, layer, true_col, pred_col)
            except dg.DiagnosticsError as e:
                notes.append(f"{layer}: {e}")
        if has_pred:
            try:
                entry = dg.confusion_distance_for(store, ds_id, layer, true_col, pred_col)
            except dg.DiagnosticsError as e:
                notes.append(f"confusion vs distance of {layer}: {e}")
            else:
                cvd[layer] = {
                    "figure": confusion_distance_figure(
                        entry.info["classes"],
                        entry.arrays,
                        metric="cosine",
                        spearman=entry.info.get("spearman_cosine"),
                        layer=layer,
                    ),
                    "info": entry.info,
                }
                for note in entry.info.get("notes", []):
                    notes.append(f"confusion vs distance of {layer}: {note}")
        steps.advance(2.0)

    heatmap = None
    if has_pred:
        classes, M = dg.confusion(meta[true_col], meta[pred_col])
        if len(classes):
            off = M.astype(np.float64).copy()
            np.fill_diagonal(off, -1)
            worst = None
            if off.max() > 0:
                i, j = np.unravel_index(int(np.argmax(off)), off.shape)
                worst = (classes[i], classes[j])
            heatmap = confusion_heatmap(
                classes, M, true_name=true_col, pred_name=pred_col, highlight=worst
            )
        else:
            notes.append(f"no item has both a '{true_col}' and a '{pred_col}': no matrix")

    # ---- figures: PNG jobs (fig, path, width, height) and HTML sections
    name = store.manifest(ds_id).get("name", ds_id)
    titles = [f"{_method_label(m)}" for m in methods]
    pngs: list[tuple[dict[str, Any], Path, int, int]] = []
    html_figs: list[tuple[str, dict[str, Any]]] = []
    for layer in layers:
        fig = grid_figure(
            [map_panels[layer]],
            [titles],
            panel_w=PANEL_W,
            panel_h=PANEL_H,
            title=f"{name}: layer {layer}",
            legend_title=color or "",
        )
        pngs.append((_shown(fig), out / f"latent_{stems[layer]}.png", *_size(fig)))
        n_points = len(meta) * len(methods)
        interactive = static_copy(fig) if n_points <= HTML_SVG_MAX_POINTS else fig
        html_figs.append((f"Layer {layer}: {' and '.join(titles)}", interactive))
    grid = grid_figure(
        [map_panels[layer] for layer in layers],
        [[f"{layer} · {t}" for t in titles] for layer in layers],
        panel_w=PANEL_W,
        panel_h=PANEL_H,
        title=f"{name}: latent spaces (rows: layers, columns: methods)",
        legend_title=color or "",
    )
    pngs.append((_shown(grid), out / "latent_spaces_static.png", *_size(grid)))
    if cvd:
        keys = list(cvd)
        n_cols = min(CVD_COLS, len(keys))
        rows = [keys[i : i + n_cols] for i in range(0, len(keys), n_cols)]
        panels = [[_cvd_panel(cvd[k]["figure"]) for k in r] for r in rows]
        ptitles = [
            [f"{k}: {cvd[k]['figure']['layout']['meta']['spearman']}" for k in r] for r in rows
        ]
        fig = grid_figure(
            panels,
            ptitles,
            panel_w=CVD_W,
            panel_h=CVD_H,
            title=f"{name}: confusion rate vs latent centroid distance (cosine)",
            frame=False,
            pad=(60, 40),
        )
        pngs.append((fig, out / "confusion_vs_distance.png", *_size(fig)))
    if heatmap is not None:
        pngs.append((heatmap, out / "confusion_matrix.png", *_size(heatmap)))
        html_figs.append(("Confusion matrix", heatmap))
    for layer, item in cvd.items():
        fig = {
            **item["figure"],
            "layout": {**item["figure"]["layout"], "width": 900, "height": 560},
        }
        html_figs.append((f"Confusion vs centroid distance: {layer}", fig))

    # ---- the HTML page first (so it exists even when PNG export is impossible)
    steps.say("writing report.html")
    intro = _intro_html(ds_id, name, layers, methods, summaries, trust, notes, has_pred)
    html_path = out / "report.html"
    write_html(html_figs, html_path, title=f"latentmap report: {name}", intro_html=intro)
    steps.advance(1.0)

    steps.say(f"writing {len(pngs)} PNG files (headless Chromium)")
    try:
        blobs = render_pngs([(f, w, h) for f, _, w, h in pngs], scale=SCALE)
    except StaticExportError as e:
        raise StaticExportError(f"{e}; the HTML report was written to {html_path}") from None
    for (_, path, _, _), data in zip(pngs, blobs, strict=True):
        result.files.append(save_file(path, data))
    result.files.append(html_path)
    steps.advance(5.0)
    steps.say(f"report written in {time.perf_counter() - t_start:.1f} s")
    return result


def _shown(fig: dict[str, Any]) -> dict[str, Any]:
    """The figure without traces that are hidden until picked in the legend (a PNG has no
    legend to click, so they would only leave a greyed-out entry)."""
    return {**fig, "data": [t for t in fig["data"] if t.get("visible") != "legendonly"]}


def _cvd_panel(fig: dict[str, Any]) -> dict[str, Any]:
    """A confusion-vs-distance figure as a grid panel: short axis titles (the grid titles it)."""
    layout = fig["layout"]
    xa = {**layout["xaxis"], "title": {"text": "centroid cosine distance"}, "automargin": False}
    ya = {**layout["yaxis"], "title": {"text": "confusion rate"}, "automargin": False}
    return {"data": fig["data"], "layout": {**layout, "xaxis": xa, "yaxis": ya}}


def _size(fig: dict[str, Any]) -> tuple[int, int]:
    layout = fig.get("layout", {})
    return int(layout.get("width", 900)), int(layout.get("height", 700))


def _intro_html(
    ds_id: str,
    name: str,
    layers: Sequence[str],
    methods: Sequence[str],
    summaries: dict[str, dict[str, Any]],
    trust: dict[tuple[str, str], dict[str, Any]],
    notes: Sequence[str],
    has_pred: bool,
) -> str:
    esc = html.escape
    parts = [
        f"<p>Dataset <b>{esc(name)}</b> (<code>{esc(ds_id)}</code>), layers "
        f"{', '.join(f'<code>{esc(x)}</code>' for x in layers)}; maps: "
        f"{', '.join(esc(_method_label(m)) for m in methods)}.</p>"
    ]
    for note in notes:
        parts.append(f'<div class="note">{esc(note)}</div>')
    head = ["layer", "silhouette (cosine)"]
    if has_pred:
        head += ["Spearman ρ (rate vs cosine distance)", "accuracy"]
    for m in methods:
        head += [f"{_method_label(m)} trustworthiness", f"{_method_label(m)} kNN recall"]
    parts.append("<h2>Per-layer summary</h2><table><tr>")
    parts += [f"<th>{esc(h)}</th>" for h in head]
    parts.append("</tr>")
    for layer in layers:
        s = summaries.get(layer, {})
        cells = [f"<code>{esc(layer)}</code>", _fmt(s.get("silhouette"))]
        if has_pred:
            cells += [_fmt(s.get("spearman_cosine")), _fmt(s.get("accuracy"))]
        for m in methods:
            t = trust.get((layer, m), {})
            cells += [_fmt(t.get("trustworthiness")), _fmt(t.get("knn_recall"))]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    parts.append(
        "<p>Silhouette: how well the labels separate in the latent space (-1 to 1). Spearman "
        "ρ: rank correlation of confusion rate with centroid distance (negative: closer "
        "classes are confused more). Trustworthiness / kNN recall: how faithfully each 2-D "
        "map keeps latent neighbourhoods (1 is perfect).</p>"
    )
    for layer in layers:
        for note in summaries.get(layer, {}).get("notes", []):
            if not has_pred and note.startswith("no predictions column"):
                continue  # said once above
            parts.append(f'<div class="note">{esc(layer)}: {esc(note)}</div>')
    return "\n".join(parts)
