"""The app factory, the layout tree and its ids, the thumbnail route (Flask test client)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dash.development.base_component import Component
from latentmap.components import ids
from latentmap.components.layout import build_layout
from test_app_support import make_dataset


def walk(component):
    yield component
    children = getattr(component, "children", None)
    if isinstance(children, Component):
        yield from walk(children)
    elif isinstance(children, (list, tuple)):
        for c in children:
            if isinstance(c, Component):
                yield from walk(c)


def test_ids_module_values_are_unique():
    values = ids.all_ids()
    assert len(values) == len(set(values)) > 40


def test_layout_uses_each_id_once_and_only_known_ids():
    found = [c.id for c in walk(build_layout()) if getattr(c, "id", None) is not None]
    assert len(found) == len(set(found))
    known = set(ids.all_ids())
    assert set(found) <= known
    # every id a callback relies on is in the page (CARD_TYPE cards are added by callbacks)
    assert known - set(found) == set()


def test_create_app_is_light_and_exposes_server(tmp_path):
    code = (
        "import sys\n"
        "from latentmap.settings import Settings\n"
        "from latentmap.app import create_app\n"
        f"app = create_app(Settings(cache_dir={str(tmp_path)!r}))\n"
        "heavy = [m for m in ('torch', 'umap', 'openTSNE', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import latentmap.app as m\n"
        "assert m.server.name\n"
        "print('ok')\n"
    )
    env = {"LATENTMAP_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_two_apps_in_one_process(tmp_path):
    from latentmap.app import create_app
    from latentmap.settings import Settings

    a = create_app(Settings(cache_dir=tmp_path / "a"))
    b = create_app(Settings(cache_dir=tmp_path / "b"))
    assert a is not b and a.server is not b.server
    assert len(a.callback_map) == len(b.callback_map) > 10


@pytest.fixture
def client(tmp_path):
    from latentmap.app import create_app
    from latentmap.settings import Settings

    settings = Settings(cache_dir=tmp_path / "cache")
    ds = make_dataset(settings.store(), n=20)
    return create_app(settings).server.test_client(), ds, settings.store()


def test_thumbnail_route_serves_png_with_cache_headers(client):
    c, ds, _ = client
    r = c.get(f"/thumb/{ds}/3.png")
    assert r.status_code == 200
    assert r.mimetype == "image/png"
    assert r.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "max-age=" in r.headers["Cache-Control"]
    etag = r.headers["ETag"]
    again = c.get(f"/thumb/{ds}/3.png", headers={"If-None-Match": etag})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/thumb/{ds}/20.png",  # out of range
        "/thumb/{ds}/99999999999.png",
        "/thumb/{ds}/-1.png",
        "/thumb/{ds}/1.5.png",
        "/thumb/nope/1.png",  # unknown dataset
        "/thumb/../../etc/passwd",
        "/thumb/..%2F..%2Fetc/1.png",
        "/thumb/%2e%2e/1.png",
        "/thumb/{ds}/../manifest.json",
        "/thumb/{ds}/x.png",
    ],
)
def test_thumbnail_route_404s(client, path):
    c, ds, _ = client
    r = c.get(path.format(ds=ds))
    assert r.status_code == 404
    assert r.mimetype != "image/png"


def test_thumbnail_of_deleted_dataset_is_404(client):
    c, ds, store = client
    assert c.get(f"/thumb/{ds}/1.png").status_code == 200
    store.delete_dataset(ds)
    assert c.get(f"/thumb/{ds}/1.png").status_code == 404


def test_index_page_serves(client):
    c, _, _ = client
    r = c.get("/?ds=../../etc&k=-1")
    assert r.status_code == 200
    assert b"latentmap" in r.data


def test_test_module_names_are_unique():
    """pytest imports test files by basename (rootdir-relative, no packages): two files with
    one name in tests/ and tests/browser/ stop the whole run at collection."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_no_callback_replaces_another():
    """Dash keys callbacks by their outputs (output-less ones by a hash of their inputs): two
    with the same key silently drop one. Every callback function must stay registered."""
    import inspect
    import re
    import tempfile

    import latentmap.callbacks as pkg
    from latentmap.app import create_app
    from latentmap.settings import Settings

    app = create_app(Settings(cache_dir=tempfile.mkdtemp()))
    registered = {
        getattr(v["callback"], "__wrapped__", v["callback"]).__name__
        for v in app.callback_map.values()
        if "callback" in v
    }
    declared = set()
    for mod in list(pkg.__dict__.values()):
        if inspect.ismodule(mod) and hasattr(mod, "register"):
            src = inspect.getsource(mod)
            declared |= set(re.findall(r"@app\.callback\((?:.|\n)*?\)\n\s+def (\w+)\(", src))
    assert {"pooled", "thumbs_made", "url_sync"} <= registered
    assert len(declared) > 30
    assert declared - registered == set(), declared - registered
