"""An encode started from the web form, in a real Chromium: the encode job ends with the PCA
map, so the new dataset opens on it at once; the precompute job it leaves behind (a detached
process) makes the t-SNE map, which the map then shows from the cache."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from test_explorer import ARTIFACTS, coords, map_ready, wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _images(root, n: int = 60):
    rng = np.random.default_rng(2)
    for i in range(n):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(60 * (i % 3) + 40 + rng.normal(0, 25, (8, 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(d / f"{i}.png")
    return root


def test_encode_from_the_form_opens_on_pca_and_tsne_follows(
    small_dataset, dash_duo, tmp_path, monkeypatch
):
    from latentmap.app import create_app
    from latentmap.pipeline.reduce import cached_projection
    from latentmap.settings import Settings

    store, ds0 = small_dataset
    monkeypatch.setenv("LATENTMAP_PRECOMPUTE", "tsne")  # the background job: t-SNE only
    folder = _images(tmp_path / "imgs")
    dash_duo.start_server(create_app(Settings(cache_dir=store.root, dataset=ds0)))
    dash_duo.wait_for_element("#scatter", timeout=30)
    drv = dash_duo.driver
    drv.execute_script("document.querySelectorAll('details').forEach(d => d.open = true);")
    src = dash_duo.wait_for_element("#encode-source", timeout=10)
    src.send_keys(str(folder))
    dash_duo.find_element("#encode-start").click()
    wait(
        lambda: "Encoded 60 items" in dash_duo.find_element("#encode-notice").text,
        timeout=120,
        what="the encode notice",
    )
    notice = dash_duo.find_element("#encode-notice").text
    assert "computed in the background" in notice and "PCA map is ready" in notice
    link = dash_duo.find_element("#encode-notice a")
    ds = link.get_attribute("href").split("ds=")[1]
    layer = store.manifest(ds)["default_layer"]
    assert cached_projection(store, ds, layer, "pca") is not None  # made by the encode job
    link.click()
    wait(lambda: map_ready(drv) and len(coords(drv)) >= 120, timeout=60, what="the PCA map")
    # the detached precompute process makes the t-SNE map meanwhile
    wait(
        lambda: cached_projection(store, ds, layer, "tsne") is not None,
        timeout=180,
        what="the background t-SNE",
    )
    pca = coords(drv)
    drv.get(dash_duo.server_url + f"/?ds={ds}&method=tsne")
    t0 = time.monotonic()
    wait(
        lambda: map_ready(drv) and coords(drv) and coords(drv) != pca,
        timeout=60,
        what="the t-SNE map",
    )
    shown_after = time.monotonic() - t0
    ARTIFACTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / "precomputed_tsne.png"))
    with urllib.request.urlopen(dash_duo.server_url + "/status.json", timeout=10) as r:
        status = json.loads(r.read())
    assert any(j["job"] == "precompute" and j["dataset"] == ds for j in status["finished"]), status
    assert shown_after < 30  # a cache hit: no t-SNE run in the page's own job
