"""Spatial latents in a real headless Chromium: the pooling control and the channel heatmap."""

from __future__ import annotations

import pytest
from test_explorer import ARTIFACTS, choose, idle, mouse, search, wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHAN = "document.querySelector('#chan-graph .js-plotly-plot')"
MAP = "document.querySelector('#scatter .js-plotly-plot')"


@pytest.fixture
def spatial(explorer, tmp_path):
    from latentmap.cli import load_cache
    from test_cli_channels import seed002_npz

    duo, store, _ = explorer
    ds = load_cache(store, seed002_npz(tmp_path / "cache.npz"))
    return duo, store, ds, store.layers(ds)[0]


def test_pooling_control_switches_the_map_to_the_pooled_latents(spatial):
    duo, store, ds, layer = spatial
    d = duo.driver
    d.get(duo.server_url + f"/?ds={ds}&layer={layer}&method=pca")
    wait(lambda: d.find_element("css selector", "#pool-box").is_displayed(), timeout=60,
         what="the pooling control of a spatial layer")  # fmt: skip
    wait(lambda: idle(d), timeout=60, what="idle page")
    choose(d, "#pool", "max")
    wait(lambda: search(d).get("pool") == "max", what="pool in the URL")
    try:
        wait(
            lambda: f"{layer}@max" in d.find_element("css selector", "#layer-picker").text,
            timeout=180,
            what="the map on the max-pooled layer",
        )
    finally:
        d.save_screenshot(str(ARTIFACTS / "pooling.png"))
    assert search(d).get("layer") == layer  # the link names the base layer + the pooling
    d.save_screenshot(str(ARTIFACTS / "pooling.png"))


def test_channel_heatmap_click_colours_the_map_by_that_channel(spatial):
    duo, store, ds, layer = spatial
    d = duo.driver
    d.get(duo.server_url + f"/?ds={ds}&layer={layer}&method=pca&tab=chan&ccol=relation")
    wait(
        lambda: d.execute_script(
            f"const g={CHAN}; return g && g._fullData && g._fullData[0] "
            "&& g._fullData[0].type === 'heatmap'"
        ),
        timeout=90,
        what="the channel heatmap",
    )
    for _ in range(4):
        wait(lambda: idle(d), timeout=60, what="idle page")
        x, y = d.execute_script(
            f"const g={CHAN}; const xa=g._fullLayout.xaxis, ya=g._fullLayout.yaxis;"
            "const t=g._fullData[0]; const r=g.getBoundingClientRect();"
            "return [r.left + xa._offset + xa.d2p(t.x[2]), r.top + ya._offset + ya.d2p(t.y[0])];"
        )
        mouse(d, "mouseMoved", x - 2, y - 2)
        mouse(d, "mouseMoved", x, y)
        mouse(d, "mousePressed", x, y)
        mouse(d, "mouseReleased", x, y)
        try:
            wait(lambda: search(d).get("chan") == "2", timeout=8)
            break
        except AssertionError:
            continue
    assert search(d).get("chan") == "2"
    d.save_screenshot(str(ARTIFACTS / "channels.png"))
    d.find_element("xpath", "//label[contains(., 'Map')]").click()
    scale = wait(
        lambda: d.execute_script(
            f"const g={MAP}; const t=g && g._fullData && g._fullData.find("
            "t => t.type==='scattergl' && t.marker && t.marker.showscale);"
            "return t && t.marker.colorbar && t.marker.colorbar.title.text"
        ),
        timeout=60,
        what="the map coloured by the channel",
    )
    assert scale == "channel 2"


def test_band_picker_regenerates_thumbnails_in_the_background(explorer, tmp_path):
    from latentmap.pipeline.jobs import EncodeRequest, encode
    from test_bands import write_multispectral

    duo, store, _ = explorer
    root = write_multispectral(tmp_path / "ms")
    ds = encode(store, EncodeRequest(source=str(root), model="pixels", workers=0)).ds_id
    d = duo.driver
    d.get(duo.server_url + f"/?ds={ds}&method=pca&sel=0")
    wait(lambda: d.find_element("css selector", "#bands-box").is_displayed(), timeout=60,
         what="the band picker of a 5-band dataset")  # fmt: skip
    assert "5 bands" in d.find_element("css selector", "#bands-note").text

    def card_srcs():  # read in one script: the gallery re-renders under a Python loop
        return d.execute_script(
            "return Array.from(document.querySelectorAll('#gallery .card img')).map(i => i.src)"
        )

    wait(lambda: len(card_srcs()) >= 2, timeout=60, what="neighbour cards with thumbnails")
    assert not any("?v=" in s for s in card_srcs())
    wait(lambda: idle(d), timeout=60, what="idle page")
    choose(d, "#band-r", "4")
    wait(lambda: search(d).get("rgb") == "4,1,2", what="the band choice in the URL")
    try:
        wait(
            lambda: card_srcs() and all(s.endswith("?v=b4-1-2_p2-98") for s in card_srcs()),
            timeout=120,
            what="cards switched to the regenerated thumbnails",
        )
        loaded = d.execute_script(
            "return Array.from(document.querySelectorAll('#gallery .card img'))"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded
        assert "showing bands 4, 1, 2" in d.find_element("css selector", "#bands-note").text
    finally:
        d.save_screenshot(str(ARTIFACTS / "bands.png"))
    # a teammate opening the link sees the same thumbnails at once (cached)
    d.get(d.current_url)
    wait(
        lambda: card_srcs() and all(s.endswith("?v=b4-1-2_p2-98") for s in card_srcs()),
        timeout=60,
        what="the shared link showing the chosen bands",
    )
