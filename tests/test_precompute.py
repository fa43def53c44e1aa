"""What is computed after an encode: PCA maps in the encode job (exact, chunked covariance),
then search indexes and the default UMAP (on its cached kNN graph) and t-SNE maps as a
background job, in this process, in a detached process, or from the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from latentmap.cli import main as cli
from latentmap.pipeline import ann, precompute, reduce
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.reduce import (
    approx_knn_key,
    cached_projection,
    layout_graph,
    pca_basis,
    pca_transform,
    projection,
)


def _clusters(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, d)) * 3
    return (centres[rng.integers(0, 8, n)] + rng.normal(size=(n, d))).astype(np.float32)


# --------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("n,d", [(3000, 40), (400, 80), (30, 5)])
def test_pca_basis_matches_scikit_learns_pca_signs_included(n, d, monkeypatch):
    from sklearn.decomposition import PCA

    monkeypatch.setattr(reduce, "_PCA_CHUNK", 256)  # several chunks on the covariance path
    X = _clusters(n, d) + 5.0  # an offset the centring must remove
    got = pca_transform(pca_basis(X), X)
    want = PCA(2, svd_solver="full").fit_transform(X)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_pca_of_identical_rows_is_all_zeros_and_one_dimension_fills_one_column():
    X = np.ones((100, 4), np.float32)
    assert pca_basis(X) is None
    np.testing.assert_array_equal(pca_transform(None, X), np.zeros((100, 2)))
    line = np.arange(50, dtype=np.float32)[:, None]
    out = pca_transform(pca_basis(line), line)
    assert out.shape == (50, 2) and np.ptp(out[:, 0]) > 0 and (out[:, 1] == 0).all()


def test_encode_ends_with_every_layers_pca_map(store, tmp_path):
    from latentmap.pipeline.jobs import EncodeRequest, encode

    p = tmp_path / "emb.npz"
    X = _clusters(600, 12)
    X[3] = np.nan
    np.savez(p, embeddings=X, labels=np.arange(600) % 4)
    ds = encode(store, EncodeRequest(source=str(p))).ds_id
    layer = store.layers(ds)[0]
    e = cached_projection(store, ds, layer, "pca")
    assert e is not None and e["coords"].shape == (600, 2)
    assert np.isnan(e["coords"][3]).all() and np.isfinite(np.delete(e["coords"], 3, 0)).all()
    # nothing slow ran in the encode: t-SNE and UMAP are the background job's
    assert cached_projection(store, ds, layer, "tsne") is None
    assert cached_projection(store, ds, layer, "umap") is None


# --------------------------------------------------------------------------- kNN graph


def test_umap_above_the_exact_limit_reuses_a_cached_nn_descent_graph(store, monkeypatch):
    from latentmap.pipeline.neighbors import cosine_knn

    monkeypatch.setattr(reduce, "EXACT_KNN_MAX", 200)
    X = _clusters(700, 16, seed=2)
    X[10] = np.nan
    ds = write_dataset(store, name="g", vectors={"z": X}, metadata=pd.DataFrame({"i": range(700)}))
    g = layout_graph(store, ds, "z", 15)
    assert store.lookup(approx_knn_key(ds, "z", 15)) is not None  # cached as its own entry
    idx, sims = g["idx"], g["sims"]
    assert idx.shape == (700, 15) and (idx[10] == -1).all() and np.isnan(sims[10]).all()
    rows = np.delete(np.arange(700), 10)
    assert not (idx[rows] == rows[:, None]).any()  # a row is never its own neighbour
    assert not (idx[rows] == 10).any()  # the NaN row is nobody's neighbour
    exact, esims = cosine_knn(X[rows], 15)
    recall = np.mean(
        [len(set(a) & set(rows[b])) / 15 for a, b in zip(idx[rows], exact, strict=True)]
    )
    assert recall > 0.95
    # the similarities are the true cosines of the rows named
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = rows[5]
    np.testing.assert_allclose(sims[r], U[idx[r]] @ U[r], atol=1e-4)

    calls = []
    real = reduce._nndescent
    monkeypatch.setattr(reduce, "_nndescent", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = projection(store, ds, "z", "umap")
    b = projection(store, ds, "z", "umap", {"min_dist": 0.5})
    assert calls == []  # both UMAPs used the cached graph
    assert np.isfinite(a["coords"][rows]).all() and np.isfinite(b["coords"][rows]).all()
    assert not np.allclose(a["coords"][rows], b["coords"][rows])


# --------------------------------------------------------------------------- the job


@pytest.fixture
def mid(store, monkeypatch):
    """1,200 rows with the index threshold lowered to 1,000: every step has work."""
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 1000)
    ann._loaded.clear()
    X = _clusters(1200, 16, seed=4)
    ds = write_dataset(
        store,
        name="mid",
        vectors={"a": X[:, :8].copy(), "b": X},
        metadata=pd.DataFrame({"i": range(1200)}),
    )
    store.update_manifest(ds, default_layer="b")
    return store, ds


def test_plan_lists_indexes_then_the_default_layers_umap_and_tsne(mid):
    store, ds = mid
    assert precompute.plan(store, ds) == [
        {"step": "index", "layer": "a"},
        {"step": "index", "layer": "b"},
        {"step": "umap", "layer": "b"},
        {"step": "tsne", "layer": "b"},
    ]
    assert precompute.plan(store, ds, ("tsne",)) == [{"step": "tsne", "layer": "b"}]
    with pytest.raises(ValueError, match="unknown precompute step pca"):
        precompute.plan(store, ds, ("pca", "umap"))


@pytest.mark.slow
def test_run_computes_every_step_once_and_logs_a_job(mid):
    from latentmap.pipeline.joblog import list_jobs

    store, ds = mid
    seen = []
    done = precompute.run(store, ds, progress=lambda f, m: seen.append(f))
    assert [t["step"] for t in done] == ["index", "index", "umap", "tsne"]
    assert all("error" not in t for t in done)
    assert seen == sorted(seen) and seen[-1] >= 0.75
    assert ann.cached_index(store, ds, "b") is not None
    assert cached_projection(store, ds, "b", "umap") is not None
    assert cached_projection(store, ds, "b", "tsne") is not None
    assert precompute.plan(store, ds) == [] and precompute.run(store, ds) == []
    jobs = [r for r in list_jobs(store.root) if r["job"] == "precompute"]
    assert len(jobs) == 1 and jobs[0]["state"] == "done" and jobs[0]["dataset"] == ds


def test_a_failing_step_is_reported_and_the_next_still_runs(mid, monkeypatch):
    store, ds = mid

    def broken(*a, **k):
        raise MemoryError("no room")

    monkeypatch.setattr(ann, "build_index", broken)
    done = precompute.run(store, ds, ("index", "tsne"))
    assert [t.get("error", "").split(":")[0] for t in done] == ["MemoryError", "MemoryError", ""]
    assert cached_projection(store, ds, "b", "tsne") is not None
    from latentmap.pipeline.joblog import list_jobs

    (rec,) = [r for r in list_jobs(store.root) if r["job"] == "precompute"]
    assert rec["state"] == "failed" and rec["error"].startswith("2 of 3 steps failed")
    assert "no room" in rec["error"]


def test_configured_steps_from_the_environment(monkeypatch):
    for raw, want in [
        ("1", precompute.STEPS),
        ("0", ()),
        ("off", ()),
        ("tsne,index", ("index", "tsne")),
        ("umap, bogus", ("umap",)),
    ]:
        monkeypatch.setenv("LATENTMAP_PRECOMPUTE", raw)
        assert precompute.configured_steps() == want
    monkeypatch.setenv("LATENTMAP_PRECOMPUTE", "0")
    assert precompute.launch("/nonexistent", "abc") is None  # turned off: nothing started


@pytest.mark.slow
def test_launch_runs_in_a_detached_process_that_outlives_the_caller(mid):
    import psutil
    from latentmap.pipeline.joblog import list_jobs

    store, ds = mid
    assert precompute.launch(store.root, ds, steps=("tsne",)) == "process"
    # not our descendant: Dash kills a finished job's whole process tree, and took it along
    mine = []
    for p in psutil.Process().children(recursive=True):
        try:
            mine.append(" ".join(p.cmdline()))
        except psutil.Error:  # a zombie left by an earlier test, or gone meanwhile
            continue
    assert not [c for c in mine if "precompute" in c], mine
    deadline = time.monotonic() + 240
    while cached_projection(store, ds, "b", "tsne") is None:
        assert time.monotonic() < deadline, "the background t-SNE never appeared"
        time.sleep(0.5)
    for _ in range(40):  # the record is written when the job ends, just after the entry
        jobs = [r for r in list_jobs(store.root) if r["job"] == "precompute"]
        if jobs and jobs[0]["state"] == "done":
            break
        time.sleep(0.25)
    assert jobs[0]["state"] == "done" and jobs[0]["dataset"] == ds
    assert jobs[0]["pid"] != __import__("os").getpid()


def test_cli_precompute_runs_steps_and_rejects_bad_ones(mid, capsys):
    store, ds = mid
    assert cli(["--cache-dir", str(store.root), "precompute", ds, "--steps", "tsne"]) == 0
    out = capsys.readouterr().out
    assert "t-SNE map of b:" in out and cached_projection(store, ds, "b", "tsne") is not None
    assert cli(["--cache-dir", str(store.root), "precompute", ds, "--steps", "tsne"]) == 0
    assert "nothing to precompute" in capsys.readouterr().out
    assert cli(["--cache-dir", str(store.root), "precompute", ds, "--steps", "pca"]) == 2
    err = capsys.readouterr().err
    assert "unknown precompute step pca" in err and "Traceback" not in err
    assert cli(["--cache-dir", str(store.root), "precompute", "nope"]) == 2
    assert "no dataset 'nope'" in capsys.readouterr().err
    assert json.dumps(precompute.plan(store, ds, ("tsne",))) == "[]"


def test_an_encode_resumed_mid_way_gets_its_pca_map_from_the_moments(store, tmp_path, monkeypatch):
    """The moments of batches from the interrupted run and from the resumed run add up to
    the exact PCA of all rows; no second pass over the vectors (pca_basis) is made."""
    from latentmap.pipeline.jobs import EncodeCancelled, EncodeRequest, encode
    from PIL import Image

    rng = np.random.default_rng(5)
    for i in range(160):
        d = tmp_path / "imgs" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        base = 60 if i % 2 else 190
        px = np.clip(base + rng.normal(0, 40, (6, 6, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(d / f"{i}.png")
    req = EncodeRequest(
        source=str(tmp_path / "imgs"), model="pixels", batch_size=16, image_size=2, workers=0
    )
    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(EncodeCancelled):
        encode(store, req, should_cancel=cancel_after_three)

    def no_second_pass(*a, **k):
        raise AssertionError("the PCA map re-read the vectors instead of using the moments")

    with monkeypatch.context() as m:
        m.setattr(reduce, "pca_basis", no_second_pass)
        res = encode(store, req)
    layer = store.layers(res.ds_id)[0]
    X = np.asarray(store.vectors(res.ds_id, layer))
    assert X.shape == (160, 12) and reduce.uses_moments(*X.shape)
    got = cached_projection(store, res.ds_id, layer, "pca")["coords"]
    want = pca_transform(pca_basis(X), X)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_asking_for_a_map_another_job_is_computing_says_so_and_waits_for_it(mid, monkeypatch):
    import threading

    store, ds = mid
    real, started = reduce.reduce, threading.Event()

    def slow(*a, **k):
        started.set()
        time.sleep(1.0)
        return real(*a, **k)

    monkeypatch.setattr(reduce, "reduce", slow)
    bg = threading.Thread(target=precompute.run, args=(store, ds, ("tsne",)))
    bg.start()
    assert started.wait(30)
    said = []
    e = projection(store, ds, "b", "tsne", progress=lambda f, m: said.append(m))
    bg.join()
    assert "being computed by another job" in said[0] and len(said) == 1  # waited, no run
    assert e.info["method"] == "tsne" and np.isfinite(e["coords"]).all()
