"""Sampling panel: URL state, tasks, gallery, map markers, interpolation (plain functions)."""

from __future__ import annotations

import numpy as np
import pytest
from dash import no_update
from latentmap.callbacks import sampling, scatter, tasks, url
from latentmap.callbacks.state import parse_query, parse_rows, resolve_view, rows_text, to_query
from latentmap.pipeline.reduce import projection
from latentmap.pipeline.store import Store
from test_app_support import make_dataset


@pytest.fixture
def env(tmp_path):
    store = Store(tmp_path / "cache")
    ds = make_dataset(store, n=60)
    projection(store, ds, "z", "pca")
    return store, ds


def spec_of(store, search):
    return url.sync(store, None, None, search, {}, None, None)["spec"]


def settle(store, spec):
    pending, done = None, None
    for _ in range(5):
        req = tasks.plan(store, spec, None, done, pending)
        if req is no_update:
            return done
        done, pending = tasks.run_request(store, req), req
    raise AssertionError("tasks did not settle")


def test_rows_round_trip():
    assert rows_text([7, 1, 2, 3, 9, 10]) == "1-3,7,9-10"
    assert parse_rows("1-3,7,9-10", 20) == (1, 2, 3, 7, 9, 10)
    for bad in ("5-2", "x", "30", "-1"):
        with pytest.raises(ValueError):
            parse_rows(bad, 20)


def test_sampling_state_in_the_url_and_bad_values(env):
    store, ds = env
    q = f"?ds={ds}&layer=z&smp=1&sn=7&sdist=gmm&sk=2&sseed=42&sreg=label&sval=c1&ia=3&ib=9"
    view, notices = resolve_view(store, parse_query(q)[0])
    assert notices == []
    s = view.sampling
    assert (s["smp"], s["sn"], s["sdist"], s["sk"], s["sseed"]) == (True, 7, "gmm", 2, 42)
    assert (s["sreg"], s["sval"], s["ia"], s["ib"]) == ("label", "c1", 3, 9)
    again, _ = resolve_view(store, parse_query(to_query(view))[0])
    assert again.sampling == s  # a shared link shows the same samples
    bad = f"?ds={ds}&smp=1&sn=0&sdist=cauchy&sseed=-4&sreg=nope&ia=999&srows=zz"
    view, notices = resolve_view(store, parse_query(bad)[0])
    text = " ".join(notices)
    for word in ("number of samples", "distribution", "seed", "nope", "999"):
        assert word in text, word
    assert view.sampling["sn"] == 20 and view.sampling["sreg"] is None


def test_samples_gallery_summary_and_map_markers(env):
    from latentmap.pipeline.sampling import sample_latents

    store, ds = env
    spec = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sn=5&sseed=3")
    style, title, note, summary, cards, _ = sampling.panel(store, spec, None)
    assert "Sampling…" in str(note) and cards == []  # nothing computed in the request
    done = settle(store, spec)
    assert done["errors"] == []
    style, title, note, summary, cards, _ = sampling.panel(store, spec, done)
    e = sample_latents(store, ds, "z", n=5, dist="full", k=3, seed=3, region=None)
    assert [c.id["row"] for c in cards] == [int(r) for r in np.asarray(e["nearest"])[:, 0]]
    assert "seed 3" in title and "No decoder" in str(note)
    assert "distinct nearest images" in str(summary)
    fig = scatter.render(store, spec, None, None, None, None, None, None)[0]
    stars = next(t for t in fig["data"] if t.get("name") == "samples")
    assert stars["text"] == ["1", "2", "3", "4", "5"]
    # baseline toggle: truly random images instead
    base = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sn=5&sseed=3&sbase=1")
    _, title, _, _, cards, _ = sampling.panel(store, base, done)
    assert "random images" in title
    assert [c.id["row"] for c in cards] == [int(r) for r in np.asarray(e["baseline_rows"])]


def test_region_sampling_and_one_item_region(env):
    store, ds = env
    spec = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sn=4&sreg=label&sval=c2")
    done = settle(store, spec)
    _, title, *_ = sampling.panel(store, spec, done)
    assert "fitted to 20 items" in title
    one = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sreg=selection&srows=5")
    done = settle(store, one)
    _, _, note, _, cards, _ = sampling.panel(store, one, done)
    assert cards == [] and "at least 2" in str(note)


def test_interpolation_path_on_map_and_gallery(env):
    store, ds = env
    spec = spec_of(store, f"?ds={ds}&layer=z&method=pca&ia=0&ib=1&isteps=5")
    settle(store, spec)
    _, _, _, _, _, path = sampling.panel(store, spec, None)
    strip = path[1].children
    assert len(strip) == 5
    assert strip[0].id["row"] == 0 and strip[-1].id["row"] == 1  # ends find themselves
    fig = scatter.render(store, spec, None, None, None, None, None, None)[0]
    line = next(t for t in fig["data"] if t.get("name") == "interpolation")
    coords = np.asarray(projection(store, ds, "z", "pca")["coords"])
    assert line["x"][0] == pytest.approx(float(coords[0, 0]), abs=1e-3)


def test_decoder_mismatch_is_explained(env, tmp_path):
    import torch

    store, ds = env
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Sigmoid()))
    path = tmp_path / "dec.ts"
    net.save(str(path))
    spec = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sn=3&dec={path}")
    done = settle(store, spec)
    _, _, note, _, cards, _ = sampling.panel(store, spec, done)
    assert len(cards) == 3  # the samples stay; the decoder error is explained
    assert "64" in str(note) and "8" in str(note)


def test_real_decoder_shows_decoded_images_beside_nearest(demo):
    from latentmap.pipeline.decoders import train_demo_decoder

    store, ds = demo
    path = train_demo_decoder(store, ds, "encoder")
    spec = spec_of(store, f"?ds={ds}&layer=encoder&method=pca&smp=1&sn=4&dec={path}&ia=0&ib=5")
    done = settle(store, spec)
    assert done["errors"] == []
    _, _, note, _, cards, path_cards = sampling.panel(store, spec, done)
    assert len(cards) == 4 and "No decoder" not in str(note)
    imgs = [c.children[1] for c in cards]
    assert all(i.src.startswith("data:image/png;base64,") for i in imgs)
    steps = path_cards[1].children
    assert all(s.children[1].src.startswith("data:image/png") for s in steps)


def test_sample_card_focus_shows_its_top_k_and_star_click_selects_nearest(env):
    from latentmap.callbacks import neighbors
    from latentmap.pipeline.sampling import sample_latents

    store, ds = env
    spec = spec_of(store, f"?ds={ds}&layer=z&method=pca&smp=1&sn=3&sseed=5")
    done = settle(store, spec)
    e = sample_latents(store, ds, "z", n=3, dist="full", k=3, seed=5, region=None)
    *_, extra = sampling.panel(store, spec, done, focus=1)
    strip = extra[1].children
    assert [c.id["row"] for c in strip] == [int(r) for r in np.asarray(e["nearest"])[1]]
    fig = scatter.render(store, spec, None, None, None, None, None, None, None, done)[0]
    stars = next(t for t in fig["data"] if t.get("name") == "samples")
    assert stars["customdata"] == [int(r) for r in np.asarray(e["nearest"])[:, 0]]
    click = {"points": [{"curveNumber": fig["data"].index(stars), "pointIndex": 2,
                         "customdata": stars["customdata"][2]}]}  # fmt: skip
    shown = {**spec, "n_groups": 3}
    assert neighbors.clicked_row(store, None, None, click, shown) == stars["customdata"][2]
