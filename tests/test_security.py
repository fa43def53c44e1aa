"""Security probes, as an attacker would send them: paths in file routes, access control,
decompression bombs, pickled checkpoints that carry code, and user folders left unwritten."""

from __future__ import annotations

import base64
import http.client
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from latentmap.app import create_app
from latentmap.auth import check_access, is_loopback, load_users
from latentmap.components import ids
from latentmap.pipeline.images import ImageReadError, read_image
from latentmap.pipeline.store import Store, valid_dataset_id
from latentmap.settings import Settings, SettingsError
from test_app_support import make_dataset

LATENTMAP = [sys.executable, "-m", "latentmap.cli"]
USERS = "alice:s3cret-pw,bob:other"


@pytest.fixture
def shared(tmp_path):
    store = Store(tmp_path / "cache")
    return store, make_dataset(store, n=12)


def _client(store, **kw):
    return create_app(Settings(cache_dir=store.root, **kw)).server.test_client()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _clean(resp) -> None:
    """No file content, no source code, no traceback in any response."""
    assert resp.status_code != 500
    for leak in (b"root:", b"Traceback", b"def create_app", b'File "'):
        assert leak not in resp.data


# --------------------------------------------------------------------------- file routes


def test_thumbnail_by_dataset_and_row_is_served(shared):
    store, ds = shared
    resp = _client(store).get(f"/thumb/{ds}/3.png")
    assert resp.status_code == 200 and resp.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


PROBES = [
    "/thumb/../../etc/passwd",
    "/thumb/%2e%2e/%2e%2e/etc/passwd",
    "/thumb/..%2f..%2fetc%2fpasswd",
    "/thumb//etc/passwd",
    "/thumb/%2fetc%2fpasswd",
    "/thumb/{ds}/-1.png",
    "/thumb/{ds}/12.png",
    "/thumb/{ds}/99999999999999999999.png",
    "/thumb/{ds}/1e3.png",
    "/thumb/{ds}/0x1.png",
    "/thumb/{ds}/../manifest.json",
    "/thumb/{ds}/..%2fmanifest.json",
    "/thumb/{ds}%0a/0.png",
    "/thumb/{ds}%00/0.png",
    "/thumb/nosuchdataset/0.png",
    "/thumb/../datasets/{ds}/0.png",
    "/reports/../x",
    "/reports/%2e%2e/x.zip",
    "/reports/{ds}/..%2f..%2fdatasets%2f{ds}%2fmanifest.json",
    "/reports/{ds}/report-20240101-000000.zip%0a",
    "/_dash-component-suites/dash/../../app.py",
    "/_dash-component-suites/../app.py",
    "/assets/../app.py",
    "/assets/%2e%2e/settings.py",
]


@pytest.mark.parametrize("probe", PROBES)
def test_path_probes_are_not_found(shared, probe):
    store, ds = shared
    resp = _client(store).get(probe.format(ds=ds))
    assert resp.status_code == 404, probe
    _clean(resp)


def test_band_variant_from_the_request_is_never_a_path(shared):
    store, ds = shared
    client = _client(store)
    plain = client.get(f"/thumb/{ds}/0.png").data
    for v in ("../../../etc/passwd", "/etc/passwd", "..", "b1-2-3_p1-99\n", "x" * 5000):
        resp = client.get(f"/thumb/{ds}/0.png", query_string={"v": v})
        assert resp.status_code == 200 and resp.data == plain  # falls back to the encoded one


def test_raw_requests_to_a_running_server(shared):
    """Unnormalised paths over a real socket, as curl --path-as-is would send them."""
    from werkzeug.serving import make_server

    store, ds = shared
    app = create_app(Settings(cache_dir=store.root))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raw = [
            "/thumb/../../etc/passwd",
            "/thumb/../../../../../../etc/passwd",
            f"/thumb/{ds}/../../../../../../etc/passwd",
            "/reports/../../etc/passwd",
            "/assets/../app.py",
            "/assets/../../../../etc/passwd",
            "/_dash-component-suites/dash/../../../../etc/passwd",
            f"/thumb/{ds}/-1.png",
            f"/thumb/{ds}/100000.png",
        ]
        for path in raw:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status in (404, 400), (path, resp.status)
            assert b"root:" not in body and b"Traceback" not in body, path
    finally:
        server.shutdown()
        thread.join(5)


def test_symlinks_out_of_the_cache_are_not_served(shared, tmp_path):
    store, ds = shared
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    thumb = store.thumb_dir(ds) / "0.png"
    thumb.unlink()
    thumb.symlink_to(secret)
    variant = store.dataset_dir(ds) / "thumbs_b0-1-2_p2-98"
    variant.symlink_to(tmp_path)  # a whole folder pointing outside
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    reports = store.root / "reports" / ds
    reports.mkdir(parents=True)
    (reports / "report-20240101-000000.zip").symlink_to(secret)
    client = _client(store)
    assert client.get(f"/thumb/{ds}/0.png").status_code == 404
    resp = client.get(f"/thumb/{ds}/1.png?v=b0-1-2_p2-98")
    assert resp.status_code == 200 and b"SECRET" not in resp.data  # the encoded one, not the link
    assert client.get(f"/reports/{ds}/report-20240101-000000.zip").status_code == 404
    assert store.thumbnail_path(ds, 0) is None


@pytest.mark.parametrize("bad", ["x\n", "../x", "a/b", "", "x" * 65, "a b", "é", None, 3])
def test_dataset_ids_are_strict(bad):
    assert not valid_dataset_id(bad)


# --------------------------------------------------------------------------- access control


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_loopback_without_credentials_is_open_to_this_machine_only(shared):
    store, ds = shared
    client = _client(store)
    assert client.get("/").status_code == 200
    assert client.get(f"/thumb/{ds}/0.png").status_code == 200
    # the same server reached from another machine (gunicorn / a container bound wider)
    other = {"REMOTE_ADDR": "10.1.2.3"}
    for path in ("/", "/_dash-layout", f"/thumb/{ds}/0.png"):
        resp = client.get(path, environ_base=other)
        assert resp.status_code == 403 and b"LATENTMAP_USERS" in resp.data


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_wider_bind_without_credentials_refuses_to_build(tmp_path, host):
    with pytest.raises(SettingsError, match="refusing to serve"):
        create_app(Settings(cache_dir=tmp_path, host=host))


def test_debug_mode_is_loopback_only(tmp_path):
    with pytest.raises(SettingsError, match="debug"):
        check_access(Settings(cache_dir=tmp_path, host="0.0.0.0", users=USERS, debug=True))


def test_gunicorn_server_from_the_environment_refuses_too(tmp_path, monkeypatch):
    import latentmap.app as app_module

    monkeypatch.setenv("LATENTMAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LATENTMAP_HOST", "0.0.0.0")
    monkeypatch.delenv("LATENTMAP_USERS", raising=False)
    monkeypatch.delenv("LATENTMAP_AUTH_FILE", raising=False)
    with pytest.raises(SettingsError, match="refusing to serve"):
        app_module.server  # noqa: B018 - gunicorn 'latentmap.app:server'
    monkeypatch.setenv("LATENTMAP_USERS", USERS)
    assert app_module.server.test_client().get("/").status_code == 401


def test_every_route_needs_a_login_when_credentials_are_set(shared):
    store, ds = shared
    client = _client(store, host="0.0.0.0", users=USERS)
    reports = store.root / "reports" / ds
    reports.mkdir(parents=True)
    (reports / "report-20240101-000000.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    routes = [
        "/",
        "/_dash-layout",
        "/_dash-dependencies",
        "/_dash-config",
        f"/thumb/{ds}/0.png",
        f"/reports/{ds}/report-20240101-000000.zip",
        "/assets/explorer.css",
        "/_favicon.ico",
        "/anything/else",
    ]
    for path in routes:
        resp = client.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
    resp = client.post("/_dash-update-component", json={"output": "x", "inputs": []})
    assert resp.status_code == 401
    bad_headers = [
        _basic("alice", "wrong"),
        _basic("mallory", "s3cret-pw"),
        _basic("alice", ""),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic"},
        {"Authorization": ""},
    ]
    for headers in bad_headers:
        resp = client.get(f"/thumb/{ds}/0.png", headers=headers)
        assert resp.status_code == 401, headers
        _clean(resp)
    ok = _basic("alice", "s3cret-pw")
    assert client.get("/", headers=ok).status_code == 200
    assert client.get(f"/thumb/{ds}/0.png", headers=ok).status_code == 200
    assert client.get(f"/reports/{ds}/report-20240101-000000.zip", headers=ok).status_code == 200
    assert client.get("/", headers=_basic("bob", "other")).status_code == 200
    # logged in, a probe is still a 404, never a 500
    assert client.get("/thumb/../../etc/passwd", headers=ok).status_code == 404
    resp = client.post("/_dash-update-component", json=[], headers=ok)
    assert resp.status_code == 400


def test_credentials_never_travel_in_pages_or_links(shared):
    from latentmap.callbacks import url

    store, ds = shared
    client = _client(store, host="0.0.0.0", users=USERS)
    ok = _basic("alice", "s3cret-pw")
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/_dash-config"):
        resp = client.get(path, headers=ok)
        assert resp.status_code == 200
        assert b"s3cret-pw" not in resp.data and b"alice" not in resp.data, path
    # credentials put in a link are not view state: ignored, and not written back
    out = url.sync(store, None, None, f"?ds={ds}&user=alice&password=s3cret-pw", {}, None, None)
    assert any("password" in n for n in out["notices"])
    written = url.sync(store, None, ids.DATASET, None, {"ds": ds}, None, None)["search"]
    assert "s3cret" not in str(written) and "password" not in str(written)


def test_auth_file_with_comments_and_hashed_passwords(tmp_path, shared):
    from werkzeug.security import generate_password_hash

    store, ds = shared
    f = tmp_path / "users.txt"
    f.write_text(f"# team\n\ncarol:{generate_password_hash('pw:with:colons')}\ndave:plain\n")
    users = load_users(Settings(cache_dir=tmp_path, auth_file=f))
    assert set(users) == {"carol", "dave"}
    client = _client(store, host="0.0.0.0", auth_file=f)
    assert client.get("/", headers=_basic("carol", "pw:with:colons")).status_code == 200
    assert client.get("/", headers=_basic("carol", "pw")).status_code == 401
    assert client.get("/", headers=_basic("dave", "plain")).status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice\n", "entry 1: expected user:password"),
        ("ok:pw\n:nouser\n", "entry 2: expected user:password"),
        ("bob:\n", "entry 1"),
        ("# nothing\n", "holds no user:password line"),
    ],
)
def test_bad_auth_file_is_named_without_echoing_secrets(tmp_path, content, message):
    f = tmp_path / "users.txt"
    f.write_text(content)
    with pytest.raises(SettingsError, match=message) as err:
        load_users(Settings(cache_dir=tmp_path, auth_file=f))
    assert "pw" not in str(err.value).replace(str(f), "")
    with pytest.raises(SettingsError, match="cannot read auth file"):
        load_users(Settings(cache_dir=tmp_path, auth_file=tmp_path / "missing.txt"))


def _serve(tmp_path, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTMAP_")}
    env.update(env_extra or {})
    return subprocess.run(
        [*LATENTMAP, "--cache-dir", str(tmp_path / "cache"), "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_serve_on_a_wider_address_without_credentials_exits_2(tmp_path):
    out = _serve(tmp_path, "--host", "0.0.0.0", "--port", "18765")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "refusing to serve on '0.0.0.0' without credentials" in lines[0]
    assert "LATENTMAP_USERS" in lines[0] and "--auth-file" in lines[0]
    assert not (tmp_path / "cache" / "datasets").exists()  # refused before any work
    out = _serve(tmp_path, "--host", "0.0.0.0", "--auth-file", str(tmp_path / "nope.txt"))
    assert out.returncode == 2 and "cannot read auth file" in out.stderr
    out = _serve(tmp_path, env_extra={"LATENTMAP_HOST": "10.0.0.1"})
    assert out.returncode == 2 and "refusing to serve on '10.0.0.1'" in out.stderr


# --------------------------------------------------------------------------- bombs


def write_tiff_header(path: Path, width: int, height: int) -> Path:
    """A 150-byte baseline TIFF whose header claims width x height 8-bit pixels."""
    tags = [  # (tag, type, value): type 3 = SHORT, 4 = LONG
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 16),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, typ, value in tags:
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, typ, 1) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16)
    return path


def write_png_header(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_tiff_claiming_100k_by_100k_pixels_is_refused(tmp_path):
    small = write_tiff_header(tmp_path / "small.tif", 4, 4)
    assert read_image(small).shape == (1, 4, 4)  # the crafted header is a valid TIFF
    bomb = write_tiff_header(tmp_path / "bomb.tif", 100_000, 100_000)
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageReadError, match=r"too large: 100000x100000 pixels exceeds limit"):
        read_image(bomb)


def test_png_decompression_bomb_is_refused(tmp_path):
    bomb = write_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(bomb)


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns, st.st_mode)
    st = root.stat()
    out["."] = (True, st.st_mtime_ns, st.st_mode)
    return out


def test_encode_skips_bombs_with_a_reason_and_never_writes_the_folder(store, tmp_path):
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from PIL import Image

    folder = tmp_path / "user-images"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / cls / f"{i}.png")
    write_tiff_header(folder / "a" / "bomb.tif", 100_000, 100_000)
    write_png_header(folder / "b" / "bomb.png", 100_000, 100_000)
    before = _snapshot(folder)
    res = encode(store, EncodeRequest(source=str(folder), model="pixels", image_size=8, workers=0))
    assert res.n_encoded == 8
    reasons = dict(res.skipped)
    assert set(reasons) == {"a/bomb.tif", "b/bomb.png"}
    assert "too large" in reasons["a/bomb.tif"] and "100000x100000" in reasons["a/bomb.tif"]
    assert "too large" in reasons["b/bomb.png"]
    assert _snapshot(folder) == before  # read, never written
    assert store.root.is_dir() and not str(store.root).startswith(str(folder))


# --------------------------------------------------------------------------- pickles with code


class _Payload:
    """Unpickling this creates a folder: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil_checkpoint(tmp_path):
    import torch

    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    torch.save({"weight": _Payload(marker)}, path)
    return path, marker


def test_pickled_checkpoint_with_code_is_refused_without_the_flag(evil_checkpoint, tmp_path):
    from latentmap.pipeline.encoders import EncoderError, load_checkpoint

    path, marker = evil_checkpoint
    with pytest.raises(EncoderError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "--trust-checkpoint" in text and "run code" in text
    assert not marker.exists()
    load_checkpoint(path, trust=True)  # the flag really does run it: that is why it is refused
    assert marker.exists()


def test_encode_and_decoders_refuse_the_pickle(evil_checkpoint, tmp_path, store, capsys):
    from latentmap.cli import main
    from latentmap.pipeline.decoders import load_decoder
    from latentmap.pipeline.jobs import EncodeError, EncodeRequest, encode
    from latentmap.pipeline.sampling import SamplingError

    path, marker = evil_checkpoint
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        from PIL import Image

        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(EncodeError, match="--trust-checkpoint"):
        encode(store, EncodeRequest(source=str(folder), model=str(path), workers=0))
    models = Path(__file__).parent / "data" / "user_models.py"
    with pytest.raises(EncodeError, match="--trust-checkpoint"):
        encode(
            store,
            EncodeRequest(
                source=str(folder), model=f"{models}:TinyEncoder", checkpoint=str(path), workers=0
            ),
        )
    with pytest.raises(SamplingError, match="--trust-checkpoint"):
        load_decoder(f"{models}:TinyEncoder", checkpoint=str(path))
    code = main(["--cache-dir", str(tmp_path / "c"), "encode", str(folder), "--model", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_link_never_loads_python_code(shared, tmp_path):
    from latentmap.callbacks import url

    store, ds = shared
    script = tmp_path / "evil.py"
    marker = tmp_path / "RAN"
    script.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).mkdir()\nclass D: pass\n")
    for dec in (f"{script}:D", "os:getcwd", "~nosuchuser/x.py:D", "a" * 290 + ".py:D"):
        out = url.sync(store, None, None, f"?ds={ds}&layer=z&smp=1&dec={dec}", {}, None, None)
        assert out["spec"]["sampling"].get("dec") is None, dec
        assert any("never load Python code" in n for n in out["notices"]), dec
    assert not marker.exists()
