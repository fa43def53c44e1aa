"""Open the things a user points latentmap at: a folder of images, or precomputed embeddings.

* :func:`open_image_folder` lists the images of a folder tree (labels from sub-folder names
  and / or a labels table keyed by file name, path or stem).
* :func:`open_embeddings` reads vectors from ``.npy`` / ``.npz`` (including the
  ``latents`` + JSON ``metadata`` + base64 ``thumbnails`` cache format) / ``.parquet`` / ``.csv``
  / TensorBoard projector ``.tsv`` (``vectors.tsv``, with ``metadata.tsv`` beside it joined).
* :func:`open_source` picks one of the two from the path.

Every user-facing failure is a :class:`SourceError` with a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from latentmap.pipeline.images import DEFAULT_MAX_PIXELS, IMAGE_EXTS, read_image
from latentmap.pipeline.store import canonical_json, file_digest

log = logging.getLogger(__name__)

KEY_COLUMNS = ("file", "filename", "file_name", "path", "image", "id", "name")
VECTOR_KEYS = ("latents", "embeddings", "vectors", "features", "X")
VECTOR_COLUMNS = (
    "embedding",
    "embeddings",
    "vector",
    "vectors",
    "latent",
    "latents",
    "features",
    "feature",
)
THUMBNAIL_COLUMNS = ("thumbnail", "thumbnails", "thumb")
SEED002_KEYS = ("latents", "metadata", "thumbnails")
EMBEDDING_EXTS = (".npy", ".npz", ".parquet", ".csv", ".tsv")
_SKIP_DIRS = {"__MACOSX", "__pycache__"}


class SourceError(ValueError):
    """A folder or file cannot be used as a data source (the message says why)."""


def _sha(parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(canonical_json(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _subset(n: int, num_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset, or None when everything is kept."""
    if num_samples is None:
        return None
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise SourceError(f"num_samples must be a whole number, got {num_samples!r}")
    if num_samples < 1:
        raise SourceError(f"num_samples must be at least 1, got {num_samples}")
    if num_samples >= n:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(num_samples), replace=False))


# --------------------------------------------------------------------------- labels tables


def load_labels_table(path: str | Path) -> pd.DataFrame:
    """Read a labels table (CSV, TSV or parquet), keeping the columns' dtypes."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"labels file not found: {path}")
    if not path.is_file():
        raise SourceError(f"labels file is not a file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
        elif suffix == ".tsv":
            df = pd.read_csv(path, sep="\t")
        else:
            df = pd.read_csv(path)
            if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in ";\t|"):
                sep = next(sep for sep in ";\t|" if sep in str(df.columns[0]))
                df = pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError:
        raise SourceError(f"labels file {path.name} is empty") from None
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"could not read labels file {path.name}: {msg}") from None
    if df.shape[1] == 0:
        raise SourceError(f"labels file {path.name} has no key column (it has no columns)")
    df.columns = [str(c) for c in df.columns]
    return df.reset_index(drop=True)


def find_key_column(df: pd.DataFrame) -> str:
    """First column named like a file key (case-insensitive), else the first column."""
    lower = {str(c).lower(): str(c) for c in reversed(list(df.columns))}
    for name in KEY_COLUMNS:
        if name in lower:
            return lower[name]
    return str(df.columns[0])


def _norm_key(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text or None


def match_rows(items: Sequence[str], keys: Sequence[Any]) -> tuple[np.ndarray, int, int]:
    """Row of the labels table for each item (-1 if none): by relative path, name, or stem.

    Returns (row index per item, number of rows matching no item, number of duplicate rows).
    """
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    by_stem: dict[str, list[int]] = {}
    for i, rel in enumerate(items):
        p = PurePosixPath(rel)
        by_path[rel] = i
        by_name.setdefault(p.name, []).append(i)
        by_stem.setdefault(p.stem, []).append(i)
    rows = np.full(len(items), -1, dtype=np.int64)
    unmatched = duplicates = 0
    for r, raw in enumerate(keys):
        key = _norm_key(raw)
        if key is None:
            unmatched += 1
            continue
        name = PurePosixPath(key).name
        if key in by_path:
            targets = [by_path[key]]
        elif name in by_name:
            targets = by_name[name]
        elif name in by_stem:
            targets = by_stem[name]
        else:
            targets = by_stem.get(PurePosixPath(name).stem, [])
        if not targets:
            unmatched += 1
            continue
        free = [t for t in targets if rows[t] < 0]
        if not free:
            duplicates += 1
        rows[free] = r
    return rows, unmatched, duplicates


def align_table(table: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows of ``table`` in ``rows`` order; -1 gives a missing row (ints stay ints if complete)."""
    t = table.reset_index(drop=True)
    if len(rows) and (rows >= 0).all():
        return t.iloc[rows].reset_index(drop=True)
    idx = np.where(rows >= 0, rows, len(t))
    return t.reindex(idx).reset_index(drop=True)


def _merge_columns(meta: pd.DataFrame, extra: pd.DataFrame, key: str | None) -> pd.DataFrame:
    """Add ``extra``'s columns to ``meta``; the labels file wins over a folder ``label``."""
    out = meta.copy()
    for col in extra.columns:
        if col == key and col in ("id", "file"):
            continue
        name = col
        if name == "label" and "label" in out.columns:
            out = out.rename(columns={"label": "folder"})
        elif name in out.columns:
            name = f"labels_{col}"
        out[name] = extra[col].reset_index(drop=True)
    return out


def _join_labels(
    items: Sequence[str], table: pd.DataFrame, source_name: str
) -> tuple[pd.DataFrame, str, list[str]]:
    """Align a labels table to items; return (aligned columns, key column, notices)."""
    preferred = find_key_column(table)
    lower = {str(c).lower(): str(c) for c in reversed(list(table.columns))}
    named = [lower[k] for k in KEY_COLUMNS if k in lower]
    candidates = list(dict.fromkeys([preferred, *named, *map(str, table.columns)]))
    key = preferred
    rows, unmatched, duplicates = match_rows(items, table[key].tolist())
    for col in candidates[1:]:
        if (rows >= 0).any():
            break
        if pd.api.types.is_float_dtype(table[col]) or pd.api.types.is_bool_dtype(table[col]):
            continue
        trial = match_rows(items, table[col].tolist())
        if (trial[0] >= 0).any():
            key = col
            rows, unmatched, duplicates = trial
            log.info("labels file %s: keyed by column %r", source_name, col)
    notices: list[str] = []
    if not (rows >= 0).any():
        key = preferred
        examples = ", ".join(repr(str(v)) for v in table[key].head(3).tolist())
        raise SourceError(
            f"labels file {source_name} has no key column matching the items: column "
            f"{key!r} (e.g. {examples}) matches none of them; add a column 'file' holding "
            "the file names"
        )
    missing = int((rows < 0).sum())
    if missing:
        notices.append(f"{missing} of {len(items)} items have no row in {source_name}")
    if unmatched:
        notices.append(f"{unmatched} rows of {source_name} match no item and were ignored")
    if duplicates:
        notices.append(f"{duplicates} duplicate rows in {source_name} were ignored")
    return align_table(table, rows), key, notices


# --------------------------------------------------------------------------- image folders


@dataclass
class ImageFolderSource:
    """Images found under ``root`` (``items`` are posix paths relative to it)."""

    root: Path
    items: list[str]
    metadata: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    labels_path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def path(self, i: int) -> Path:
        return self.root / self.items[i]

    def load(self, i: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Item ``i`` as float32 (C, H, W); raises ImageReadError for a bad file."""
        return read_image(self.path(i), max_pixels=max_pixels)

    def fingerprint(self) -> str:
        """Changes when a listed file, the labels file or an option changes."""
        stats = []
        for rel in self.items:
            try:
                st = (self.root / rel).stat()
                stats.append([rel, st.st_size, st.st_mtime_ns])
            except OSError:
                stats.append([rel, None, None])
        labels = file_digest(self.labels_path) if self.labels_path else None
        return _sha(["image_folder", stats, labels, self.options])


def _inside(path: Path, root_real: Path) -> bool:
    try:
        path.relative_to(root_real)
    except ValueError:
        return False
    return True


def scan_folder(
    root: Path, extensions: Iterable[str], exclude: Path | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted image paths, skipped (path, reason)) under root; hidden entries are ignored."""
    exts = {e.lower().lstrip(".") for e in extensions}
    root_real = root.resolve()
    exclude_real = exclude.resolve() if exclude is not None else None
    items: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real_here = here.resolve()
        if real_here in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real_here)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d in _SKIP_DIRS:
                continue
            target = (here / d).resolve()
            rel = (here / d).relative_to(root).as_posix()
            if not _inside(target, root_real):
                skipped.append((rel + "/", "link points outside the folder"))
            elif target in seen_dirs:
                continue
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            full = here / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if not target.exists():
                    skipped.append((rel, "broken link"))
                    continue
                if not _inside(target, root_real):
                    skipped.append((rel, "link points outside the folder"))
                    continue
            if exclude_real is not None and full.resolve() == exclude_real:
                continue
            ext = Path(name).suffix.lower().lstrip(".")
            if ext in exts:
                items.append(rel)
            else:
                skipped.append(
                    (
                        rel,
                        f"not an image file (.{ext})"
                        if ext
                        else "not an image file (no extension)",
                    )
                )
    items.sort()
    skipped.sort()
    return items, skipped


def open_image_folder(
    root: str | Path,
    *,
    labels: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    extensions: Iterable[str] = IMAGE_EXTS,
) -> ImageFolderSource:
    """List the images under ``root`` with their metadata (see module docstring)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise SourceError(f"folder not found: {root}")
    if not root.is_dir():
        raise SourceError(f"not a folder: {root}")
    exts = sorted({e.lower().lstrip(".") for e in extensions})
    labels_path = Path(labels).expanduser() if labels is not None else None
    table = load_labels_table(labels_path) if labels_path is not None else None
    all_items, skipped = scan_folder(root, exts, exclude=labels_path)
    if not all_items:
        n_other = len(skipped)
        raise SourceError(
            f"no image files found in {root} ({n_other} other file{'s' if n_other != 1 else ''} "
            f"seen; looked for {', '.join('.' + e for e in exts)})"
        )
    notices: list[str] = []
    aligned: pd.DataFrame | None = None
    key = None
    if table is not None:
        assert labels_path is not None
        aligned, key, notices = _join_labels(all_items, table, labels_path.name)
    subset = _subset(len(all_items), num_samples, seed)
    items = all_items if subset is None else [all_items[i] for i in subset]
    meta = pd.DataFrame(
        {"id": items, "file": [PurePosixPath(rel).name for rel in items]},
    )
    if any("/" in rel for rel in items):
        meta["label"] = [rel.split("/", 1)[0] if "/" in rel else None for rel in items]
    if aligned is not None:
        if subset is not None:
            aligned = aligned.iloc[subset].reset_index(drop=True)
        meta = _merge_columns(meta, aligned, key)
    if skipped:
        log.info("%s: %d non-image entries skipped", root, len(skipped))
    return ImageFolderSource(
        root=root,
        items=items,
        metadata=meta,
        skipped=skipped,
        notices=notices,
        labels_path=labels_path,
        options={"num_samples": num_samples, "seed": seed, "extensions": exts},
    )


# --------------------------------------------------------------------------- embeddings


@dataclass
class EmbeddingsSource:
    """Precomputed vectors: (N, D), or spatial (N, C, H, W), with one metadata row each."""

    path: Path
    vectors: np.ndarray
    metadata: pd.DataFrame
    thumbnails: list[bytes | None] | None = None
    layer: str = "embedding"
    notices: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.vectors)

    def fingerprint(self) -> str:
        """Content digest of the file (and labels file) plus the options used to open it."""
        labels = self.options.get("labels")
        labels_digest = file_digest(labels) if labels else None
        digest = npz_digest(self.path) if self.path.suffix.lower() == ".npz" else None
        return _sha(["embeddings", digest or file_digest(self.path), labels_digest, self.options])


def npz_digest(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """Digest of an .npz file's arrays (names and uncompressed bytes), not of the zip around
    them: the same arrays saved twice (other timestamps, other compression) digest alike.
    None when the file is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            h = hashlib.sha256(b"npz\x00")
            for name in sorted(zf.namelist()):
                h.update(name.encode() + b"\x00")
                with zf.open(name) as f:
                    while block := f.read(chunk):
                        h.update(block)
                h.update(b"\x00")
            return h.hexdigest()
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError):
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _as_vectors(arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if (
        a.dtype == object
        or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_)
        or np.issubdtype(a.dtype, np.complexfloating)
    ):
        raise SourceError(f"{what} holds {a.dtype} values, not real numbers")
    if a.ndim < 2:
        raise SourceError(
            f"{what} is {a.ndim}-D (shape {a.shape}); expected (N, D) vectors or "
            "(N, C, H, W) spatial latents"
        )
    if a.ndim > 4:
        raise SourceError(f"{what} has shape {a.shape}; expected (N, D) or (N, C, H, W)")
    if a.shape[0] == 0:
        raise SourceError(f"{what} has 0 rows")
    if a.shape[1:] and min(a.shape[1:]) == 0:
        raise SourceError(f"{what} has shape {a.shape}: rows are empty")
    return np.ascontiguousarray(a, dtype=np.float32)


_DATA_URI = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)


def decode_thumbnail(value: Any) -> bytes | None:
    """base64 string / data URI / raw bytes -> PNG or JPEG bytes; None if not a valid image.

    Images in other formats (WebP, GIF, BMP...) are re-encoded as PNG.
    """
    from PIL import Image, UnidentifiedImageError

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        text = _DATA_URI.sub("", value.strip(), count=1)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format in ("PNG", "JPEG"):
                return data
            buf = io.BytesIO()
            im.convert("RGBA" if "A" in im.getbands() else "RGB").save(buf, format="PNG")
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None


def invalid_thumbnails_notice(bad: int) -> str:
    """The line shown when ``bad`` thumbnails could not be decoded."""
    if bad == 1:
        return "1 thumbnail was not a valid base64 image: shown without an image"
    return f"{bad} thumbnails were not valid base64 images: shown without images"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def decode_thumbnails(values: Sequence[Any]) -> tuple[list[bytes | None], int]:
    """Decode each thumbnail; returns (thumbnails, number that were present but invalid)."""
    out: list[bytes | None] = []
    bad = 0
    for v in values:
        data = decode_thumbnail(v)
        if data is None and not _is_missing(v):
            bad += 1
        out.append(data)
    return out, bad


def _json_field(value: np.ndarray, name: str, path: Path) -> Any:
    """Parse a JSON string stored in an .npz (0-d str / bytes array)."""
    a = np.asarray(value)
    if a.ndim != 0 or a.dtype.kind not in "US":
        raise SourceError(f"{path.name}: '{name}' is not a JSON string (dtype {a.dtype})")
    text = a.item()
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path.name}: '{name}' is not valid JSON ({e.msg})") from None


def _metadata_frame(obj: Any, path: Path) -> pd.DataFrame:
    if isinstance(obj, list):
        if all(isinstance(o, dict) for o in obj):
            return pd.DataFrame(obj)
        if all(not isinstance(o, (dict, list)) for o in obj):
            return pd.DataFrame({"id": obj})
    if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
        lengths = {len(v) for v in obj.values()}
        if len(lengths) <= 1:
            return pd.DataFrame(obj)
    raise SourceError(
        f"{path.name}: 'metadata' must be a JSON list of objects (one per item) or an object of "
        "equal-length lists"
    )


def _has_dict(v: Any) -> bool:
    if isinstance(v, dict):
        return True
    if isinstance(v, (list, tuple, np.ndarray)):
        return any(_has_dict(x) for x in v)
    return False


def _json_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return str(v)


def storable_metadata(meta: pd.DataFrame) -> pd.DataFrame:
    """Metadata the store's parquet file can hold: a column mixing kinds of values (numbers
    and text, lists and numbers) becomes text, and nested objects (``{"bbox": ..., "label":
    ...}``) become JSON text; lists of numbers stay lists."""
    import pyarrow as pa

    out = meta
    for col in meta.columns:
        if meta[col].dtype != object:
            continue
        values = meta[col].tolist()
        convert = any(_has_dict(v) for v in values)
        if not convert:
            try:
                pa.array(values, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                convert = True
        if convert:
            if out is meta:
                out = meta.copy()
            out[col] = [_json_cell(v) for v in values]
    return out


def _ensure_ids(meta: pd.DataFrame, n: int) -> pd.DataFrame:
    meta = meta.reset_index(drop=True)
    if "id" not in meta.columns:
        meta.insert(0, "id", [str(i) for i in range(n)])
    else:
        meta["id"] = [_id_text(v, i) for i, v in enumerate(meta["id"].tolist())]
    return meta


def _id_text(value: Any, row: int) -> str:
    """Ids are strings: 3 -> "3", 3.0 -> "3", missing -> the row number."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return str(row)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _check_length(what: str, count: int, vectors_name: str, n: int, path: Path) -> None:
    if count != n:
        raise SourceError(f"{path.name}: {vectors_name} has {n} items but {what} has {count}")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SourceError(
                f"{path.name} stores Python objects (pickled); save a plain numeric array"
            ) from None
        raise SourceError(f"could not read {path.name}: {_first_line(e)}") from None
    except (OSError, EOFError) as e:
        raise SourceError(f"could not read {path.name}: {_first_line(e)}") from None


def _read_npz(
    path: Path, key: str | None
) -> tuple[np.ndarray, pd.DataFrame | None, list[Any] | None, str]:
    """(vectors, metadata or None, raw thumbnails or None, vectors key) of an .npz file."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise SourceError(f"could not read {path.name}: {_first_line(e)}") from None
    with npz:
        names = list(npz.files)
        if key is not None:
            if key not in names:
                raise SourceError(
                    f"{path.name} has no array {key!r}; it has: {', '.join(names) or 'nothing'}"
                )
            vkey = key
        else:
            found = [k for k in VECTOR_KEYS if k in names]
            if not found and ("metadata" in names or "thumbnails" in names):
                raise SourceError(
                    f"{path.name} has no 'latents' array (a seed-002 cache holds "
                    f"{', '.join(SEED002_KEYS)}); it has: {', '.join(names)}"
                )
            if not found:
                raise SourceError(
                    f"{path.name} has no vectors array (looked for {', '.join(VECTOR_KEYS)}); "
                    f"it has: {', '.join(names) or 'nothing'}. Choose one with key=..."
                )
            vkey = found[0]

        def get(name: str) -> np.ndarray:
            try:
                return npz[name]
            except ValueError as e:
                if "pickle" in str(e).lower():
                    raise SourceError(
                        f"{path.name}: '{name}' stores Python objects (pickled); save it as a "
                        "JSON string or a plain array"
                    ) from None
                raise SourceError(f"{path.name}: cannot read '{name}': {_first_line(e)}") from None
            except (OSError, EOFError) as e:
                raise SourceError(f"{path.name}: cannot read '{name}': {_first_line(e)}") from None

        vectors = _as_vectors(get(vkey), f"{path.name}['{vkey}']")
        n = len(vectors)
        meta: pd.DataFrame | None = None
        if "metadata" in names and vkey != "metadata":
            raw = get("metadata")
            if raw.ndim == 0:
                meta = _metadata_frame(_json_field(raw, "metadata", path), path)
            elif raw.ndim == 1:
                meta = _metadata_frame([_parse_json_item(v, path) for v in raw.tolist()], path)
            else:
                raise SourceError(f"{path.name}: 'metadata' has shape {raw.shape}")
            _check_length("metadata", len(meta), vkey, n, path)
        thumbs: list[Any] | None = None
        if "thumbnails" in names and vkey != "thumbnails":
            raw = get("thumbnails")
            if raw.ndim == 0:
                thumbs = _json_field(raw, "thumbnails", path)
                if not isinstance(thumbs, list):
                    raise SourceError(f"{path.name}: 'thumbnails' must be a JSON list")
            elif raw.ndim == 1:
                thumbs = raw.tolist()
            else:
                raise SourceError(f"{path.name}: 'thumbnails' has shape {raw.shape}")
            _check_length("thumbnails", len(thumbs), vkey, n, path)
        if vkey == "latents" and ("metadata" in names or "thumbnails" in names):
            missing = [k for k in SEED002_KEYS if k not in names]
            if missing:
                raise SourceError(
                    f"{path.name} has no {' or '.join(repr(k) for k in missing)} array (a "
                    f"seed-002 cache holds {', '.join(SEED002_KEYS)}); it has: {', '.join(names)}"
                )
        extra = {}
        for name in names:
            if name in (vkey, "metadata", "thumbnails"):
                continue
            arr = get(name)
            if arr.ndim == 1 and len(arr) == n and arr.dtype.kind in "biufUS":
                values = arr.astype(str) if arr.dtype.kind == "S" else arr
                extra[name] = values
        if extra:
            meta = meta if meta is not None else pd.DataFrame(index=range(n))
            for name, values in extra.items():
                if name not in meta.columns:
                    meta[name] = values
    return vectors, meta, thumbs, vkey


def _parse_json_item(value: Any, path: Path) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise SourceError(f"{path.name}: an entry of 'metadata' is not valid JSON") from None
    return value


_INDEXED = re.compile(r"^(.*?)(\d+)$")


def _parse_list_cell(value: Any) -> Any:
    """A CSV cell like "[0.1, 0.2]" or numpy's "[0.1 0.2]" -> list of floats (else as is)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if text.startswith("[") and text.endswith("]"):
        parts = [t for t in re.split(r"[\s,]+", text[1:-1]) if t]
        try:
            return [float(t) for t in parts]
        except ValueError:
            return None
    return None


def _vector_column(df: pd.DataFrame, path: Path) -> tuple[np.ndarray, list[str]] | None:
    """A list/array column named like embeddings -> (vectors, [column])."""
    lower = {str(c).lower(): c for c in df.columns}
    for name in VECTOR_COLUMNS:
        if name not in lower:
            continue
        col = lower[name]
        cells = [_parse_list_cell(v) for v in df[col].tolist()]
        if not all(isinstance(c, (list, tuple, np.ndarray)) for c in cells):
            if pd.api.types.is_numeric_dtype(df[col]):
                continue
            raise SourceError(
                f"{path.name}: column {col!r} does not hold a list of numbers in every row"
            )
        lengths = {np.shape(c) for c in cells}
        if len(lengths) != 1:
            sizes = sorted({int(np.size(c)) for c in cells})
            raise SourceError(
                f"{path.name}: column {col!r} holds vectors of different lengths "
                f"({', '.join(map(str, sizes[:5]))})"
            )
        try:
            arr = np.asarray([np.asarray(c, dtype=np.float64) for c in cells])
        except (TypeError, ValueError):
            raise SourceError(f"{path.name}: column {col!r} holds non-numeric values") from None
        return arr, [str(col)]
    return None


def _indexed_numeric_columns(df: pd.DataFrame) -> list[str] | None:
    """Numeric columns sharing a prefix with a running number (f0..fN, dim_0.., 0..N)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for col in df.columns:
        m = _INDEXED.match(str(col))
        if m and pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            groups.setdefault(m.group(1), []).append((int(m.group(2)), str(col)))
    if not groups:
        return None
    members = max(groups.values(), key=len)
    if len(members) < 2:
        return None
    return [c for _, c in sorted(members)]


def _read_table_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
        else:
            df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise SourceError(f"{path.name} is empty") from None
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as e:
        raise SourceError(f"could not read {path.name}: {_first_line(e)}") from None
    df.columns = [str(c) for c in df.columns]
    return df.reset_index(drop=True)


def _read_table_embeddings(
    path: Path,
) -> tuple[np.ndarray, pd.DataFrame, list[Any] | None, str]:
    df = _read_table_file(path)
    if len(df) == 0:
        raise SourceError(f"{path.name} has 0 rows")
    found = _vector_column(df, path)
    if found is not None:
        arr, used = found
        name = used[0]
    else:
        used = _indexed_numeric_columns(df) or []
        if not used:
            raise SourceError(
                f"{path.name}: no vectors found: expected a list column named "
                f"{'/'.join(VECTOR_COLUMNS[:7:2])} or numeric columns like f0..fN; columns: "
                f"{', '.join(map(str, df.columns[:12]))}"
            )
        arr = df[used].to_numpy(dtype=np.float64)
        name = "embedding"
    vectors = _as_vectors(arr, f"{path.name} vectors")
    lower = {c.lower(): c for c in df.columns}
    thumb_col = next((lower[c] for c in THUMBNAIL_COLUMNS if c in lower), None)
    thumbs = df[thumb_col].tolist() if thumb_col is not None else None
    drop = set(used) | ({thumb_col} if thumb_col else set())
    meta = df[[c for c in df.columns if c not in drop]].reset_index(drop=True)
    return vectors, meta, thumbs, name


def open_embeddings(
    path: str | Path,
    *,
    labels: str | Path | None = None,
    key: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> EmbeddingsSource:
    """Read precomputed vectors from .npy / .npz / .parquet / .csv (see module docstring).

    ``labels``: a table joined by its ``id`` column when that matches the items' ids, else
    by row order (then it must have one row per item). ``num_samples``: seeded random subset.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"file not found: {path}")
    if not path.is_file():
        raise SourceError(f"not a file: {path}")
    suffix = path.suffix.lower()
    notices: list[str] = []
    projector_meta = False
    thumbs_raw: list[Any] | None = None
    meta: pd.DataFrame | None = None
    if suffix == ".npy":
        vectors = _as_vectors(_load_npy(path), path.name)
        vkey = "embedding"
    elif suffix == ".npz":
        vectors, meta, thumbs_raw, vkey = _read_npz(path, key)
    elif suffix in (".parquet", ".csv"):
        vectors, meta, thumbs_raw, vkey = _read_table_embeddings(path)
    elif suffix == ".tsv":
        vectors, vkey = read_projector_vectors(path), "embedding"
        beside = path.with_name("metadata.tsv")
        if labels is None and path.name == "vectors.tsv" and beside.is_file():
            labels = beside
            notices.append("metadata from metadata.tsv beside vectors.tsv")
        if labels is not None and Path(labels).suffix.lower() == ".tsv":
            # projector metadata: the items' own table, one row per vector, in order
            meta = read_projector_metadata(Path(labels).expanduser(), len(vectors))
            projector_meta = True
    else:
        raise SourceError(
            f"{path.name}: unsupported embeddings file (use {', '.join(EMBEDDING_EXTS)})"
        )
    n = len(vectors)
    meta = _ensure_ids(meta if meta is not None else pd.DataFrame(index=range(n)), n)
    meta = storable_metadata(meta)
    if meta["id"].duplicated().any():
        dup = int(meta["id"].duplicated().sum())
        notices.append(
            f"{dup} duplicate ids; ids replaced by row numbers (old ones kept in 'source_id')"
        )
        meta = meta.rename(columns={"id": "source_id"})
        meta.insert(0, "id", [str(i) for i in range(n)])
    thumbnails: list[bytes | None] | None = None
    if thumbs_raw is not None:
        thumbnails, bad = decode_thumbnails(thumbs_raw)
        if bad:
            notices.append(invalid_thumbnails_notice(bad))
    labels_path = Path(labels).expanduser() if labels is not None else None
    if labels_path is not None and not projector_meta:
        meta, more = _join_embedding_labels(meta, load_labels_table(labels_path), labels_path)
        notices.extend(more)
    subset = _subset(n, num_samples, seed)
    if subset is not None:
        vectors = np.ascontiguousarray(vectors[subset])
        meta = meta.iloc[subset].reset_index(drop=True)
        if thumbnails is not None:
            thumbnails = [thumbnails[i] for i in subset]
    return EmbeddingsSource(
        path=path,
        vectors=vectors,
        metadata=meta,
        thumbnails=thumbnails,
        layer="embedding",
        notices=notices,
        options={
            "key": vkey,
            "labels": str(labels_path) if labels_path else None,
            "num_samples": num_samples,
            "seed": seed,
        },
    )


def read_projector_vectors(path: Path) -> np.ndarray:
    """A TensorBoard projector ``vectors.tsv``: one tab-separated row of numbers per item, no
    header. A ragged or non-numeric row is an error naming its line."""
    try:
        return np.loadtxt(path, delimiter="\t", dtype=np.float32, ndmin=2, comments=None)
    except OSError as e:
        raise SourceError(f"could not read {path.name}: {_first_line(e)}") from None
    except ValueError as e:
        first = _first_line(e)
    width, width_line = None, 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split("\t")
            if width is None:
                width, width_line = len(cells), lineno
            elif len(cells) != width:
                raise SourceError(
                    f"{path.name}, line {lineno}: {len(cells)} values, but line {width_line} "
                    f"has {width} (every row of a projector TSV has the same length)"
                )
            for cell in cells:
                try:
                    float(cell)
                except ValueError:
                    raise SourceError(
                        f"{path.name}, line {lineno}: {cell[:40]!r} is not a number"
                    ) from None
    raise SourceError(f"could not read {path.name}: {first}")


def read_projector_metadata(path: Path, n: int) -> pd.DataFrame:
    """A TensorBoard projector ``metadata.tsv`` for ``n`` vectors: a header row, except that a
    single-column file has none (TensorBoard's rule)."""
    table = load_labels_table(path)
    if table.shape[1] == 1 and len(table) == n - 1:
        try:
            table = pd.read_csv(path, sep="\t", header=None, names=["label"])
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise SourceError(f"could not read labels file {path.name}: {_first_line(e)}") from None
    if len(table) != n:
        raise SourceError(
            f"{path.name} has {len(table)} rows but there are {n} vectors "
            "(projector metadata has one row per vector, after a header row)"
        )
    return table


def _join_embedding_labels(
    meta: pd.DataFrame, table: pd.DataFrame, labels_path: Path
) -> tuple[pd.DataFrame, list[str]]:
    lower = {c.lower(): c for c in table.columns}
    ids = [str(v) for v in meta["id"].tolist()]
    if "id" in lower:
        col = lower["id"]
        rows, unmatched, duplicates = match_rows(ids, table[col].tolist())
        if (rows >= 0).any():
            notices = []
            if (rows < 0).any():
                notices.append(
                    f"{int((rows < 0).sum())} of {len(ids)} items have no row in {labels_path.name}"
                )
            if unmatched:
                notices.append(
                    f"{unmatched} rows of {labels_path.name} match no item and were ignored"
                )
            if duplicates:
                notices.append(f"{duplicates} duplicate rows in {labels_path.name} were ignored")
            return _merge_columns(meta, align_table(table, rows), col), notices
    if len(table) != len(meta):
        raise SourceError(
            f"labels file {labels_path.name} has {len(table)} rows but there are {len(meta)} "
            "vectors, and it has no 'id' column matching the items"
        )
    return _merge_columns(meta, table, None), []


# --------------------------------------------------------------------------- dispatch


def open_source(
    path: str | Path, *, group_captures: bool = False, **kw: Any
) -> ImageFolderSource | EmbeddingsSource:
    """A folder -> :func:`open_image_folder` (or, ``group_captures``, one multi-band item per
    capture of single-band files: ``pipeline.captures.open_capture_folder``); an embeddings
    file -> :func:`open_embeddings`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"not found: {p}")
    if p.is_dir() and (p / "vectors.tsv").is_file():
        p = p / "vectors.tsv"  # a TensorBoard projector folder
    if p.is_dir():
        allowed = {"labels", "num_samples", "seed", "extensions"}
        opener: Any = open_image_folder
        if group_captures:
            from latentmap.pipeline.captures import open_capture_folder

            opener = open_capture_folder
    elif p.suffix.lower() in EMBEDDING_EXTS:
        allowed = {"labels", "key", "num_samples", "seed"}
        opener = open_embeddings
    else:
        raise SourceError(
            f"{p} is neither an image folder nor an embeddings file (.npy/.npz/.parquet/.csv)"
            " or a TensorBoard projector vectors.tsv"
        )
    if group_captures and not p.is_dir():
        raise SourceError("--group-captures applies to an image folder, not an embeddings file")
    extra = sorted(set(kw) - allowed)
    if extra:
        kind = "an image folder" if p.is_dir() else "an embeddings file"
        raise SourceError(f"option(s) {', '.join(extra)} do not apply to {kind}")
    return opener(p, **kw)
