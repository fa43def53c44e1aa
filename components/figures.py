"""Pure figure functions: arrays + metadata in, plotly figure dicts out.

The scatter is a list of ``scattergl`` traces, one per colour category (so the legend can hide
or isolate a class), drawn from float32 arrays sent as base64 typed arrays. Which dataset row a
plotted point is follows from ``trace_groups`` alone: trace ``i`` holds ``groups[i].rows`` in
order, so ``(curveNumber, pointIndex)`` maps back to a row without per-point ``customdata``.
"""

from __future__ import annotations

import base64
import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CATEGORIES = 60
CATEGORICAL_MAX_UNIQUE = 30
DIM_COLOR = "rgb(170,174,186)"
MISSING_COLOR = "#9a9a9a"
HIGHLIGHT_COLOR = "#111111"
OTHER = "(other)"
MISSING = "(missing)"
FILTERED = "(filtered out)"
MARKED_COLOR = "#f08c00"
# Trace 0 is the highlight (query + neighbours), trace 1 the marked items (e.g. a confusion
# cell): SVG traces, drawn above the WebGL points and at fixed indices so a Patch can update
# them whatever the colouring. Point traces start at TRACE_OFFSET; overlays come last.
TRACE_OFFSET = 2

# Plotly / D3 / Dark24 / Light24 qualitative colours, de-duplicated: 70+ distinct colours
# before the golden-angle generator takes over.
_BASE_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
    "#2e91e5",
    "#e15f99",
    "#1ca71c",
    "#fb0d0d",
    "#da16ff",
    "#222a2a",
    "#b68100",
    "#750d86",
    "#eb663b",
    "#511cfb",
    "#00a08b",
    "#fb00d1",
    "#fc0080",
    "#b2828d",
    "#6c7c32",
    "#778aae",
    "#862a16",
    "#a777f1",
    "#620042",
    "#1616a7",
    "#da60ca",
    "#6c4516",
    "#0d2a63",
    "#af0038",
    "#fd3216",
    "#00fe35",
    "#6a76fc",
    "#fed4c4",
    "#fe00ce",
    "#0df9ff",
    "#f6f926",
    "#ff9616",
    "#479b55",
    "#eea6fb",
    "#dc587d",
    "#d626ff",
    "#6e899c",
    "#00b5f7",
    "#b68e00",
    "#c9fbe5",
    "#ff0092",
    "#22ffa7",
    "#e3ee9e",
    "#86ce00",
    "#bc7196",
    "#7e7dcd",
    "#fc6955",
    "#e48f72",
]
# plotly symbol numbers (sent as small ints, not names): circle, square, diamond,
# triangle-up, x, cross, triangle-down, star, hexagon, pentagon, triangle-left/right, hexagram
SYMBOLS = [0, 1, 2, 5, 4, 3, 6, 17, 14, 13, 7, 8, 18]


def palette(n: int) -> list[str]:
    """n distinct colours: the qualitative base list, then golden-angle hues."""
    out = list(_BASE_PALETTE[:n])
    i = 0
    while len(out) < n:
        h = (i * 0.618033988749895) % 1.0
        light = 0.45 + 0.15 * ((i // 7) % 2)
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
        i += 1
    return out


def typed_array(a: np.ndarray) -> dict[str, str]:
    """A plotly.js typed-array spec (base64 float32): ~4x smaller and faster than a list."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    spec = {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode("ascii")}
    if a.ndim > 1:
        spec["shape"] = ",".join(str(s) for s in a.shape)
    return spec


# --------------------------------------------------------------------------- density at scale

# Above DENSITY_MIN drawable points the map is a 2-D histogram at low zoom; once the view holds
# at most POINTS_IN_VIEW points they are drawn one by one (only those in view; the status line
# says so). Nothing is ever sampled away silently.
DENSITY_MIN = 500_000
POINTS_IN_VIEW = 200_000
DENSITY_BINS = 400


def in_box(coords: np.ndarray, rows: np.ndarray, box) -> np.ndarray:
    """The rows whose 2-D coordinates fall inside box = [x0, x1, y0, y1]."""
    xy = coords[rows]
    x0, x1, y0, y1 = (float(v) for v in box)
    keep = (xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1))
    keep &= (xy[:, 1] >= min(y0, y1)) & (xy[:, 1] <= max(y0, y1))
    return rows[keep]


def density_view(coords: np.ndarray, rows: np.ndarray, camera) -> dict:
    """How the map draws ``rows``: {"mode": "points"} below DENSITY_MIN, else "window" (the
    points inside the zoomed view, when few enough) or "density"."""
    n = len(rows)
    if n <= DENSITY_MIN:
        return {"mode": "points"}
    if camera and len(camera) == 4:
        inside = len(in_box(coords, rows, camera))
        if inside <= POINTS_IN_VIEW:
            return {"mode": "window", "box": [float(c) for c in camera], "n": n, "inside": inside}
    return {"mode": "density", "n": n, "box": list(camera) if camera else None}


def density_trace(coords: np.ndarray, rows: np.ndarray, box=None, bins: int = DENSITY_BINS):
    """A heatmap of how many points fall in each of bins x bins cells (log scale; empty cells
    transparent), over ``box`` or the points' extent."""
    xy = coords[rows]
    if box:
        xr = sorted((float(box[0]), float(box[1])))
        yr = sorted((float(box[2]), float(box[3])))
    else:
        xr = [float(xy[:, 0].min()), float(xy[:, 0].max())] if len(xy) else [0.0, 1.0]
        yr = [float(xy[:, 1].min()), float(xy[:, 1].max())] if len(xy) else [0.0, 1.0]
    if xr[1] <= xr[0]:
        xr[1] = xr[0] + 1e-6
    if yr[1] <= yr[0]:
        yr[1] = yr[0] + 1e-6
    H, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins, range=[xr, yr])
    z = np.log10(H.T, where=H.T > 0, out=np.full(H.T.shape, np.nan))
    return {
        "type": "heatmap",
        "x": typed_array((xe[:-1] + xe[1:]) / 2),
        "y": typed_array((ye[:-1] + ye[1:]) / 2),
        "z": typed_array(z),
        "colorscale": "Viridis",
        "zsmooth": False,
        "hoverinfo": "skip",
        "showscale": True,
        "colorbar": {"title": {"text": "points per cell (log10)"}, "thickness": 10, "len": 0.5},
        "name": "density",
        "showlegend": False,
    }


# --------------------------------------------------------------------------- columns


def column_kind(values: Any) -> str:
    """'continuous' for fractional numbers or many distinct integers, else 'categorical'."""
    import pandas as pd

    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        return "categorical"
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) and not np.all(v == np.round(v)):
            return "continuous"
    return "continuous" if s.nunique(dropna=True) > CATEGORICAL_MAX_UNIQUE else "categorical"


def _natural_key(v: str) -> tuple:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def as_labels(values: Any) -> np.ndarray:
    """Column values as display strings (None/NaN -> MISSING), object array."""
    import pandas as pd

    s = pd.Series(values)
    out = s.astype(str).to_numpy(dtype=object)
    missing = s.isna().to_numpy()
    if missing.any():
        out[missing] = MISSING
    return out


def categories(values: Any) -> list[str]:
    """Distinct display strings of a column, in natural order: numbers first, numerically
    (ties by text), then the other strings: the order of ``_natural_key``. Long lists are
    sorted vectorised (a million distinct file names: ~1 s instead of ~3), where only text
    that starts and ends like a number is parsed as one (so "1_000" or non-ASCII digits,
    which Python's float() also takes, sort as text there)."""
    import pandas as pd

    labels = np.asarray(pd.unique(as_labels(values)), dtype=str)
    if len(labels) < 1000:  # the exact rule, for the usual short lists
        return sorted((str(v) for v in labels), key=_natural_key)
    # only strings that start and end like a number go through the (slow) parser
    ends = np.strings.strip(labels)
    first, last = np.strings.slice(ends, 0, 1), np.strings.slice(ends, -1, None)
    cand = np.isin(first, list("0123456789+-.iInN")) & np.isin(last, list("0123456789.fFnN"))
    nums = np.full(len(labels), np.nan)
    if cand.any():
        parsed = pd.to_numeric(pd.Series(labels[cand]), errors="coerce")
        nums[cand] = parsed.to_numpy(dtype=np.float64)
    is_num = ~np.isnan(nums)
    num_labels, text = labels[is_num], np.sort(labels[~is_num])
    order = np.lexsort((num_labels, nums[is_num]))
    return [*num_labels[order].tolist(), *text.tolist()]


# --------------------------------------------------------------------------- trace groups


@dataclass(frozen=True)
class Group:
    """One trace: its legend name, dataset rows in plotting order, colour and kind."""

    name: str
    rows: np.ndarray
    color: str | None
    kind: str  # "dim" | "category" | "continuous" | "all"


def filter_mask(meta, filter_col: str | None, filter_values: list[str] | None) -> np.ndarray:
    """(N,) bool: rows passing the filter (all rows when no filter is set)."""
    n = len(meta)
    if not filter_col or not filter_values or filter_col not in meta.columns:
        return np.ones(n, dtype=bool)
    return np.isin(as_labels(meta[filter_col]), np.asarray(list(filter_values), dtype=object))


def trace_groups(
    meta,
    valid: np.ndarray,
    color: str | None = None,
    filter_col: str | None = None,
    filter_values: list[str] | None = None,
    filter_mode: str = "dim",
    max_categories: int = MAX_CATEGORIES,
) -> list[Group]:
    """Split the valid rows into traces, deterministically.

    Order: a grey "filtered out" trace first (dim mode), then one trace per category in
    natural order (colours fixed by the category's place in the *whole* column, so filtering
    or switching projections never recolours a class), or one continuous trace.
    """
    n = len(meta)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (n,):
        raise ValueError(f"valid mask has shape {valid.shape}, metadata has {n} rows")
    keep = filter_mask(meta, filter_col, filter_values)
    groups: list[Group] = []
    dimmed = np.flatnonzero(valid & ~keep)
    if filter_mode == "dim" and len(dimmed):
        groups.append(Group(FILTERED, dimmed, DIM_COLOR, "dim"))
    shown = valid & keep
    if not color or color not in meta.columns:
        groups.append(Group("all", np.flatnonzero(shown), None, "all"))
        return groups
    col = meta[color]
    if column_kind(col) == "continuous":
        vals = np.asarray(col, dtype=np.float64)
        finite = np.isfinite(vals)
        groups.append(Group(color, np.flatnonzero(shown & finite), None, "continuous"))
        missing = np.flatnonzero(shown & ~finite)
        if len(missing):
            groups.append(Group(MISSING, missing, MISSING_COLOR, "category"))
        return groups
    labels = as_labels(col)
    cats = categories(col)
    counts = {c: int(n_) for c, n_ in zip(*np.unique(labels, return_counts=True), strict=True)}
    if len(cats) > max_categories:
        top = sorted(cats, key=lambda c: (-counts[c], _natural_key(c)))[: max_categories - 1]
        top_set = set(top)
        cats_shown = [c for c in cats if c in top_set]
        labels = np.where(np.isin(labels, cats_shown), labels, OTHER)
    else:
        cats_shown = cats
    colors = dict(zip(cats_shown, palette(len(cats_shown)), strict=True))
    colors[MISSING] = MISSING_COLOR
    colors[OTHER] = MISSING_COLOR
    order = cats_shown + ([OTHER] if len(cats_shown) < len(cats) else [])
    for c in order:
        rows = np.flatnonzero(shown & (labels == c))
        if len(rows):
            groups.append(Group(c, rows, colors.get(c, MISSING_COLOR), "category"))
    return groups


def row_for_point(groups: list[Group], curve: Any, index: Any) -> int | None:
    """Dataset row of point ``index`` of trace ``curve`` (None for other traces / bad input)."""
    try:
        c, i = int(curve) - TRACE_OFFSET, int(index)
    except (TypeError, ValueError):
        return None
    if not 0 <= c < len(groups) or not 0 <= i < len(groups[c].rows):
        return None
    return int(groups[c].rows[i])


# --------------------------------------------------------------------------- the figure


def marker_size(n: int) -> float:
    if n <= 2_000:
        return 7
    if n <= 20_000:
        return 5
    if n <= 200_000:
        return 3.5
    return 2.5


def symbol_map(values: Any) -> dict[str, int]:
    cats = categories(values)
    return {c: SYMBOLS[i % len(SYMBOLS)] for i, c in enumerate(cats)}


def _trace(
    g: Group, coords: np.ndarray, meta, color: str | None, symbols: np.ndarray | None, size: float
) -> dict[str, Any]:
    xy = coords[g.rows]
    marker: dict[str, Any] = {"size": size, "opacity": 0.85 if g.kind != "dim" else 0.3}
    if g.kind == "continuous":
        vals = np.asarray(meta[color], dtype=np.float64)[g.rows]
        marker.update(
            color=typed_array(vals),
            colorscale="Viridis",
            showscale=True,
            colorbar={"title": {"text": color}, "thickness": 12, "len": 0.6},
        )
    else:
        marker["color"] = g.color or "#3b6fb6"
    if symbols is not None and g.kind != "dim":
        marker["symbol"] = symbols[g.rows].tolist()
    return {
        "type": "scattergl",
        "mode": "markers",
        "name": g.name,
        "x": typed_array(xy[:, 0]),
        "y": typed_array(xy[:, 1]),
        "marker": marker,
        "hoverinfo": "none",
        "showlegend": g.kind in ("category", "dim"),
        "legendgroup": g.name,
    }


def highlight_trace(coords: np.ndarray | None = None, rows: list[int] | None = None) -> dict:
    """The trace marking the query point (big ring) and its neighbours (small rings)."""
    rows = list(rows or [])
    xs: list[float | None] = []
    ys: list[float | None] = []
    sizes: list[float] = []
    if coords is not None:
        for i, r in enumerate(rows):
            if 0 <= r < len(coords) and np.isfinite(coords[r]).all():
                xs.append(float(coords[r, 0]))
                ys.append(float(coords[r, 1]))
                sizes.append(20.0 if i == 0 else 12.0)
    return {
        "type": "scatter",
        "mode": "markers",
        "name": "query + neighbours",
        "x": xs,
        "y": ys,
        "marker": {
            "size": sizes,
            "color": HIGHLIGHT_COLOR,  # an open symbol is drawn in the marker colour
            "symbol": "circle-open",
            "line": {"width": 2.5},
        },
        "hoverinfo": "skip",
        "showlegend": False,
    }


def marked_trace(coords: np.ndarray | None = None, rows: Any = None) -> dict:
    """The trace marking a set of items (orange rings), e.g. the items of a confusion cell."""
    xs: list[float] = []
    ys: list[float] = []
    if coords is not None and rows is not None and len(rows):
        r = np.asarray(rows, dtype=np.int64)
        r = r[(r >= 0) & (r < len(coords))]
        xy = coords[r]
        xy = xy[np.isfinite(xy).all(1)]
        xs, ys = xy[:, 0].tolist(), xy[:, 1].tolist()
    return {
        "type": "scatter",
        "mode": "markers",
        "name": "marked items",
        "x": xs,
        "y": ys,
        "marker": {
            "size": 13,
            "color": MARKED_COLOR,
            "symbol": "circle-open",
            "line": {"width": 2.5},
        },
        "hoverinfo": "skip",
        "showlegend": False,
    }


def _point_values_trace(
    trace: dict, g: Group, values: np.ndarray, title: str, first: bool, rng=None
):
    """Recolour a point trace by per-row ``values``: a 0..1 share (grey = unknown) on one
    shared scale, or (``rng`` = (lo, hi)) any values on Viridis. One colour bar."""
    if g.kind == "dim":
        return
    v = np.asarray(values, dtype=np.float64)[g.rows]
    if rng is None:
        trace["marker"].update(
            color=typed_array(np.where(np.isfinite(v), v, -1.0)),
            colorscale=[[0.0, "#9a9a9a"], [0.0001, "#b2182b"], [0.5, "#fddbc7"], [1.0, "#2166ac"]],
            cmin=-0.0001,
            cmax=1.0,
            showscale=first,
        )
    else:
        lo, hi = rng
        trace["marker"].update(
            color=typed_array(np.where(np.isfinite(v), v, lo)),
            colorscale="Viridis",
            cmin=lo,
            cmax=hi if hi > lo else lo + 1.0,
            showscale=first,
        )
    if first:
        trace["marker"]["colorbar"] = {"title": {"text": title}, "thickness": 12, "len": 0.6}


def scatter_figure(
    coords: np.ndarray,
    groups: list[Group],
    meta,
    *,
    color: str | None = None,
    symbol: str | None = None,
    camera: list[float] | None = None,
    uirevision: str = "",
    highlight: dict | None = None,
    marked: dict | None = None,
    point_values: tuple | None = None,
    overlays: list[dict] | None = None,
    showlegend: bool = True,
) -> dict[str, Any]:
    """The map: highlight and marked traces, one scattergl trace per group, symbol legend
    entries, then overlays (centroids...). ``point_values`` = (per-row values in 0..1, title)
    recolours every point on one scale (e.g. the k-NN recall of each point)."""
    coords = np.asarray(coords, dtype=np.float32)
    n_points = sum(len(g.rows) for g in groups)
    size = marker_size(n_points)
    symbols = None
    sym_legend: list[dict] = []
    if symbol and symbol in meta.columns:
        smap = symbol_map(meta[symbol])
        uniq, inverse = np.unique(as_labels(meta[symbol]), return_inverse=True)
        symbols = np.asarray([smap[str(u)] for u in uniq], dtype=np.int16)[inverse]
        for value, sym in list(smap.items())[:20]:
            sym_legend.append(
                {
                    "type": "scattergl",
                    "mode": "markers",
                    "x": [None],
                    "y": [None],
                    "name": f"{symbol} = {value}",
                    "marker": {"symbol": sym, "color": "#555", "size": 9},
                    "legendgroup": "symbols",
                    "hoverinfo": "skip",
                }
            )
    data = [highlight or highlight_trace(), marked or marked_trace()]
    traces = [_trace(g, coords, meta, color, symbols, size) for g in groups]
    if point_values is not None:
        first = True
        rng = None
        if len(point_values) > 2:  # (values, title, "range"): any scale, min..max of the values
            v = np.asarray(point_values[0], dtype=np.float64)
            v = v[np.isfinite(v)]
            rng = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        for t, g in zip(traces, groups, strict=True):
            _point_values_trace(
                t, g, point_values[0], point_values[1], first and g.kind != "dim", rng
            )
            first = first and g.kind == "dim"
    data += traces
    data += sym_legend
    data += overlays or []
    xaxis: dict[str, Any] = {"visible": False}
    yaxis: dict[str, Any] = {"visible": False}
    if camera and len(camera) == 4:
        xaxis.update(range=[camera[0], camera[1]], autorange=False)
        yaxis.update(range=[camera[2], camera[3]], autorange=False)
    layout = {
        "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "dragmode": "pan",
        "hovermode": "closest",
        "hoverdistance": 12,
        "clickmode": "event",
        "uirevision": uirevision,
        "xaxis": xaxis,
        "yaxis": yaxis,
        "legend": {
            "itemsizing": "constant",
            "bgcolor": "rgba(255,255,255,0.85)",
            "x": 1,
            "xanchor": "right",
            "y": 0.95,
            "yanchor": "top",
            "font": {"size": 11},
            "title": {"text": color or ""},
        },
        "showlegend": showlegend,
    }
    return {"data": data, "layout": layout}


def empty_figure(message: str = "") -> dict[str, Any]:
    """A blank map with a centred message (no dataset, nothing computed yet...)."""
    return {
        "data": [],
        "layout": {
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "#ffffff",
            "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
            "annotations": [
                {
                    "text": message,
                    "showarrow": False,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "font": {"size": 15, "color": "#667"},
                }
            ]
            if message
            else [],
        },
    }


def camera_from_relayout(relayout: dict | None) -> list[float] | None | bool:
    """[x0, x1, y0, y1] from a relayoutData event; None for autorange; False if unrelated."""
    if not relayout:
        return False
    if relayout.get("xaxis.autorange") or relayout.get("yaxis.autorange"):
        return None
    keys = ("xaxis.range[0]", "xaxis.range[1]", "yaxis.range[0]", "yaxis.range[1]")
    if all(k in relayout for k in keys):
        vals = [relayout[k] for k in keys]
    elif "xaxis.range" in relayout and "yaxis.range" in relayout:
        vals = [*relayout["xaxis.range"], *relayout["yaxis.range"]]
    else:
        return False
    try:
        out = [float(v) for v in vals]
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(v) for v in out):
        return False
    return [float(f"{v:.6g}") for v in out]
