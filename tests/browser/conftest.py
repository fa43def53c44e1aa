"""Real-browser fixtures: Debian chromium kept off the network, the app on the real demo.

Run with ``pytest tests/browser --headless``. Setting ``LATENTMAP_TEST_DEMO_CACHE`` to a cache
directory that already holds the demo skips building it (it is built there otherwise).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/lib/chromium/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-features=OptimizationHints,OptimizationGuideModelDownloading,"
    "OptimizationHintsFetching,NetworkTimeServiceQuerying,MediaRouter,Translate,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--window-size=1500,900",
]


def pytest_setup_options():
    from selenium.webdriver.chrome.options import Options

    options = Options()
    if Path(CHROMIUM).exists():
        options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    return options


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    if shutil.which("chromedriver") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise pytest.UsageError(
                "CI=true but chromedriver is missing: `make system-deps` installs Debian's "
                "chromium and chromium-driver; browser tests must run in CI"
            )
        skip = pytest.mark.skip(reason="chromedriver is not installed (run make system-deps)")
        for item in items:
            if here in Path(str(item.fspath)).parents:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory):
    """(Store, demo dataset id): from LATENTMAP_TEST_DEMO_CACHE or the shared demo fixture."""
    from latentmap.pipeline.demo import ensure_demo
    from latentmap.pipeline.store import Store

    root = os.environ.get("LATENTMAP_TEST_DEMO_CACHE")
    if root:
        store = Store(root)
        return store, ensure_demo(store)
    # built in a spawned child, as `latentmap serve --demo` does: training torch in this
    # process would start an OpenMP pool that the app's forked background jobs can hang on
    from latentmap.cli import build_demo

    store = Store(tmp_path_factory.mktemp("browser-demo"))
    return store, build_demo(store)


@pytest.fixture(scope="session")
def small_dataset(demo_store):
    """A 240-item dataset with no projection cached (for the background-job test)."""
    import io

    import pandas as pd
    from latentmap.pipeline.datasets import write_dataset
    from PIL import Image

    store, _ = demo_store
    rng = np.random.default_rng(7)
    n = 240
    labels = np.arange(n) % 4
    centres = rng.normal(0, 4, (4, 16))
    vectors = (centres[labels] + rng.normal(0, 1, (n, 16))).astype(np.float32)
    thumbs = []
    for lab in labels:
        img = np.full((12, 12, 3), 40 + 50 * lab, np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        thumbs.append(buf.getvalue())
    meta = pd.DataFrame({"label": [f"c{x}" for x in labels], "split": ["a", "b"] * (n // 2)})
    ds = write_dataset(
        store, name="blobs-browser-test", vectors={"z": vectors}, metadata=meta, thumbnails=thumbs
    )
    return store, ds


@pytest.fixture
def explorer(demo_store, dash_duo):
    """dash_duo serving the explorer on the demo cache; yields (dash_duo, store, demo id)."""
    from latentmap.app import create_app
    from latentmap.settings import Settings

    store, ds = demo_store
    app = create_app(Settings(cache_dir=store.root, dataset=ds))
    dash_duo.start_server(app)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return dash_duo, store, ds
