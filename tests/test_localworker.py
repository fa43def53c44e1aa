"""Warm UMAP workers of the embedded server: a job hands its projection to a spawned worker,
gets its progress, and never imports umap itself; busy, dead, cancelled and failing workers
each leave the caller with a clear outcome and nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline import localworker
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.reduce import cached_projection, projection
from latentmap.pipeline.store import Store


def _dataset(store: Store, n: int = 400, d: int = 16) -> str:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, d)) * 4
    X = (centres[rng.integers(0, 4, n)] + rng.normal(size=(n, d))).astype(np.float32)
    return write_dataset(store, name="w", vectors={"z": X}, metadata=pd.DataFrame({"i": range(n)}))


@pytest.fixture
def pool():
    p = localworker.Pool(1, warm=False, check_every=0.2).start()
    try:
        assert p.wait_ready(120), "the worker did not answer"
        yield p
    finally:
        p.stop()
    assert localworker.ENV not in os.environ


def _request(ds: str, method: str = "tsne", params=None) -> dict:
    return {
        "ds_id": ds,
        "layer": "z",
        "method": method,
        "params": params,
        "seed": 0,
        "init_from": None,
    }


CALLER = """
import json, sys
from latentmap.pipeline.reduce import projection
from latentmap.pipeline.store import Store
msgs = []
e = projection(Store(sys.argv[1]), sys.argv[2], "z", "umap", {"n_neighbors": 10},
               progress=lambda f, m: msgs.append(m))
print(json.dumps({"umap_imported": "umap" in sys.modules, "messages": msgs,
                  "finite": bool((e["coords"] == e["coords"]).all()), "n": len(e["coords"])}))
"""


@pytest.mark.slow
def test_a_job_of_the_server_hands_its_umap_to_the_warm_worker_and_never_imports_umap(store, pool):
    ds = _dataset(store)
    out = subprocess.run(
        [sys.executable, "-c", CALLER, str(store.root), ds],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),  # carries LATENTMAP_LOCAL_WORKERS, as a forked job does
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["umap_imported"] is False  # the caller compiled nothing
    assert got["finite"] and got["n"] == 400
    assert any("warm UMAP worker" in m for m in got["messages"])
    assert any("UMAP" in m and "warm" not in m for m in got["messages"])  # the worker's own
    assert pool.restarts == 0
    # the entry is the store's: a later request is a hit with no worker involved
    assert cached_projection(store, ds, "z", "umap", {"n_neighbors": 10}) is not None


def test_progress_is_forwarded_and_the_entry_lands_in_the_store(store, pool):
    ds = _dataset(store, n=300)
    msgs: list[tuple[float, str]] = []
    assert localworker.delegate(str(store.root), _request(ds), lambda f, m: msgs.append((f, m)))
    assert any("t-SNE" in m for _, m in msgs)
    entry = cached_projection(store, ds, "z", "tsne")
    assert entry is not None and np.isfinite(entry["coords"]).all()


def test_an_error_of_the_computation_reaches_the_caller_with_its_message(store, pool):
    ds = _dataset(store, n=50)
    with pytest.raises(Exception, match="nope"):
        localworker.delegate(str(store.root), {**_request(ds), "layer": "nope"})
    # the worker is still there for the next request
    assert localworker.delegate(str(store.root), _request(ds, "pca"))


def test_a_busy_worker_leaves_the_caller_to_compute_itself(store, pool):
    ds = _dataset(store, n=50)
    cfg = localworker._config()
    msgs: list[str] = []
    with localworker._try_lock(cfg["locks"][0]) as mine:
        assert mine
        ok = localworker.delegate(str(store.root), _request(ds), lambda f, m: msgs.append(m))
    assert ok is False and any("busy" in m for m in msgs)
    assert cached_projection(store, ds, "z", "tsne") is None  # nothing was computed there


def test_a_cancelled_caller_stops_the_worker_which_then_serves_the_next(store, pool):
    ds = _dataset(store, n=3000, d=32)
    script = (
        "import sys, os\n"
        "from latentmap.pipeline import localworker\n"
        "def p(f, m):\n"
        "    if 't-SNE' in m and 'iteration' in m:\n"
        "        print('RUNNING', flush=True); os.kill(os.getpid(), 9)\n"
        f"localworker.delegate(sys.argv[1], {_request(ds)!r}, p)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(store.root)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert "RUNNING" in proc.stdout and proc.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    rows = localworker.ping(timeout=60)
    assert rows[0]["ready"], rows
    assert time.monotonic() - t0 < 60  # stopped at its next progress report, not at the end
    assert cached_projection(store, ds, "z", "tsne") is None  # nothing half-written
    assert pool.restarts == 0


def test_a_dead_worker_is_started_again_and_the_caller_is_not_stuck(store, pool):
    ds = _dataset(store, n=50)
    pid = localworker.ping()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    # meanwhile: unreachable -> False (the caller computes), never a hang or a traceback
    localworker.delegate(str(store.root), _request(ds, "pca"))
    assert pool.wait_ready(120)
    assert pool.restarts >= 1 and localworker.ping()[0]["pid"] != pid
    assert localworker.delegate(str(store.root), _request(ds, "pca"))


def test_projection_outside_the_server_computes_in_process(store, monkeypatch):
    monkeypatch.delenv(localworker.ENV, raising=False)
    ds = _dataset(store, n=60)
    assert localworker.delegate(str(store.root), _request(ds)) is False
    assert np.isfinite(projection(store, ds, "z", "pca")["coords"]).all()


@pytest.mark.parametrize("raw,ok", [("2", 2), ("0", 0), ("-1", None), ("many", None)])
def test_worker_count_from_the_environment(raw, ok, monkeypatch):
    monkeypatch.setenv("LATENTMAP_UMAP_WORKERS", raw)
    if ok is None:
        with pytest.raises(ValueError, match="LATENTMAP_UMAP_WORKERS"):
            localworker.workers_from_env()
    else:
        assert localworker.workers_from_env() == ok


def test_the_status_page_lists_the_workers_and_what_they_computed(store, pool):
    from latentmap.status import render_status

    ds = _dataset(store, n=60)
    assert localworker.delegate(str(store.root), _request(ds, "pca"))
    (w,) = localworker.states()
    assert w["ready"] and not w["busy"] and w["served"] == 1 and w["pid"] == pool.procs[0].pid
    html = render_status(
        {
            "now": time.time(),
            "running": [],
            "failed": [],
            "finished": [],
            "umap_workers": localworker.states(),
        }
    )
    assert "Warm UMAP workers" in html and "ready" in html


PLACE = """
import json, sys
import numpy as np
from latentmap.pipeline import diagnostics
d = np.load(sys.argv[1])
xy = diagnostics.umap_transform(d["X"], d["C"], d["Q"], n_neighbors=10, min_dist=0.1, seed=0)
print(json.dumps({"umap_imported": "umap" in sys.modules, "xy": xy.tolist()}))
"""


@pytest.mark.slow
def test_points_placed_on_a_umap_map_by_a_job_are_placed_by_the_worker(tmp_path, pool):
    from latentmap.pipeline import diagnostics

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    C = rng.normal(size=(300, 2)).astype(np.float32)
    Q = X[:4] + 0.01
    np.savez(tmp_path / "in.npz", X=X, C=C, Q=Q)
    out = subprocess.run(
        [sys.executable, "-c", PLACE, str(tmp_path / "in.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["umap_imported"] is False
    assert localworker.states()[0]["served"] == 1
    # the same placement as computed here (deterministic for a seed)
    env = os.environ.pop(localworker.ENV)
    try:
        here = diagnostics.umap_transform(X, C, Q, n_neighbors=10, min_dist=0.1, seed=0)
    finally:
        os.environ[localworker.ENV] = env
    np.testing.assert_allclose(np.array(got["xy"]), here, rtol=1e-5, atol=1e-5)


def test_a_worker_stuck_in_its_warm_up_is_not_waited_for(store, pool, monkeypatch):
    ds = _dataset(store, n=50)
    address = localworker._config()["workers"][0]
    # what a warm-up hung for 11 minutes leaves in the worker's state file
    state = {"pid": 1, "ready": False, "busy": False, "served": 0, "started": time.time() - 660}
    with open(f"{address}.json", "w") as f:
        json.dump(state, f)
    msgs: list[str] = []
    assert not localworker.delegate(
        str(store.root), _request(ds, "pca"), lambda f, m: msgs.append(m)
    )
    assert any("busy" in m or "computing in this job" in m for m in msgs)
    # a recent start is waited for as usual
    state["started"] = time.time()
    with open(f"{address}.json", "w") as f:
        json.dump(state, f)
    assert not localworker._stuck_warming(address)
