"""Fuzzing every URL parameter and every callback input (hypothesis) on the real demo.

Nothing a browser (or an attacker with curl) sends may produce a 500 or a traceback: bad link
values fall back with a notice, malformed callback bodies are a 400, stray paths a 404.
"""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import urlencode

import pytest
from dash import no_update
from dash._utils import split_callback_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latentmap.callbacks import url
from latentmap.callbacks.state import QUERY_KEYS, parse_query, resolve_view, to_query
from latentmap.components import ids

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NASTY = [
    "",
    " ",
    "none",
    "null",
    "undefined",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "-1",
    "0",
    "-0",
    "99999999999999999999999",
    "0x10",
    "../../etc/passwd",
    "/etc/passwd",
    "~root/.ssh/id_rsa",
    "a" * 400,
    "%00",
    "\x00",
    "<script>alert(1)</script>",
    "{'a': 1}",
    '{"a": [1, 2]}',
    "[1,2,3]",
    "1,2,3",
    "1;2",
    "é🙂\u202e",
    "os:system",
    "x.py:Class",
    "b0-1-2_p2-98",
    "default",
    "map",
    "pca",
    "umap",
    "tsne",
    "cosine",
    "procrustes",
    "label",
    "head",
    "encoder",
]

values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=40),
    st.text(alphabet="0123456789,.-:;e ", max_size=20),
)
keys = st.one_of(st.sampled_from(QUERY_KEYS), st.sampled_from(["x", "password", "", "ds[]"]))
queries = st.lists(st.tuples(keys, values), max_size=12)


@pytest.fixture(scope="module")
def demo_app(demo):
    from latentmap.app import create_app
    from latentmap.settings import Settings

    store, ds = demo
    app = create_app(Settings(cache_dir=store.root, dataset=ds))
    client = app.server.test_client()
    return Live(client, client.get("/_dash-dependencies").get_json(), ds)


class Live:
    """The running demo app (short repr: hypothesis prints it with each failing example)."""

    def __init__(self, client, deps: list[dict], ds: str):
        self.client, self.deps, self.ds = client, deps, ds

    def __repr__(self) -> str:
        return f"<live demo app, {len(self.deps)} callbacks>"


def _query(pairs, ds: str | None) -> str:
    if ds is not None:
        pairs = [("ds", ds), *pairs]
    return "?" + urlencode(pairs)


# --------------------------------------------------------------------------- (a) url.sync


@FUZZ
@given(pairs=queries, with_ds=st.booleans())
def test_any_link_restores_a_valid_view(demo, pairs, with_ds):
    store, ds = demo
    search = _query(pairs, ds if with_ds else None)
    out = url.sync(store, None, None, search, {}, None, None)
    assert isinstance(out["notices"], list) and all(isinstance(n, str) for n in out["notices"])
    assert out["search"] is no_update  # a restore never rewrites the address bar
    spec = out["spec"]
    assert spec is no_update or isinstance(spec, dict)
    json.dumps(out["options"])  # what goes back to the browser is JSON
    if isinstance(spec, dict):
        json.dumps(spec, allow_nan=False)
    # the canonical link of that view restores the same view, without a notice
    raw, _ = parse_query(search)
    url._no_code_from_links(raw)
    view, _ = resolve_view(store, raw)
    assert view.spec() == spec
    again = url.sync(store, None, None, to_query(view), {}, None, None)
    assert again["spec"] == spec
    assert again["notices"] == []


# --------------------------------------------------------------------------- (b) the live app


def _props(items: list[dict], values: list) -> list:
    out = []
    for item, value in zip(items, values, strict=True):
        if item["id"].startswith("{"):  # a pattern-matching (ALL) input: a list of matches
            out.append([])
        else:
            out.append({**item, "value": value})
    return out


def _payload(dep: dict, input_values: list, state_values: list, changed: list[str]) -> dict:
    outputs = [] if "." not in dep["output"] else split_callback_id(dep["output"])
    for i, out in enumerate(outputs if isinstance(outputs, list) else [outputs]):
        if out["id"].startswith("{"):  # pattern-matching: the renderer sends the matches
            matched: list = []
            if isinstance(outputs, list):
                outputs[i] = matched
            else:
                outputs = matched
    return {
        "output": dep["output"],
        "outputs": outputs,
        "inputs": _props(dep["inputs"], input_values),
        "state": _props(dep["state"], state_values),
        "changedPropIds": changed,
    }


def _url_dep(deps):
    return next(
        d
        for d in deps
        if d["inputs"] and d["inputs"][0] == {"id": ids.LOCATION, "property": "search"}
    )


def _check(resp) -> None:
    assert resp.status_code in (200, 204), resp.status_code
    assert b"Traceback" not in resp.data and b'File "' not in resp.data


@FUZZ
@given(pairs=queries, with_ds=st.booleans())
def test_url_callback_over_http_never_fails(demo_app, caplog, pairs, with_ds):
    client, deps, ds = demo_app.client, demo_app.deps, demo_app.ds
    dep = _url_dep(deps)
    search = _query(pairs, ds if with_ds else None)
    inputs = [search] + [None] * (len(dep["inputs"]) - 1)
    body = _payload(dep, inputs, [None] * len(dep["state"]), [f"{ids.LOCATION}.search"])
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="latentmap.app"):
        resp = client.post("/_dash-update-component", json=body)
    _check(resp)
    # handled by the URL code itself, not by the app's last line of defence
    assert not [r for r in caplog.records if "callback failed" in r.getMessage()]
    if resp.status_code == 200:
        data = resp.get_json()["response"]
        notice = json.dumps(data.get(ids.URL_NOTICE, {}))
        assert "Traceback" not in notice


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(NASTY)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_every_callback_input_is_fuzzed_without_a_500(demo_app, data):
    """Random JSON for every input and state of every server callback (background ones are
    skipped: they start jobs); exceptions inside callbacks are the app's on_error's job."""
    client, deps = demo_app.client, demo_app.deps
    server_side = [d for d in deps if not d.get("clientside_function") and not d.get("background")]
    dep = data.draw(st.sampled_from(server_side), label="callback")
    n_in, n_st = len(dep["inputs"]), len(dep["state"])
    inputs = data.draw(st.lists(json_values, min_size=n_in, max_size=n_in), label="inputs")
    state = data.draw(st.lists(json_values, min_size=n_st, max_size=n_st), label="state")
    trigger = dep["inputs"][data.draw(st.integers(0, n_in - 1), label="trigger")]
    changed = [] if isinstance(trigger["id"], dict) else [f"{trigger['id']}.{trigger['property']}"]
    resp = client.post("/_dash-update-component", json=_payload(dep, inputs, state, changed))
    _check(resp)


@FUZZ
@given(
    body=json_values,
    field=st.sampled_from(["output", "outputs", "inputs", "state", "changedPropIds", None]),
)
def test_malformed_callback_bodies_are_rejected_not_crashed(demo_app, body, field):
    client, deps = demo_app.client, demo_app.deps
    if field is None:
        payload = body
    else:
        payload = _payload(_url_dep(deps), [None] * len(_url_dep(deps)["inputs"]), [None] * 4, [])
        payload[field] = body
    resp = client.post("/_dash-update-component", json=payload)
    assert resp.status_code in (200, 204, 400), resp.status_code
    assert b"Traceback" not in resp.data


segments = st.one_of(
    st.sampled_from(["..", ".", "%2e%2e", "..%2f", "%2f", "etc", "passwd", "-1", "0", "0.png",
                     "-1.png", "99999999999999999999.png", "1.5.png", "%00", "%0a", "~", "\\",
                     "..\\..", "C:", "thumbs", "manifest.json", "report-20240101-000000.zip"]),
    st.integers(-(10**12), 10**12).map(lambda n: f"{n}.png"),
    st.text(alphabet="abc.%/\\-_0123456789~:", max_size=12),
)  # fmt: skip


@FUZZ
@given(parts=st.lists(segments, min_size=0, max_size=6), root=st.sampled_from(["thumb", "reports"]),
       with_ds=st.booleans(), v=st.one_of(st.none(), values))  # fmt: skip
def test_fuzzed_file_routes_never_leak_or_fail(demo_app, parts, root, with_ds, v):
    client, ds = demo_app.client, demo_app.ds
    path = "/" + "/".join([root, *([ds] if with_ds else []), *parts])
    resp = client.get(path, query_string={"v": v} if v is not None else None)
    assert resp.status_code in (200, 304, 404), (path, resp.status_code)
    assert b"Traceback" not in resp.data and b"root:" not in resp.data
    if resp.status_code == 200 and resp.mimetype == "text/html":  # the app's page, e.g. /thumb
        assert not path.startswith(("/thumb/", "/reports/")), path
        assert b"_dash-renderer" in resp.data or b"dash_renderer" in resp.data
    elif resp.status_code == 200:  # only a thumbnail of a registered dataset, by row
        assert root == "thumb" and with_ds and resp.mimetype == "image/png", path
        assert len(parts) == 1 and parts[0].endswith(".png"), path
        assert math.isfinite(int(parts[0][:-4])) and int(parts[0][:-4]) >= 0
