"""Concurrent users against the explorer served by gunicorn with several workers.

Builds (or reuses, ``--cache DIR``) a clustered dataset of N items (default 100,000 x 128,
20 clusters, PNG thumbnails), caches its real PCA map and a second, UMAP-shaped map (a
stand-in: a real UMAP of 100k points takes minutes on 2 cores, and switching only reads the
cache), starts ``gunicorn -w 4 -k gthread 'latentmap.app:server'`` on a free loopback port,
then runs U concurrent sessions (threads, one ``requests.Session`` each), each doing a bounded
number of iterations of what a user does, as the real Dash HTTP requests:

* **load**: ``GET /``, ``/_dash-layout``, ``/_dash-dependencies``; the URL callback
  (``?ds=...&method=pca``) and the map figure callback (the whole 100k-point figure);
* **switch**: the URL callback for a change of the reduction picker, then the figure;
* **hover** (x3): the tooltip callback for a random point, then its thumbnail;
* **click** (x2): the click callback (``clickData`` -> selected row) and the neighbours callback
  (checked: it must return the query card plus k gallery cards), timed together as
  "click -> neighbours"; then the highlight patch, the URL callback the click also triggers and
  the cards' thumbnails (one after the other, where a browser fetches them side by side),
  all timed as "click, all requests".

Payloads are built from the server's own ``/_dash-dependencies`` (as the browser does) with
the component values of ``/_dash-layout`` and of earlier responses. Callbacks a browser would
also fire but which do not sit on these paths (the hidden tabs' panels) are not sent. Each
user waits ``--think`` seconds (uniformly 0.5x..1.5x) between actions; ``--think 0`` is a
stress test. Prints p50 / p95 / max latency and errors per request kind and per user action.

    python bench/bench_load.py                          # 100k items; 10 and 50 users
    python bench/bench_load.py --users 10 --iterations 3 --cache /tmp/lm-load
    python bench/bench_load.py --quick                  # 3k items, 2 users, 2 iterations
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

K = 12  # neighbours asked for (the app's default)


# --------------------------------------------------------------------------- the dataset


def _png(rgb: tuple[int, int, int], size: int = 32) -> bytes:
    import io

    from PIL import Image

    arr = np.zeros((size, size, 3), np.uint8)
    arr[:] = rgb
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255 - np.array(rgb, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def ensure_dataset(store, n: int, dim: int, thumbs: bool) -> tuple[str, str]:
    """(dataset id, what the second projection is): built once per cache."""
    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.reduce import cached_projection, normalize_params, projection_key

    name = f"load-{n}x{dim}{'-thumbs' if thumbs else ''}"
    ds = store.find_by_name(name)
    if ds is None or not store.has_dataset(ds):
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        label = rng.integers(0, 20, n)
        centres = rng.normal(0, 6, (20, dim)).astype(np.float32)
        X = centres[label] + rng.normal(0, 1, (n, dim)).astype(np.float32)
        meta = pd.DataFrame(
            {
                "label": [f"class {c:02d}" for c in label],
                "split": np.where(rng.random(n) < 0.2, "test", "train"),
                "score": rng.random(n).round(3),
            }
        )
        pngs = [_png(tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(20)]
        ds = write_dataset(
            store,
            name=name,
            vectors={"z": X},
            metadata=meta,
            thumbnails=[pngs[c] for c in label] if thumbs else None,
        )
        print(f"built {name} ({ds}) in {time.perf_counter() - t0:.1f} s", flush=True)
    from latentmap.pipeline.reduce import projection

    t0 = time.perf_counter()
    coords = np.asarray(projection(store, ds, "z", "pca")["coords"])
    if cached_projection(store, ds, "z", "umap") is None:
        params, _ = normalize_params("umap", None, n)
        rng = np.random.default_rng(1)
        stand_in = (coords + rng.normal(0, 0.5, coords.shape)).astype(np.float32)
        store.put(
            projection_key(ds, "z", "umap", params, 0),
            {"coords": stand_in},
            {"notices": [], "params": params, "method": "umap", "seconds": 0.0},
        )
    print(f"projections ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return ds, "a cached UMAP-shaped stand-in (PCA + noise)"


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(cache: Path, ds: str, workers: int, threads: int, log_path: Path):
    """A gunicorn serving the app on 127.0.0.1; yields its base URL."""
    import requests

    port = free_port()
    env = {
        **os.environ,
        "LATENTMAP_CACHE_DIR": str(cache),
        "LATENTMAP_DATASET": ds,
        "LATENTMAP_HOST": "127.0.0.1",
    }
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "120",
        "--keep-alive",
        "10",  # > the think time: no idle connection is closed under a client about to reuse it
        "--log-level",
        "warning",
        "latentmap.app:server",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({proc.returncode}): {_tail(log_path)}")
            try:
                if requests.get(base + "/status.json", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in 120 s: {_tail(log_path)}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- a Dash client


class CheckFailed(Exception):
    """A response that came back but is not what the page needs."""


def _outputs(output: str) -> list[dict[str, str]]:
    parts = output[2:-2].split("...") if output.startswith("..") else [output.split("@")[0]]
    out = []
    for p in parts:
        cid, prop = p.rsplit(".", 1)
        out.append({"id": cid, "property": prop})
    return out


def _walk_layout(node: Any, props: dict[str, dict[str, Any]]) -> None:
    if isinstance(node, list):
        for x in node:
            _walk_layout(x, props)
    elif isinstance(node, dict) and "props" in node:
        p = node["props"]
        if isinstance(p.get("id"), str):
            props[p["id"]] = {k: v for k, v in p.items() if k not in ("children", "id")}
        _walk_layout(p.get("children"), props)


def _find_ids(obj: Any, type_: str, out: list) -> list:
    if isinstance(obj, dict):
        i = obj.get("id")
        if isinstance(i, dict) and i.get("type") == type_:
            out.append(i)
        for v in obj.values():
            _find_ids(v, type_, out)
    elif isinstance(obj, list):
        for v in obj:
            _find_ids(v, type_, out)
    return out


def _thumb_urls(obj: Any, out: list) -> list:
    if isinstance(obj, dict):
        for v in obj.values():
            _thumb_urls(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _thumb_urls(v, out)
    elif isinstance(obj, str) and obj.startswith("/thumb/"):
        out.append(obj)
    return out


class Session:
    """One simulated browser tab: its component values, and timed requests."""

    def __init__(self, base: str, record, rng: random.Random):
        import requests

        self.base = base
        self.http = requests.Session()
        self.record = record
        self.rng = rng
        self.props: dict[str, dict[str, Any]] = {}
        self.deps: list[dict] = []

    # ----- transport
    def _timed(self, kind: str, method: str, path: str, **kw) -> Any:
        t0 = time.perf_counter()
        try:
            r = self.http.request(method, self.base + path, timeout=120, **kw)
            if r.status_code not in (200, 204):
                raise CheckFailed(f"HTTP {r.status_code}: {r.text[:200]}")
            body = (
                r.json()
                if r.status_code == 200 and "json" in r.headers.get("content-type", "")
                else r.content
            )
        except Exception as e:
            self.record(kind, time.perf_counter() - t0, f"{type(e).__name__}: {e}"[:300])
            raise
        self.record(kind, time.perf_counter() - t0, None)
        return body

    def get(self, kind: str, path: str) -> Any:
        return self._timed(kind, "GET", path)

    def dep(self, output: str, changed: list[str]) -> dict:
        """The server callback with this output that the changed properties trigger."""
        for d in self.deps:
            outs = {f"{o['id']}.{o['property']}" for o in _outputs(d["output"])}
            ins = {f"{i['id']}.{i['property']}" for i in d["inputs"]}
            if output in outs and set(changed) <= ins and not d.get("clientside_function"):
                return d
        raise CheckFailed(f"no server callback outputs {output} on a change of {changed}")

    def call(self, kind: str, output: str, changed: list[str]) -> dict[str, Any]:
        """POST one callback (found by one of its outputs); apply and return its response."""
        d = self.dep(output, changed)

        def value(x: dict) -> Any:
            if x["id"].startswith("{"):
                return []  # pattern-matching (ALL): no such component in this simulation
            return {
                "id": x["id"],
                "property": x["property"],
                "value": self.props.get(x["id"], {}).get(x["property"]),
            }

        outs = _outputs(d["output"])
        body = {
            "output": d["output"],
            "outputs": outs if d["output"].startswith("..") else outs[0],
            "inputs": [value(x) for x in d["inputs"]],
            "changedPropIds": changed,
            "state": [value(x) for x in d["state"]],
        }
        got = self._timed(kind, "POST", "/_dash-update-component", json=body)
        if not isinstance(got, dict):
            return {}  # 204: nothing to update
        response = {**(got.get("response") or {})}
        for cid, props in (got.get("sideUpdate") or {}).items():
            response.setdefault(cid, {}).update(props)
        for cid, props in response.items():
            self.props.setdefault(cid, {}).update(props)
        return response

    # ----- user actions
    def load(self, search: str) -> None:
        self.get("GET /", "/")
        layout = self.get("GET /_dash-layout", "/_dash-layout")
        self.deps = self.get("GET /_dash-dependencies", "/_dash-dependencies")
        self.props = {}
        _walk_layout(layout, self.props)
        self.props.setdefault("url", {}).update(pathname="/", search=search)
        r = self.call("url callback", "plot-spec.data", ["url.search"])
        if "plot-spec" not in r:
            raise CheckFailed("the URL callback returned no plot spec")
        self.figure()
        self.call("neighbours callback", "gallery.children", ["plot-spec.data"])

    def figure(self) -> None:
        r = self.call("figure callback", "shown-spec.data", ["plot-spec.data"])
        fig = (r.get("scatter") or {}).get("figure")
        if not fig or not fig.get("data") or not (r.get("shown-spec") or {}).get("data"):
            raise CheckFailed("the figure callback returned no figure")
        self.traces = []
        for i, tr in enumerate(fig["data"]):
            x = tr.get("x")
            if isinstance(x, dict) and "bdata" in x:
                size = np.dtype(x["dtype"]).itemsize
                count = len(x["bdata"]) * 3 // 4 // size
            else:
                count = len(x or [])
            if tr.get("hoverinfo") != "skip" and count > 0:  # not the highlight overlays
                self.traces.append((i, count))
        if not self.traces:
            raise CheckFailed("the figure has no points")

    def switch(self, method: str) -> None:
        self.props.setdefault("method-picker", {})["value"] = method
        self.call("url callback", "plot-spec.data", ["method-picker.value"])
        spec = self.props.get("plot-spec", {}).get("data") or {}
        if spec.get("method") != method:
            raise CheckFailed(f"the URL callback did not switch to {method}")
        self.figure()

    def _point(self) -> dict[str, Any]:
        curve, count = self.rng.choice(self.traces)
        return {"curveNumber": curve, "pointIndex": self.rng.randrange(count)}

    def hover(self) -> None:
        pt = {**self._point(), "bbox": {"x0": 100, "x1": 104, "y0": 200, "y1": 204}}
        self.props.setdefault("scatter", {})["hoverData"] = {"points": [pt]}
        r = self.call("hover callback", "hover-tooltip.children", ["scatter.hoverData"])
        if not (r.get("hover-tooltip") or {}).get("show"):
            raise CheckFailed(f"no tooltip for {pt}")
        for url in _thumb_urls(r, [])[:1]:
            self.get("thumbnail", url)

    def click(self) -> None:
        t0 = time.perf_counter()
        pt = self._point()
        self.props.setdefault("scatter", {})["clickData"] = {"points": [pt]}
        r = self.call("click callback", "selected-row.data", ["scatter.clickData"])
        row = (r.get("selected-row") or {}).get("data")
        if not isinstance(row, int):
            raise CheckFailed(f"the click on {pt} selected no row")
        r = self.call("neighbours callback", "gallery.children", ["selected-row.data"])
        cards = _find_ids(r.get("gallery"), "gallery-card", [])
        if len(cards) < K:
            raise CheckFailed(f"{len(cards)} gallery cards for row {row}, expected {K}+")
        self.record("action: click -> neighbours", time.perf_counter() - t0, None)
        self.call("highlight callback", "scatter.figure", ["neighbors.data"])
        self.call("url callback", "plot-spec.data", ["selected-row.data"])
        for url in dict.fromkeys(_thumb_urls(r, [])):
            self.get("thumbnail", url)


# --------------------------------------------------------------------------- the load


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def __call__(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            (self.errors[kind].append(error) if error else self.times[kind].append(seconds))


def user(base: str, ds: str, iterations: int, think: float, seed: int, rec: Recorder) -> None:
    rng = random.Random(seed)
    s = Session(base, rec, rng)

    def action(kind: str, fn, *args) -> None:
        if think > 0:
            time.sleep(think * rng.uniform(0.5, 1.5))
        t0 = time.perf_counter()
        try:
            fn(*args)
        except Exception as e:
            rec(f"action: {kind}", time.perf_counter() - t0, f"{type(e).__name__}: {e}"[:300])
            return
        rec(f"action: {kind}", time.perf_counter() - t0, None)

    time.sleep(rng.uniform(0, max(think, 0.2)))  # users do not all arrive at once
    for it in range(iterations):
        first, second = ("pca", "umap") if it % 2 == 0 else ("umap", "pca")
        action("load view", s.load, f"?ds={ds}&layer=z&method={first}&color=label")
        if not getattr(s, "traces", None):
            continue
        action("switch reduction", s.switch, second)
        for _ in range(3):
            action("hover", s.hover)
        for _ in range(2):  # "click -> neighbours" (click + neighbours callbacks) is timed inside
            action("click, all requests", s.click)


def run_level(base: str, ds: str, users: int, iterations: int, think: float) -> Recorder:
    rec = Recorder()
    threads = [
        threading.Thread(target=user, args=(base, ds, iterations, think, 1000 + u, rec))
        for u in range(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rec


def report(rec: Recorder, users: int, wall: float) -> list[dict[str, Any]]:
    rows = []
    kinds = sorted(set(rec.times) | set(rec.errors), key=lambda k: (k.startswith("action"), k))
    for kind in kinds:
        t = np.asarray(rec.times.get(kind, []), dtype=float) * 1000
        rows.append(
            {
                "users": users,
                "kind": kind,
                "n": int(t.size),
                "p50_ms": float(np.percentile(t, 50)) if t.size else None,
                "p95_ms": float(np.percentile(t, 95)) if t.size else None,
                "max_ms": float(t.max()) if t.size else None,
                "errors": len(rec.errors.get(kind, [])),
                "first_error": (rec.errors.get(kind) or [None])[0],
            }
        )
    total = sum(len(v) for k, v in rec.times.items() if not k.startswith("action"))
    print(f"\n{users} users: {total} requests in {wall:.1f} s ({total / wall:.1f}/s)")
    print(f"| {'kind':<34} | {'n':>5} | {'p50 ms':>8} | {'p95 ms':>8} | {'max ms':>8} | errors |")
    print(f"|{'-' * 36}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|--------|")

    def ms(v):
        return f"{v:8.0f}" if v is not None else f"{'-':>8}"

    for r in rows:
        print(
            f"| {r['kind']:<34} | {r['n']:>5} | {ms(r['p50_ms'])} | {ms(r['p95_ms'])} | "
            f"{ms(r['max_ms'])} | {r['errors']:>6} |"
        )
    for r in rows:
        if r["first_error"]:
            print(f"  first error of {r['kind']}: {r['first_error']}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", default="10,50", help="comma-separated levels (default 10,50)")
    p.add_argument("--iterations", type=int, default=3, help="iterations per user")
    p.add_argument("--n", type=int, default=100_000, help="items (default 100,000)")
    p.add_argument("--dim", type=int, default=128, help="latent dimensions (default 128)")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--think", type=float, default=1.0, help="seconds between actions")
    p.add_argument("--no-thumbs", action="store_true", help="a dataset without thumbnails")
    p.add_argument("--cache", help="cache folder to build / reuse the dataset in")
    p.add_argument("--quick", action="store_true", help="3k items, 2 users, 2 iterations")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.users, args.iterations, args.workers = 3000, "2", 2, 2
    levels = [int(u) for u in re.split(r"[,\s]+", str(args.users)) if u]

    from latentmap.pipeline.store import Store

    tmp = None
    if args.cache:
        cache = Path(args.cache).expanduser().resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="latentmap-load-")
        cache = Path(tmp.name) / "cache"
    store = Store(cache)
    ds, second = ensure_dataset(store, args.n, args.dim, not args.no_thumbs)
    print(
        f"dataset {ds}: {args.n:,} x {args.dim}; PCA map real, second map: {second}; "
        f"gunicorn -w {args.workers} -k gthread --threads {args.threads}; "
        f"{os.cpu_count()} CPUs; think time {args.think} s",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    failed = 0
    with gunicorn(cache, ds, args.workers, args.threads, cache / "bench-gunicorn.log") as base:
        warm = run_level(base, ds, users=args.workers * args.threads, iterations=1, think=0)
        print(f"warm-up: {sum(len(v) for v in warm.times.values())} timings (not reported)")
        for users in levels:
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            rec = run_level(base, ds, users, args.iterations, args.think)
            rows = report(rec, users, time.perf_counter() - t0)
            print(f"  load average (1 min) {load0:.1f} before, {os.getloadavg()[0]:.1f} after")
            results += rows
            failed += sum(r["errors"] for r in rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    print(f"\n{'no errors' if not failed else f'{failed} errors'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
