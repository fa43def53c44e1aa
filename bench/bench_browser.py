"""Explorer in a real headless Chromium (Debian's): time from navigation to the map drawn with
all N points (first paint), and hover-to-thumbnail latency (mouse moved onto a point until the
tooltip's <img> has loaded from the thumbnail route).

    python bench/bench_browser.py                  # 100k points
    python bench/bench_browser.py --sizes 100000,1000000 --hovers 10
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_explorer import make_dataset  # noqa: E402

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--window-size=1500,900",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

POINTS_JS = """
const p = document.querySelector('#scatter .js-plotly-plot');
if (!p || !p._fullData) return 0;
return p._fullData.reduce((s, t) => s + (t.visible !== false && t.x ? t.x.length : 0), 0);
"""

POINT_PX_JS = """
const p = document.querySelector('#scatter .js-plotly-plot');
const t = p._fullData.find(t => t.type === 'scattergl' && t.x && t.x.length > 100);
const i = arguments[0] % t.x.length;
const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis;
const r = p.getBoundingClientRect();
return [r.left + xa._offset + xa.d2p(t.x[i]), r.top + ya._offset + ya.d2p(t.y[i])];
"""

TOOLTIP_IMG_JS = """
const img = document.querySelector('#hover-tooltip img');
return img && img.complete && img.naturalWidth > 0 ? img.src : null;
"""


def write_thumbs(store, ds: str, n: int) -> None:
    from latentmap.pipeline.store import save_bytes
    from PIL import Image

    base = []
    for v in range(8):
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32), v * 30, np.uint8)).save(buf, format="PNG")
        base.append(buf.getvalue())
    for row in range(n):
        save_bytes(store.thumb_dir(ds) / f"{row}.png", base[row % 8])


def serve(settings):
    from latentmap.app import create_app
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, create_app(settings).server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    opts = Options()
    opts.binary_location = "/usr/lib/chromium/chromium"
    for f in FLAGS:
        opts.add_argument(f)
    return webdriver.Chrome(options=opts)


def wait_for(fn, timeout: float, poll: float = 0.005):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v = fn()
        if v:
            return v
        time.sleep(poll)
    return None


HEATMAP_JS = """
const p = document.querySelector('#scatter .js-plotly-plot');
return !!(p && p._fullData && p._fullData.some(t => t.type === 'heatmap' && t.z && t.z.length));
"""

SCATTER_POINTS_JS = """
const p = document.querySelector('#scatter .js-plotly-plot');
if (!p || !p._fullData || p._fullData.some(t => t.type === 'heatmap')) return 0;
return p._fullData.reduce((s, t) => s + (t.type === 'scattergl' && t.x ? t.x.length : 0), 0);
"""

RANGE_JS = """
const p = document.querySelector('#scatter .js-plotly-plot');
const h = p._fullData.find(t => t.type === 'heatmap');
let best = -Infinity, bx = 0, by = 0;
for (let j = 0; j < h.z.length; j++) for (let i = 0; i < h.z[j].length; i++) {
  const v = h.z[j][i]; if (v !== null && v > best) { best = v; bx = h.x[i]; by = h.y[j]; }
}
return [p._fullLayout.xaxis.range, p._fullLayout.yaxis.range, [bx, by]];
"""


def measure(d, url: str, n: int, hovers: int) -> tuple[float, list[float]]:
    """(first paint seconds, hover-to-image latencies) for one page. Above the density
    threshold first paint is the density drawn; hovers then run on a zoomed-in view (the
    central 1/20 x 1/20 of the map, points drawn one by one), and the zoom-in repaint is
    printed."""
    from latentmap.components.figures import DENSITY_MIN

    d.get(url.split("?")[0] + "favicon.ico")  # warm the browser process
    t0 = time.perf_counter()
    d.get(url)
    if n > DENSITY_MIN:
        drawn = wait_for(lambda: d.execute_script(HEATMAP_JS), 300)
        paint = time.perf_counter() - t0 if drawn else float("nan")
        print(f"  density first paint {paint:.2f} s", flush=True)
        (x0, x1), (y0, y1), (cx, cy) = d.execute_script(RANGE_JS)  # zoom on the densest cell
        wx, wy = (x1 - x0) / 40, (y1 - y0) / 40
        cam = f"{cx - wx:.6g},{cx + wx:.6g},{cy - wy:.6g},{cy + wy:.6g}"
        t1 = time.perf_counter()
        d.get(url + f"&cam={cam}")
        zoomed = wait_for(lambda: d.execute_script(SCATTER_POINTS_JS) > 100, 120)
        print(
            f"  zoomed view: points drawn {time.perf_counter() - t1:.2f} s after navigation, "
            f"{d.execute_script(SCATTER_POINTS_JS):,} points in view"
            if zoomed
            else "  zoomed view: points not drawn within 120 s",
            flush=True,
        )
    else:
        drawn = wait_for(lambda: d.execute_script(POINTS_JS) >= n, 300)
        paint = time.perf_counter() - t0 if drawn else float("nan")
    time.sleep(1.0)
    lat = []
    for i in range(hovers):
        x, y = d.execute_script(POINT_PX_JS, 7919 * (i + 1))
        d.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 5, "y": 5})
        time.sleep(0.3)
        t0 = time.perf_counter()
        d.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        if wait_for(lambda: d.execute_script(TOOLTIP_IMG_JS), 10):
            lat.append(time.perf_counter() - t0)
    return paint, lat


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--hovers", type=int, default=10)
    args = ap.parse_args(argv)
    from latentmap.pipeline.store import Store
    from latentmap.settings import Settings

    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp)
            ds = make_dataset(store, n)
            write_thumbs(store, ds, n)
            srv = serve(Settings(cache_dir=Path(tmp), dataset=ds))
            url = f"http://127.0.0.1:{srv.server_port}/?dataset={ds}&method=pca&color=label"
            d = driver()
            try:
                results.append((n, *measure(d, url, n, args.hovers)))
            finally:
                d.quit()
                srv.shutdown()
    print(f"\n{'N':>9} {'first paint s':>14} {'hover->img ms (median)':>23} {'p90':>6} {'ok':>5}")
    for n, paint, lat in results:
        med = statistics.median(lat) * 1e3 if lat else float("nan")
        p90 = sorted(lat)[int(0.9 * (len(lat) - 1))] * 1e3 if lat else float("nan")
        print(f"{n:9d} {paint:14.2f} {med:23.0f} {p90:6.0f} {len(lat):5d}")
    print(
        "\nfirst paint: navigation start until the map holds all N points (page load, callbacks, "
        "figure transfer, WebGL draw). hover: mouse onto a point until the tooltip image loaded."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
