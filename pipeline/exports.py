"""Moving data out of (and into) latentmap: the seed 002 ``.npz`` cache, CSV / parquet tables,
TensorBoard projector TSV files, and the 2-D maps as one PNG or HTML figure.

The seed 002 cache is read by :func:`latentmap.pipeline.sources.open_embeddings` (imported with
``latentmap encode cache.npz`` / ``latentmap serve --load-cache cache.npz``) and written by
:func:`export_npz`; a cache written here reads back to the same latents, metadata and
thumbnail bytes.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from latentmap.pipeline.store import Store, atomic_path

Progress = Callable[[float, str], None]
MAP_FORMATS = ("png", "html")
# Columns the store adds to every dataset; not part of the user's metadata.
_INTERNAL_COLUMNS = ("has_nan",)
# Thumbnails embedded in an HTML map export up to this many bytes in all.
HTML_THUMB_BUDGET = 64 * 1024**2


class ExportError(ValueError):
    """An export or import that cannot be done; the message says why."""


def _json_safe_records(df) -> list[dict]:
    return json.loads(df.to_json(orient="records", date_format="iso"))


def export_npz(
    store: Store, ds_id: str, layer: str, dest: str | Path, *, spatial: bool = True
) -> Path:
    """Write the seed 002 cache format: ``latents`` (N, ...) float32 (unpooled when stored),
    ``metadata`` (JSON list, one object per item), ``thumbnails`` (JSON list of base64 PNG or
    null)."""
    dest = Path(dest)
    S = store.spatial(ds_id, layer) if spatial else None
    latents = np.asarray(S if S is not None else store.vectors(ds_id, layer), dtype=np.float32)
    md = store.metadata(ds_id)
    md = md.drop(columns=[c for c in _INTERNAL_COLUMNS if c in md.columns])
    thumbs = []
    for row in range(len(md)):
        p = store.thumbnail_path(ds_id, row)
        thumbs.append(base64.b64encode(p.read_bytes()).decode() if p else None)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            latents=latents,
            metadata=np.array(json.dumps(_json_safe_records(md))),
            thumbnails=np.array(json.dumps(thumbs)),
        )
    return dest


def export_npz_layers(store: Store, ds_id: str, dest: str | Path) -> list[tuple[Path, str]]:
    """``encode --save-cache``: the default layer to ``dest`` (seed 002 format, one
    ``latents`` array) and every other captured layer to ``<stem>.<layer>.npz`` beside it."""
    from latentmap.pipeline.store import safe_name

    dest = Path(dest)
    m = store.manifest(ds_id)
    layers = [x for x in store.layers(ds_id) if "@" not in x]
    first = m.get("default_layer") or layers[-1]
    out = [(export_npz(store, ds_id, first, dest), first)]
    for layer in layers:
        if layer != first:
            other = dest.with_name(f"{dest.stem}.{safe_name(layer)}.npz")
            out.append((export_npz(store, ds_id, layer, other), layer))
    return out


def export_table(
    store: Store,
    ds_id: str,
    dest: str | Path,
    *,
    layer: str | None = None,
    coords: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    include_vectors: bool = False,
) -> Path:
    """Metadata (+ 2-D coordinates, + latent vectors) of all rows or ``rows`` as CSV or parquet."""
    dest = Path(dest)
    if dest.suffix not in (".csv", ".parquet"):
        raise ExportError(f"table exports are .csv or .parquet, not {dest.suffix or 'no suffix'!r}")
    md = store.metadata(ds_id)
    md = md.drop(columns=[c for c in _INTERNAL_COLUMNS if c in md.columns])
    md.insert(0, "row", np.arange(len(md)))
    if coords is not None:
        md["x"], md["y"] = coords[:, 0], coords[:, 1]
    if include_vectors:
        if layer is None:
            raise ExportError("include_vectors needs a layer")
        V = np.asarray(store.vectors(ds_id, layer))
        if dest.suffix == ".parquet":
            md["vector"] = list(V)
        else:
            for j in range(V.shape[1]):
                md[f"v{j}"] = V[:, j]
    if rows is not None:
        md = md.iloc[np.asarray(rows, dtype=int)]
    with atomic_path(dest) as tmp:
        if dest.suffix == ".csv":
            md.to_csv(tmp, index=False)
        else:
            md.to_parquet(tmp, index=False)
    return dest


def _tsv_cell(v) -> str:
    s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    return s.replace("\t", " ").replace("\n", " ")


def export_tensorboard(
    store: Store, ds_id: str, layer: str, folder: str | Path
) -> tuple[Path, Path]:
    """``vectors.tsv`` + ``metadata.tsv`` as TensorBoard's Embedding Projector loads them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    V = np.asarray(store.vectors(ds_id, layer))
    md = store.metadata(ds_id)
    md = md.drop(columns=[c for c in _INTERNAL_COLUMNS if c in md.columns])
    vec = folder / "vectors.tsv"
    with atomic_path(vec) as tmp:
        np.savetxt(tmp, V, delimiter="\t", fmt="%.7g")
    meta = folder / "metadata.tsv"
    cols = list(md.columns)
    lines = ["\t".join(cols)] + [
        "\t".join(_tsv_cell(v) for v in row) for row in md.itertuples(index=False)
    ]
    with atomic_path(meta) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return vec, meta


def import_tensorboard(vectors_tsv: str | Path, metadata_tsv: str | Path | None = None):
    """(vectors (N, D) float32, metadata DataFrame) from projector TSV files."""
    import pandas as pd

    try:
        V = np.loadtxt(vectors_tsv, delimiter="\t", dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {vectors_tsv}: {e}") from None
    if metadata_tsv is None:
        return V, pd.DataFrame({"id": [str(i) for i in range(len(V))]})
    md = pd.read_csv(metadata_tsv, sep="\t", keep_default_na=True)
    if len(md.columns) == 1 and len(md) == len(V) - 1:
        # single-column metadata has no header in TensorBoard's format
        md = pd.read_csv(metadata_tsv, sep="\t", header=None, names=["label"])
    if len(md) != len(V):
        raise ExportError(f"metadata has {len(md)} rows but vectors has {len(V)}")
    return V, md


# --------------------------------------------------------------------------- maps as figures


def _data_uri(data: bytes) -> str:
    kind = "jpeg" if data[:3] == b"\xff\xd8\xff" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _hover_texts(meta, color: str | None) -> np.ndarray:
    ids = meta["id"].astype(str).tolist() if "id" in meta.columns else [""] * len(meta)
    if color and color in meta.columns and color != "id":
        vals = meta[color].tolist()
        return np.asarray([f"{i} · {color}: {v}" for i, v in zip(ids, vals, strict=True)], object)
    return np.asarray(ids, dtype=object)


def category_column(meta) -> str | None:
    """The first column named like a category (label, category, class, group) holding 2 to
    60 distinct values: what a map is coloured by when the dataset names no label column."""
    for col in meta.columns:
        name = str(col).lower()
        if not any(w in name for w in ("label", "category", "class", "group")):
            continue
        if 2 <= meta[col].astype(str).nunique() <= 60:
            return str(col)
    return None


def maps_figure(
    store: Store,
    ds_id: str,
    layer: str,
    methods: Sequence[str],
    *,
    color: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    hover: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """The layer's maps (one panel per method, side by side) as one figure dict, and notes.

    Missing projections are computed (with ``progress``). Points carry their dataset row in
    ``customdata`` so that pages can link hover and selection across the panels.
    """
    from latentmap.components.figures import TRACE_OFFSET, scatter_figure, trace_groups
    from latentmap.pipeline.reduce import _LABELS, _check_method, cached_projection, projection
    from latentmap.pipeline.sampling import label_column
    from latentmap.report import PANEL_H, PANEL_W, grid_figure

    methods = list(dict.fromkeys(_check_method(m) for m in methods))
    if not methods:
        raise ExportError("no projection method given: use pca, tsne, umap or all")
    if layer not in store.layers(ds_id):
        raise ExportError(
            f"dataset {ds_id} has no layer {layer!r}; it has: {', '.join(store.layers(ds_id))}"
        )
    meta = store.metadata(ds_id)
    if color is None:
        color = label_column(store, ds_id, meta) or category_column(meta)
    elif color not in meta.columns:
        raise ExportError(
            f"dataset {ds_id} has no column {color!r}; columns: {', '.join(map(str, meta.columns))}"
        )
    notes: list[str] = []
    entries = {}
    for i, method in enumerate(methods):
        label = f"{_LABELS[method]} of {layer} ({i + 1}/{len(methods)})"

        def sub(f: float, msg: str, i: int = i, label: str = label) -> None:
            if progress is not None:
                progress((i + f) / len(methods), f"{label}: {msg}")

        if cached_projection(store, ds_id, layer, method, seed=seed) is None:
            sub(0.0, "computing")
        entries[method] = projection(store, ds_id, layer, method, seed=seed, progress=sub)
        for notice in entries[method].info.get("notices", []):
            notes.append(f"{_LABELS[method]}: {notice}")
    valid = np.asarray(store.valid_mask(ds_id, layer), dtype=bool).copy()
    for e in entries.values():
        valid &= np.isfinite(e["coords"]).all(axis=1)
    if (~valid).any():
        notes.append(f"{int((~valid).sum())} items without finite coordinates are not drawn")
    groups = trace_groups(meta, valid, color=color)
    texts = _hover_texts(meta, color) if hover else None
    panels = []
    for method in methods:
        fig = scatter_figure(entries[method]["coords"], groups, meta, color=color)
        data = fig["data"][TRACE_OFFSET : TRACE_OFFSET + len(groups)]
        for g, t in zip(groups, data, strict=True):
            t["customdata"] = g.rows.tolist()
            if texts is not None:
                t["hovertext"] = texts[g.rows].tolist()
                t["hoverinfo"] = "text"
        fig["data"] = data
        panels.append(fig)
    name = store.manifest(ds_id).get("name", ds_id)
    fig = grid_figure(
        [panels],
        [[_LABELS[m] for m in methods]],
        panel_w=PANEL_W,
        panel_h=PANEL_H,
        title=f"{name}: {layer}",
        legend_title=color or "",
    )
    return fig, notes


_LINK_SCRIPT = """<style>#lm-hover{position:fixed;display:none;pointer-events:none;z-index:1000;
background:#fff;border:1px solid #bbb;border-radius:4px;padding:4px;font-size:12px;
box-shadow:0 2px 8px rgba(0,0,0,.2);max-width:260px}#lm-hover img{display:block;
width:160px;height:auto;max-height:250px;object-fit:contain;margin-bottom:3px}</style>
<script>(function(){var gd=document.getElementById('fig-0');if(!gd||!gd.on)return;
var T=__THUMBS__;var box=document.createElement('div');box.id='lm-hover';
document.body.appendChild(box);var index={},subplots=[];
gd.data.forEach(function(t,c){var s=(t.xaxis||'x')+(t.yaxis||'y');
if(subplots.indexOf(s)<0)subplots.push(s);var cd=t.customdata;if(!cd)return;
for(var k=0;k<cd.length;k++){(index[cd[k]]=index[cd[k]]||[]).push([c,k]);}});
var busy=false;
gd.on('plotly_hover',function(ev){if(busy)return;var p=ev.points&&ev.points[0];
if(!p||p.customdata===undefined)return;var row=p.customdata;
var pts=(index[row]||[]).map(function(q){return {curveNumber:q[0],pointNumber:q[1]};});
busy=true;try{Plotly.Fx.hover(gd,pts,subplots);}finally{busy=false;}
box.textContent='';var src=T[row];if(src){var im=document.createElement('img');im.src=src;
box.appendChild(im);}var d=document.createElement('div');d.textContent=p.hovertext||('row '+row);
box.appendChild(d);var e=ev.event||{};var x=(e.clientX||0)+16,y=(e.clientY||0)+16;
if(x+270>window.innerWidth)x=Math.max(0,(e.clientX||0)-276);
if(y+290>window.innerHeight)y=Math.max(0,(e.clientY||0)-296);
box.style.left=x+'px';box.style.top=y+'px';box.style.display='block';});
gd.on('plotly_unhover',function(){if(!busy)box.style.display='none';});
gd.on('plotly_selected',function(ev){if(!ev||!ev.points)return;var rows={};
ev.points.forEach(function(p){if(p.customdata!==undefined)rows[p.customdata]=1;});
var sel=gd.data.map(function(t){if(!t.customdata)return null;var out=[];
for(var k=0;k<t.customdata.length;k++)if(rows[t.customdata[k]])out.push(k);return out;});
Plotly.restyle(gd,{selectedpoints:sel});});
gd.on('plotly_deselect',function(){
Plotly.restyle(gd,{selectedpoints:gd.data.map(function(){return null;})});});})();</script>"""


def _thumbs_json(store: Store, ds_id: str, rows: int) -> tuple[str, str | None]:
    """JSON object row -> data URI of every thumbnail (up to HTML_THUMB_BUDGET bytes)."""
    out: dict[str, str] = {}
    total = 0
    for row in range(rows):
        p = store.thumbnail_path(ds_id, row)
        if p is None:
            continue
        data = p.read_bytes()
        total += len(data)
        if total > HTML_THUMB_BUDGET:
            return "{}", (
                f"thumbnails are not embedded: they take more than "
                f"{HTML_THUMB_BUDGET // 1024**2} MB"
            )
        out[str(row)] = _data_uri(data)
    text = json.dumps(out, separators=(",", ":"))
    return text.replace("</", "<\\/"), None


def export_maps(
    store: Store,
    ds_id: str,
    layer: str,
    methods: Sequence[str],
    dest: str | Path,
    *,
    color: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Path, list[str]]:
    """Write the layer's maps side by side (e.g. PCA, t-SNE, UMAP) as ``dest``: a ``.png``
    (headless Chromium) or a standalone ``.html`` page whose panels share hover (the item's
    thumbnail shows next to the pointer, the same item is marked in every map) and
    selection (lasso / box select in one map selects the items in all). Returns (path, notes).
    """
    from latentmap.components.diagnostic_figures import save_file, static_copy, write_html
    from latentmap.components.diagnostic_figures import write_png as _write_png
    from latentmap.report import HTML_SVG_MAX_POINTS, SCALE

    dest = Path(dest)
    fmt = dest.suffix.lower().lstrip(".")
    if fmt not in MAP_FORMATS:
        raise ExportError(f"map exports are .png or .html, not {dest.suffix or 'no suffix'!r}")
    t0 = time.perf_counter()
    fig, notes = maps_figure(
        store, ds_id, layer, methods, color=color, seed=seed, progress=progress, hover=fmt == "html"
    )
    width, height = int(fig["layout"]["width"]), int(fig["layout"]["height"])
    if progress is not None:
        progress(1.0, f"writing {dest.name}")
    if fmt == "png":
        _write_png(fig, dest, width=width, height=height, scale=SCALE)
        return dest, notes
    n = int(store.manifest(ds_id).get("n", 0))
    thumbs, note = _thumbs_json(store, ds_id, n)
    if note:
        notes.append(note)
    page_fig = static_copy(fig) if n * len(methods) <= HTML_SVG_MAX_POINTS else fig
    name = store.manifest(ds_id).get("name", ds_id)
    intro = [
        f"<p>Dataset <b>{html.escape(str(name))}</b> (<code>{html.escape(ds_id)}</code>), "
        f"layer <code>{html.escape(layer)}</code>, {n} items. Hover a point to see its "
        "image and the same item in every map; select points with the lasso or box tool "
        "(top right) to select them in every map, double-click to clear.</p>"
    ]
    intro += [f'<div class="note">{html.escape(x)}</div>' for x in notes]
    write_html([("Maps", page_fig)], dest, title=f"latentmap: {name}", intro_html="\n".join(intro))
    page = dest.read_text(encoding="utf-8")
    script = _LINK_SCRIPT.replace("__THUMBS__", thumbs)
    page = page.replace("</body></html>", script + "</body></html>")
    save_file(dest, page.encode("utf-8"))
    if progress is not None:
        progress(1.0, f"wrote {dest.name} in {time.perf_counter() - t0:.1f} s")
    return dest, notes
