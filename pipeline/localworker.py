"""Warm UMAP workers for the embedded mode (no Redis): numba compiles once per start, not per job.

In the embedded mode each background job is a process forked from the web process, which
never imports umap (a fork after numba's or torch's threads started can hang the child). A
fresh process pays 60-120 s of numba compilation on its first UMAP fit (measured here on 2
cores: numba's on-disk cache saves the import, not the fits), so every job that computed a
UMAP paid it again, on the user's click. ``serve`` therefore starts ``n`` *spawned* worker
processes (never forked) that listen on a private socket, run the warm-up fits once, and then
compute projections on request; ``reduce.projection`` hands a UMAP that is not cached yet to
a free worker, forwards its progress, and reads the entry the worker stored.

- Addresses travel in ``LATENTMAP_LOCAL_WORKERS`` (JSON: socket paths, lock paths, authkey),
  set by ``serve`` and inherited by the jobs it forks; Celery workers (warm already) and CLI
  commands do not see it and compute in-process as before.
- One request per worker at a time: the caller holds the worker's lock file (released by the
  kernel if the caller dies). All workers busy or unreachable: the caller computes itself (no
  unbounded wait). A worker still warming up is waited for (its compile is already running;
  a second one in the caller would only slow both down).
- A caller that goes away (a cancelled job) stops the computation at its next progress
  report; a worker that dies is answered by the caller computing itself, and the pool's
  monitor thread starts a new worker.

No Dash here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

ENV = "LATENTMAP_LOCAL_WORKERS"
Progress = Callable[[float, str], None]


class CallerGone(BaseException):  # noqa: N818 - not an error: the job was cancelled
    """Raised in a worker's progress callback when the caller has disconnected.

    A BaseException so that no ``except Exception`` on the way (e.g. a fallback to PCA) turns
    a cancellation into a cached result."""


# --------------------------------------------------------------------------- worker side


def _worker_main(address: str, authkey: bytes, warm: bool) -> None:
    """A worker process: listen first (callers queue while we warm up), warm, then serve."""
    from multiprocessing.connection import Listener

    os.environ.pop(ENV, None)  # this process computes; it never delegates
    _exit_with_parent()
    state = {"pid": os.getpid(), "ready": False, "busy": False, "served": 0, "started": time.time()}
    _write_state(address, state)
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        if warm:
            from latentmap.pipeline import warmup

            t0 = time.perf_counter()
            warmup.run_and_report("warm UMAP worker")
            state["warm_seconds"] = round(time.perf_counter() - t0, 1)
        state["ready"] = True
        _write_state(address, state)
        while True:
            try:
                conn = listener.accept()
            except Exception as e:  # noqa: BLE001 - a bad handshake must not stop the worker
                log.warning("local worker: connection refused: %s", e)
                continue
            with conn:
                _serve_one(conn, address, state)


def _write_state(address: str, state: dict[str, Any]) -> None:
    """What ``/status`` shows of this worker: ``<socket>.json``, replaced atomically."""
    tmp = f"{address}.json.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({**state, "updated": time.time()}, f)
        os.replace(tmp, f"{address}.json")
    except OSError as e:
        log.debug("local worker state not written: %s", e)


def states() -> list[dict[str, Any]]:
    """The configured workers' last written states (``pid``, ``ready``, ``busy``, ``served``,
    ``warm_seconds``, ``current``), for the status page; [] outside the embedded server."""
    cfg = _config()
    out = []
    for address in (cfg or {}).get("workers", []):
        try:
            with open(f"{address}.json") as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            out.append({"ready": False, "starting": True})
    return out


def _exit_with_parent(every: float = 1.0) -> None:
    """End this worker when the server that started it is gone (a SIGTERM'd or killed server
    runs no clean-up, and an orphan would hold its socket and memory)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="latentmap-parent-watch", daemon=True).start()


def _serve_one(conn, address: str = "", state: dict[str, Any] | None = None) -> None:
    try:
        req = conn.recv()
    except (EOFError, OSError):
        return
    if req.get("op") == "ping":
        conn.send(("pong", os.getpid(), "umap" in sys.modules))
        return
    state = state if state is not None else {}
    what = (
        f"{req.get('method')} of {req.get('ds_id')}/{req.get('layer')}"
        if req.get("op") == "projection"
        else "points placed on a UMAP map"
    )
    state.update(busy=True, current=what)
    _write_state(address, state)
    reply = None
    try:
        reply = _compute(conn, req)
    finally:
        state["served"] = state.get("served", 0) + 1
        state.update(busy=False, current=None)
        _write_state(address, state)  # before the reply: the caller may look right after
    if reply is not None:
        with contextlib.suppress(OSError):
            try:
                conn.send(reply)
            except Exception as e:  # noqa: BLE001 - an exception that does not pickle
                conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
                log.debug("reply not sent as is: %s", e)


def _compute(conn, req: dict[str, Any]) -> tuple | None:
    """Run one request; the reply to send ("done", result) or ("error", exception), or None
    when the caller went away."""

    def progress(frac: float, msg: str) -> None:
        try:
            conn.send(("progress", float(frac), str(msg)))
        except OSError as e:
            raise CallerGone from e

    try:
        result = None
        if req.get("op") == "projection":
            from latentmap.pipeline.reduce import projection
            from latentmap.pipeline.store import Store

            projection(
                Store(req["root"]),
                req["ds_id"],
                req["layer"],
                req["method"],
                req["params"],
                seed=req["seed"],
                init_from=req["init_from"],
                progress=progress,
            )
        elif req.get("op") == "umap_place":
            from latentmap.pipeline.diagnostics import _umap_place

            result = _umap_place(*req["args"], **req["kwargs"])
        else:
            raise ValueError(f"unknown request {req.get('op')!r}")
    except CallerGone:
        log.info(
            "local worker: caller went away; %s/%s stopped", req.get("ds_id"), req.get("layer")
        )
        return None
    except Exception as e:  # noqa: BLE001 - handed back to the caller, which raises it
        return ("error", e)
    return ("done", result)


# --------------------------------------------------------------------------- caller side


def _config() -> dict[str, Any] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        cfg["authkey"] = bytes.fromhex(cfg["authkey"])
        return cfg
    except (ValueError, KeyError, TypeError):
        log.warning("%s is not valid: ignored", ENV)
        return None


@contextlib.contextmanager
def _try_lock(path: str) -> Iterator[bool]:
    """Hold ``path``'s exclusive lock if it is free (yields True), else yield False."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


WARM_LIMIT = 600  # s: a worker not ready this long after its start is not waited for


def _stuck_warming(address: str) -> bool:
    """True when the worker's state says it started warming up more than WARM_LIMIT seconds
    ago and is still not ready (a hung warm-up must not hang the jobs that wait for it)."""
    try:
        with open(f"{address}.json") as f:
            st = json.load(f)
    except (OSError, ValueError):
        return False
    started = st.get("started")
    return (
        not st.get("ready")
        and isinstance(started, (int, float))
        and time.time() - started > WARM_LIMIT
    )


def _say(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)


def _ask(payload: dict[str, Any], progress: Progress | None) -> tuple[bool, Any]:
    """Send ``payload`` to a free warm worker: (True, its result), or (False, None) when no
    worker is configured, free or reachable, or one died meanwhile (the caller then computes
    itself). An error of the computation itself is raised here."""
    cfg = _config()
    if cfg is None:
        return False, None
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    for address, lock in zip(cfg["workers"], cfg["locks"], strict=False):
        if _stuck_warming(address):
            log.warning("local worker %s still not ready after %d s: skipped", address, WARM_LIMIT)
            continue
        with _try_lock(lock) as mine:
            if not mine:
                continue
            _say(progress, 0.0, "handed to the warm UMAP worker (waiting for it to be ready)")
            try:
                conn = Client(address, family="AF_UNIX", authkey=cfg["authkey"])
            except (OSError, EOFError, AuthenticationError) as e:
                log.info("local worker %s not reachable: %s", address, e)
                continue
            with conn:
                try:
                    conn.send(payload)
                    while True:
                        msg = conn.recv()
                        if msg[0] == "progress":
                            _say(progress, msg[1], msg[2])
                        elif msg[0] == "error":
                            raise msg[1]
                        else:
                            return True, msg[1]
                except (EOFError, OSError) as e:
                    log.warning("local worker %s stopped mid-job (%s): computing here", address, e)
                    _say(progress, 0.0, "the warm UMAP worker stopped; computing in this job")
                    return False, None
    if cfg["workers"]:
        _say(
            progress, 0.0, "no warm UMAP worker is free (busy or not ready): computing in this job"
        )
    return False, None


def delegate(
    root: str,
    request: dict[str, Any],
    progress: Progress | None = None,
) -> bool:
    """Have a free warm worker compute a projection (``request``: ds_id, layer, method,
    params, seed, init_from); True when it did (the entry is then in the store under
    ``root``), False when the caller has to compute it itself (see ``_ask``)."""
    return _ask({"op": "projection", "root": str(root), **request}, progress)[0]


def umap_place(args: tuple, kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """``diagnostics._umap_place(*args, **kwargs)`` (new points placed on a UMAP map: class
    centroids, samples) in a warm worker: (True, coordinates) or (False, None)."""
    return _ask({"op": "umap_place", "args": args, "kwargs": kwargs}, None)


def wanted() -> bool:
    """True in a process that should hand numba work to a warm worker: the embedded server
    and its jobs (``LATENTMAP_LOCAL_WORKERS`` set) that have not compiled UMAP themselves."""
    return bool(os.environ.get(ENV)) and "umap.layouts" not in sys.modules


def ping(timeout: float = 5.0) -> list[dict[str, Any]]:
    """State of each configured worker: {"address", "ready", "pid", "warm"} (a worker still
    warming up, or busy, answers ready False after ``timeout`` seconds)."""
    cfg = _config()
    out = []
    if cfg is None:
        return out
    from multiprocessing.connection import Client

    for address, lock in zip(cfg["workers"], cfg["locks"], strict=False):
        row: dict[str, Any] = {"address": address, "ready": False}
        with _try_lock(lock) as mine:
            if mine:
                box: dict[str, Any] = {}

                def talk(box=box, address=address) -> None:
                    try:
                        with Client(address, family="AF_UNIX", authkey=cfg["authkey"]) as c:
                            c.send({"op": "ping"})
                            box["reply"] = c.recv()
                    except (OSError, EOFError) as e:
                        box["error"] = str(e)

                t = threading.Thread(target=talk, daemon=True)
                t.start()
                t.join(timeout)
                if "reply" in box:
                    _, pid, warm = box["reply"]
                    row.update(ready=True, pid=pid, warm=warm)
            else:
                row["busy"] = True
        out.append(row)
    return out


# --------------------------------------------------------------------------- the pool


class Pool:
    """``n`` warm workers of this (serving) process; ``start`` exports their addresses in
    ``LATENTMAP_LOCAL_WORKERS`` so that the jobs forked from here find them."""

    def __init__(self, n: int = 1, warm: bool = True, check_every: float = 2.0):
        self.n, self.warm, self.check_every = max(0, int(n)), warm, check_every
        self.dir = tempfile.mkdtemp(prefix="latentmap-w-")  # short: AF_UNIX paths <= 107 bytes
        self.authkey = os.urandom(32)
        self.addresses = [os.path.join(self.dir, f"w{i}.sock") for i in range(self.n)]
        self.locks = [os.path.join(self.dir, f"w{i}.lock") for i in range(self.n)]
        self.procs: list[Any] = [None] * self.n
        self.restarts = 0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _spawn(self, i: int):
        import multiprocessing as mp

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.addresses[i])
        ctx = mp.get_context("spawn")  # never forked: see the module docstring
        p = ctx.Process(
            target=_worker_main,
            args=(self.addresses[i], self.authkey, self.warm),
            name=f"latentmap-umap-worker-{i}",
            daemon=True,
        )
        p.start()
        return p

    def env_value(self) -> str:
        return json.dumps(
            {"workers": self.addresses, "locks": self.locks, "authkey": self.authkey.hex()}
        )

    def start(self) -> Pool:
        for i in range(self.n):
            self.procs[i] = self._spawn(i)
        os.environ[ENV] = self.env_value()
        self._monitor = threading.Thread(target=self._watch, name="latentmap-workers", daemon=True)
        self._monitor.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every):
            for i, p in enumerate(self.procs):
                if p is not None and not p.is_alive() and not self._stop.is_set():
                    log.warning(
                        "warm UMAP worker %d exited (%s): starting a new one", i, p.exitcode
                    )
                    self.restarts += 1
                    self.procs[i] = self._spawn(i)

    def wait_ready(self, timeout: float = 300.0) -> bool:
        """True once every worker answers a ping (tests; serve does not wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = ping(timeout=max(0.1, deadline - time.monotonic()))
            if rows and all(r["ready"] for r in rows):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self._stop.set()
        for p in self.procs:
            if p is not None and p.is_alive():
                p.terminate()
                p.join(5)
        if os.environ.get(ENV) == self.env_value():
            os.environ.pop(ENV, None)
        shutil.rmtree(self.dir, ignore_errors=True)


def workers_from_env() -> int:
    """How many warm workers ``serve`` starts in the embedded mode: ``LATENTMAP_UMAP_WORKERS``
    (default 1; 0 turns them off and jobs compile UMAP themselves, as before)."""
    raw = os.environ.get("LATENTMAP_UMAP_WORKERS", "1").strip()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"LATENTMAP_UMAP_WORKERS must be a whole number, got {raw!r}") from None
    if n < 0:
        raise ValueError(f"LATENTMAP_UMAP_WORKERS must be 0 or more, got {n}")
    return n
