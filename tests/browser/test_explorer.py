"""The explorer in a real headless Chromium, on the real demo dataset.

Points are hovered / clicked with real mouse events (Chrome DevTools Input events) at the
marker's pixel centre, computed from plotly's own axis transforms.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GD = "document.querySelector('#scatter .js-plotly-plot')"

# Pixel centres of every plotted point: [[curve, index, x, y], ...] in viewport coordinates,
# only for points inside the plot area (not under the legend or the mode bar).
POINTS_JS = f"""
const gd = {GD};
if (!gd || !gd._fullData || !gd._fullLayout) return null;
const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const r = gd.getBoundingClientRect();
const legend = gd.querySelector('.legend');
const lb = legend ? legend.getBoundingClientRect() : null;
const out = [];
gd._fullData.forEach((t, c) => {{
  if (t.type !== 'scattergl' || !t.x || t.visible !== true) return;
  for (let i = 0; i < t.x.length; i++) {{
    const px = r.left + xa._offset + xa.l2p(t.x[i]);
    const py = r.top + ya._offset + ya.l2p(t.y[i]);
    if (!isFinite(px) || !isFinite(py)) continue;
    if (px < r.left + xa._offset + 10 || px > r.left + xa._offset + xa._length - 10) continue;
    if (py < r.top + ya._offset + 40 || py > r.top + ya._offset + ya._length - 10) continue;
    if (lb && px > lb.left - 10 && py < lb.bottom + 10) continue;
    out.push([c, i, px, py]);
  }}
}});
return out;
"""
COORDS_JS = f"""
const gd = {GD};
if (!gd || !gd._fullData) return null;
const xs = [];
gd._fullData.forEach(t => {{ if (t.type === 'scattergl' && t.x && t.x.length)
  xs.push(Array.from(t.x).slice(0, 400), Array.from(t.y).slice(0, 400)); }});
return xs.flat();
"""


def wait(predicate, timeout: float = 30, step: float = 0.2, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mouse(driver, kind: str, x: float, y: float) -> None:
    driver.execute_cdp_cmd(
        "Input.dispatchMouseEvent",
        {
            "type": kind,
            "x": float(x),
            "y": float(y),
            "button": "left" if kind != "mouseMoved" else "none",
            "clickCount": 1 if kind != "mouseMoved" else 0,
        },
    )


def click_at(driver, x: float, y: float) -> None:
    mouse(driver, "mouseMoved", x - 3, y - 3)
    mouse(driver, "mouseMoved", x, y)
    mouse(driver, "mousePressed", x, y)
    mouse(driver, "mouseReleased", x, y)


def idle(driver) -> bool:
    """No Dash callback pending or running in the page."""
    return bool(
        driver.execute_script(
            "const s = window.store && window.store.getState().callbacks; if (!s) return false;"
            "return Object.entries(s).filter(([k]) => k !== 'stored' && k !== 'completed')"
            ".every(([, v]) => !v || v.length === 0);"
        )
    )


def click_point(driver, x: float, y: float) -> None:
    """Click a marker once the page is idle (a click during a redraw can be lost: retry)."""
    for _ in range(3):
        wait(lambda: idle(driver), what="idle page")
        click_at(driver, x, y)
        try:
            wait(lambda: "sel" in search(driver), timeout=5, what="the click to register")
            return
        except AssertionError:
            continue
    raise AssertionError(f"clicking at ({x:.0f}, {y:.0f}) selected nothing")


def isolated_point(driver):
    """(curve, index, x, y) of the plotted point farthest (in pixels) from any other."""
    pts = wait(lambda: driver.execute_script(POINTS_JS), what="plotted points")
    a = np.asarray([[p[2], p[3]] for p in pts])
    d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    best = int(np.argmax(d.min(axis=1)))
    c, i, x, y = pts[best]
    return int(c), int(i), float(x), float(y)


def map_ready(driver) -> bool:
    return bool(
        driver.execute_script(
            f"const g={GD}; return g && g._fullData && "
            "g._fullData.filter(t => t.type==='scattergl' && t.x && t.x.length).length > 0"
        )
    )


def coords(driver) -> list[float]:
    return driver.execute_script(COORDS_JS) or []


def cards(driver) -> list[tuple[int, str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#gallery .card')).map("
        "c => [parseInt(c.dataset.row), c.dataset.label])"
    )


def legend_names(driver) -> list[str]:
    return sorted(
        driver.execute_script(
            f"return {GD}._fullData.filter(t => t.type==='scattergl' && t.showlegend).map(t => t.name)"
        )
    )


def choose(driver, dropdown: str, option: str) -> None:
    """Pick an option of a dcc.Dropdown by its exact text, as a user would."""
    driver.find_element("css selector", dropdown).click()
    wait(
        lambda: [
            o
            for o in driver.find_elements("css selector", "[role=option]")
            if o.text.strip() == option
        ],
        what=f"option {option}",
    )[0].click()
    close_dropdowns(driver)


def close_dropdowns(driver) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    time.sleep(0.3)


def search(driver) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(driver.current_url).query).items()}


def open_view(duo, query: str) -> None:
    duo.driver.get(duo.server_url + "/" + query)
    wait(lambda: map_ready(duo.driver), what="the map to draw")
    wait(lambda: idle(duo.driver), what="idle page")


def row_of(store, ds, shown_spec, curve, index):
    from latentmap.callbacks.data import groups
    from latentmap.components.figures import row_for_point

    return row_for_point(groups(store, shown_spec), curve, index)


def test_hover_shows_thumbnail_served_by_route(explorer):
    duo, store, ds = explorer
    open_view(duo, f"?ds={ds}&method=umap&color=label")
    _, _, x, y = isolated_point(duo.driver)
    mouse(duo.driver, "mouseMoved", x - 2, y - 2)
    mouse(duo.driver, "mouseMoved", x, y)
    img = duo.wait_for_element("#hover-tooltip img", timeout=10)
    src = img.get_attribute("src")
    assert "/thumb/" + ds + "/" in src
    with urllib.request.urlopen(src) as resp:
        body = resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert "max-age" in resp.headers["Cache-Control"]
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    text = duo.find_element("#hover-tooltip").text
    assert "label" in text and "pred" in text


def test_click_shows_latent_neighbours(explorer):
    from latentmap.pipeline.neighbors import nearest

    duo, store, ds = explorer
    open_view(duo, f"?ds={ds}&layer=encoder&method=tsne&color=label")
    curve, index, x, y = isolated_point(duo.driver)
    click_point(duo.driver, x, y)
    got = wait(lambda: (c := cards(duo.driver)) and len(c) == 13 and c, what="13 gallery cards")
    query = got[0][0]
    assert search(duo.driver).get("sel") == str(query)
    spec = {
        "dataset": ds,
        "layer": "encoder",
        "color": "label",
        "filter_col": None,
        "filter_values": [],
        "filter_mode": "dim",
    }
    assert query == row_of(store, ds, spec, curve, index)
    expected = nearest(store, ds, "encoder", query, k=12)
    labels = store.metadata(ds)["label"].astype(str).tolist()
    assert [r for r, _ in got[1:]] == [r for r, _ in expected]
    assert [lab for _, lab in got[1:]] == [labels[r] for r, _ in expected]
    imgs = duo.driver.find_elements("css selector", "#gallery .card img")
    assert len(imgs) == 13
    # the query and its neighbours are highlighted on the map (trace 0, patched)
    n_hl = wait(
        lambda: duo.driver.execute_script(f"return {GD}._fullData[0].x.length") == 13,
        what="13 highlighted points",
    )
    assert n_hl
    # a gallery card becomes the new query
    duo.driver.find_elements("css selector", "#gallery .card")[3].click()
    new_query = got[3][0]
    wait(
        lambda: (c := cards(duo.driver)) and c[0][0] == new_query,
        what="the card to become the query",
    )
    assert search(duo.driver).get("sel") == str(new_query)


def test_switching_projection_changes_coordinates(explorer):
    duo, _, ds = explorer
    open_view(duo, f"?ds={ds}&method=tsne&color=label")
    seen = [coords(duo.driver)]
    for label in ("UMAP", "PCA"):
        duo.driver.find_element(
            "xpath", f"//div[@id='method-picker']//label[.//span[text()='{label}']]"
        ).click()
        wait(
            lambda: coords(duo.driver) and coords(duo.driver) != seen[-1],
            what=f"{label} coordinates",
        )
        seen.append(coords(duo.driver))
        assert search(duo.driver)["method"] == label.lower().replace("-", "")
    a, b, c = (np.asarray(s) for s in seen)
    assert a.shape == b.shape == c.shape
    assert not np.allclose(a, b) and not np.allclose(b, c) and not np.allclose(a, c)


def test_copied_url_restores_view(explorer):
    duo, store, ds = explorer
    open_view(duo, f"?ds={ds}&method=pca")
    duo.driver.find_element(
        "xpath", "//div[@id='method-picker']//label[.//span[text()='UMAP']]"
    ).click()
    wait(lambda: search(duo.driver).get("method") == "umap", what="method=umap in the URL")
    choose(duo.driver, "#color-by", "split")
    wait(lambda: search(duo.driver).get("color") == "split", what="color=split in the URL")
    close_dropdowns(duo.driver)
    wait(lambda: legend_names(duo.driver) == ["test", "train"], what="the map coloured by split")
    _, _, x, y = isolated_point(duo.driver)
    click_point(duo.driver, x, y)
    link = duo.driver.current_url
    sel = int(search(duo.driver)["sel"])
    before = coords(duo.driver)

    duo.driver.get("about:blank")
    duo.driver.get(link)
    wait(lambda: map_ready(duo.driver), what="the restored map")
    wait(lambda: (c := cards(duo.driver)) and c[0][0] == sel, what="the restored query card")
    assert (
        duo.driver.execute_script(
            "return document.querySelector('#method-picker label.selected').innerText"
        )
        == "UMAP"
    )
    assert "split" in duo.find_element("#color-by").text
    assert legend_names(duo.driver) == ["test", "train"]
    assert coords(duo.driver) == before
    assert duo.driver.execute_script(f"return {GD}._fullData[0].x.length") == 13


def test_bad_url_values_fall_back_with_notice(explorer):
    duo, _, ds = explorer
    open_view(duo, "?ds=nope&k=-4&method=../../etc&sel=99999999&cam=1,2,x&color=%3Cscript%3E")
    notice = duo.wait_for_element("#url-notice .notice", timeout=10).text
    for part in ("not in the cache", "k must be", "Unknown projection", "does not exist", "zoom"):
        assert part in notice
    assert duo.driver.execute_script(f"return {GD}._fullData.length") > 1
    assert duo.get_logs() == [] or all("Traceback" not in str(e) for e in duo.get_logs())


def test_uncached_projection_runs_in_background(small_dataset, dash_duo):
    from latentmap.app import create_app
    from latentmap.pipeline.reduce import cached_projection
    from latentmap.settings import Settings

    store, ds = small_dataset
    dash_duo.start_server(create_app(Settings(cache_dir=store.root, dataset=ds)))
    open_view(dash_duo, f"?ds={ds}&method=pca")
    pca = coords(dash_duo.driver)
    dash_duo.driver.get(dash_duo.server_url + f"/?ds={ds}&method=tsne&perplexity=17")
    # the progress box shows while the job runs, then the t-SNE map replaces the old one
    wait(
        lambda: (
            dash_duo.driver.execute_script(
                # null-safe: right after get() Dash may not have rendered the layout yet
                "const b = document.getElementById('reduce-box');return b ? b.style.display : null;"
            )
            == "flex"
            or cached_projection(store, ds, "z", "tsne", {"perplexity": 17}) is not None
        ),
        timeout=60,
        what="the background job",
    )
    wait(
        lambda: (
            map_ready(dash_duo.driver)
            and coords(dash_duo.driver) != pca
            and coords(dash_duo.driver)
        ),
        timeout=120,
        what="the t-SNE map",
    )
    assert cached_projection(store, ds, "z", "tsne", {"perplexity": 17}) is not None


def test_screenshot_of_main_screen(explorer):
    duo, _, ds = explorer
    open_view(duo, f"?ds={ds}&method=umap&color=label&symbol=split")
    _, _, x, y = isolated_point(duo.driver)
    click_point(duo.driver, x, y)
    wait(lambda: len(cards(duo.driver)) == 13, what="the gallery")
    time.sleep(1.0)  # thumbnails load
    # hover a point far from the highlighted ones, so the tooltip does not hide them
    pts = np.asarray([p[2:] for p in duo.driver.execute_script(POINTS_JS)])
    centre = pts.mean(axis=0)
    away = pts[((pts - [x, y]) ** 2).sum(1) > 300**2]
    far = away[np.argmin(((away - centre) ** 2).sum(1))]
    mouse(duo.driver, "mouseMoved", far[0] - 2, far[1] - 2)
    mouse(duo.driver, "mouseMoved", far[0], far[1])
    duo.wait_for_element("#hover-tooltip img", timeout=10)
    time.sleep(0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert duo.driver.save_screenshot(str(ARTIFACTS / "explorer.png"))
    assert (ARTIFACTS / "explorer.png").stat().st_size > 20_000
