"""Diagnostics and sampling in a real headless Chromium on the demo: confusion cell -> gallery
+ map rings, linked highlighting between small multiples, and the sampling panel."""

from __future__ import annotations

import numpy as np
import pytest
from test_explorer import ARTIFACTS, idle, mouse, search, wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEAT = "document.querySelector('#confusion-graph .js-plotly-plot')"


def gd_ready(driver, js: str) -> bool:
    return bool(
        driver.execute_script(f"const g={js}; return g && g._fullData && g._fullData.length")
    )


def jobs_done(driver) -> bool:
    return driver.execute_script(
        "const b=document.getElementById('tasks-box'); return !b || b.style.display === 'none'"
    )


def test_confusion_cell_click_shows_those_items_and_rings_them(explorer):
    from latentmap.pipeline.diagnostics import confusion_distance_for

    duo, store, ds = explorer
    d = duo.driver
    duo.driver.get(duo.server_url + f"/?ds={ds}&layer=encoder&method=pca&tab=diag")
    wait(
        lambda: d.execute_script(
            f"const g={HEAT}; return g && g._fullData && g._fullData[0] "
            "&& g._fullData[0].type === 'heatmap'"
        ),
        timeout=120,
        what="the confusion matrix",
    )
    wait(lambda: idle(d), timeout=60, what="idle page")
    cvd = confusion_distance_for(store, ds, "encoder", "label", "pred")
    classes, M = list(cvd.info["classes"]), np.asarray(cvd["matrix"])
    off = M - np.diag(np.diag(M))
    a, b = np.unravel_index(int(np.argmax(off)), M.shape)
    assert off[a, b] > 0
    true, pred = classes[a], classes[b]
    # pixel centre of cell (true, pred) from plotly's own axes; a click during a redraw (the
    # background job finishing) can be lost, so retry like a user would
    for _ in range(4):
        wait(lambda: idle(d) and jobs_done(d), timeout=60, what="idle page")
        x, y = d.execute_script(
            f"const g={HEAT}; const xa=g._fullLayout.xaxis, ya=g._fullLayout.yaxis;"
            "const r=g.getBoundingClientRect();"
            "return [r.left + xa._offset + xa.d2p(arguments[0]), "
            "r.top + ya._offset + ya.d2p(arguments[1])];",
            pred,
            true,
        )
        mouse(d, "mouseMoved", x - 2, y - 2)
        mouse(d, "mouseMoved", x, y)
        mouse(d, "mousePressed", x, y)
        mouse(d, "mouseReleased", x, y)
        try:
            wait(lambda: search(d).get("ct") == true and search(d).get("cp") == pred, timeout=8)
            break
        except AssertionError:
            continue
    assert search(d).get("ct") == true and search(d).get("cp") == pred
    n_cards = wait(
        lambda: len(d.find_elements("css selector", "#cell-gallery .card")),
        what="the confused items",
    )
    assert n_cards == int(M[a, b])
    title = d.find_element("css selector", "#cell-title").text
    assert f"{true} → pred {pred}" in title and f"{int(M[a, b])} confused" in title
    d.save_screenshot(str(ARTIFACTS / "diagnostics-cell.png"))
    # the same items are ringed on the map
    d.find_element("xpath", "//label[contains(., 'Map')]").click()
    ringed = wait(
        lambda: d.execute_script(
            "const g=document.querySelector('#scatter .js-plotly-plot');"
            "return g && g._fullData && g._fullData[1] && g._fullData[1].x.length"
        ),
        what="the marked items on the map",
    )
    assert ringed == int(M[a, b])
    assert search(d).get("ct") == true  # switching tabs keeps the cell


def test_layers_hover_highlights_the_same_item_everywhere(explorer):
    from latentmap.callbacks import data, layers
    from latentmap.callbacks.state import parse_query, resolve_view
    from latentmap.components.figures import row_for_point

    duo, store, ds = explorer
    d = duo.driver
    query = f"?ds={ds}&layer=encoder&method=pca&tab=layers&color=label"
    d.get(duo.server_url + "/" + query)
    graphs_js = "Array.from(document.querySelectorAll('.layer-graph .js-plotly-plot'))"
    wait(
        lambda: d.execute_script(
            f"const gs={graphs_js}; return gs.length === 3 && gs.every(g => g._fullData && "
            "g._fullData.some(t => t.type === 'scattergl' && t.x && t.x.length))"
        ),
        timeout=120,
        what="three layer views",
    )
    wait(lambda: idle(d), timeout=60, what="idle page")
    # a point of the first view (features), at its pixel centre
    c, i, x, y = d.execute_script(
        f"const g={graphs_js}[0]; const xa=g._fullLayout.xaxis, ya=g._fullLayout.yaxis;"
        "const r=g.getBoundingClientRect();"
        "const c=g._fullData.findIndex(t => t.type==='scattergl' && t.x && t.x.length > 5);"
        "const t=g._fullData[c]; const i=Math.floor(t.x.length/2);"
        "return [c, i, r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])];"
    )
    view, _ = resolve_view(store, parse_query(query)[0])
    spec, diag = view.spec(), view.diag_spec()
    row = row_for_point(data.groups(store, {**spec, "layer": "features"}), c, i)
    mouse(d, "mouseMoved", x - 2, y - 2)
    mouse(d, "mouseMoved", x, y)
    rings = wait(
        lambda: (lambda v: v if v and all(len(p[0]) == 1 for p in v) else None)(
            d.execute_script(
                f"return {graphs_js}.map(g => [Array.from(g._fullData[0].x), Array.from(g._fullData[0].y)])"
            )
        ),
        what="the hovered item ringed in every view",
    )
    d.save_screenshot(str(ARTIFACTS / "layers-linked.png"))
    views = {ly: layers.view_coords(store, diag, ly)[0] for ly in ("features", "encoder", "head")}
    # the ring of the hovered view sits on a point; find which item(s) it is (points may overlap)
    x0, y0 = rings[0][0][0], rings[0][1][0]
    feats = views["features"]
    near = np.flatnonzero(np.hypot(feats[:, 0] - x0, feats[:, 1] - y0) < 1e-4)
    assert row in near or len(near), "the ring is not on any item"
    ok = False
    for r in near:  # every other view rings that same item
        ok |= all(
            abs(xs[0] - float(views[ly][r, 0])) < 1e-4
            and abs(ys[0] - float(views[ly][r, 1])) < 1e-4
            for ly, (xs, ys) in zip(("features", "encoder", "head"), rings, strict=True)
        )
    assert ok, f"views ring different items: {rings}"


def test_sampling_panel_cards_markers_and_new_seed(explorer):
    duo, store, ds = explorer
    d = duo.driver
    d.get(duo.server_url + f"/?ds={ds}&layer=encoder&method=pca&smp=1&sn=6&sseed=1")

    def cards():
        return d.execute_script(
            "return Array.from(document.querySelectorAll('#sample-gallery .card'))"
            ".map(c => parseInt(c.dataset.row))"
        )

    first = wait(lambda: len(cards()) == 6 and cards(), timeout=120, what="six sample cards")
    stars = wait(
        lambda: d.execute_script(
            "const g=document.querySelector('#scatter .js-plotly-plot');"
            "const t=g && g._fullData && g._fullData.find(t => t.name === 'samples');"
            "return t && t.x.length"
        ),
        timeout=60,
        what="the samples on the map",
    )
    assert stars == 6
    assert "distinct nearest images" in d.find_element("css selector", "#sample-summary").text
    d.save_screenshot(str(ARTIFACTS / "sampling.png"))
    wait(lambda: idle(d), timeout=60, what="idle page")
    d.find_element("css selector", "#sample-reroll").click()
    wait(lambda: search(d).get("sseed") not in (None, "1"), what="a new seed in the URL")
    wait(lambda: len(cards()) == 6 and cards() != first, timeout=60, what="new samples")
