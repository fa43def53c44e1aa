"""Pure figure functions for channel analysis: arrays in, plotly figure dicts out.

``channel_heatmap`` draws a (categories x channels) matrix such as the per-category channel
means or standard deviations; every cell carries [category, channel, items] as customdata, so
``cell_from_click`` / ``channel_from_click`` map a click back to what was clicked (the app
then colours the map by that channel). ``channel_maps_figure`` draws each category's mean
spatial map of each channel as a grid of small heatmaps. ``write_channel_analysis`` writes
the three standalone pages the CLI's ``--channel-analysis`` produces.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.components.diagnostic_figures import _first_point

CELL_TEXT_MAX = 400  # cells (categories x channels) up to which every cell shows its value
DIVERGING_SCALE = "RdBu_r"
SEQUENTIAL_SCALE = "Viridis"
MAPS_SCALE = "Viridis"
MAP_MAX_SIDE = 64  # spatial maps larger than this are block-averaged down for display
HIGHLIGHT_COLOR = "#e4572e"
MAX_PAGE_CHANNELS = 64  # channels drawn as maps on the standalone page


def _num(v: float) -> float | None:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def _typed_2d(a: np.ndarray) -> dict[str, str]:
    """A 2-D float32 plotly.js typed array (base64 + shape): compact for image-like z."""
    import base64

    a = np.ascontiguousarray(a, dtype=np.float32)
    return {
        "dtype": "f4",
        "bdata": base64.b64encode(a.tobytes()).decode("ascii"),
        "shape": f"{a.shape[0]}, {a.shape[1]}",
    }


def default_channel_names(n: int) -> list[str]:
    return [f"ch {i}" for i in range(n)]


# --------------------------------------------------------------------------- heatmap


def channel_heatmap(
    categories: Sequence[str],
    M: np.ndarray,
    *,
    title: str,
    channel_names: Sequence[str] | None = None,
    counts: Sequence[int] | None = None,
    value_name: str = "value",
    diverging: bool | None = None,
    highlight_channel: int | None = None,
) -> dict[str, Any]:
    """Rows = categories (top to bottom), columns = channels; z = M (k, C).

    ``diverging``: a red-blue scale centred on 0 (default: when M has both signs), else a
    sequential one. Cells carry customdata [category, channel index, items]; x holds the
    channel indices (tick labels are ``channel_names``), y the category names.
    ``highlight_channel`` outlines that column.
    """
    cats = [str(c) for c in categories]
    M = np.asarray(M, dtype=np.float64)
    k = len(cats)
    if M.ndim != 2 or M.shape[0] != k:
        raise ValueError(f"matrix has shape {M.shape}, expected ({k}, channels)")
    C = M.shape[1]
    names = list(channel_names) if channel_names is not None else default_channel_names(C)
    if len(names) != C:
        raise ValueError(f"{len(names)} channel names for {C} channels")
    n_items = [int(c) for c in counts] if counts is not None else [None] * k
    if len(n_items) != k:
        raise ValueError(f"{len(n_items)} counts for {k} categories")
    finite = M[np.isfinite(M)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if diverging is None:
        diverging = lo < 0 < hi
    custom = [[[cats[i], j, n_items[i]] for j in range(C)] for i in range(k)]
    hover = (
        "%{customdata[0]} · " + "%{text}" + f"<br>{html.escape(value_name)} %{{z:.4g}}"
        "<br>%{customdata[2]} items<extra></extra>"
        if counts is not None
        else "%{customdata[0]} · %{text}"
        + f"<br>{html.escape(value_name)} %{{z:.4g}}<extra></extra>"
    )
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": list(range(C)),
        "y": cats,
        "z": [[_num(v) for v in row] for row in M],
        "customdata": custom,
        "text": [names for _ in range(k)],
        "hovertemplate": hover,
        "colorscale": DIVERGING_SCALE if diverging else SEQUENTIAL_SCALE,
        "xgap": 1 if C <= 64 else 0,
        "ygap": 1 if k <= 60 else 0,
        "colorbar": {"title": {"text": value_name}, "thickness": 12, "len": 0.8},
    }
    if diverging:
        span = max(abs(lo), abs(hi)) or 1.0
        trace.update(zmid=0, zmin=-span, zmax=span)
    if k * C <= CELL_TEXT_MAX:
        trace["texttemplate"] = "%{z:.2f}"
        trace["textfont"] = {"size": 10 if C <= 16 else 8}
    cell = int(max(14, min(48, 900 / max(C, 1))))
    row_h = int(max(14, min(40, 700 / max(k, 1))))
    left = 30 + 7 * max((len(c) for c in cats), default=4)
    margin = {"l": min(left, 260), "r": 20, "t": 60, "b": 60}
    ticks = C <= 64
    layout: dict[str, Any] = {
        "title": {"text": html.escape(title), "x": 0.5},
        "xaxis": {
            "title": {"text": "channel"},
            "tickmode": "array" if ticks else "auto",
            **({"tickvals": list(range(C)), "ticktext": names} if ticks else {}),
            "showgrid": False,
            "zeroline": False,
            "automargin": True,
            "constrain": "domain",
        },
        "yaxis": {
            "type": "category",
            "autorange": "reversed",
            "showgrid": False,
            "zeroline": False,
            "automargin": True,
        },
        "width": max(420, cell * C + margin["l"] + margin["r"] + 110),
        "height": max(300, row_h * k + margin["t"] + margin["b"]),
        "margin": margin,
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "clickmode": "event",
        "hovermode": "closest",
        "shapes": [],
    }
    if highlight_channel is not None and 0 <= int(highlight_channel) < C:
        j = int(highlight_channel)
        layout["shapes"].append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": j - 0.5,
                "x1": j + 0.5,
                "y0": 0,
                "y1": 1,
                "line": {"color": HIGHLIGHT_COLOR, "width": 3},
                "fillcolor": "rgba(0,0,0,0)",
            }
        )
    return {"data": [trace], "layout": layout}


def _as_index(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, np.integer)):
        return int(v) if v >= 0 else None
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def cell_from_click(click: Any) -> tuple[str, int] | None:
    """(category, channel) of the channel heatmap cell a clickData event points at."""
    p = _first_point(click)
    if p is None:
        return None
    cd = p.get("customdata")
    if isinstance(cd, (list, tuple)) and len(cd) >= 2:
        ch = _as_index(cd[1])
        if ch is not None and cd[0] is not None and not isinstance(cd[0], (list, dict)):
            return str(cd[0]), ch
    ch, cat = _as_index(p.get("x")), p.get("y")
    if ch is None or cat is None or isinstance(cat, (list, dict)):
        return None
    return str(cat), ch


def channel_from_click(click: Any) -> int | None:
    """Channel index of the channel heatmap cell (or channel map) a click points at."""
    cell = cell_from_click(click)
    return cell[1] if cell is not None else None


# --------------------------------------------------------------------------- spatial maps


def _shrink(m: np.ndarray, max_side: int) -> np.ndarray:
    """Block-average a (H, W) map so neither side exceeds ``max_side``."""
    h, w = m.shape
    f = max(1, math.ceil(max(h, w) / max(1, max_side)))
    if f == 1:
        return m
    h2, w2 = (h // f) * f, (w // f) * f
    return m[:h2, :w2].reshape(h2 // f, f, w2 // f, f).mean(axis=(1, 3))


def channel_maps_figure(
    categories: Sequence[str],
    maps: np.ndarray,
    *,
    max_channels: int = 16,
    channels: Sequence[int] | None = None,
    channel_names: Sequence[str] | None = None,
    title: str = "mean spatial map per channel",
    max_side: int = MAP_MAX_SIDE,
) -> dict[str, Any]:
    """Grid of small heatmaps: one row per category, one column per channel, each cell the
    category's mean (H, W) map of that channel. One colour range per channel column, so the
    categories compare within a column. ``channels`` picks the columns (default: the first
    ``max_channels``). Trace ``i * len(channels) + j`` is category i, channel ``channels[j]``
    (``map_cell_from_click``); ``layout.meta`` holds both lists.
    """
    cats = [str(c) for c in categories]
    maps = np.asarray(maps, dtype=np.float32)
    k = len(cats)
    if maps.ndim != 4 or maps.shape[0] != k:
        raise ValueError(f"maps have shape {maps.shape}, expected ({k}, C, H, W)")
    C = maps.shape[1]
    if channels is None:
        chosen = list(range(min(C, max(1, int(max_channels)))))
    else:
        chosen = [int(c) for c in channels]
        bad = [c for c in chosen if not 0 <= c < C]
        if bad:
            raise ValueError(f"channel {bad[0]} does not exist: the maps have {C} channels")
    names = list(channel_names) if channel_names is not None else default_channel_names(C)
    n_cols = len(chosen)
    small = [[_shrink(maps[i, c], max_side) for c in chosen] for i in range(k)]
    h, w = small[0][0].shape if k and n_cols else (1, 1)
    cell = int(max(36, min(110, 1100 / max(n_cols, 1))))
    cell_h = max(24, int(round(cell * h / max(w, 1))))
    gap = 6
    left = min(260, 30 + 7 * max((len(c) for c in cats), default=4))
    top, bottom, right = 70, 20, 20
    width = left + right + n_cols * cell + (n_cols - 1) * gap
    height = top + bottom + k * cell_h + max(k - 1, 0) * gap
    plot_w, plot_h = width - left - right, height - top - bottom
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": html.escape(title), "x": 0.5},
        "width": width,
        "height": height,
        "margin": {"l": left, "r": right, "t": top, "b": bottom},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "showlegend": False,
        "hovermode": "closest",
        "clickmode": "event",
        "annotations": [],
        "meta": {"categories": cats, "channels": chosen},
    }
    ranges = []
    for c in chosen:
        v = maps[:, c]
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        ranges.append((lo, hi if hi > lo else lo + 1e-6))
    for i in range(k):
        for j, c in enumerate(chosen):
            n = i * n_cols + j + 1
            suffix = "" if n == 1 else str(n)
            x0 = (j * (cell + gap)) / plot_w
            x1 = (j * (cell + gap) + cell) / plot_w
            y1 = 1 - (i * (cell_h + gap)) / plot_h
            y0 = 1 - (i * (cell_h + gap) + cell_h) / plot_h
            z = small[i][j]
            data.append(
                {
                    "type": "heatmap",
                    "z": _typed_2d(z),
                    "xaxis": f"x{suffix}",
                    "yaxis": f"y{suffix}",
                    "colorscale": MAPS_SCALE,
                    "zmin": ranges[j][0],
                    "zmax": ranges[j][1],
                    "showscale": False,
                    "hovertemplate": (
                        f"{html.escape(cats[i])} · {html.escape(names[c])}"
                        "<br>(%{x}, %{y}): %{z:.4g}<extra></extra>"
                    ),
                    "name": f"{cats[i]} / {names[c]}",
                }
            )
            axis = {
                "showticklabels": False,
                "showgrid": False,
                "zeroline": False,
                "ticks": "",
                "showline": False,
            }
            layout[f"xaxis{suffix}"] = {
                **axis,
                "domain": [max(0.0, x0), min(1.0, x1)],
                "anchor": f"y{suffix}",
                "range": [-0.5, z.shape[1] - 0.5],
            }
            layout[f"yaxis{suffix}"] = {
                **axis,
                "domain": [max(0.0, y0), min(1.0, y1)],
                "anchor": f"x{suffix}",
                "range": [z.shape[0] - 0.5, -0.5],  # row 0 on top, as in an image
            }
            if i == 0:
                layout["annotations"].append(
                    {
                        "text": html.escape(names[c]),
                        "xref": "paper",
                        "yref": "paper",
                        "x": (x0 + x1) / 2,
                        "xanchor": "center",
                        "y": 1,
                        "yanchor": "bottom",
                        "showarrow": False,
                        "font": {"size": 11},
                    }
                )
        layout["annotations"].append(
            {
                "text": html.escape(cats[i]),
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "xanchor": "right",
                "xshift": -6,
                "y": 1 - (i * (cell_h + gap) + cell_h / 2) / plot_h,
                "showarrow": False,
                "font": {"size": 11},
            }
        )
    return {"data": data, "layout": layout}


def map_cell_from_click(
    click: Any, categories: Sequence[str], channels: Sequence[int]
) -> tuple[str, int] | None:
    """(category, channel) of the small map a click on ``channel_maps_figure`` points at,
    given the figure's categories and channels (its ``layout.meta``)."""
    p = _first_point(click)
    if p is None or not channels:
        return None
    n = _as_index(p.get("curveNumber"))
    if n is None or n >= len(categories) * len(channels):
        return None
    return str(categories[n // len(channels)]), int(channels[n % len(channels)])


def most_varying_channels(means: np.ndarray, n: int) -> list[int]:
    """The ``n`` channels whose per-category means differ most (spread relative to the
    channel's overall scale), in channel order."""
    M = np.asarray(means, dtype=np.float64)
    if M.shape[1] <= n:
        return list(range(M.shape[1]))
    spread = np.nanstd(M, axis=0) / (np.nanmean(np.abs(M), axis=0) + 1e-12)
    spread = np.nan_to_num(spread, nan=-1.0)
    return sorted(np.argsort(-spread, kind="stable")[:n].tolist())


# --------------------------------------------------------------------------- standalone pages


def _intro(info: dict[str, Any], counts: np.ndarray, ds_name: str) -> str:
    cats = info.get("categories", [])
    rows = "".join(
        f"<tr><td>{html.escape(str(c))}</td><td>{int(n)}</td></tr>"
        for c, n in zip(cats, counts, strict=True)
    )
    what = "group" if info.get("groups") else html.escape(str(info.get("column", "")))
    shape = "×".join(str(s) for s in info.get("shape", []))
    notes = "".join(f'<p class="note">{html.escape(str(n))}</p>' for n in info.get("notes", []))
    return (
        f"<p>dataset <b>{html.escape(ds_name)}</b>, layer <b>{html.escape(info['layer'])}</b>"
        f" ({shape}), by <b>{html.escape(str(info.get('column', '')))}</b>"
        f"{' (grouped)' if info.get('groups') else ''}. Each item's channel value is the "
        "spatial mean of the channel; the heatmaps show its mean and standard deviation over "
        f"the items of each {what}.</p>{notes}"
        f"<table><tr><th>{what}</th><th>items</th></tr>{rows}</table>"
    )


def write_channel_analysis(
    store,
    ds_id: str,
    layer: str,
    column: str,
    out_dir: str | Path,
    groups: Any = None,
) -> list[Path]:
    """Write ``channel_means.html``, ``channel_stds.html`` and (when the layer has spatial
    latents) ``channel_maps.html`` into ``out_dir``; return the paths written."""
    from latentmap.components.diagnostic_figures import write_html
    from latentmap.pipeline.spatial import channel_analysis

    e = channel_analysis(store, ds_id, layer, column, groups)
    info = e.info
    cats = info["categories"]
    counts = e["counts"]
    ds_name = str(store.manifest(ds_id).get("name", ds_id))
    by = f"{column} groups" if info.get("groups") else column
    where = f"{info['layer']} by {by}"
    intro = _intro(info, counts, ds_name)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    means = channel_heatmap(
        cats, e["means"], title=f"channel means: {where}", counts=counts, value_name="mean"
    )
    paths.append(
        write_html(
            [("per-channel mean", means)],
            out / "channel_means.html",
            title=f"{ds_name}: channel means",
            intro_html=intro,
        )
    )
    stds = channel_heatmap(
        cats,
        e["stds"],
        title=f"channel standard deviations: {where}",
        counts=counts,
        value_name="std",
        diverging=False,
    )
    paths.append(
        write_html(
            [("per-channel standard deviation", stds)],
            out / "channel_stds.html",
            title=f"{ds_name}: channel standard deviations",
            intro_html=intro,
        )
    )
    if "maps" in e.arrays:
        maps = e["maps"]
        figs = []
        shown = most_varying_channels(e["means"], MAX_PAGE_CHANNELS)
        if len(shown) < maps.shape[1]:
            intro += (
                f'<p class="note">{len(shown)} of {maps.shape[1]} channels shown in the maps: '
                "those whose means differ most between the categories</p>"
            )
        for start in range(0, len(shown), 16):
            chans = shown[start : start + 16]
            label = (
                f"channels {', '.join(map(str, chans))}"
                if len(chans) < 16 or chans[-1] - chans[0] != 15
                else f"channels {chans[0]}–{chans[-1]}"
            )
            figs.append(
                (
                    label,
                    channel_maps_figure(
                        cats, maps, channels=chans, title=f"mean spatial maps: {where}, {label}"
                    ),
                )
            )
        paths.append(
            write_html(
                figs,
                out / "channel_maps.html",
                title=f"{ds_name}: mean spatial map per channel",
                intro_html=intro,
            )
        )
    return paths
