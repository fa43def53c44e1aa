"""CLI wiring of issue 6: --channel-analysis, --groups, --group-captures on real files."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from latentmap.cli import main


def seed002_npz(path, n=40, spatial=(4, 6, 6)):
    """A seed-002-style cache: spatial latents, JSON metadata, base64 PNG thumbnails."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rel = np.arange(n) % 4
    lat = rng.normal(0, 1, (n, *spatial)).astype(np.float32)
    lat[:, 0] += rel[:, None, None]  # channel 0 carries the relation
    meta = [{"relation": f"r{r}", "file": f"img_{i}.png"} for i, r in enumerate(rel)]
    thumbs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 20 * (i % 10), np.uint8)).save(buf, format="PNG")
        thumbs.append(base64.b64encode(buf.getvalue()).decode())
    np.savez(path, latents=lat, metadata=json.dumps(meta), thumbnails=json.dumps(thumbs))
    return path


def test_encode_npz_with_groups_and_channel_analysis(tmp_path, capsys):
    src = seed002_npz(tmp_path / "cache.npz")
    groups = tmp_path / "coarse.yaml"
    groups.write_text(
        "low:\n  - r0\n  - r1\nhigh:\n  categories: [r2, r3, r9]\n  color: '#d62728'\n"
    )
    out = tmp_path / "channels"
    code = main(
        ["--cache-dir", str(tmp_path / "c"), "encode", str(src), "--groups", str(groups),
         "--channel-analysis", str(out), "--channel-column", "relation"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "saved category groups 'coarse' (2 groups)" in printed
    assert "unknown category: r9" in printed  # named in the file, not in the data: warned
    html = sorted(p.name for p in out.rglob("*.html"))
    assert "channel_means.html" in html and "channel_maps.html" in html
    from latentmap.callbacks import data
    from latentmap.pipeline.store import Store

    store = Store(tmp_path / "c")
    ds = store.list_datasets()[-1].id
    cols = data.columns(store, ds)
    grouped = f"relation{data.GROUP_SEP}coarse"
    assert cols[grouped]["values"] == ["high", "low"]  # a colouring column of groups


def test_bad_mapping_fails_before_encoding(tmp_path, capsys):
    src = seed002_npz(tmp_path / "cache.npz")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ["r0"], "b": ["r0"]}')
    code = main(["--cache-dir", str(tmp_path / "c"), "encode", str(src), "--groups", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("latentmap: error:") and "r0" in err
    assert not (tmp_path / "c" / "datasets").exists() or not any(
        (tmp_path / "c" / "datasets").iterdir()
    )


def test_group_captures_encodes_one_item_per_capture(tmp_path, capsys):
    import tifffile

    root = tmp_path / "caps"
    rng = np.random.default_rng(1)
    for cls in ("field", "road"):
        for cap in range(3):
            for band in range(1, 6):
                p = root / cls / f"IMG_{cap:04d}_{band}.tif"
                p.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(p, rng.integers(0, 65535, (12, 12), dtype=np.uint16))
    code = main(
        ["--cache-dir", str(tmp_path / "c"), "encode", str(root), "--group-captures",
         "--model", "pixels", "--image-size", "8"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    from latentmap.pipeline.store import Store

    store = Store(tmp_path / "c")
    info = store.list_datasets()[-1]
    assert info.n == 6  # 6 captures, not 30 files
    dim = store.manifest(info.id)["layers"][store.layers(info.id)[0]]["dim"]
    assert dim == 5 * 8 * 8  # five bands
