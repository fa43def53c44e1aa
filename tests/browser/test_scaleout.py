"""Scale-out faults for real: redis-server + Celery workers run encode / reduce / index jobs;
a worker killed mid-encode loses nothing (another worker resumes from the last batch); the
same encode asked twice runs once; unreachable Redis is a clear message at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_celery import redis_url, start_worker, stop  # noqa: F401 - redis_url: a fixture

pytestmark = [pytest.mark.redis, pytest.mark.slow]
VISIBILITY = {"LATENTMAP_CELERY_VISIBILITY_TIMEOUT": "4"}  # a dead worker's job returns in ~4 s

SLOW_MODEL = '''
import time
import torch
from torch import nn


class Slow(nn.Module):
    """Flattens its input, 0.25 s per batch: an encode long enough to kill mid-way."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 16)

    def forward(self, x):
        time.sleep(0.25)
        return self.proj(x.flatten(1))
'''


def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / f"c{i % 3}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(cls / f"{i}.png")
    return root


@pytest.fixture
def client(redis_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("LATENTMAP_CELERY_VISIBILITY_TIMEOUT", "4")
    from latentmap.callbacks.manager import make_celery

    return make_celery(redis_url), redis_url


def test_killed_worker_job_is_resumed_by_another_with_nothing_lost(client, tmp_path):
    from latentmap.pipeline.store import Store

    app, url = client
    cache = tmp_path / "cache"
    folder = _folder(tmp_path / "imgs", 480)
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    a = start_worker(cache, url, tmp_path / "a.log", VISIBILITY)
    procs = [a]
    try:
        res = app.send_task(
            "latentmap.encode",
            args=[
                {
                    "source": str(folder),
                    "model": f"{model}:Slow",
                    "batch_size": 16,
                    "workers": 0,
                    "image_size": 8,
                }
            ],
        )
        parts = None
        end = time.time() + 120
        while time.time() < end:  # wait for some batches to be written, then kill the worker
            found = list(cache.glob("datasets/*/parts/*.npz"))
            if len(found) >= 6:
                parts = found
                break
            time.sleep(0.1)
        assert parts, (tmp_path / "a.log").read_text()[-3000:]
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=20)
        done_before = len(list(parts[0].parent.glob("*.npz")))
        # the second worker also takes the precompute job every encode queues (t-SNE only:
        # UMAP's first-use compile is not needed to show the hand-off)
        b = start_worker(
            cache, url, tmp_path / "b.log", {**VISIBILITY, "LATENTMAP_PRECOMPUTE": "tsne"}
        )
        procs.append(b)
        out = res.get(timeout=240)
        assert out["n"] == 480 and not out["reused"]
        blog = (tmp_path / "b.log").read_text()
        # the second worker resumed: it reused the batches the first one had written
        assert "resuming" in blog, blog[-3000:]
        store = Store(cache)
        m = store.manifest(out["dataset"])
        assert m["status"] == "complete" and m["n"] == 480
        assert done_before >= 6
        X = store.vectors(out["dataset"], store.layers(out["dataset"])[0])
        assert X.shape[0] == 480 and np.isfinite(X).all()
        from latentmap.pipeline.reduce import cached_projection

        layer = m["default_layer"]
        assert cached_projection(store, out["dataset"], layer, "pca") is not None  # at once
        end = time.time() + 120  # then the queued precompute job makes the t-SNE map
        while cached_projection(store, out["dataset"], layer, "tsne") is None:
            assert time.time() < end, (tmp_path / "b.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "latentmap.precompute" in (tmp_path / "b.log").read_text()
        # a reduction and the neighbour index through the same worker
        r = app.send_task(
            "latentmap.reduce", args=[out["dataset"], store.layers(out["dataset"])[0], "pca"]
        )
        assert r.get(timeout=120)["method"] == "pca"
    finally:
        for p in procs:
            stop(p)


def test_the_same_encode_asked_twice_runs_once(tmp_path):
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from latentmap.pipeline.store import Store

    folder = _folder(tmp_path / "imgs", 60)
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    store = Store(tmp_path / "cache")
    req = EncodeRequest(
        source=str(folder), model=f"{model}:Slow", batch_size=8, workers=0, image_size=8
    )
    results = []
    threads = [threading.Thread(target=lambda: results.append(encode(store, req))) for _ in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and results[0].ds_id == results[1].ds_id
    assert sorted(r.reused for r in results) == [False, True]


def test_unreachable_redis_is_a_clear_message_at_start(tmp_path):
    env = {
        **os.environ,
        "LATENTMAP_REDIS_URL": "redis://127.0.0.1:1/0",
        "LATENTMAP_CACHE_DIR": str(tmp_path / "c"),
    }
    cmd = [sys.executable, "-m", "latentmap.cli", "serve", "--port", "8799"]
    p = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in p.stderr
    assert "LATENTMAP_REDIS_FALLBACK=1" in p.stderr and "Traceback" not in p.stderr
    # with the fallback configured, the check passes with embedded jobs instead
    from latentmap.callbacks.manager import check_redis
    from latentmap.settings import Settings

    s = check_redis(Settings(cache_dir=tmp_path / "c", redis_url="redis://127.0.0.1:1/0",
                             redis_fallback=True))  # fmt: skip
    assert s.redis_url is None


def test_serve_with_the_fallback_runs_embedded_jobs_when_redis_is_down(tmp_path):
    """LATENTMAP_REDIS_FALLBACK=1: the server starts (embedded jobs, a warning naming the
    URL) and answers, instead of exiting."""
    import urllib.request

    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.store import Store
    from test_celery import _free_port

    store = Store(tmp_path / "c")
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    write_dataset(store, name="tiny", vectors={"z": X}, metadata=pd.DataFrame({"i": range(40)}))
    port = _free_port()
    env = {
        **os.environ,
        "LATENTMAP_REDIS_URL": "redis://127.0.0.1:1/0",
        "LATENTMAP_REDIS_FALLBACK": "1",
        "LATENTMAP_CACHE_DIR": str(store.root),
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "latentmap.cli", "serve", "tiny", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        end = time.time() + 90
        body = None
        while time.time() < end and body is None:
            assert p.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert body and "latentmap" in body.lower(), log.read_text()[-2000:]
        text = log.read_text()
        assert "redis://127.0.0.1:1/0 is unreachable" in text and "Traceback" not in text
        assert text.count("unreachable") == 1  # Redis asked once, not once per check
    finally:
        stop(p)
