"""The view a URL describes: parse it, check it against the store, write it back.

``parse_query`` turns a query string into raw strings; ``resolve_view`` checks every value
against the cache (unknown dataset, layer or column, bad numbers...) and falls back to a
default with a notice for each bad value; ``to_query`` writes a ``View`` back. No Dash here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

from latentmap.pipeline.store import Store

DEFAULT_K = 12
MAX_K = 200
FILTER_MODES = ("dim", "hide")
PARAM_KEYS = ("perplexity", "n_neighbors", "min_dist", "metric")
# sampling: on/off, n, distribution, GMM k, seed, region column/value/rows, random baseline,
# interpolation end points / steps / kind, decoder spec / checkpoint
SAMPLE_DEFAULTS: dict[str, Any] = {
    "smp": False,
    "sn": 20,
    "sdist": "full",
    "sk": 3,
    "sseed": 0,
    "sreg": None,
    "sval": None,
    "srows": (),
    "sbase": False,
    "ia": None,
    "ib": None,
    "isteps": 8,
    "ihow": "slerp",
    "dec": None,
    "deck": None,
}
SAMPLE_KEYS = tuple(SAMPLE_DEFAULTS)
SAMPLE_DISTS = ("full", "diag", "gmm")
MAX_SAMPLES_URL = 1000
# channel analysis: column, statistic, category-group mapping, channel colouring the map
CHANNEL_DEFAULTS: dict[str, Any] = {"ccol": None, "cstat": "means", "cgrp": None, "chan": None}
CHANNEL_STATS = ("means", "stds", "maps")
QUERY_KEYS = ("ds", "layer", "method", *PARAM_KEYS, "color", "symbol", "filter", "fv", "fmode", "sel", "k", "cam", "tab", "ov", "layers", "align", "true", "pred", "cnorm", "dmetric", "ct", "cp", "cmp", "pool", "rgb", "stretch", *SAMPLE_KEYS, *CHANNEL_DEFAULTS)  # fmt: skip
TABS = ("map", "layers", "diag", "chan")


OVERLAYS = ("centroids", "ellipses", "trust")
ALIGN_MODES = ("procrustes", "init")
COMPARE_MODES = ("layers", "methods")
DIST_METRICS = ("cosine", "euclidean")
MAX_LAYERS = 4
NONE = "none"
_MAX_VALUE_LEN = 300
_LIST_KEYS = ("fv", "ov", "layers")
_MAX_FILTER_VALUES = 500


@dataclass(frozen=True)
class View:
    dataset: str | None = None
    layer: str | None = None
    method: str = "pca"
    params: dict[str, Any] = field(default_factory=dict)
    color: str | None = None
    symbol: str | None = None
    filter_col: str | None = None
    filter_values: tuple[str, ...] = ()
    filter_mode: str = "dim"
    selected: int | None = None
    k: int = DEFAULT_K
    camera: tuple[float, float, float, float] | None = None
    # diagnostics: main tab, map overlays, layer small multiples, confusion panels
    tab: str = "map"
    overlays: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    align: str = "procrustes"
    compare: str = "layers"
    true_col: str | None = None
    pred_col: str | None = None
    cnorm: bool = True
    dmetric: str = "cosine"
    cell: tuple[str, str] | None = None
    sampling: dict[str, Any] = field(default_factory=lambda: dict(SAMPLE_DEFAULTS))
    channels: dict[str, Any] = field(default_factory=lambda: dict(CHANNEL_DEFAULTS))
    # spatial layers: the pooling asked for ("max", "p90:0,2"...); ``layer`` is the pooled
    # variant once it exists, ``pool_pending`` = (base layer, pooling) while it is computed
    pool: str | None = None
    pool_pending: tuple[str, str] | None = None
    # thumbnails: the band choice ((r, g, b), (low, high) stretch percentiles) when it differs
    # from the encoded thumbnails; ``thumbs_ready`` once its thumbnails are written
    thumbs: tuple[tuple[int, int, int], tuple[float, float]] | None = None
    thumbs_ready: bool = False
    # derived: centroids follow the colour column when categorical, else the true labels
    centroid_col: str | None = None
    # dataset-dependent defaults of the fields above (URLs leave out what equals them)
    defaults: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def spec(self) -> dict[str, Any] | None:
        """What the map draws (the JSON kept in the SPEC store); None without a dataset."""
        if not self.dataset:
            return None
        d = {k: v for k, v in asdict(self).items() if k in _MAP_FIELDS}
        d["filter_values"] = list(self.filter_values)
        d["overlays"] = list(self.overlays)
        d["centroid_col"] = self.centroid_col
        d["sampling"] = sampling_json(self.sampling)
        d["channel"] = self.channels.get("chan")
        d["pool_pending"] = list(self.pool_pending) if self.pool_pending else None
        return d

    def thumbs_spec(self) -> dict[str, Any] | None:
        """The band choice of the thumbnails (the THUMBS store): ``want`` is the variant to
        compute, ``v`` the one the cards show (None until it is ready); None = as encoded."""
        if not self.dataset or not self.thumbs:
            return None
        from latentmap.pipeline.bands import variant_key

        key = variant_key(*self.thumbs)
        return {
            "dataset": self.dataset,
            "want": key,
            "v": key if self.thumbs_ready else None,
            "rgb": list(self.thumbs[0]),
            "pct": list(self.thumbs[1]),
        }

    def diag_spec(self) -> dict[str, Any] | None:
        """What the layers and diagnostics tabs draw (the DIAG_SPEC store)."""
        if not self.dataset:
            return None
        return {
            "dataset": self.dataset,
            "layer": self.layer,
            "method": self.method,
            "params": dict(self.params),
            "tab": self.tab,
            "layers": list(self.layers),
            "align": self.align,
            "compare": self.compare,
            "true_col": self.true_col,
            "pred_col": self.pred_col,
            "cnorm": self.cnorm,
            "dmetric": self.dmetric,
            "cell": list(self.cell) if self.cell else None,
            "channels": dict(self.channels),
        }


_MAP_FIELDS = (
    "dataset",
    "layer",
    "method",
    "params",
    "color",
    "symbol",
    "filter_col",
    "filter_values",
    "filter_mode",
)


# --------------------------------------------------------------------------- parse / write


def parse_query(search: str | None) -> tuple[dict[str, Any], list[str]]:
    """Raw values of the known keys (last one wins; ``fv`` may repeat) and notices."""
    text = (search or "").lstrip("?")
    if not text:
        return {}, []
    try:
        qs = parse_qs(text, keep_blank_values=True, max_num_fields=2 * _MAX_FILTER_VALUES)
    except ValueError:
        return {}, ["The link has too many parameters; showing the default view."]
    raw: dict[str, Any] = {}
    notices = []
    for key, values in qs.items():
        if key not in QUERY_KEYS:
            notices.append(f"Ignored unknown link parameter {key[:40]!r}.")
            continue
        if key in _LIST_KEYS:
            raw[key] = [v[:_MAX_VALUE_LEN] for v in values][:_MAX_FILTER_VALUES]
        else:
            raw[key] = values[-1][:_MAX_VALUE_LEN]
    if "ct" in raw or "cp" in raw:
        raw["cell"] = [raw.pop("ct", ""), raw.pop("cp", "")]
    return raw, notices


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def to_query(view: View) -> str:
    """The query string of a view ("" without a dataset)."""
    if not view.dataset:
        return ""
    items: list[tuple[str, str]] = [("ds", view.dataset)]
    if view.layer:
        items.append(("layer", view.layer.split("@")[0] if view.pool else view.layer))
    items.append(("method", view.method))
    items += [(k, _num(v)) for k, v in sorted(view.params.items())]
    items.append(("color", view.color or NONE))
    if view.symbol:
        items.append(("symbol", view.symbol))
    if view.filter_col:
        items.append(("filter", view.filter_col))
        items += [("fv", v) for v in view.filter_values]
        items.append(("fmode", view.filter_mode))
    if view.selected is not None:
        items.append(("sel", str(view.selected)))
    if view.k != DEFAULT_K:
        items.append(("k", str(view.k)))
    if view.camera:
        items.append(("cam", ",".join(f"{c:.6g}" for c in view.camera)))
    dflt = view.defaults
    if view.tab != "map":
        items.append(("tab", view.tab))
    items += [("ov", o) for o in view.overlays]
    if list(view.layers) != list(dflt.get("layers", ())):
        items += [("layers", v) for v in view.layers]
    if view.align != "procrustes":
        items.append(("align", view.align))
    if view.compare != "layers":
        items.append(("cmp", view.compare))
    if view.true_col != dflt.get("true_col"):
        items.append(("true", view.true_col or NONE))
    if view.pred_col != dflt.get("pred_col"):
        items.append(("pred", view.pred_col or NONE))
    if not view.cnorm:
        items.append(("cnorm", "0"))
    if view.dmetric != "cosine":
        items.append(("dmetric", view.dmetric))
    if view.cell:
        items += [("ct", view.cell[0]), ("cp", view.cell[1])]
    if view.pool:
        items.append(("pool", view.pool))
    if view.thumbs:
        items.append(("rgb", ",".join(str(b) for b in view.thumbs[0])))
        items.append(("stretch", ",".join(f"{p:g}" for p in view.thumbs[1])))
    for key, default in CHANNEL_DEFAULTS.items():
        v = view.channels.get(key, default)
        if v != default and v is not None:
            items.append((key, str(v)))
    for key, default in SAMPLE_DEFAULTS.items():
        v = view.sampling.get(key, default)
        if v == default or v is None:
            continue
        if key == "srows":
            items.append((key, rows_text(v)))
        elif isinstance(v, bool):
            items.append((key, "1"))
        else:
            items.append((key, str(v)))
    return "?" + urlencode(items)


# --------------------------------------------------------------------------- checking


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _camera(value: Any) -> tuple[float, float, float, float] | None:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise ValueError
    c = tuple(float(p) for p in parts)
    if not all(math.isfinite(x) and abs(x) < 1e12 for x in c) or c[0] >= c[1] or c[2] >= c[3]:
        raise ValueError
    return c  # type: ignore[return-value]


def _short(value: Any) -> str:
    s = str(value)
    return repr(s if len(s) <= 40 else s[:40] + "…")


def default_dataset(store: Store, preferred: str | None = None) -> str | None:
    ids = [d.id for d in store.list_datasets(include_incomplete=False)]
    if preferred:
        pid = preferred if preferred in ids else store.find_by_name(preferred)
        if pid:
            return pid
    return ids[-1] if ids else None


def _default_method(store: Store, ds: str, layer: str) -> str:
    """The best projection already computed with default parameters (UMAP > t-SNE > PCA)."""
    from latentmap.pipeline.reduce import cached_projection

    for m in ("umap", "tsne"):
        if cached_projection(store, ds, layer, m) is not None:
            return m
    return "pca"


def resolve_view(
    store: Store,
    raw: dict[str, Any],
    *,
    preferred_dataset: str | None = None,
    quiet: bool = False,
) -> tuple[View, list[str]]:
    """Check raw values against the store; each bad one falls back with a notice.

    A key absent from ``raw`` means "default"; ``color`` set to None/""/"none" means no
    colouring. ``quiet`` drops notices about columns a newly chosen dataset lacks.
    """
    from latentmap.callbacks.data import columns, metadata
    from latentmap.pipeline.reduce import METHODS, ReduceError, default_params, normalize_params

    notices: list[str] = []
    ids = {d.id: d for d in store.list_datasets(include_incomplete=False)}
    ds = raw.get("ds")
    if ds and ds not in ids:
        by_name = store.find_by_name(str(ds))
        if by_name:
            ds = by_name
        else:
            fallback = default_dataset(store, preferred_dataset)
            notices.append(
                f"Dataset {_short(ds)} is not in the cache"
                + (f"; showing {ids[fallback].name}." if fallback else ".")
            )
            ds = fallback
    elif not ds:
        ds = default_dataset(store, preferred_dataset)
    if not ds:
        return View(), notices + [
            "No datasets yet: encode a folder in the Data panel, or run `latentmap serve --demo`."
        ]

    manifest = store.manifest(ds)
    layers = list(manifest.get("layers", {}))
    default_layer = manifest.get("default_layer") or (layers[-1] if layers else None)
    layer = raw.get("layer")
    if layer not in layers:
        if layer:
            notices.append(
                f"Layer {_short(layer)} is not in this dataset; showing {default_layer}."
            )
        layer = default_layer
    if layer is None:
        return View(dataset=ds), notices + [f"Dataset {ds} has no layers."]
    layer, pool, pool_pending, more = _resolve_pool(store, ds, layer, raw.get("pool"), layers)
    notices += more
    n_valid = int(store.valid_mask(ds, layer).sum())
    n = int(manifest.get("n", 0))

    method = raw.get("method")
    method = method.strip().lower() if isinstance(method, str) else method
    if method not in METHODS:
        if method:
            notices.append(f"Unknown projection {_short(method)}; showing PCA.")
            method = "pca"
        else:
            method = _default_method(store, ds, layer)
    given = {
        k: raw[k]
        for k in default_params(method)
        if k in raw and raw[k] is not None and str(raw[k]).strip() != ""
    }
    try:
        params, clamp = normalize_params(method, given, n_valid)
        notices += [f"Note: {c}." for c in clamp]
    except ReduceError as e:
        notices.append(f"Invalid projection parameter: {e}; using the default.")
        params, _ = normalize_params(method, {}, n_valid)

    cols = columns(store, ds)

    def column(key: str, default: str | None, what: str) -> str | None:
        return _column(raw, key, cols, default, f"to {what}", notices, quiet)

    default_color = "label" if "label" in cols else None
    color = column("color", default_color, "colour by")
    symbol = column("symbol", None, "shape by")
    filter_col = column("filter", None, "filter by")
    fvalues: tuple[str, ...] = ()
    fmode = "dim"
    if filter_col:
        wanted = [str(v) for v in (raw.get("fv") or [])]
        if cols[filter_col]["kind"] == "categorical":
            known = set(cols[filter_col]["values"])
        else:
            known = set(metadata(store, ds)[filter_col].astype(str))
        fvalues = tuple(v for v in wanted if v in known)
        if len(fvalues) < len(wanted) and not quiet:
            bad = [v for v in wanted if v not in known]
            notices.append(f"Filter value(s) {', '.join(map(_short, bad[:3]))} not found; ignored.")
        m = raw.get("fmode", "dim")
        if m not in FILTER_MODES:
            notices.append(f"Unknown filter mode {_short(m)}; dimming instead.")
            m = "dim"
        fmode = m

    selected = None
    if raw.get("sel") not in (None, ""):
        s = _int(raw["sel"])
        if s is None or not 0 <= s < n:
            notices.append(
                f"Selected item {_short(raw['sel'])} does not exist (0..{n - 1}); cleared."
            )
        else:
            selected = s

    k = DEFAULT_K
    if raw.get("k") not in (None, ""):
        kk = _int(raw["k"])
        if kk is None or not 1 <= kk <= MAX_K:
            notices.append(
                f"k must be a whole number from 1 to {MAX_K}, got {_short(raw['k'])}; using {DEFAULT_K}."
            )
        else:
            k = kk

    camera = None
    if raw.get("cam") not in (None, ""):
        try:
            camera = _camera(raw["cam"])
        except (TypeError, ValueError):
            notices.append("The zoom in the link is not valid; showing the whole map.")

    diag, more = _resolve_diagnostics(raw, layers, cols, quiet)
    notices += more
    sampling, more = resolve_sampling(raw, cols, n)
    notices += more
    chans, more = resolve_channels(raw, cols)
    notices += more
    thumbs, thumbs_ready, more = resolve_thumbs(store, ds, raw.get("rgb"), raw.get("stretch"))
    notices += more
    cent = color if color and cols.get(color, {}).get("kind") == "categorical" else None
    view = View(
        ds,
        layer,
        method,
        params,
        color,
        symbol,
        filter_col,
        fvalues,
        fmode,
        selected,
        k,
        camera,
        **diag,
        sampling=sampling,
        channels=chans,
        pool=pool,
        pool_pending=pool_pending,
        thumbs=thumbs,
        thumbs_ready=thumbs_ready,
        centroid_col=cent or diag["true_col"],
    )
    return view, notices


def _column(
    raw: dict, key: str, cols: dict, default: str | None, what: str, notices: list, quiet: bool
) -> str | None:
    """A column name from the link: absent -> default, "none" -> None, unknown -> default."""
    if key not in raw:
        return default
    v = raw[key]
    if v is None or str(v).strip().lower() in ("", NONE):
        return None
    if v not in cols:
        if not quiet:
            notices.append(f"No column {_short(v)} {what}; showing the default.")
        return default
    return str(v)


def _choice(raw: dict, key: str, allowed: tuple[str, ...], what: str, notices: list[str]) -> str:
    v = raw.get(key)
    if v in (None, ""):
        return allowed[0]
    v = str(v).strip().lower()
    if v not in allowed:
        notices.append(f"Unknown {what} {_short(raw[key])}; using {allowed[0]}.")
        return allowed[0]
    return v


def _resolve_diagnostics(
    raw: dict[str, Any], layers: list[str], cols: dict[str, dict], quiet: bool
) -> tuple[dict[str, Any], list[str]]:
    """The diagnostics fields of a view (tab, overlays, small-multiple layers, columns...)."""
    notices: list[str] = []
    tab = _choice(raw, "tab", TABS, "tab", notices)

    ov_raw = raw.get("ov") or []
    ov_raw = [ov_raw] if isinstance(ov_raw, str) else list(ov_raw)
    bad = [o for o in ov_raw if o not in OVERLAYS]
    if bad:
        notices.append(f"Unknown overlay {_short(bad[0])} ignored (use {', '.join(OVERLAYS)}).")
    overlays = tuple(o for o in OVERLAYS if o in ov_raw)

    default_layers = tuple(layers[:MAX_LAYERS])
    want = raw.get("layers")
    if want in (None, "", []):
        chosen = default_layers
    else:
        want = [want] if isinstance(want, str) else [str(w) for w in want]
        missing = [w for w in want if w not in layers]
        if missing and not quiet:
            notices.append(f"Layer {_short(missing[0])} is not in this dataset; left out.")
        chosen = tuple(dict.fromkeys(w for w in want if w in layers))
        if len(chosen) > MAX_LAYERS:
            notices.append(f"At most {MAX_LAYERS} layers side by side; showing the first ones.")
            chosen = chosen[:MAX_LAYERS]
        chosen = chosen or default_layers
    align = _choice(raw, "align", ALIGN_MODES, "alignment", notices)
    compare = _choice(raw, "cmp", COMPARE_MODES, "comparison", notices)

    # class labels may be many integers (a "continuous" column for colouring): any kind will do
    default_true = next((c for c in ("label", "class", "target", "y") if c in cols), None)
    default_pred = next((c for c in ("pred", "prediction", "predicted") if c in cols), None)

    true_col = _column(raw, "true", cols, default_true, "for the true labels", notices, quiet)
    pred_col = _column(raw, "pred", cols, default_pred, "for the predictions", notices, quiet)
    cnorm = str(raw.get("cnorm", "1")).strip().lower() not in ("0", "false", "no", "off")
    dmetric = _choice(raw, "dmetric", DIST_METRICS, "distance", notices)

    cell = None
    c = raw.get("cell")
    if isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(x, str) and x for x in c):
        cell = (c[0], c[1])
    elif c not in (None, "", [], ["", ""]):
        notices.append("The confusion cell in the link is not valid; cleared.")
    return {
        "tab": tab,
        "overlays": overlays,
        "layers": chosen,
        "align": align,
        "compare": compare,
        "true_col": true_col,
        "pred_col": pred_col,
        "cnorm": cnorm,
        "dmetric": dmetric,
        "cell": cell,
        "defaults": {"layers": default_layers, "true_col": default_true, "pred_col": default_pred},
    }, notices


def raw_from_view(view: View) -> dict[str, Any]:
    """The raw dict that resolves back to ``view`` (used to revert to the shown view)."""
    raw: dict[str, Any] = {
        "ds": view.dataset,
        "layer": view.layer,
        "method": view.method,
        **view.params,
        "color": view.color,
        "symbol": view.symbol,
        "filter": view.filter_col,
        "fv": list(view.filter_values),
        "fmode": view.filter_mode,
        "sel": view.selected,
        "k": view.k,
        "cam": list(view.camera) if view.camera else None,
        "tab": view.tab,
        "ov": list(view.overlays),
        "layers": list(view.layers),
        "align": view.align,
        "cmp": view.compare,
        "true": view.true_col,
        "pred": view.pred_col,
        "cnorm": "1" if view.cnorm else "0",
        "dmetric": view.dmetric,
        "cell": list(view.cell) if view.cell else None,
        "pool": view.pool,
        "rgb": ",".join(map(str, view.thumbs[0])) if view.thumbs else None,
        "stretch": ",".join(f"{p:g}" for p in view.thumbs[1]) if view.thumbs else None,
        **dict(view.channels),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in view.sampling.items()},
    }
    return raw


def with_changes(view: View, **changes: Any) -> View:
    return replace(view, **changes)


# --------------------------------------------------------------------------- sampling


def rows_text(rows: Any) -> str:
    """Sorted rows as compact ranges: [1, 2, 3, 7] -> "1-3,7"."""
    out: list[str] = []
    rows = sorted(set(int(r) for r in rows))
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        out.append(str(rows[i]) if i == j else f"{rows[i]}-{rows[j]}")
        i = j + 1
    return ",".join(out)


def parse_rows(text: Any, n: int) -> tuple[int, ...]:
    """Inverse of ``rows_text`` (also accepts a list of ints); ValueError on bad input."""
    if isinstance(text, (list, tuple)):
        rows = [int(r) for r in text]
    else:
        rows = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b) if b else int(a)
            if hi < lo or hi - lo > n:
                raise ValueError(part)
            rows.extend(range(lo, hi + 1))
    if any(not 0 <= r < n for r in rows):
        raise ValueError("out of range")
    return tuple(sorted(set(rows)))


def sampling_json(sampling: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sampling.items()}


def _flag(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (list, tuple)):
        return bool(v)
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def resolve_sampling(
    raw: dict[str, Any], cols: dict[str, dict], n: int
) -> tuple[dict[str, Any], list[str]]:
    """The sampling fields of a view; each bad value falls back with a notice."""
    notices: list[str] = []
    out = dict(SAMPLE_DEFAULTS)

    def given(key: str) -> bool:
        return raw.get(key) not in (None, "", [])

    if given("smp"):
        out["smp"] = _flag(raw["smp"])
    if given("sbase"):
        out["sbase"] = _flag(raw["sbase"])
    for key, lo, hi, what in (
        ("sn", 1, MAX_SAMPLES_URL, "the number of samples"),
        ("sk", 1, 50, "the number of mixture components"),
        ("sseed", 0, 2**31 - 1, "the seed"),
        ("isteps", 2, 50, "the interpolation steps"),
    ):
        if given(key):
            v = _int(raw[key])
            if v is None or not lo <= v <= hi:
                notices.append(
                    f"{what.capitalize()} must be a whole number from {lo} to {hi}, got "
                    f"{_short(raw[key])}; using {SAMPLE_DEFAULTS[key]}."
                )
            else:
                out[key] = v
    if given("sdist"):
        out["sdist"] = _choice(raw, "sdist", SAMPLE_DISTS, "distribution", notices)
    if given("ihow"):
        out["ihow"] = _choice(raw, "ihow", ("slerp", "linear"), "interpolation", notices)
    if given("sreg"):
        reg = str(raw["sreg"])
        if reg == "selection":
            out["sreg"] = reg
            try:
                out["srows"] = parse_rows(raw.get("srows") or "", n)
            except (TypeError, ValueError):
                notices.append("The selection in the link is not valid; sampling everywhere.")
                out["sreg"] = None
        elif reg in cols:
            out["sreg"] = reg
            out["sval"] = str(raw["sval"]) if given("sval") else None
        else:
            notices.append(f"No column {_short(reg)} to sample a region of; sampling everywhere.")
    for key in ("ia", "ib"):
        if given(key):
            v = _int(raw[key])
            if v is None or not 0 <= v < n:
                notices.append(f"Interpolation end {_short(raw[key])} does not exist; cleared.")
            else:
                out[key] = v
    for key in ("dec", "deck"):
        if given(key):
            out[key] = str(raw[key]).strip()[:_MAX_VALUE_LEN] or None
    return out, notices


# --------------------------------------------------------------------------- pooling, channels


def _resolve_pool(store: Store, ds: str, layer: str, pool: Any, layers: list[str]):
    """(layer to show, pooling, pending (base, pooling) or None, notices).

    ``layer`` may already be a pooled variant ("conv@max"); ``pool`` "" / None / "default"
    means the layer as encoded."""
    from latentmap.pipeline.spatial import SpatialError, parse_variant, spatial_layers, variant_name

    base = layer.split("@")[0] if "@" in layer and layer.split("@")[0] in layers else layer
    if pool in (None, "", "default", NONE):
        if base != layer:  # a variant picked in the layer menu
            return layer, layer.split("@", 1)[1], None, []
        return layer, None, None, []
    try:
        kind, chans = parse_variant(str(pool))
    except SpatialError as e:
        return base, None, None, [f"{e}; showing {base} as encoded."]
    shapes = spatial_layers(store, ds)
    if base not in shapes:
        return (
            base,
            None,
            None,
            [
                f"Layer {base} has no stored spatial latents to pool another way; showing it as encoded."
            ],
        )
    c = shapes[base][0]
    if chans and max(chans) >= c:
        return base, None, None, [f"Channel {max(chans)} does not exist: {base} has {c} channels."]
    name = variant_name(base, kind, chans)
    spec = name.split("@", 1)[1]
    if name in layers:
        return name, spec, None, []
    return base, spec, (base, spec), []


def _parts(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p for p in str(value).replace(";", ",").split(",") if p.strip() != ""]


def resolve_thumbs(store: Store, ds: str, rgb: Any, stretch: Any):
    """(band choice or None, ready, notices) of the link's ``rgb`` and ``stretch``."""
    no_rgb = rgb in (None, "", NONE)
    if no_rgb and (stretch in (None, "") or _parts(stretch) in (["2", "98"], ["2.0", "98.0"])):
        return None, False, []  # the encoded thumbnails
    from latentmap.pipeline.bands import (
        DEFAULT_PERCENTILES,
        BandsError,
        band_info,
        check_choice,
        is_default,
        ready_variant,
        variant_key,
    )

    info = band_info(store, ds)
    if not info.available:
        return None, False, [f"Thumbnail bands cannot be changed for this dataset: {info.reason}."]
    bands = _parts(rgb) if rgb not in (None, "", NONE) else list(info.encoded_rgb)
    if bands and len(bands) == 3:
        n = int(info.n_bands or 3)
        if rgb in (None, "", NONE):
            bands = [str(min(int(b), n - 1)) for b in bands]
    pct = _parts(stretch) if stretch not in (None, "") else list(DEFAULT_PERCENTILES)
    try:
        choice = check_choice(info, bands[:4], pct[:3])
    except BandsError as e:
        return None, False, [f"{str(e)[:200]}; showing the thumbnails as encoded."]
    if is_default(info, *choice):
        return None, False, []
    return choice, ready_variant(store, ds, variant_key(*choice)), []


def resolve_channels(
    raw: dict[str, Any], cols: dict[str, dict]
) -> tuple[dict[str, Any], list[str]]:
    """The channel-analysis fields of a view."""
    notices: list[str] = []
    out = dict(CHANNEL_DEFAULTS)
    ccol = raw.get("ccol")
    if ccol not in (None, "", NONE):
        if ccol in cols:
            out["ccol"] = str(ccol)
        else:
            notices.append(f"No column {_short(ccol)} for the channel analysis; using the default.")
    if raw.get("cstat") not in (None, ""):
        out["cstat"] = _choice(raw, "cstat", CHANNEL_STATS, "channel statistic", notices)
    if raw.get("cgrp") not in (None, "", NONE):
        out["cgrp"] = str(raw["cgrp"])[:_MAX_VALUE_LEN]
    if raw.get("chan") not in (None, ""):
        c = _int(raw["chan"])
        if c is None or c < 0:
            notices.append(f"Channel {_short(raw['chan'])} is not a channel number; ignored.")
        else:
            out["chan"] = c
    return out, notices
