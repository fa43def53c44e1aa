"""The FAISS IVF index for large layers: built in the background, cached with a checksum,
candidates re-ranked exactly; the exact search below the threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from latentmap.callbacks import tasks
from latentmap.pipeline import ann
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.neighbors import nearest, nearest_to_vectors, search_method

pytest.importorskip("faiss")

N, D = 6000, 32


@pytest.fixture
def big(store, monkeypatch):
    """6,000 clustered vectors (a few NaN rows) with the index threshold lowered to 1,000."""
    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 1000)
    ann._loaded.clear()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, D))
    X = (centres[rng.integers(0, 30, N)] + 0.6 * rng.normal(size=(N, D))).astype(np.float32)
    X[[5, 77]] = np.nan
    ds = write_dataset(
        store, name="big", vectors={"z": X}, metadata=pd.DataFrame({"i": np.arange(N)})
    )
    return store, ds, X


def test_small_layers_use_the_exact_search(store):
    X = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    ds = write_dataset(store, name="s", vectors={"z": X}, metadata=pd.DataFrame({"i": range(50)}))
    assert search_method(store, ds, "z") == "exact"
    assert not ann.wants_index(store, ds, "z")
    assert tasks.needed_tasks(store, {"dataset": ds, "layer": "z", "method": "pca",
                                      "params": {}}, None) == []  # fmt: skip


def test_index_task_builds_and_is_then_used(big):
    store, ds, X = big
    spec = {"dataset": ds, "layer": "z", "method": "pca", "params": {}}
    assert tasks.missing_tasks(store, spec, None) == []  # never started by opening a view
    assert search_method(store, ds, "z") == "exact (index building)"
    before = nearest(store, ds, "z", 0, 10)  # exact while the index is missing
    seen = []
    token = tasks.run_request(
        store, {"tasks": [tasks.task("index", ds, "z")], "nonce": 1}, lambda p: seen.append(p)
    )
    assert token == {"nonce": 1, "errors": []}
    assert search_method(store, ds, "z") == "IVF index"
    after = nearest(store, ds, "z", 0, 10)
    assert [r for r, _ in after] == [r for r, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], rtol=1e-5)


def test_recall_and_exact_similarities(big):
    store, ds, X = big
    e = ann.build_index(store, ds, "z")
    assert e.info["n"] == N - 2 and e["rows"].tolist() == [r for r in range(N) if r not in (5, 77)]
    valid = np.isfinite(X).all(axis=1)
    queries = np.random.default_rng(2).choice(np.flatnonzero(valid), 200, replace=False)
    hits = 0
    for row in queries:
        got = nearest(store, ds, "z", int(row), 10)
        idx, sims = nearest_to_vectors(X, X[row], 10, valid=valid, exclude=[row])
        hits += len({r for r, _ in got} & set(idx[0].tolist()))
        rows = [r for r, _ in got]
        assert int(row) not in rows and 5 not in rows and 77 not in rows
        # similarities are exact (re-ranked in float32), best first
        Xr = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
        q = X[row] / np.linalg.norm(X[row])
        np.testing.assert_allclose([s for _, s in got], Xr @ q, rtol=1e-4, atol=1e-6)
        assert all(a[1] >= b[1] for a, b in zip(got, got[1:], strict=False))
    recall = hits / (10 * len(queries))
    assert recall >= 0.98, recall


def test_a_corrupt_index_is_detected_and_rebuilt(big):
    store, ds, _ = big
    ann.build_index(store, ds, "z")
    npz, _ = store.entry_paths(ann.ann_key(ds, "z"))
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte inside the serialised index
    npz.write_bytes(bytes(data))
    ann._loaded.clear()
    assert ann.cached_index(store, ds, "z") is None  # detected, removed, never used
    assert not npz.exists()
    assert ann.build_index(store, ds, "z").info["n"] == N - 2
    assert ann.cached_index(store, ds, "z") is not None


def test_cli_encode_builds_the_index_of_large_layers(store, tmp_path, monkeypatch, capsys):
    from latentmap.cli import main as cli
    from latentmap.pipeline.jobs import EncodeRequest, encode

    monkeypatch.setattr(ann, "ANN_MIN_ROWS", 1000)
    ann._loaded.clear()
    p = tmp_path / "emb.npy"
    np.save(p, np.random.default_rng(3).normal(size=(1500, 16)).astype(np.float32))
    # the encode job itself ends at the PCA map: the index is the precompute job's
    ds = encode(store, EncodeRequest(source=str(p))).ds_id
    layer = store.layers(ds)[0]
    assert ann.cached_index(store, ds, layer) is None
    assert search_method(store, ds, layer) == "exact (index building)"
    assert cli(["--cache-dir", str(store.root), "encode", str(p)]) == 0
    assert "search index of" in capsys.readouterr().out
    assert ann.cached_index(store, ds, layer) is not None
    assert search_method(store, ds, layer) == "IVF index"
    assert ann.build_index(store, ds, layer).info["cells"] == ann.n_cells(1500) == 32


def test_cells_and_probes_scale_with_the_rows():
    assert ann.n_cells(1_000_000) == 4096 and ann.n_probe(4096) == 128
    assert ann.n_cells(200_000) == 2048 and ann.n_probe(2048) == 64
    assert ann.n_cells(6000) == 128 and ann.n_probe(128) == 32
    assert ann.n_cells(10) == 16 and ann.n_probe(16) == 16
    for n in (5_000, 80_000, 3_000_000):
        assert ann.n_cells(n) * ann.TRAIN_PER_CELL <= n
