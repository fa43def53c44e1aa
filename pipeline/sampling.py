"""Sampling the latent space (seed 000): random latents from a distribution fitted to the
data, the nearest real items to each, what the hits reveal, and paths between two items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DISTRIBUTIONS = ("full", "diag", "gmm")


class SamplingError(ValueError):
    """A sampling request that cannot be served; the message says why."""


@dataclass
class FittedDistribution:
    kind: str
    mean: np.ndarray  # (D,) or (K, D) for gmm
    cov: np.ndarray | None = None  # (D, D) full; (D,) diag; (K, D, D) gmm
    weights: np.ndarray | None = None  # (K,) for gmm
    shrinkage: float | None = None
    n_fit: int = 0

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        D = self.mean.shape[-1]
        if self.kind == "diag":
            return (self.mean + rng.standard_normal((n, D)) * np.sqrt(self.cov)).astype(np.float32)
        if self.kind == "full":
            return _mvn(rng, self.mean, self.cov, n)
        comps = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, D), np.float32)
        for c in np.unique(comps):
            rows = comps == c
            out[rows] = _mvn(rng, self.mean[c], self.cov[c], int(rows.sum()))
        return out


def _mvn(rng, mean: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
    """Multivariate normal via an eigen-decomposition (robust to singular covariances)."""
    w, V = np.linalg.eigh((cov + cov.T) / 2)
    w = np.clip(w, 0.0, None)
    z = rng.standard_normal((n, len(mean)))
    return (mean + (z * np.sqrt(w)) @ V.T).astype(np.float32)


def fit_distribution(
    X: np.ndarray, kind: str = "full", *, components: int = 4, seed: int = 0
) -> FittedDistribution:
    """Fit a Gaussian (Ledoit-Wolf shrunk full covariance, or diagonal) or a GMM to X."""
    X = np.asarray(X, dtype=np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    if kind not in DISTRIBUTIONS:
        raise SamplingError(f"unknown distribution {kind!r}: use {', '.join(DISTRIBUTIONS)}")
    if len(X) == 0:
        raise SamplingError("no items with finite latents to fit a distribution to")
    mean = X.mean(axis=0)
    if len(X) == 1:
        # one item: a point mass (zero spread) is the honest fit
        d = X.shape[1]
        cov = np.zeros(d) if kind == "diag" else np.zeros((d, d))
        return FittedDistribution("diag" if kind == "diag" else "full", mean, cov, n_fit=1)
    if kind == "diag":
        return FittedDistribution("diag", mean, X.var(axis=0), n_fit=len(X))
    if kind == "full":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(X)
        return FittedDistribution(
            "full", lw.location_, lw.covariance_, shrinkage=float(lw.shrinkage_), n_fit=len(X)
        )
    from sklearn.mixture import GaussianMixture

    k = max(1, min(int(components), len(X) // 2 or 1))
    gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(X)
    return FittedDistribution("gmm", gmm.means_, gmm.covariances_, gmm.weights_, n_fit=len(X))


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


def summarize_hits(hit_rows: np.ndarray, sims: np.ndarray, labels, n_total: int) -> dict[str, Any]:
    """What the samples reveal: distinct images hit, hubs, label mix of hits vs the data."""
    hit_rows = np.asarray(hit_rows).ravel()
    uniq, counts = np.unique(hit_rows, return_counts=True)
    hubs = [
        (int(r), int(c))
        for r, c in sorted(zip(uniq, counts, strict=True), key=lambda t: -t[1])
        if c > 1
    ]
    out: dict[str, Any] = {
        "n_samples": int(len(hit_rows)),
        "distinct": int(len(uniq)),
        "hubs": hubs[:10],
        "mean_similarity": float(np.mean(sims)) if len(sims) else float("nan"),
    }
    if labels is not None:
        lab = np.asarray(labels).astype(str)
        data_mix = dict(zip(*np.unique(lab, return_counts=True), strict=True))
        hit_mix = dict(zip(*np.unique(lab[hit_rows], return_counts=True), strict=True))
        out["labels"] = {
            str(c): {"hits": int(hit_mix.get(c, 0)), "data_share": float(data_mix[c] / n_total)}
            for c in data_mix
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
