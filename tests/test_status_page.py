"""Job observability: JSON log lines of every job, the on-disk registry, and /status(.json)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from latentmap.callbacks import reduction, tasks
from latentmap.pipeline import joblog
from latentmap.pipeline.store import Store
from test_app_support import make_dataset

XSS = "<script>alert(1)</script>"


@pytest.fixture
def env(tmp_path):
    store = Store(tmp_path / "cache")
    return store, make_dataset(store, n=30, thumbnails=False)


def _client(store):
    from latentmap.app import create_app
    from latentmap.settings import Settings

    return create_app(Settings(cache_dir=store.root)).server.test_client()


def _events(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "latentmap.jobs"]


def test_tasks_are_logged_and_listed_on_the_status_page(env, caplog):
    store, ds = env
    caplog.set_level(logging.INFO, logger="latentmap.jobs")
    request = {
        "nonce": 1,
        "tasks": [
            tasks.task("summary", ds, "z", true_col=XSS, pred_col=None),
            tasks.task("projection", ds, "z", method="pca", params=None),
        ],
    }
    token = tasks.run_request(store, request)
    assert len(token["errors"]) == 1

    events = _events(caplog)
    kinds = [(e["event"], e["job"]) for e in events if e["event"] != "job.progress"]
    assert kinds == [
        ("job.start", "summary"),
        ("job.fail", "summary"),
        ("job.start", "projection"),
        ("job.end", "projection"),
    ]
    fail = events[1]
    assert fail["dataset"] == ds and XSS in fail["error"] and fail["seconds"] >= 0

    client = _client(store)
    status = client.get("/status.json").get_json()
    assert status["running"] == []
    assert [j["job"] for j in status["failed"]] == ["summary"]
    assert XSS in status["failed"][0]["error"]
    assert [j["job"] for j in status["finished"]] == ["projection"]
    assert status["finished"][0]["detail"] == "PCA projection of z"

    page = client.get("/status")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert XSS not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "PCA projection of z" in text and "Failed (1)" in text and "Finished (1)" in text


def test_projection_job_failure_is_recorded(env):
    store, ds = env
    token = reduction.run_request(
        store, {"nonce": 3, "proj": {"dataset": ds, "layer": "nope", "method": "pca"}}
    )
    assert token["error"]
    failed = joblog.summary(store.root)["failed"]
    assert failed[0]["job"] == "projection" and failed[0]["detail"] == "pca of nope"


def test_encode_jobs_are_recorded(tmp_path):
    import numpy as np
    from latentmap.pipeline.jobs import EncodeError, EncodeRequest, encode

    store = Store(tmp_path / "cache")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    result = encode(store, EncodeRequest(source=str(tmp_path / "v.npy")))
    with pytest.raises(EncodeError):
        encode(store, EncodeRequest(source=str(tmp_path / "missing.npy")))
    s = joblog.summary(store.root)
    assert s["finished"][0]["job"] == "encode" and s["finished"][0]["dataset"] == result.ds_id
    assert s["failed"][0]["job"] == "encode" and "missing.npy" in s["failed"][0]["error"]


def test_an_exception_escaping_the_block_is_a_failure_and_is_reraised(tmp_path):
    with pytest.raises(RuntimeError), joblog.job(tmp_path, "thing", dataset="d") as j:
        j.progress(0.5, "half")
        raise RuntimeError("boom")
    (rec,) = joblog.list_jobs(tmp_path)
    assert rec["state"] == "failed" and rec["error"] == "RuntimeError: boom"
    assert rec["progress"] == 0.5


def test_progress_is_throttled(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="latentmap.jobs")
    clock = [100.0]
    monkeypatch.setattr(joblog.time, "monotonic", lambda: clock[0])
    with joblog.job(tmp_path, "thing") as j:
        for i in range(50):  # 50 updates over 6.25 s -> one event now, then one per 2 s
            j.progress(i / 50, f"step {i}")
            clock[0] += 0.125
        rec = joblog.list_jobs(tmp_path)[0]
        assert rec["state"] == "running" and rec["message"] == "step 48"
    events = [e["event"] for e in _events(caplog)]
    assert events.count("job.progress") == 4
    assert events[0] == "job.start" and events[-1] == "job.end"


def test_registry_keeps_the_newest_records(tmp_path, monkeypatch):
    monkeypatch.setattr(joblog, "KEEP", 5)
    for i in range(9):
        with joblog.job(tmp_path, "thing", detail=str(i)):
            pass
    joblog.prune(tmp_path, keep=5)
    recs = joblog.list_jobs(tmp_path)
    assert len(recs) == 5
    assert {r["detail"] for r in recs} == {"4", "5", "6", "7", "8"}


def test_a_running_job_whose_process_died_reads_as_lost(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    j = joblog.Job(tmp_path, "projection").start()
    rec = j.record() | {"pid": int(dead.stdout)}
    joblog.save_json(joblog.status_dir(tmp_path) / f"{j.id}.json", rec)
    s = joblog.summary(tmp_path)
    assert s["running"] == []
    assert s["failed"][0]["state"] == "lost" and "cancelled or killed" in s["failed"][0]["error"]


def test_a_registry_that_cannot_be_written_does_not_break_the_job(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with joblog.job(blocker, "thing") as j:  # <file>/jobs/status cannot be created
        j.progress(1.0)
    assert j.state == "done"
