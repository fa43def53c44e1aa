"""Pure figure functions for classifier diagnostics: arrays in, plotly figure dicts out.

The confusion matrix heatmap, the confusion-rate vs centroid-distance scatter and the class
centroid overlay of a map, plus the two clicks that map back to a class pair. Also the static
side: ``static_copy`` (SVG instead of WebGL for headless export), ``write_png`` /
``write_pngs`` (kaleido driving the system Chromium; never downloads one) and ``write_html``
(one standalone, offline page with plotly.js inlined).
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CELL_TEXT_MAX = 20  # classes up to which every heatmap cell shows its value
GL_MIN_PAIRS = 5_000  # above this many class pairs the scatter uses WebGL
NEVER_CONFUSED_COLOR = "rgb(200,203,210)"
CONFUSED_COLOR = "#c0392b"
OUTLINE_COLOR = "#111111"
ELLIPSE_SD = 2.0
RENDER_TABS = 1  # browser tabs rendering PNGs at once (2 was slower on 2 cores)
# white for 0 (a sparse matrix reads at a glance), then light to dark blue
HEATMAP_SCALE = [
    [0.0, "#ffffff"],
    [0.001, "#eef4fb"],
    [0.1, "#c6dbef"],
    [0.35, "#6baed6"],
    [0.7, "#2171b5"],
    [1.0, "#08306b"],
]
ELLIPSE_POINTS = 64
# Where the system Chromium lives on Debian/Ubuntu (the package `chromium`), then other names.
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def save_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename), with
    the permissions a plain write would give (the store's temp files are owner-only)."""
    from latentmap.pipeline.store import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o666 & ~_umask())
    return path


class StaticExportError(ValueError):
    """A static image cannot be written (no browser, render failure); the message says why."""


def _rates(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    s = M.sum(axis=1, keepdims=True)
    s[s == 0] = 1.0
    return M / s


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- confusion heatmap


def _pct(rate: float) -> str:
    """A non-zero rate as a short percentage that never reads as 0% (or 100% when it is not)."""
    if rate < 0.005:
        return "<1%"
    if rate < 1 and rate > 0.995:
        return ">99%"
    return f"{rate:.0%}"


def heatmap_side(k: int) -> int:
    """Pixel side of the square plot area for k classes (cells shrink, the figure stays sane)."""
    return int(min(880, max(320, 36 * k)))


def _tick_font(k: int, side: int) -> int:
    return int(max(6, min(12, 0.8 * side / max(k, 1))))


def confusion_heatmap(
    classes: Sequence[str],
    M: np.ndarray,
    *,
    normalize: bool = True,
    true_name: str = "label",
    pred_name: str = "pred",
    highlight: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Confusion matrix: rows = true class (top to bottom), columns = predicted class.

    ``z`` is the row-normalised rate P(pred | true) (``normalize``) or the counts; every cell
    carries [count, rate] as customdata, and its x / y are the predicted / true class names,
    so ``cell_from_click`` maps a click back to (true, pred).
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    M = np.asarray(M)
    if M.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {M.shape}, expected ({k}, {k})")
    counts = M.astype(np.int64)
    rates = _rates(counts)
    z = rates if normalize else counts.astype(np.float64)
    custom = [
        [[int(counts[i, j]), round(float(rates[i, j]), 6)] for j in range(k)] for i in range(k)
    ]
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": classes,
        "y": classes,
        "z": np.round(z, 6).tolist(),
        "customdata": custom,
        "colorscale": HEATMAP_SCALE,
        "zmin": 0,
        "zmax": 1 if normalize else max(1, int(counts.max(initial=0))),
        "xgap": 1 if k <= 60 else 0,
        "ygap": 1 if k <= 60 else 0,
        "hovertemplate": (
            f"true {true_name} %{{y}} → predicted {pred_name} %{{x}}: "
            "%{customdata[0]} items (%{customdata[1]:.1%})<extra></extra>"
        ),
        "colorbar": {
            "title": {"text": "rate" if normalize else "items"},
            "thickness": 12,
            "len": 0.8,
            **({"tickformat": ".0%"} if normalize else {}),
        },
    }
    if k <= CELL_TEXT_MAX:
        if normalize:
            text = [
                [_pct(r) if c else "" for r, c in zip(rr, cc, strict=True)]
                for rr, cc in zip(rates, counts, strict=True)
            ]
        else:
            text = [[str(int(c)) if c else "" for c in cc] for cc in counts]
        trace["text"] = text
        trace["texttemplate"] = "%{text}"
        trace["textfont"] = {"size": 11 if k <= 12 else 9}
    side = heatmap_side(k)
    font = _tick_font(k, side)
    axis = {
        "type": "category",
        "tickfont": {"size": font},
        "showgrid": False,
        "zeroline": False,
        "automargin": True,
        "ticks": "",
    }
    margin = {"l": 40 + 6 * font, "r": 20, "t": 50, "b": 40 + 6 * font}
    layout: dict[str, Any] = {
        "title": {"text": f"confusion matrix ({true_name} vs {pred_name})", "x": 0.5},
        "xaxis": {
            **axis,
            "title": {"text": f"predicted ({pred_name})"},
            "side": "bottom",
            "constrain": "domain",
        },
        "yaxis": {
            **axis,
            "title": {"text": f"true ({true_name})"},
            "autorange": "reversed",
            "scaleanchor": "x",
            "scaleratio": 1,
            "constrain": "domain",
        },
        "width": side + margin["l"] + margin["r"] + 110,  # + colour bar
        "height": side + margin["t"] + margin["b"],
        "margin": margin,
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "clickmode": "event",
        "hovermode": "closest",
        "shapes": [],
    }
    if highlight is not None and k:
        try:
            i, j = classes.index(str(highlight[0])), classes.index(str(highlight[1]))
        except ValueError:
            i = j = -1
        if i >= 0:
            layout["shapes"].append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "y",
                    "x0": j - 0.5,
                    "x1": j + 0.5,
                    "y0": i - 0.5,
                    "y1": i + 0.5,
                    "line": {"color": "#e4572e", "width": 3 if k <= 60 else 2},
                    "fillcolor": "rgba(0,0,0,0)",
                }
            )
    return {"data": [trace], "layout": layout}


def _first_point(click_data: Any) -> dict | None:
    if not isinstance(click_data, dict):
        return None
    points = click_data.get("points")
    if not isinstance(points, list) or not points or not isinstance(points[0], dict):
        return None
    return points[0]


def cell_from_click(click_data: Any) -> tuple[str, str] | None:
    """(true, pred) of the heatmap cell a clickData event points at; None otherwise."""
    p = _first_point(click_data)
    if p is None:
        return None
    x, y = p.get("x"), p.get("y")
    if x is None or y is None or isinstance(x, (list, dict)) or isinstance(y, (list, dict)):
        return None
    return str(y), str(x)


# --------------------------------------------------------------------------- confusion vs distance


def _fmt_p(p: float) -> str:
    if p == 0:
        return "0"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def spearman_text(spearman: Sequence[float] | None, rate: np.ndarray, dist: np.ndarray) -> str:
    """'Spearman ρ = -0.52 (p = 1.2e-07)', or 'Spearman ρ: n/a (why)'."""
    rho = p = float("nan")
    if spearman is not None and len(spearman) >= 2:
        rho, p = (float(v) if v is not None else float("nan") for v in spearman[:2])
    if math.isfinite(rho):
        return f"Spearman ρ = {rho:.2f} (p = {_fmt_p(p) if math.isfinite(p) else 'n/a'})"
    finite = np.isfinite(rate) & np.isfinite(dist)
    if finite.sum() < 3:
        why = f"{int(finite.sum())} class pairs, need at least 3"
    elif np.ptp(rate[finite]) == 0:
        why = "no confusions" if not rate[finite].any() else "every pair has the same rate"
    elif np.ptp(dist[finite]) == 0:
        why = "all centroid distances are equal"
    elif spearman is None:
        why = "not computed"
    else:
        why = "undefined for these values"
    return f"Spearman ρ: n/a ({why})"


_LABEL_POSITIONS = ("top center", "bottom center", "top right", "bottom left", "middle right")


def _label_positions(x: np.ndarray, y: np.ndarray) -> list[str]:
    """Text positions that spread the labels of points lying close together: neighbours in
    the same rate band (sorted by distance) take turns above, below and beside their point."""
    n = len(x)
    if n == 0:
        return []
    fx, fy = np.nan_to_num(x), np.nan_to_num(y)
    span_x = float(np.ptp(fx)) or 1.0
    span_y = float(np.ptp(fy)) or 1.0
    out = ["top center"] * n
    order = np.lexsort((fx, np.round(fy / (0.04 * span_y))))
    turn = 0
    prev = None
    for i in order:
        close = prev is not None and (
            abs(fy[i] - fy[prev]) < 0.04 * span_y and abs(fx[i] - fx[prev]) < 0.12 * span_x
        )
        turn = turn + 1 if close else 0
        out[i] = _LABEL_POSITIONS[turn % len(_LABEL_POSITIONS)]
        prev = i
    return out


def confusion_distance_figure(
    classes: Sequence[str],
    pairs: dict[str, Any],
    *,
    metric: str = "cosine",
    spearman: Sequence[float] | None = None,
    layer: str = "",
    label_top: int = 15,
    highlight: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Confusion rate P(pred B | true A) against the latent distance of the centroids of A and B.

    One point per ordered pair A≠B; customdata [A, B, count] (so ``pair_from_click`` finds the
    pair); never-confused pairs light grey; the ``label_top`` most confused pairs labelled A→B.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown metric {metric!r}: use cosine or euclidean")
    classes = [str(c) for c in classes]
    a_idx = np.asarray(pairs["a_idx"], dtype=np.int64)
    b_idx = np.asarray(pairs["b_idx"], dtype=np.int64)
    rate = np.asarray(pairs["rate"], dtype=np.float64)
    count = np.asarray(pairs["count"], dtype=np.int64)
    dist = np.asarray(pairs[metric], dtype=np.float64)
    n = len(a_idx)
    if not (len(b_idx) == len(rate) == len(count) == len(dist) == n):
        raise ValueError("pair arrays a_idx, b_idx, rate, count and distance differ in length")
    names_a = [classes[i] for i in a_idx]
    names_b = [classes[j] for j in b_idx]
    kind = "scattergl" if n > GL_MIN_PAIRS else "scatter"
    hover = (
        "%{customdata[0]}→%{customdata[1]}<br>%{customdata[2]} items, rate %{y:.2%}"
        f"<br>{metric} distance %{{x:.3g}}<extra></extra>"
    )

    def points(rows: np.ndarray, name: str, color: str, size: float) -> dict[str, Any]:
        return {
            "type": kind,
            "mode": "markers",
            "name": name,
            "x": [_num(v) for v in dist[rows]],
            "y": [_num(v) for v in rate[rows]],
            "customdata": [[names_a[r], names_b[r], int(count[r])] for r in rows],
            "marker": {"color": color, "size": size, "line": {"width": 0}},
            "hovertemplate": hover,
        }

    size = 8 if n <= 500 else 6 if n <= GL_MIN_PAIRS else 4
    never = np.flatnonzero(count == 0)
    confused = np.flatnonzero(count > 0)
    data = [
        points(never, "never confused", NEVER_CONFUSED_COLOR, size * 0.8),
        points(confused, "confused", CONFUSED_COLOR, size),
    ]
    top = confused[np.lexsort((-count[confused], -rate[confused]))][: max(0, int(label_top))]
    data.append(
        {
            "type": "scatter",
            "mode": "text",
            "name": f"top {len(top)} pairs",
            "x": [_num(v) for v in dist[top]],
            "y": [_num(v) for v in rate[top]],
            "text": [f"{names_a[r]}→{names_b[r]}" for r in top],
            "textposition": _label_positions(dist[top], rate[top]),
            "textfont": {"size": 11, "color": "#222"},
            "hoverinfo": "skip",
            "showlegend": False,
        }
    )
    ring: dict[str, Any] = {
        "type": "scatter",
        "mode": "markers",
        "name": "selected pair",
        "x": [],
        "y": [],
        "marker": {
            "symbol": "circle-open",
            "size": 18,
            "color": OUTLINE_COLOR,
            "line": {"width": 2.5},
        },
        "hoverinfo": "skip",
        "showlegend": False,
    }
    if highlight is not None:
        hit = [
            r
            for r in range(n)
            if names_a[r] == str(highlight[0]) and names_b[r] == str(highlight[1])
        ]
        ring["x"] = [_num(dist[r]) for r in hit]
        ring["y"] = [_num(rate[r]) for r in hit]
    data.append(ring)
    stat = spearman_text(spearman, rate, dist)
    where = f"{layer}: " if layer else ""
    layout = {
        "title": {
            "text": f"{where}confusion vs centroid {metric} distance<br><sup>{stat}</sup>",
            "x": 0.5,
        },
        "xaxis": {
            "title": {"text": f"centroid {metric} distance (latent)"},
            "zeroline": False,
            "automargin": True,
        },
        "yaxis": {
            "title": {"text": "confusion rate P(pred B | true A)"},
            "tickformat": ".1%" if np.nanmax(rate, initial=0.0) < 0.1 else ".0%",
            "rangemode": "tozero",
            "automargin": True,
        },
        "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "hovermode": "closest",
        "clickmode": "event",
        "showlegend": True,
        "legend": {
            "x": 1,
            "xanchor": "right",
            "y": 1,
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.8)",
        },
        "meta": {"spearman": stat},
    }
    return {"data": data, "layout": layout}


def pair_from_click(click_data: Any) -> tuple[str, str] | None:
    """(A, B) of the confusion-vs-distance point a clickData event points at; None otherwise."""
    p = _first_point(click_data)
    if p is None:
        return None
    cd = p.get("customdata")
    if not isinstance(cd, (list, tuple)) or len(cd) < 2:
        return None
    if any(v is None or isinstance(v, (list, dict)) for v in cd[:2]):
        return None
    return str(cd[0]), str(cd[1])


# --------------------------------------------------------------------------- centroids on a map


def ellipse_points(
    center: Sequence[float], cov: np.ndarray, *, sd: float = ELLIPSE_SD, n: int = ELLIPSE_POINTS
) -> np.ndarray | None:
    """(n + 1, 2) closed outline of the ``sd``-standard-deviation ellipse of a 2x2 covariance,
    or None when the covariance is not finite."""
    cov = np.asarray(cov, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    if cov.shape != (2, 2) or not np.isfinite(cov).all() or not np.isfinite(c).all():
        return None
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    radii = sd * np.sqrt(np.clip(evals, 0.0, None))
    t = np.linspace(0.0, 2 * np.pi, n + 1)
    circle = np.stack([np.cos(t), np.sin(t)], axis=0)  # (2, n + 1)
    return (evecs @ (radii[:, None] * circle)).T + c


def centroid_traces(
    classes: Sequence[str],
    xy: np.ndarray,
    colors: dict[str, str] | None,
    *,
    cov: np.ndarray | None = None,
    ellipses: bool = False,
    label: str = "centroids",
) -> list[dict[str, Any]]:
    """Class centroids on a map: big markers in the class colour with a dark outline and the
    class name, plus (``ellipses``) one line trace of 2-SD spread ellipses (drawn beneath)."""
    classes = [str(c) for c in classes]
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) != len(classes):
        raise ValueError(f"{len(xy)} centroid positions for {len(classes)} classes")
    ok = np.isfinite(xy).all(axis=1)
    colors = colors or {}
    out: list[dict[str, Any]] = []
    if ellipses and cov is not None:
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (len(classes), 2, 2):
            raise ValueError(f"covariances have shape {cov.shape}, expected ({len(classes)}, 2, 2)")
        xs: list[float | None] = []
        ys: list[float | None] = []
        for i in np.flatnonzero(ok):
            pts = ellipse_points(xy[i], cov[i])
            if pts is None:
                continue
            xs += [float(v) for v in pts[:, 0]] + [None]
            ys += [float(v) for v in pts[:, 1]] + [None]
        out.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{label}: spread ({ELLIPSE_SD:g} SD)",
                "x": xs,
                "y": ys,
                "line": {"color": "rgba(20,20,20,0.55)", "width": 1.2, "dash": "dot"},
                "hoverinfo": "skip",
                "showlegend": False,
                "legendgroup": label,
            }
        )
    rows = np.flatnonzero(ok)
    names = [classes[i] for i in rows]
    out.append(
        {
            "type": "scatter",
            "mode": "markers+text",
            "name": label,
            "x": [float(v) for v in xy[rows, 0]],
            "y": [float(v) for v in xy[rows, 1]],
            "text": names,
            "textposition": "top center",
            "textfont": {"size": 13, "color": OUTLINE_COLOR, "weight": "bold", "shadow": "auto"},
            "marker": {
                "size": 16,
                "symbol": "diamond",
                "color": [colors.get(c, "#ffffff") for c in names],
                "line": {"color": OUTLINE_COLOR, "width": 2},
                "opacity": 1.0,
            },
            "hovertemplate": f"{label}: %{{text}}<extra></extra>",
            "showlegend": False,
            "legendgroup": label,
        }
    )
    return out


# --------------------------------------------------------------------------- static export


def static_copy(fig: dict[str, Any]) -> dict[str, Any]:
    """Deep copy for headless export: WebGL traces become SVG ones, transparent paper white.

    Typed-array specs ({"dtype", "bdata"}) are kept: plotly.js (bundled with plotly.py and
    used by kaleido) decodes them itself.
    """
    out = copy.deepcopy(fig)
    for trace in out.get("data", []):
        if trace.get("type") == "scattergl":
            trace["type"] = "scatter"
    layout = out.setdefault("layout", {})
    if layout.get("paper_bgcolor") in (None, "rgba(0,0,0,0)", "transparent"):
        layout["paper_bgcolor"] = "#ffffff"
    return out


def find_chromium() -> str | None:
    """The browser kaleido drives: $BROWSER_PATH if it is set, else the system Chromium."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for p in CHROMIUM_PATHS:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _browser() -> str:
    path = find_chromium()
    if path is None:
        where = os.environ.get("BROWSER_PATH")
        hint = f"BROWSER_PATH={where!r} is not an executable; " if where else ""
        raise StaticExportError(
            f"PNG export needs Chromium: {hint}install it with `apt install chromium` "
            "(or point BROWSER_PATH at a Chrome/Chromium binary)"
        )
    return path


def _run(coro_fn):
    """Run an async function to completion, also from a thread that has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = asyncio.run(coro_fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _page_not_ready(e: BaseException) -> bool:
    """kaleido 1.x asked its page before the page's script defined ``kaleido_scopes`` (seen
    on a loaded 2-core machine): a fresh browser gets it right."""
    return type(e).__name__ == "JavascriptError" and "kaleido_scopes is not defined" in str(e)


def _retry_page_not_ready(fn: Callable[[], Any], attempts: int = 3) -> Any:
    """``fn()``, run again (up to ``attempts`` in all) while kaleido's page was not ready."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == attempts or not _page_not_ready(e):
                raise
            log.warning("PNG export: kaleido's page was not ready (try %d): again", attempt)
    raise AssertionError("unreachable")


def render_pngs(
    items: Sequence[tuple[dict[str, Any], int, int]], *, scale: float = 2, timeout: float = 180
) -> list[bytes]:
    """PNG bytes of each (figure, width, height), all rendered by one headless Chromium."""
    if not items:
        return []
    browser = _browser()
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    specs = [
        (static_copy(fig), {"format": "png", "width": w, "height": h, "scale": scale})
        for fig, w, h in items
    ]

    async def render() -> list[bytes]:
        # mathjax=False: the default fetches MathJax from a CDN; plotly.js comes from plotly.py.
        n = max(1, min(RENDER_TABS, len(specs), os.cpu_count() or 1))
        async with kaleido.Kaleido(n=n, timeout=timeout, mathjax=False, path=browser) as k:
            jobs = [k.calc_fig(fig, opts=opts) for fig, opts in specs]
            return list(await asyncio.gather(*jobs))

    try:
        return _retry_page_not_ready(lambda: _run(render))
    except ChromeNotFoundError as e:
        raise StaticExportError(
            f"PNG export needs Chromium ({browser} could not be used: {e}); "
            "install it with `apt install chromium`"
        ) from None


def write_pngs(
    items: Sequence[tuple[dict[str, Any], str | Path, int, int]], *, scale: float = 2
) -> list[Path]:
    """Write each (figure, path, width, height) as a PNG (one browser for all); atomic writes."""
    blobs = render_pngs([(f, w, h) for f, _, w, h in items], scale=scale)
    return [save_file(path, data) for (_, path, _, _), data in zip(items, blobs, strict=True)]


def write_png(
    fig: dict[str, Any], path: str | Path, *, width: int = 900, height: int = 700, scale: float = 2
) -> Path:
    """One figure as a PNG of (width * scale) x (height * scale) pixels."""
    return write_pngs([(fig, path, width, height)], scale=scale)[0]


def _json_for_script(obj: Any) -> str:
    """JSON safe to embed in a <script> element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return _num(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(obj: Any) -> Any:
    """NaN/Inf floats -> None (JSON has no NaN; plotly reads null as a gap)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


_PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1400px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd;
       padding: 4px 10px; text-align: right; } th { background: #f4f5f7; }
td:first-child, th:first-child { text-align: left; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 6px 0; }
.fig { margin: 8px 0; }
"""


def write_html(
    figs: Sequence[tuple[str, dict[str, Any]]],
    path: str | Path,
    *,
    title: str,
    intro_html: str = "",
) -> Path:
    """One standalone page: plotly.js inlined (works offline), each figure under an <h2>.

    ``intro_html`` (trusted HTML, e.g. a table) goes between the title and the figures.
    """
    from plotly.offline import get_plotlyjs

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_PAGE_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        intro_html,
    ]
    config = {"responsive": True, "displaylogo": False, "scrollZoom": True}
    for i, (name, fig) in enumerate(figs):
        div = f"fig-{i}"
        layout = dict(fig.get("layout", {}))
        width = layout.get("width")
        style = f"max-width:{int(width)}px;" if isinstance(width, (int, float)) else ""
        parts.append(f"<h2>{html.escape(str(name))}</h2>")
        parts.append(f'<div class="fig" id="{div}" style="{style}"></div>')
        parts.append(
            "<script>Plotly.newPlot("
            f'"{div}",{_json_for_script(_finite(fig.get("data", [])))},'
            f"{_json_for_script(_finite(layout))},{_json_for_script(config)});</script>"
        )
    parts.append("</body></html>")
    return save_file(path, "\n".join(parts).encode("utf-8"))
