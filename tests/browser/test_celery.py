"""The scale-out path for real: redis-server + a Celery worker run the background reduction
that a page opened on an uncomputed t-SNE asks for."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_log(path: Path, text: str, proc, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen; log:\n{path.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but redis-server is missing (make system-deps installs it)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--logfile",
            str(log),
        ],
    )
    try:
        _wait_log(log, "Ready to accept connections", proc, 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_worker(cache: Path, url: str, log: Path, env_extra: dict | None = None):
    """A real Celery worker (solo pool) on ``url`` with ``cache``; waits until it is ready."""
    env = {
        **os.environ,
        "LATENTMAP_REDIS_URL": url,
        "LATENTMAP_CACHE_DIR": str(cache),
        "LATENTMAP_WARMUP": "0",  # UMAP's compile warm-up: 60-90 s, not needed here
        **(env_extra or {}),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "latentmap.callbacks.worker:celery_app",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_log(log, " ready.", proc, 120)
    return proc


def stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def worker(redis_url, tmp_path):
    cache = tmp_path / "cache"
    log = tmp_path / "worker.log"
    proc = start_worker(cache, redis_url, log)
    try:
        yield cache, redis_url, log
    finally:
        stop(proc)


def test_background_tsne_runs_on_a_celery_worker(worker, dash_br):
    from latentmap.app import create_app
    from latentmap.callbacks.manager import make_celery
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.reduce import cached_projection
    from latentmap.pipeline.store import Store
    from latentmap.settings import Settings
    from werkzeug.serving import make_server

    cache, redis_url, log = worker
    store = Store(cache)
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(3), 40)
    X = (rng.normal(0, 1, (120, 8)) + 6 * np.eye(8)[label]).astype(np.float32)
    ds = write_dataset(
        store, name="celery", vectors={"z": X}, metadata=pd.DataFrame({"label": label.astype(str)})
    )
    assert cached_projection(store, ds, "z", "tsne") is None
    settings = Settings(cache_dir=cache, dataset=ds, redis_url=redis_url)
    app = create_app(settings, celery_app=make_celery(redis_url))
    srv = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dash_br.driver.get(f"http://127.0.0.1:{srv.server_port}/?dataset={ds}&method=tsne")
        end = time.time() + 180
        while time.time() < end and cached_projection(store, ds, "z", "tsne") is None:
            time.sleep(0.5)
        assert cached_projection(store, ds, "z", "tsne") is not None, log.read_text()[-3000:]
        # the worker ran it (its log names the task), and the page then draws all 120 points
        assert "succeeded" in log.read_text()
        count_js = (
            "const p=document.querySelector('#scatter .js-plotly-plot');"
            "return p&&p._fullData?p._fullData.reduce((s,t)=>s+(t.x?t.x.length:0),0):0;"
        )
        end = time.time() + 60
        while time.time() < end and dash_br.driver.execute_script(count_js) < 120:
            time.sleep(0.3)
        assert dash_br.driver.execute_script(count_js) >= 120
    finally:
        srv.shutdown()
