"""The load benchmark, small: gunicorn for real (2 workers), 2 users x 2 iterations, no errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_load.py"


@pytest.mark.slow
def test_quick_load_run_has_no_errors(tmp_path):
    pytest.importorskip("gunicorn")
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--think", "0.1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert sum(r["errors"] for r in rows) == 0
    seen = {r["kind"]: r["n"] for r in rows}
    for kind in (
        "url callback",
        "figure callback",
        "hover callback",
        "click callback",
        "neighbours callback",
        "action: click -> neighbours",
        "action: switch reduction",
    ):
        assert seen.get(kind, 0) > 0, kind
    assert "no errors" in proc.stdout
