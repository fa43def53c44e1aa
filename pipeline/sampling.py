"""Sampling the latent space (seed 000): random latents from a distribution fitted to the
data, the nearest real items to each, what the hits reveal, and paths between two items.

Store-backed entry points (what the app and ``latentmap sample`` call):

- :func:`sample_latents` draws N latents from a Gaussian (Ledoit-Wolf shrunk full covariance,
  or diagonal) or a Gaussian mixture fitted to a layer (or to a region of it: a class, a
  metadata value, a selection of rows), finds the exact cosine top-12 real items of each,
  summarises the hits (distinct items, hubs, label mix, similarity) next to the honest
  baseline of N truly random items, and caches all of it (key kind ``samples``).
- :func:`place_on_map` puts new latents on a layer's cached 2-D map (key kind ``sample_xy``).
- :func:`interpolate_path` walks from one item's latent to another's (spherical or linear)
  and gives the nearest real item at every step.

Decoders (latent -> image) are in ``pipeline.decoders``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from latentmap.pipeline.store import Entry, Store, StoreError, array_checksum

DISTRIBUTIONS = ("full", "diag", "gmm")
SAMPLES_VERSION = 1
SAMPLE_XY_VERSION = 1
TOPK = 12  # nearest real items kept per sample
MAX_SAMPLES = 1000  # most samples one request draws (a gallery, not a data set)
MAX_COMPONENTS = 50  # most mixture components
FIT_MAX_ROWS = 50_000  # distributions are fitted to a seeded random subset beyond this
MAX_STEPS = 200  # most points on an interpolation path
MAP_NEIGHBOURS = 15  # neighbours of the kNN-weighted placement on t-SNE maps
GMM_ONE_THREAD_MAX_DIM = 256  # mixtures of latents up to this size are fitted on one thread


class SamplingError(ValueError):
    """A sampling request that cannot be served; the message says why."""


# --------------------------------------------------------------------------- distributions


@dataclass
class FittedDistribution:
    kind: str
    mean: np.ndarray  # (D,) or (K, D) for gmm
    cov: np.ndarray | None = None  # (D, D) full; (D,) diag; (K, D, D) gmm
    weights: np.ndarray | None = None  # (K,) for gmm
    shrinkage: float | None = None
    n_fit: int = 0
    notes: list[str] = field(default_factory=list)
    _factors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def _factor(self, c: int, cov: np.ndarray) -> np.ndarray:
        """sqrt-factor F with F @ F.T = cov (eigen-decomposition: fine for singular cov)."""
        if c not in self._factors:
            w, V = np.linalg.eigh((cov + cov.T) / 2)
            self._factors[c] = V * np.sqrt(np.clip(w, 0.0, None))
        return self._factors[c]

    def sample(self, n: int, seed: int) -> np.ndarray:
        """(n, D) float32 samples; the same seed gives the same samples."""
        rng = np.random.default_rng(seed)
        D = self.mean.shape[-1]
        if self.kind == "diag":
            z = rng.standard_normal((n, D))
            return (self.mean + z * np.sqrt(np.clip(self.cov, 0.0, None))).astype(np.float32)
        if self.kind == "full":
            z = rng.standard_normal((n, D))
            return (self.mean + z @ self._factor(0, self.cov).T).astype(np.float32)
        p = np.asarray(self.weights, np.float64)
        comps = rng.choice(len(p), size=n, p=p / p.sum())
        z = rng.standard_normal((n, D))  # drawn for all rows at once: seed -> same samples
        out = np.empty((n, D), np.float32)
        for c in np.unique(comps):
            rows = comps == c
            out[rows] = self.mean[c] + z[rows] @ self._factor(int(c), self.cov[c]).T
        return out


def fit_distribution(
    X: np.ndarray, kind: str = "full", *, components: int = 4, seed: int = 0
) -> FittedDistribution:
    """Fit a Gaussian (Ledoit-Wolf shrunk full covariance, or diagonal) or a GMM to X.

    Rows with NaN/Inf are left out (with a note). Ledoit-Wolf shrinkage keeps the full
    covariance well-posed when there are fewer rows than dimensions or the rows are
    linearly dependent (duplicates). A GMM asks for at most as many components as rows
    (clamped, with a note); each component's covariance gets a small ridge relative to the
    data's variance so that singular components still sample. One row gives a point mass
    (zero spread) - callers that need spread (``sample_latents``) refuse one-item regions.
    All rows identical gives a point mass too, with a note.
    """
    if kind not in DISTRIBUTIONS:
        raise SamplingError(f"unknown distribution {kind!r}: use {', '.join(DISTRIBUTIONS)}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise SamplingError(f"expected an (N, D) array of latents, got shape {X.shape}")
    finite = np.isfinite(X).all(axis=1)
    notes: list[str] = []
    if not finite.all():
        bad = int((~finite).sum())
        notes.append(f"{_plural(bad, 'item')} with NaN/Inf latents left out of the fit")
        X = X[finite]
    if len(X) == 0:
        raise SamplingError("no items with finite latents to fit a distribution to")
    mean = X.mean(axis=0)
    d = X.shape[1]
    if len(X) == 1 or np.ptp(X, axis=0).max(initial=0.0) == 0.0:
        if len(X) > 1:
            notes.append(f"all {len(X)} items have the same latent: the samples are that point")
        cov = np.zeros(d) if kind == "diag" else np.zeros((d, d))
        return FittedDistribution(
            "diag" if kind == "diag" else "full", mean, cov, n_fit=len(X), notes=notes
        )
    if kind == "diag":
        return FittedDistribution("diag", mean, X.var(axis=0), n_fit=len(X), notes=notes)
    if kind == "full":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(X)
        if not np.isfinite(lw.covariance_).all():
            raise SamplingError(
                "the covariance of these latents is not finite (values too large?): try dist='diag'"
            )
        return FittedDistribution(
            "full",
            lw.location_,
            lw.covariance_,
            shrinkage=float(lw.shrinkage_),
            n_fit=len(X),
            notes=notes,
        )
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if isinstance(components, bool) or not isinstance(components, (int, np.integer)):
        raise SamplingError(f"components must be a whole number, got {components!r}")
    if components < 1:
        raise SamplingError(f"a mixture needs at least 1 component, got {components}")
    k = int(min(components, len(X), MAX_COMPONENTS))
    if k < components:
        why = f"{len(X)} items" if k == len(X) else f"the limit of {MAX_COMPONENTS}"
        notes.append(f"mixture components {components} reduced to {k} ({why})")
    from threadpoolctl import threadpool_limits

    ridge = max(1e-3 * float(X.var(axis=0).mean()), 1e-12)
    # EM on small matrices is many tiny BLAS calls: threads only fight (measured 40 s with
    # the default threads vs 0.7 s with one, 1,797 x 32, 8 components, on a busy 2-core box)
    threads = 1 if X.shape[1] <= GMM_ONE_THREAD_MAX_DIM else None
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(threads):
        warnings.simplefilter("always", ConvergenceWarning)
        gmm = GaussianMixture(
            k, covariance_type="full", reg_covar=ridge, random_state=seed, max_iter=200
        ).fit(X)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"the {k}-component mixture did not fully converge in 200 iterations")
    return FittedDistribution(
        "gmm", gmm.means_, gmm.covariances_, gmm.weights_, n_fit=len(X), notes=notes
    )


# --------------------------------------------------------------------------- building blocks


def nearest_items(
    X_unit: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query among unit-norm ``X_unit`` (whose dataset rows are ``rows``).

    Returns (dataset rows (m, k), similarities (m, k)). NaN queries raise SamplingError.
    """
    Q = np.asarray(queries, dtype=np.float32)
    if not np.isfinite(Q).all():
        raise SamplingError("some samples are NaN/Inf (the fitted distribution is degenerate)")
    qn = np.linalg.norm(Q, axis=1, keepdims=True)
    qn[qn == 0] = 1.0
    sims = (Q / qn) @ X_unit.T
    k = max(1, min(int(k), X_unit.shape[0]))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return rows[top], np.take_along_axis(s, order, axis=1)


def unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return X / n


MISSING_LABEL = "(missing)"


def _label_strings(labels) -> np.ndarray:
    from latentmap.pipeline.diagnostics import _labels

    lab = _labels(labels)
    return np.where(lab == "", MISSING_LABEL, lab)


def summarize_hits(
    hit_rows: np.ndarray,
    sims: np.ndarray,
    labels,
    n_total: int | None = None,
    *,
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """What the samples reveal: distinct images hit, hubs, label mix of hits vs the data.

    ``hit_rows``: the nearest item of each sample; ``labels``: one per dataset row (or None).
    ``hubs`` are (row, count) for items nearest to more than one sample, most hit first (10
    at most). ``labels`` maps each class (natural order) to its number of ``hits``, its
    ``hit_share`` among the samples and its ``data_share`` among the data: the rows where
    ``valid`` is True when given, else all ``n_total`` rows.
    """
    hit_rows = np.asarray(hit_rows).ravel()
    uniq, counts = np.unique(hit_rows, return_counts=True)
    hubs = [
        (int(r), int(c))
        for r, c in sorted(zip(uniq, counts, strict=True), key=lambda t: (-t[1], t[0]))
        if c > 1
    ]
    sims = np.asarray(sims, dtype=np.float64).ravel()
    out: dict[str, Any] = {
        "n_samples": int(len(hit_rows)),
        "distinct": int(len(uniq)),
        "hubs": hubs[:10],
        "hub_hits": int(sum(c for _, c in hubs)),
        "mean_similarity": float(np.mean(sims)) if len(sims) else float("nan"),
    }
    if labels is not None:
        from latentmap.pipeline.diagnostics import sorted_classes

        lab = _label_strings(labels)
        data = lab[np.asarray(valid, dtype=bool)] if valid is not None else lab
        total = len(data) if valid is not None or n_total is None else int(n_total)
        data_mix = dict(zip(*np.unique(data, return_counts=True), strict=True))
        hit_mix = dict(zip(*np.unique(lab[hit_rows], return_counts=True), strict=True))
        classes = sorted_classes(np.asarray(list(data_mix) + list(hit_mix)))
        if MISSING_LABEL in data_mix or MISSING_LABEL in hit_mix:
            classes = [c for c in classes if c != MISSING_LABEL] + [MISSING_LABEL]
        n_hits = max(len(hit_rows), 1)
        out["labels"] = {
            str(c): {
                "hits": int(hit_mix.get(c, 0)),
                "hit_share": float(hit_mix.get(c, 0) / n_hits),
                "data_share": float(data_mix.get(c, 0) / max(total, 1)),
            }
            for c in classes
        }
    return out


def random_baseline(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The honest baseline of seed 000: n truly random items (without replacement when possible)."""
    rng = np.random.default_rng(seed)
    return rng.choice(rows, size=n, replace=n > len(rows))


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, how: str = "slerp") -> np.ndarray:
    """Points from a to b inclusive: linear, or spherical (keeps the norm profile)."""
    if steps < 2:
        raise SamplingError(f"an interpolation needs at least 2 steps, got {steps}")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if how == "linear":
        return ((1 - t) * a + t * b).astype(np.float32)
    if how != "slerp":
        raise SamplingError(f"unknown interpolation {how!r}: use slerp or linear")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return ((1 - t) * a + t * b).astype(np.float32)
    cos = np.clip(a @ b / (na * nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    so = np.sin(omega)
    return ((np.sin((1 - t) * omega) / so) * a + (np.sin(t * omega) / so) * b).astype(np.float32)


# --------------------------------------------------------------------------- helpers


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _short_list(items, limit: int = 12) -> str:
    items = [str(i) for i in items]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" (+{more} more)" if more > 0 else "") or "none"


def _whole(name: str, value: Any, lo: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            raise SamplingError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < lo:
        raise SamplingError(f"{name} must be at least {lo}, got {value}{hint}")
    return value


def _layer_vectors(store: Store, ds_id: str, layer: str) -> np.ndarray:
    """The layer's (N, D) vectors; an unknown dataset or layer is a SamplingError."""
    try:
        layers = store.layers(ds_id)
    except StoreError as e:
        raise SamplingError(str(e)) from None
    if layer not in layers:
        raise SamplingError(
            f"dataset {ds_id} has no layer {layer!r}; it has: {', '.join(layers) or 'none'}"
        )
    try:
        return store.vectors(ds_id, layer)
    except StoreError as e:
        raise SamplingError(str(e)) from None


def label_column(store: Store, ds_id: str, meta=None) -> str | None:
    """The dataset's label column (manifest ``label_column``, else a column named label)."""
    col = store.manifest(ds_id).get("label_column")
    if meta is None:
        meta = _metadata(store, ds_id)
    if meta is None:
        return None
    if col and col in meta.columns:
        return col
    return "label" if "label" in meta.columns else None


def _metadata(store: Store, ds_id: str):
    try:
        from latentmap.pipeline.groups import metadata_with_groups

        return metadata_with_groups(store, ds_id)
    except StoreError:
        return None


def _labels_of(store: Store, ds_id: str) -> np.ndarray | None:
    meta = _metadata(store, ds_id)
    col = label_column(store, ds_id, meta)
    return None if col is None else _label_strings(meta[col])


def resolve_region(
    store: Store, ds_id: str, region: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """Normalise a region and list its rows.

    ``region`` is None (the whole layer), ``{"column": c, "value": v}`` (items whose metadata
    ``c`` equals ``v``, compared as text: 3 == "3") or ``{"rows": [ints]}`` (a selection).
    Returns (the region as it goes into cache keys - value as text, rows sorted and unique -
    or None, sorted int64 rows or None).
    """
    if region is None:
        return None, None
    if not isinstance(region, dict):
        raise SamplingError(
            f"a region is {{'column': c, 'value': v}} or {{'rows': [...]}}, got {region!r}"
        )
    n = int(store.manifest(ds_id).get("n", 0))
    if set(region) == {"rows"}:
        raw = region["rows"]
        try:
            rows = np.asarray(list(raw), dtype=np.float64)
        except (TypeError, ValueError):
            raise SamplingError(f"region rows must be integers, got {raw!r}") from None
        if rows.ndim != 1 or (len(rows) and not np.all(rows == np.round(rows))):
            raise SamplingError("region rows must be a list of whole numbers")
        rows = np.unique(rows.astype(np.int64))
        bad = rows[(rows < 0) | (rows >= n)]
        if len(bad):
            raise SamplingError(
                f"region row {int(bad[0])} is out of range: dataset {ds_id} has {n} items"
            )
        return {"rows": rows.tolist()}, rows
    if set(region) == {"column", "value"}:
        from latentmap.pipeline.diagnostics import _labels, sorted_classes

        col = str(region["column"])
        meta = _metadata(store, ds_id)
        if meta is None or col not in meta.columns:
            cols = [] if meta is None else list(meta.columns)
            raise SamplingError(
                f"no metadata column {col!r} to pick a region by; columns: {_short_list(cols)}"
            )
        lab = _labels(meta[col])
        value = str(_labels([region["value"]])[0])
        rows = np.flatnonzero(lab == value).astype(np.int64)
        if len(rows) == 0:
            raise SamplingError(
                f"no item has {col} = {value!r}; its values are: {_short_list(sorted_classes(lab))}"
            )
        return {"column": col, "value": value}, rows
    raise SamplingError(
        f"a region is {{'column': c, 'value': v}} or {{'rows': [...]}}, got keys {sorted(region)}"
    )


def _region_text(region: dict[str, Any] | None) -> str:
    if region is None:
        return "the whole layer"
    if "rows" in region:
        return f"the selection of {_plural(len(region['rows']), 'item')}"
    return f"{region['column']} = {region['value']}"


def _jsonable(obj: Any) -> Any:
    """Info as it reads back from the store (tuples -> lists, numpy -> Python)."""
    from latentmap.pipeline.store import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def _nearest_other(
    X: np.ndarray, rows: np.ndarray, valid: np.ndarray, norms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most similar *other* valid item (the row itself excluded)."""
    from latentmap.pipeline.neighbors import nearest_to_vectors

    Q = np.asarray(X[rows], dtype=np.float32)
    idx, sims = nearest_to_vectors(X, Q, 2, valid=valid, norms=norms)
    if idx.shape[1] < 2:
        return np.full(len(rows), -1, np.int64), np.full(len(rows), np.nan, np.float32)
    col = np.where(idx[:, 0] == rows, 1, 0)
    pick = np.arange(len(rows))
    return idx[pick, col], sims[pick, col]


# --------------------------------------------------------------------------- sample_latents


def samples_key(
    ds_id: str,
    layer: str,
    *,
    n: int,
    dist: str,
    k: int,
    seed: int,
    region: dict[str, Any] | None,
) -> dict[str, Any]:
    """Cache key of a ``sample_latents`` request (region as normalised by resolve_region)."""
    return {
        "kind": "samples",
        "version": SAMPLES_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "n": int(n),
        "dist": dist,
        "k": int(k),
        "seed": int(seed),
        "region": region,
    }


def sample_latents(
    store: Store,
    ds_id: str,
    layer: str,
    *,
    n: int = 20,
    dist: str = "full",
    k: int = 3,
    seed: int = 0,
    region: dict[str, Any] | None = None,
) -> Entry:
    """Draw ``n`` random latents from a distribution fitted to a layer and find the nearest
    real items of each (read-through cached, key kind ``samples``).

    ``dist``: "full" (Gaussian, Ledoit-Wolf shrunk covariance), "diag" or "gmm" (``k``
    components). ``region``: None, ``{"column": c, "value": v}`` or ``{"rows": [...]}``
    (see :func:`resolve_region`): the distribution is fitted to that region's items only;
    the nearest items are searched among all items of the layer either way.

    Arrays: ``latents`` (n, D) float32, ``nearest`` (n, topk) int64 dataset rows and
    ``sims`` (n, topk) float32 cosine similarities (topk = 12, or fewer valid items; exact,
    ties to the lower row), ``baseline_rows`` (n,) int64.
    Info: ``n`` (samples returned), ``n_requested``, ``dist``, ``k``, ``components`` (used by
    a GMM, else None), ``seed``, ``region``, ``fit_rows`` (items the distribution was fitted
    to), ``shrinkage`` (Ledoit-Wolf, full only), ``layer``, ``dim``, ``topk``, ``notes``,
    ``summary`` (:func:`summarize_hits` of each sample's nearest item: ``distinct``,
    ``hubs`` as [row, count] pairs, ``hub_hits``, ``labels``, ``mean_similarity``, plus
    ``max_distinct``), ``baseline`` (the same summary for n truly random items, with their
    ``rows``; its ``mean_similarity`` is each random item's similarity to its nearest *other*
    item, the reference the samples' similarity compares with) and ``seconds``.

    n above ``MAX_SAMPLES`` is reduced (a note says so); n above the number of items is
    allowed (samples are not items) and a note says how few distinct hits are possible.
    Samples that come out NaN/Inf are dropped with a note (all of them: SamplingError).
    """
    n_req = _whole("n", n, 1, ": ask for at least one sample")
    if dist not in DISTRIBUTIONS:
        raise SamplingError(f"unknown distribution {dist!r}: use {', '.join(DISTRIBUTIONS)}")
    k = _whole("k (mixture components)", k, 1)
    seed = _whole("seed", seed, 0)
    X = _layer_vectors(store, ds_id, layer)
    region_norm, region_rows = resolve_region(store, ds_id, region)
    key = samples_key(ds_id, layer, n=n_req, dist=dist, k=k, seed=seed, region=region_norm)
    if region_norm and "column" in region_norm:
        from latentmap.pipeline.groups import grouped_key

        key.update(grouped_key(store, ds_id, region_norm["column"]))

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from latentmap.pipeline.neighbors import nearest_to_vectors, row_norms

        t0 = time.perf_counter()
        notes: list[str] = []
        valid = store.valid_mask(ds_id, layer).astype(bool)
        n_valid = int(valid.sum())
        rows = np.flatnonzero(valid) if region_rows is None else region_rows[valid[region_rows]]
        if region_rows is not None and len(rows) < len(region_rows):
            notes.append(
                f"{_plural(len(region_rows) - len(rows), 'item')} of the region with NaN/Inf "
                "latents left out"
            )
        if len(rows) < 2:
            if region_rows is None:
                raise SamplingError(
                    f"layer {layer} has {_plural(len(rows), 'item')} with finite latents; "
                    "sampling needs at least 2"
                )
            raise SamplingError(
                f"a region needs at least 2 items with finite latents, got {len(rows)} "
                f"({_region_text(region_norm)}): pick a larger region"
            )
        fit_rows = rows
        if len(rows) > FIT_MAX_ROWS:
            rng = np.random.default_rng(seed)
            fit_rows = np.sort(rng.choice(rows, FIT_MAX_ROWS, replace=False))
            notes.append(
                f"distribution fitted to a random {FIT_MAX_ROWS:,} of the {len(rows):,} items"
            )
        Xf = np.asarray(X[fit_rows], dtype=np.float64)
        fitted = fit_distribution(Xf, dist, components=k, seed=seed)
        notes += fitted.notes
        n_draw = n_req
        if n_req > MAX_SAMPLES:
            n_draw = MAX_SAMPLES
            notes.append(f"n {n_req:,} reduced to {MAX_SAMPLES:,} (the most one request draws)")
        S = fitted.sample(n_draw, seed)
        ok = np.isfinite(S).all(axis=1)
        if not ok.all():
            if not ok.any():
                raise SamplingError(
                    f"every sample came out NaN/Inf: the {dist} fit of these latents is "
                    "degenerate; try dist='diag'"
                )
            notes.append(f"{_plural(int((~ok).sum()), 'sample')} came out NaN/Inf and were dropped")
            S = S[ok]
        if n_draw > n_valid:
            notes.append(
                f"{n_draw:,} samples but only {n_valid:,} items with finite latents: at most "
                f"{n_valid:,} distinct items can be hit"
            )
        norms = row_norms(store, ds_id, layer)
        topk = min(TOPK, n_valid)
        nearest, sims = nearest_to_vectors(X, S, topk, valid=valid, norms=norms)
        labels = _labels_of(store, ds_id)
        summary = summarize_hits(nearest[:, 0], sims[:, 0], labels, valid=valid)
        summary["max_distinct"] = int(min(len(S), n_valid))
        base = random_baseline(np.flatnonzero(valid), len(S), seed).astype(np.int64)
        nn_rows, nn_sims = _nearest_other(X, base, valid, norms)
        baseline = summarize_hits(base, np.ones(len(base)), labels, valid=valid)
        finite_nn = np.isfinite(nn_sims)
        baseline["mean_similarity"] = (
            float(np.mean(nn_sims[finite_nn])) if finite_nn.any() else float("nan")
        )
        baseline["rows"] = base.tolist()
        baseline["nearest_other"] = nn_rows.tolist()
        baseline["nearest_other_sims"] = nn_sims.tolist()
        info = {
            "n": int(len(S)),
            "n_requested": n_req,
            "dist": dist,
            "k": k,
            "components": int(len(fitted.weights)) if fitted.kind == "gmm" else None,
            "seed": seed,
            "region": region_norm,
            "fit_rows": int(len(fit_rows)),
            "region_rows": int(len(rows)),
            "shrinkage": fitted.shrinkage,
            "layer": layer,
            "dim": int(X.shape[1]),
            "topk": int(topk),
            "notes": notes,
            "summary": summary,
            "baseline": baseline,
            "seconds": time.perf_counter() - t0,
        }
        arrays = {
            "latents": S.astype(np.float32),
            "nearest": nearest.astype(np.int64),
            "sims": sims.astype(np.float32),
            "baseline_rows": base,
        }
        return arrays, _jsonable(info)

    return store.get_or_compute(key, compute)


# --------------------------------------------------------------------------- the map


def _pca_place(X: np.ndarray, coords: np.ndarray, Q: np.ndarray, seed: int) -> np.ndarray:
    """Exact PCA placement: the PCA of ``reduce.pca_basis`` refitted on the same rows (same
    data and seed give the same components), checked against the stored map; where it does
    not reproduce the map, the affine map X -> coords is recovered by least squares."""
    from latentmap.pipeline.reduce import pca_basis, pca_transform

    n = len(X)
    basis = pca_basis(X, seed)
    if basis is None:
        return np.zeros((len(Q), 2), np.float32)  # the map is all zeros: nothing to place along
    again = pca_transform(basis, X)
    scale = max(float(np.abs(coords).max(initial=0.0)), 1e-12)
    if np.abs(again - coords).max() <= 1e-3 * scale:
        return pca_transform(basis, np.asarray(Q, dtype=np.float32))
    A = np.hstack([X.astype(np.float64), np.ones((n, 1))])
    W, *_ = np.linalg.lstsq(A, coords.astype(np.float64), rcond=None)
    return (np.hstack([Q.astype(np.float64), np.ones((len(Q), 1))]) @ W).astype(np.float32)


def _umap_place(
    X: np.ndarray, coords: np.ndarray, Q: np.ndarray, params: dict[str, Any], seed: int
) -> np.ndarray:
    from latentmap.pipeline import diagnostics

    if params.get("metric", "cosine") == "cosine":
        return diagnostics.umap_transform(
            unit_rows(X),
            coords,
            Q,
            n_neighbors=int(params["n_neighbors"]),
            min_dist=float(params["min_dist"]),
            seed=seed,
        )
    k = diagnostics._check_transform_inputs(len(X), params["n_neighbors"], params["min_dist"])
    idx, dist = diagnostics._topk_neighbours(X, np.arange(len(X)), Q, k, "euclidean")
    return diagnostics._umap_place(
        idx,
        dist,
        coords,
        n_neighbors=k,
        min_dist=float(params["min_dist"]),
        seed=seed,
        disconnection_distance=np.inf,
    )


def place_on_map(
    store: Store,
    ds_id: str,
    layer: str,
    method: str,
    params: dict[str, Any] | None,
    latents: np.ndarray,
    *,
    seed: int = 0,
) -> np.ndarray:
    """(n, 2) float32 positions of new ``latents`` on the layer's ``method`` map.

    The map is ``reduce.projection(store, ds_id, layer, method, params, seed=seed)``
    (computed first if it is not cached). PCA is affine, so samples land exactly where the
    fitted PCA puts them (the PCA is refitted with ``reduce``'s settings and checked against
    the stored map; failing that, the affine map is recovered from the stored map by least
    squares). UMAP maps use ``diagnostics.umap_transform``, umap-learn's own transform with
    the map's n_neighbors / min_dist (euclidean maps: the same with euclidean neighbours).
    t-SNE maps use ``diagnostics.project_to_map``, each sample at the similarity-weighted
    mean of its 15 nearest items' positions: openTSNE's ``transform`` needs the fitted
    affinity object (``TSNEEmbedding.affinities``), which is not stored with the map. A map
    where t-SNE/UMAP fell back to PCA is placed as PCA. Cached (key kind ``sample_xy``).
    """
    from latentmap.pipeline.reduce import ReduceError, _check_method, projection

    try:
        method = _check_method(method)
    except ReduceError as e:
        raise SamplingError(str(e)) from None
    X_all = _layer_vectors(store, ds_id, layer)
    Q = np.asarray(latents, dtype=np.float32)
    if Q.ndim == 1:
        Q = Q[None, :]
    if Q.ndim != 2 or Q.shape[1] != X_all.shape[1]:
        raise SamplingError(
            f"latents must be (n, {X_all.shape[1]}) for layer {layer}, got shape {Q.shape}"
        )
    if not np.isfinite(Q).all():
        raise SamplingError("latents contain NaN/Inf: only finite latents can be placed")
    try:
        proj = projection(store, ds_id, layer, method, params, seed=seed)
    except ReduceError as e:
        raise SamplingError(str(e)) from None
    used = proj.info.get("params", {})
    key = {
        "kind": "sample_xy",
        "version": SAMPLE_XY_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "method": method,
        "params": used,
        "seed": int(seed),
        "latents": array_checksum(np.ascontiguousarray(Q)),
    }

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from latentmap.pipeline.diagnostics import project_to_map

        coords_all = np.asarray(proj["coords"], dtype=np.float32)
        on_map = store.valid_mask(ds_id, layer).astype(bool) & np.isfinite(coords_all).all(1)
        rows = np.flatnonzero(on_map)
        if len(Q) == 0:
            return {"xy": np.zeros((0, 2), np.float32)}, {"how": "none"}
        if len(rows) == 0:
            raise SamplingError(f"the {method} map of layer {layer} has no point to place near")
        X = np.ascontiguousarray(X_all[rows], dtype=np.float32)
        coords = coords_all[rows]
        ran = proj.info.get("ran", method)
        if ran == "pca":
            xy, how = _pca_place(X, coords, Q, seed), "pca"
        elif method == "umap":
            xy, how = _umap_place(X, coords, Q, used, seed), "umap-transform"
        else:
            xy, how = project_to_map(unit_rows(X), coords, Q, k=MAP_NEIGHBOURS), "knn-weighted"
        xy = np.asarray(xy, dtype=np.float32)
        lost = ~np.isfinite(xy).all(axis=1)
        if lost.any():  # UMAP: no neighbour within the disconnection distance
            xy[lost] = project_to_map(unit_rows(X), coords, Q[lost], k=MAP_NEIGHBOURS)
        return {"xy": xy}, {"how": how, "fallback_rows": np.flatnonzero(lost).tolist()}

    return store.get_or_compute(key, compute)["xy"]


# --------------------------------------------------------------------------- interpolation


def interpolate_path(
    store: Store,
    ds_id: str,
    layer: str,
    row_a: int,
    row_b: int,
    *,
    steps: int = 8,
    how: str = "slerp",
) -> dict[str, Any]:
    """The path from item ``row_a``'s latent to ``row_b``'s, and the nearest real item at
    every step (exact cosine search over the layer's valid items; the end points find
    themselves, or an identical item with a lower row).

    Returns {"latents": (steps, D) float32, "t": (steps,) float, "nearest": (steps,) int64,
    "sims": (steps,) float32, "labels": label of each nearest item or None, "row_a",
    "row_b", "steps", "how"}. ``how`` is "slerp" (spherical: keeps the norm profile) or
    "linear". A row with NaN/Inf latents, a row out of range, or steps outside 2..200 is a
    SamplingError.
    """
    from latentmap.pipeline.neighbors import nearest_to_vectors, row_norms

    X = _layer_vectors(store, ds_id, layer)
    steps = _whole("steps", steps, 2)
    if steps > MAX_STEPS:
        raise SamplingError(f"steps must be at most {MAX_STEPS}, got {steps}")
    if how not in ("slerp", "linear"):
        raise SamplingError(f"unknown interpolation {how!r}: use slerp or linear")
    valid = store.valid_mask(ds_id, layer).astype(bool)
    ends = []
    for name, row in (("row_a", row_a), ("row_b", row_b)):
        r = _whole(name, row, 0)
        if r >= len(X):
            raise SamplingError(f"{name} {r} is out of range: dataset {ds_id} has {len(X)} items")
        v = np.asarray(X[r], dtype=np.float64)
        if not valid[r] or not np.isfinite(v).all():
            raise SamplingError(f"item {r} has NaN/Inf latents in layer {layer}: pick another item")
        ends.append((r, v))
    P = interpolate(ends[0][1], ends[1][1], steps, how)
    idx, sims = nearest_to_vectors(X, P, 1, valid=valid, norms=row_norms(store, ds_id, layer))
    labels = _labels_of(store, ds_id)
    return {
        "latents": P,
        "t": np.linspace(0.0, 1.0, steps),
        "nearest": idx[:, 0],
        "sims": sims[:, 0],
        "labels": None if labels is None else [str(labels[i]) for i in idx[:, 0]],
        "row_a": ends[0][0],
        "row_b": ends[1][0],
        "steps": steps,
        "how": how,
    }


# --------------------------------------------------------------------------- gallery data


def thumbnail_bytes(store: Store, ds_id: str, row: int) -> bytes | None:
    """PNG bytes of a row's thumbnail, or None when the dataset has none."""
    p = store.thumbnail_path(ds_id, int(row))
    return p.read_bytes() if p is not None else None


def gallery_items(
    store: Store, ds_id: str, entry: Entry, decoded: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """One card per sample of a ``sample_latents`` entry: {"sample" (1-based), "row",
    "similarity", "label", "thumbnail" (PNG bytes or None), "decoded" (PNG bytes or None)}."""
    labels = _labels_of(store, ds_id)
    cards = []
    for i, (r, s) in enumerate(zip(entry["nearest"][:, 0], entry["sims"][:, 0], strict=True)):
        cards.append(
            {
                "sample": i + 1,
                "row": int(r),
                "similarity": float(s),
                "label": None if labels is None else str(labels[int(r)]),
                "thumbnail": thumbnail_bytes(store, ds_id, int(r)),
                "decoded": decoded[i] if decoded is not None else None,
            }
        )
    return cards
