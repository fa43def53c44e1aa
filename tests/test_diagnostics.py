"""Diagnostics checked against scikit-learn / scipy on real data (digits)."""

import numpy as np
import pytest
from latentmap.pipeline.diagnostics import (
    DiagnosticsError,
    class_centroids,
    confusion,
    confusion_vs_distance,
    knn_recall,
    pairwise_distances,
    project_to_map,
    silhouette,
    sorted_classes,
    trustworthiness,
)
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix
from sklearn.metrics.pairwise import cosine_distances, euclidean_distances


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = d.data.astype(np.float32)
    y = d.target
    # a deterministic "classifier": nearest class centroid on half the pixels
    cents = np.stack([X[y == c].mean(0) for c in range(10)])
    pred = np.argmin(euclidean_distances(X[:, ::2], cents[:, ::2]), axis=1)
    return X, y, pred


def test_centroids_and_distances_match_sklearn(digits):
    X, y, _ = digits
    classes, C, counts = class_centroids(X, y)
    assert classes == [str(i) for i in range(10)]
    assert counts.sum() == len(X)
    np.testing.assert_allclose(C[3], X[y == 3].mean(0), rtol=1e-5)
    np.testing.assert_allclose(pairwise_distances(C, "cosine"), cosine_distances(C), atol=1e-6)
    np.testing.assert_allclose(
        pairwise_distances(C, "euclidean"), euclidean_distances(C), rtol=1e-5, atol=1e-4
    )


def test_confusion_matches_sklearn_with_int_and_str_labels(digits):
    _, y, pred = digits
    classes, M = confusion(y, pred)
    np.testing.assert_array_equal(M, confusion_matrix(y, pred, labels=range(10)))
    classes_s, M_s = confusion(y.astype(str), pred)  # "3" and 3 are the same class
    np.testing.assert_array_equal(M_s, M)
    assert classes == classes_s


def test_confusion_vs_distance_spearman_matches_scipy(digits):
    X, y, pred = digits
    out = confusion_vs_distance(X, y, pred)
    pairs = out["pairs"]
    assert len(pairs["a"]) == 90
    C = np.stack([X[y == c].mean(0) for c in range(10)])
    M = confusion_matrix(y, pred)
    rate = M / M.sum(1, keepdims=True)
    off = ~np.eye(10, dtype=bool)
    rho, _ = spearmanr(cosine_distances(C)[off], rate[off])
    assert out["spearman_cosine"][0] == pytest.approx(rho, abs=1e-9)
    # confusable digit pairs sit closer together: a negative correlation
    assert out["spearman_cosine"][0] < 0


def test_natural_class_order_and_missing_labels():
    assert sorted_classes(np.array(["10", "2", "1", "b", "a"])) == ["1", "2", "10", "a", "b"]
    classes, C, counts = class_centroids(np.ones((3, 2)), [None, "a", "a"])
    assert classes == ["a"] and counts.tolist() == [2]
    with pytest.raises(DiagnosticsError, match="no labelled"):
        class_centroids(np.ones((2, 2)), [None, None])


def test_one_member_class_and_constant_layer():
    X = np.zeros((5, 3), np.float32)  # a layer with constant output
    out = confusion_vs_distance(X, ["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "c"])
    assert np.isnan(out["spearman_cosine"][0])  # no spread: undefined, not a crash
    assert out["counts"].tolist() == [2, 2, 1]
    assert np.isnan(silhouette(X[:2], ["a", "a"]))


def test_trust_scores_rank_a_good_map_above_a_random_one(digits):
    from latentmap.pipeline.neighbors import cosine_knn
    from sklearn.decomposition import PCA

    X, y, _ = digits
    X = X[:600]
    good = PCA(2, random_state=0).fit_transform(X).astype(np.float32)
    bad = np.random.default_rng(0).normal(size=good.shape).astype(np.float32)
    assert trustworthiness(X, good) > trustworthiness(X, bad) + 0.1
    idx, _ = cosine_knn(X, 10)
    r_good, r_bad = knn_recall(idx, good), knn_recall(idx, bad)
    assert r_good.shape == (600,)
    assert np.nanmean(r_good) > np.nanmean(r_bad) + 0.05
    assert np.nanmin(r_bad) >= 0 and np.nanmax(r_good) <= 1


def test_project_to_map_lands_near_its_class(digits):
    X, y, _ = digits
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    coords = np.stack([y, np.zeros_like(y)], 1).astype(np.float32)  # class = x position
    _, C, _ = class_centroids(X, y)
    pos = project_to_map(Xu, coords, C, k=15)
    np.testing.assert_allclose(pos[:, 0], np.arange(10), atol=1.0)
