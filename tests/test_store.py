"""The read-through cache: keys, atomic writes, corruption detection, dataset registry."""

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.store import (
    DatasetNotFound,
    Store,
    StoreError,
    key_hash,
    safe_name,
)


def test_key_hash_is_stable_and_order_independent():
    a = key_hash({"kind": "x", "params": {"a": 1, "b": 2}, "dataset": "d"})
    b = key_hash({"dataset": "d", "params": {"b": 2, "a": 1}, "kind": "x"})
    assert a == b
    assert a != key_hash({"kind": "x", "params": {"a": 1, "b": 3}, "dataset": "d"})


def test_get_or_compute_computes_once(store):
    calls = []

    def fn():
        calls.append(1)
        return {"coords": np.arange(6, dtype=np.float32).reshape(3, 2)}, {"notices": ["n"]}

    key = {"kind": "t", "version": 1}
    e1 = store.get_or_compute(key, fn)
    e2 = store.get_or_compute(key, fn)
    assert len(calls) == 1
    np.testing.assert_array_equal(e1["coords"], e2["coords"])
    assert e2.info == {"notices": ["n"]}
    # a fresh Store on the same root (another process) sees the entry
    assert Store(store.root).lookup(key) is not None


def test_corrupt_entry_is_detected_and_recomputed(store):
    key = {"kind": "t", "version": 1}
    store.get_or_compute(key, lambda: {"a": np.ones(1000, np.float32)})
    npz, meta = store.entry_paths(key)
    data = bytearray(npz.read_bytes())
    data[-200] ^= 0xFF  # flip a byte inside the array data
    npz.write_bytes(bytes(data))
    assert store.lookup(key) is None  # detected, removed
    assert not npz.exists()
    e = store.get_or_compute(key, lambda: {"a": np.full(1000, 2, np.float32)})
    assert float(e["a"][0]) == 2.0


def test_truncated_entry_is_not_served(store):
    key = {"kind": "t", "version": 2}
    store.put(key, {"a": np.arange(100)})
    npz, _ = store.entry_paths(key)
    npz.write_bytes(npz.read_bytes()[:50])
    assert store.lookup(key) is None


def test_key_mismatch_in_sidecar_is_rejected(store):
    key = {"kind": "t", "version": 3}
    store.put(key, {"a": np.arange(3)})
    _, meta = store.entry_paths(key)
    d = json.loads(meta.read_text())
    d["key"]["version"] = 99
    meta.write_text(json.dumps(d))
    assert store.lookup(key) is None


def test_concurrent_get_or_compute_runs_fn_once(store):
    calls = []
    lock = threading.Lock()

    def fn():
        with lock:
            calls.append(1)
        return {"a": np.arange(10)}

    key = {"kind": "race"}
    threads = [threading.Thread(target=store.get_or_compute, args=(key, fn)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_write_dataset_and_read_back(store):
    v = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    v[2, 1] = np.nan
    meta = pd.DataFrame({"label": list("aabbc")})
    ds = write_dataset(store, name="t", vectors={"emb": v}, metadata=meta)
    assert store.has_dataset(ds)
    assert store.vectors(ds, "emb").shape == (5, 3)
    np.testing.assert_array_equal(store.valid_mask(ds, "emb"), [True, True, False, True, True])
    md = store.metadata(ds)
    assert md["has_nan"].tolist() == [False, False, True, False, False]
    assert [i.name for i in store.list_datasets()] == ["t"]
    assert store.find_by_name("t") == ds
    with pytest.raises(StoreError, match="no layer 'nope'"):
        store.vectors(ds, "nope")


def test_bad_dataset_ids_are_rejected(store):
    for bad in ["../etc", "a/b", "", "x" * 100, "..", "/abs"]:
        with pytest.raises(DatasetNotFound):
            store.manifest(bad)
    assert store.thumbnail_path("abc", -1) is None
    assert store.thumbnail_path("abc", "../../etc/passwd") is None


def test_vectors_shape_mismatch_is_reported(store):
    ds = write_dataset(
        store,
        name="t",
        vectors={"e": np.ones((4, 2), np.float32)},
        metadata=pd.DataFrame({"x": range(4)}),
    )
    np.save(store.vectors_path(ds, "e"), np.ones((3, 2), np.float32))
    with pytest.raises(StoreError, match="shape|checksum"):
        store.vectors(ds, "e")


def test_safe_name():
    assert safe_name("features.0") == "features.0"
    assert safe_name("a/b") == "a_b"
    assert safe_name("..") == "_.."


def test_dataset_files_carry_checksums_and_damage_is_reported(store):
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.store import CorruptEntry

    X = np.arange(40 * 8, dtype=np.float32).reshape(40, 8)
    ds = write_dataset(store, name="c", vectors={"z": X}, metadata=pd.DataFrame({"i": range(40)}))
    sums = store.manifest(ds)["checksums"]
    assert {"vectors/z.npy", "metadata.parquet"} <= set(sums)
    np.testing.assert_array_equal(store.vectors(ds, "z"), X)
    # a bit flipped on disk, size unchanged: detected and reported, never silently used
    p = store.vectors_path(ds, "z")
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(
        CorruptEntry, match="vectors/z.npy of dataset .* does not match its checksum"
    ):
        store.vectors(ds, "z")
    m = store.metadata_path(ds)
    m.write_bytes(m.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CorruptEntry, match="metadata.parquet"):
        store.metadata(ds)


def test_a_caller_waiting_for_another_computing_the_same_key_is_told_and_reuses_it(store):

    key = {"kind": "t", "x": 1}
    started, calls, told = threading.Event(), [], []

    def slow():
        calls.append(1)
        started.set()
        time.sleep(1.0)
        return {"a": np.arange(3)}

    t = threading.Thread(target=store.get_or_compute, args=(key, slow))
    t.start()
    assert started.wait(10)
    e = store.get_or_compute(key, slow, on_wait=lambda: told.append(1))
    t.join()
    assert told == [1] and calls == [1]  # told once, computed once
    np.testing.assert_array_equal(e["a"], np.arange(3))
    told.clear()
    store.get_or_compute(key, slow, on_wait=lambda: told.append(1))
    assert told == []  # a hit never waits
