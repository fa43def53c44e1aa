"""Moving data out of (and into) latentmap: the seed 002 ``.npz`` cache, CSV / parquet tables,
and TensorBoard projector TSV files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from latentmap.pipeline.store import Store, atomic_path


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
    md = store.metadata(ds_id).copy()
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
