"""The embedded server's warm UMAP worker, in a real Chromium: a UMAP the user asks for runs in
the spawned worker (not in the job forked for the click), the map shows it, and the status
page counts it."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from latentmap.pipeline import localworker
from test_explorer import ARTIFACTS, coords, map_ready, wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_umap_click_is_computed_by_the_warm_worker(small_dataset, dash_duo):
    from latentmap.app import create_app
    from latentmap.pipeline.reduce import cached_projection
    from latentmap.settings import Settings

    store, ds = small_dataset
    params = {"n_neighbors": 11, "min_dist": 0.2}  # not made by any other test
    assert cached_projection(store, ds, "z", "umap", params) is None
    pool = localworker.Pool(1, warm=False).start()  # what `latentmap serve` starts
    try:
        assert pool.wait_ready(120)
        dash_duo.start_server(create_app(Settings(cache_dir=store.root, dataset=ds)))
        drv = dash_duo.driver
        drv.get(dash_duo.server_url + f"/?ds={ds}&method=umap&n_neighbors=11&min_dist=0.2")
        wait(
            lambda: cached_projection(store, ds, "z", "umap", params) is not None,
            timeout=240,
            what="the UMAP job",
        )
        umap_xy = cached_projection(store, ds, "z", "umap", params)["coords"]
        want = set(np.round(umap_xy.astype(np.float64), 4).ravel())

        def shows_umap() -> bool:  # every drawn x and y is one of that UMAP's coordinates
            got = coords(drv)
            return map_ready(drv) and len(got) >= 480 and set(np.round(got, 4)) <= want

        wait(shows_umap, timeout=60, what=f"the UMAP map (shown: {coords(drv)[:4]})")
        (w,) = localworker.states()
        assert w["served"] >= 1 and w["ready"] and not w["busy"]
        with urllib.request.urlopen(dash_duo.server_url + "/status.json", timeout=10) as r:
            status = json.loads(r.read())
        assert status["umap_workers"][0]["served"] >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        drv.get(dash_duo.server_url + "/status")
        assert "Warm UMAP workers" in drv.page_source
        drv.save_screenshot(str(ARTIFACTS / "status_umap_workers.png"))
    finally:
        pool.stop()
