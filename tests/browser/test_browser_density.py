"""The density view at scale, in a real Chromium (thresholds lowered so 20,000 points count
as "a million"): the map opens as a density of all points; a shared link zoomed in draws
exactly the points in view, and clicking one shows its latent neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_explorer import GD, click_point, isolated_point, search, wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N = 20_000

HEATMAP_JS = (
    f"const g={GD}; return !!(g && g._fullData && g._fullData.some(t => t.type === 'heatmap'));"
)
DENSEST_JS = f"""
const g = {GD}; const h = g._fullData.find(t => t.type === 'heatmap');
let best = -1, bx = 0, by = 0;
for (let j = 0; j < h.z.length; j++) for (let i = 0; i < h.z[j].length; i++) {{
  const v = h.z[j][i]; if (v !== null && v > best) {{ best = v; bx = h.x[i]; by = h.y[j]; }}
}}
return [g._fullLayout.xaxis.range, g._fullLayout.yaxis.range, [bx, by]];
"""
DRAWN_JS = f"""
const g = {GD};
if (!g || !g._fullData || g._fullData.some(t => t.type === 'heatmap')) return -1;
return g._fullData.filter(t => t.type === 'scattergl').reduce((s, t) => s + (t.x ? t.x.length : 0), 0);
"""


@pytest.fixture
def big(demo_store, monkeypatch):
    from latentmap.components import figures
    from latentmap.pipeline.datasets import write_dataset
    from latentmap.pipeline.reduce import projection

    monkeypatch.setattr(figures, "DENSITY_MIN", 5_000)
    monkeypatch.setattr(figures, "POINTS_IN_VIEW", 3_000)
    store, _ = demo_store
    rng = np.random.default_rng(4)
    label = rng.integers(0, 8, N)
    X = (rng.normal(0, 5, (8, 6))[label] + rng.normal(0, 1, (N, 6))).astype(np.float32)
    meta = pd.DataFrame({"label": [f"c{v}" for v in label]})
    ds = write_dataset(store, name="density-browser-test", vectors={"z": X}, metadata=meta)
    coords = projection(store, ds, "z", "pca")["coords"]
    return store, ds, coords


def test_density_then_a_zoomed_link_draws_the_points_in_view(big, dash_duo):
    from latentmap.app import create_app
    from latentmap.components.figures import in_box
    from latentmap.settings import Settings

    store, ds, coords = big
    dash_duo.start_server(create_app(Settings(cache_dir=store.root, dataset=ds)))
    drv = dash_duo.driver
    drv.get(dash_duo.server_url + f"/?ds={ds}&method=pca&color=label")
    wait(lambda: drv.execute_script(HEATMAP_JS), timeout=60, what="the density")
    status = dash_duo.find_element("#map-status").text
    assert f"{N:,} points drawn as a density" in status
    (x0, x1), (y0, y1), (cx, cy) = drv.execute_script(DENSEST_JS)
    wx, wy = (x1 - x0) / 40, (y1 - y0) / 40
    box = [cx - wx, cx + wx, cy - wy, cy + wy]
    inside = len(in_box(coords, np.arange(N), box))
    assert 100 < inside <= 3_000
    # a teammate opens the zoomed link: exactly the points in view are drawn
    drv.get(dash_duo.server_url + f"/?ds={ds}&method=pca&color=label&cam={','.join(map(str, box))}")
    wait(lambda: drv.execute_script(DRAWN_JS) == inside, timeout=60, what="the points in view")
    assert (
        f"Drawing the {inside:,} points in view (of {N:,})"
        in dash_duo.find_element("#map-status").text
    )
    _, _, x, y = isolated_point(drv)
    click_point(drv, x, y)
    row = int(search(drv)["sel"])
    assert in_box(coords, np.array([row]), box).size == 1  # the clicked point is in view
    wait(
        lambda: len(drv.find_elements("css selector", "#gallery .card")) > 5,
        what="the neighbour cards",
    )
