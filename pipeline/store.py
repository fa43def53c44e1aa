"""The on-disk cache: datasets (vectors, metadata, thumbnails) and derived results.

Layout under the cache root::

    datasets/<id>/manifest.json        what the dataset is, how it was made, its status
    datasets/<id>/metadata.parquet     one row per encoded item (row order = vector order)
    datasets/<id>/vectors/<layer>.npy  (N, D) float32, memory-mapped on read
    datasets/<id>/vectors/<layer>.valid.npy   (N,) bool, False where the row had NaN/Inf
    datasets/<id>/spatial/<layer>.npy  (N, C, H, W) float32, unpooled, when within budget
    datasets/<id>/thumbs/<row>.png     thumbnail of row <row>
    datasets/<id>/parts/               per-batch results of an encode in progress (resume)
    derived/<hash>.npz + <hash>.json   read-through cache entries (reductions, kNN, ...)

Every write goes to a temporary file first and is renamed into place; derived entries carry
the key they were made for and a checksum per array, and are verified when read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StoreError(Exception):
    """A problem with the cache a user can act on (message is shown as is)."""


class DatasetNotFound(StoreError):
    pass


class CorruptEntry(StoreError):
    pass


class NotCached(LookupError):
    """Raised by a ``cached_only()`` store on a miss: the result needs a background job."""

    def __init__(self, key: dict[str, Any]):
        super().__init__(f"not computed yet: {key.get('kind', 'entry')}")
        self.key = key


# --------------------------------------------------------------------------- keys and hashing


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def key_hash(key: dict[str, Any], n: int = 24) -> str:
    """Stable hash of a key dict (schema version included)."""
    payload = canonical_json({"schema": SCHEMA_VERSION, **key})
    return hashlib.sha256(payload.encode()).hexdigest()[:n]


def fast_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """blake2b-128 of a file's bytes (about 1 GB/s): the checksum of dataset array files."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# files already verified by this process: (path, size, mtime_ns) -> True (a file that changes
# on disk gets a new key and is verified again); process-local, never per-user state
_VERIFIED: dict[tuple[str, int, int], bool] = {}


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_checksum(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def safe_name(name: str) -> str:
    """A file-system safe name for a layer (``features.0`` stays, ``a/b`` becomes ``a_b``)."""
    s = _SAFE.sub("_", name) or "_"
    return s if s not in (".", "..") else "_" + s


def valid_dataset_id(ds_id: str) -> bool:
    return bool(isinstance(ds_id, str) and _ID_RE.fullmatch(ds_id))  # "$" would allow "id\n"


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path in dest's folder; rename it onto dest when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(dest: Path, arr: np.ndarray) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def save_json(dest: Path, obj: Any) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_json_default))  # keeps layer order


def save_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Exclusive advisory lock (works across processes on one machine / NFSv4). ``on_wait``
    is called once, before blocking, when another holder has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- entries


@dataclass
class Entry:
    """A derived cache entry: named arrays plus JSON-able info (notices, params used...)."""

    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


@dataclass
class DatasetInfo:
    id: str
    name: str
    status: str
    n: int
    layers: list[str]
    created: str
    source: str
    model: str

    @classmethod
    def from_manifest(cls, m: dict[str, Any]) -> DatasetInfo:
        return cls(
            id=m["id"],
            name=m.get("name", m["id"]),
            status=m.get("status", "unknown"),
            n=int(m.get("n", 0)),
            layers=list(m.get("layers", {})),
            created=m.get("created", ""),
            source=str(m.get("source", {}).get("path", m.get("source", {}).get("kind", ""))),
            model=str(m.get("model", {}).get("spec", "")),
        )


# --------------------------------------------------------------------------- the store


class Store:
    """All reads and writes of the cache go through here. Cheap to construct."""

    def __init__(self, root: str | Path, *, compute: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.compute = compute

    def cached_only(self) -> Store:
        """A view of the same cache whose ``get_or_compute`` raises ``NotCached`` on a miss
        instead of computing: what request handlers use to draw only what is ready."""
        return Store(self.root, compute=False)

    # ----- datasets
    def dataset_dir(self, ds_id: str) -> Path:
        if not valid_dataset_id(ds_id):
            raise DatasetNotFound(f"not a dataset id: {ds_id!r}")
        return self.root / "datasets" / ds_id

    def manifest_path(self, ds_id: str) -> Path:
        return self.dataset_dir(ds_id) / "manifest.json"

    def has_dataset(self, ds_id: str, complete: bool = True) -> bool:
        try:
            m = self.manifest(ds_id)
        except StoreError:
            return False
        return m.get("status") == "complete" or not complete

    def manifest(self, ds_id: str) -> dict[str, Any]:
        p = self.manifest_path(ds_id)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise DatasetNotFound(f"no dataset {ds_id!r} in {self.root}") from None
        except (OSError, ValueError) as e:
            raise CorruptEntry(f"manifest of {ds_id!r} is unreadable: {e}") from None

    def write_manifest(self, ds_id: str, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "id": ds_id, "schema": SCHEMA_VERSION}
        save_json(self.manifest_path(ds_id), manifest)

    def update_manifest(self, ds_id: str, **changes: Any) -> dict[str, Any]:
        with file_lock(self.dataset_dir(ds_id) / ".manifest.lock"):
            m = self.manifest(ds_id)
            m.update(changes)
            self.write_manifest(ds_id, m)
        return m

    def list_datasets(self, include_incomplete: bool = True) -> list[DatasetInfo]:
        base = self.root / "datasets"
        out = []
        if not base.is_dir():
            return out
        for d in sorted(base.iterdir()):
            if not (d / "manifest.json").is_file():
                continue
            try:
                info = DatasetInfo.from_manifest(self.manifest(d.name))
            except (StoreError, KeyError):
                continue
            if include_incomplete or info.status == "complete":
                out.append(info)
        out.sort(key=lambda i: i.created)
        return out

    def find_by_name(self, name: str) -> str | None:
        for info in self.list_datasets(include_incomplete=False):
            if info.name == name or info.id == name:
                return info.id
        return None

    def delete_dataset(self, ds_id: str) -> None:
        shutil.rmtree(self.dataset_dir(ds_id), ignore_errors=True)

    def layers(self, ds_id: str) -> list[str]:
        return list(self.manifest(ds_id).get("layers", {}))

    def _layer_file(self, ds_id: str, layer: str, folder: str, suffix: str = ".npy") -> Path:
        return self.dataset_dir(ds_id) / folder / (safe_name(layer) + suffix)

    def vectors_path(self, ds_id: str, layer: str) -> Path:
        return self._layer_file(ds_id, layer, "vectors")

    def vectors(self, ds_id: str, layer: str, mmap: bool = True) -> np.ndarray:
        m = self.manifest(ds_id)
        if layer not in m.get("layers", {}):
            raise StoreError(
                f"dataset {ds_id!r} has no layer {layer!r}; it has: {', '.join(m.get('layers', {}))}"
            )
        p = self.vectors_path(ds_id, layer)
        self._verify(ds_id, p)
        try:
            arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptEntry(f"vectors of {ds_id}/{layer} are unreadable: {e}") from None
        expect = (int(m["n"]), int(m["layers"][layer]["dim"]))
        if arr.shape != expect:
            raise CorruptEntry(
                f"vectors of {ds_id}/{layer} have shape {arr.shape}, manifest says {expect}"
            )
        return arr

    # ----- dataset array checksums (derived entries carry their own, see ``lookup``)
    def seal(self, ds_id: str) -> dict[str, str]:
        """Record in the manifest a checksum of every array file of the dataset (vectors,
        valid masks, spatial latents, metadata) that has none yet; returns them all."""
        d = self.dataset_dir(ds_id)
        files = [*sorted(d.glob("vectors/*.npy")), *sorted(d.glob("spatial/*.npy"))]
        files.append(self.metadata_path(ds_id))
        with file_lock(d / ".manifest.lock"):
            m = self.manifest(ds_id)
            sums = dict(m.get("checksums") or {})
            for p in files:
                rel = p.relative_to(d).as_posix()
                if p.is_file() and rel not in sums:
                    st = p.stat()
                    sums[rel] = fast_digest(p)
                    # just read whole: this process need not read it again to verify it
                    _VERIFIED[(str(p), st.st_size, st.st_mtime_ns)] = True
            m["checksums"] = sums
            self.write_manifest(ds_id, m)
        return sums

    def _verify(self, ds_id: str, path: Path) -> None:
        """Raise CorruptEntry when a sealed dataset file no longer matches its checksum
        (checked once per process and file version: a few seconds per GB)."""
        try:
            sums = self.manifest(ds_id).get("checksums") or {}
            rel = path.relative_to(self.dataset_dir(ds_id)).as_posix()
            want = sums.get(rel)
            if want is None:
                return
            st = path.stat()
        except (OSError, ValueError, StoreError):
            return
        key = (str(path), st.st_size, st.st_mtime_ns)
        if _VERIFIED.get(key):
            return
        if fast_digest(path) != want:
            log.error("dataset %s: %s does not match its checksum", ds_id, rel)
            raise CorruptEntry(
                f"{rel} of dataset {ds_id} does not match its checksum (changed or damaged on "
                "disk): encode the data again; results derived from it are recomputed"
            )
        _VERIFIED[key] = True

    def valid_mask(self, ds_id: str, layer: str) -> np.ndarray:
        p = self._layer_file(ds_id, layer, "vectors", ".valid.npy")
        if p.exists():
            self._verify(ds_id, p)
            return np.load(p, allow_pickle=False)
        return np.ones(int(self.manifest(ds_id)["n"]), dtype=bool)

    def spatial(self, ds_id: str, layer: str) -> np.ndarray | None:
        p = self._layer_file(ds_id, layer, "spatial")
        if not p.exists():
            return None
        self._verify(ds_id, p)
        return np.load(p, mmap_mode="r", allow_pickle=False)

    def metadata_path(self, ds_id: str) -> Path:
        return self.dataset_dir(ds_id) / "metadata.parquet"

    def metadata(self, ds_id: str):
        import pandas as pd

        try:
            self._verify(ds_id, self.metadata_path(ds_id))
            return pd.read_parquet(self.metadata_path(ds_id))
        except FileNotFoundError:
            raise DatasetNotFound(f"dataset {ds_id!r} has no metadata yet") from None

    def write_metadata(self, ds_id: str, df) -> None:
        with atomic_path(self.metadata_path(ds_id)) as tmp:
            df.to_parquet(tmp, index=False)

    def thumb_dir(self, ds_id: str) -> Path:
        return self.dataset_dir(ds_id) / "thumbs"

    def thumbnail_path(self, ds_id: str, row: int, variant: str | None = None) -> Path | None:
        """Path of row's thumbnail, or None. ``row`` must be an int (never a path).

        ``variant`` (a band choice, ``pipeline.bands.variant_key``) picks regenerated
        thumbnails; a row that has none there falls back to the encoded thumbnail."""
        if not isinstance(row, (int, np.integer)) or row < 0:
            return None
        if variant:
            from latentmap.pipeline.bands import VARIANT_RE

            if VARIANT_RE.fullmatch(variant):
                p = self.dataset_dir(ds_id) / f"thumbs_{variant}" / f"{int(row)}.png"
                if self._inside_dataset(ds_id, p):
                    return p
        p = self.thumb_dir(ds_id) / f"{int(row)}.png"
        return p if self._inside_dataset(ds_id, p) else None

    def _inside_dataset(self, ds_id: str, p: Path) -> bool:
        """p is a file that, symlinks resolved, lies inside the dataset's folder."""
        if not p.is_file():
            return False
        try:
            return p.resolve().is_relative_to(self.dataset_dir(ds_id).resolve())
        except OSError:
            return False

    # ----- derived entries (read-through cache)
    def entry_paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        h = key_hash(key)
        base = self.root / "derived" / h[:2]
        return base / f"{h}.npz", base / f"{h}.json"

    def lookup(self, key: dict[str, Any]) -> Entry | None:
        """The cached entry for key, or None if absent. Corrupt entries are removed and logged."""
        npz, meta = self.entry_paths(key)
        if not (npz.exists() and meta.exists()):
            return None
        try:
            info = json.loads(meta.read_text())
            if canonical_json(info.get("key")) != canonical_json(key):
                raise CorruptEntry("key mismatch (hash collision or tampering)")
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            sums = info.get("checksums", {})
            if set(sums) != set(arrays):
                raise CorruptEntry("array list does not match checksums")
            for k, a in arrays.items():
                if array_checksum(a) != sums[k]:
                    raise CorruptEntry(f"checksum mismatch for {k!r}")
        except (CorruptEntry, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("corrupt cache entry %s (%s): removing, will recompute", npz.name, e)
            for p in (npz, meta):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            return None
        return Entry(arrays=arrays, info=info.get("info", {}))

    def put(
        self, key: dict[str, Any], arrays: dict[str, np.ndarray], info: dict | None = None
    ) -> Entry:
        npz, meta = self.entry_paths(key)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        with atomic_path(npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        save_json(
            meta,
            {
                "key": json.loads(canonical_json(key)),
                "checksums": {k: array_checksum(v) for k, v in arrays.items()},
                "info": info or {},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        return Entry(arrays=arrays, info=info or {})

    def get_or_compute(
        self,
        key: dict[str, Any],
        fn: Callable[[], Entry | tuple[dict[str, np.ndarray], dict] | dict[str, np.ndarray]],
        on_wait: Callable[[], None] | None = None,
    ) -> Entry:
        """Return the entry for key, computing and storing it with fn() on a miss.

        Concurrent callers for the same key wait on a file lock (``on_wait`` is called when
        they start waiting); only one computes.
        """
        hit = self.lookup(key)
        if hit is not None:
            return hit
        if not self.compute:
            raise NotCached(key)
        npz, _ = self.entry_paths(key)
        with file_lock(npz.with_suffix(".lock"), on_wait):
            hit = self.lookup(key)
            if hit is not None:
                return hit
            result = fn()
            if isinstance(result, Entry):
                arrays, info = result.arrays, result.info
            elif isinstance(result, tuple):
                arrays, info = result
            else:
                arrays, info = result, {}
            return self.put(key, arrays, info)

    def derived_entries(self) -> list[dict[str, Any]]:
        out = []
        base = self.root / "derived"
        if not base.is_dir():
            return out
        for meta in sorted(base.glob("*/*.json")):
            try:
                d = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            npz = meta.with_suffix(".npz")
            out.append(
                {
                    "key": d.get("key", {}),
                    "created": d.get("created", ""),
                    "bytes": npz.stat().st_size if npz.exists() else 0,
                }
            )
        return out
