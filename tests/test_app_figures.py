"""Pure figure functions on arrays: palette, trace groups, point -> row, the figure dict."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
from latentmap.components.figures import (
    FILTERED,
    OTHER,
    TRACE_OFFSET,
    camera_from_relayout,
    categories,
    column_kind,
    empty_figure,
    highlight_trace,
    palette,
    row_for_point,
    scatter_figure,
    trace_groups,
    typed_array,
)


def decode(spec) -> np.ndarray:
    assert spec["dtype"] == "f4"
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.float32)


@pytest.fixture
def meta():
    return pd.DataFrame(
        {
            "label": ["b", "a", "c", "a", "b", "a", None, "c"],
            "digit": [10, 2, 3, 2, 10, 2, 3, 10],
            "score": np.linspace(0, 1, 8),
            "flag": [True, False] * 4,
        }
    )


def test_palette_is_distinct_past_20_and_deterministic():
    p = palette(150)
    assert len(p) == len(set(p)) == 150
    assert palette(150) == p
    assert palette(5) == p[:5]
    assert all(c.startswith("#") and len(c) == 7 for c in p)


def test_column_kind_and_natural_category_order(meta):
    assert column_kind(meta["label"]) == "categorical"
    assert column_kind(meta["digit"]) == "categorical"
    assert column_kind(meta["flag"]) == "categorical"
    assert column_kind(pd.Series(np.arange(100) / 7)) == "continuous"
    assert categories(meta["digit"]) == ["2", "3", "10"]  # numbers sort numerically
    assert categories(meta["label"]) == ["(missing)", "a", "b", "c"]


def test_trace_groups_split_by_category_and_skip_invalid(meta):
    valid = np.ones(8, bool)
    valid[7] = False  # NaN latents: never plotted
    groups = trace_groups(meta, valid, color="label")
    names = [g.name for g in groups]
    assert names == ["(missing)", "a", "b", "c"]
    rows = np.concatenate([g.rows for g in groups])
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4, 5, 6]
    assert dict(zip(names, [g.rows.tolist() for g in groups], strict=True))["a"] == [1, 3, 5]


def test_colours_do_not_change_when_filtering(meta):
    valid = np.ones(8, bool)
    full = {g.name: g.color for g in trace_groups(meta, valid, color="label")}
    filtered = trace_groups(
        meta, valid, color="label", filter_col="label", filter_values=["c"], filter_mode="dim"
    )
    assert filtered[0].name == FILTERED and filtered[0].kind == "dim"
    assert filtered[1].name == "c" and filtered[1].color == full["c"]
    hidden = trace_groups(
        meta, valid, color="label", filter_col="label", filter_values=["c"], filter_mode="hide"
    )
    assert [g.name for g in hidden] == ["c"]


def test_continuous_colour_is_one_trace(meta):
    groups = trace_groups(meta, np.ones(8, bool), color="score")
    assert [g.kind for g in groups] == ["continuous"]
    fig = scatter_figure(np.zeros((8, 2), np.float32), groups, meta, color="score")
    marker = fig["data"][TRACE_OFFSET]["marker"]
    assert marker["showscale"] is True
    assert np.allclose(decode(marker["color"]), meta["score"].to_numpy(), atol=1e-6)


def test_many_categories_are_capped_with_other():
    meta = pd.DataFrame({"id": [f"x{i}" for i in range(300)]})
    groups = trace_groups(meta, np.ones(300, bool), color="id", max_categories=20)
    assert len(groups) == 20 and groups[-1].name == OTHER
    assert sum(len(g.rows) for g in groups) == 300


def test_row_for_point_maps_back_and_rejects_bad_input(meta):
    groups = trace_groups(meta, np.ones(8, bool), color="label")
    for c, g in enumerate(groups):
        for i, r in enumerate(g.rows):
            assert row_for_point(groups, c + TRACE_OFFSET, i) == r
    assert row_for_point(groups, 0, 0) is None  # the highlight trace
    assert row_for_point(groups, 99, 0) is None
    assert row_for_point(groups, TRACE_OFFSET, 999) is None
    assert row_for_point(groups, "x", None) is None


def test_scatter_figure_sends_typed_arrays_in_group_order(meta):
    coords = np.arange(16, dtype=np.float32).reshape(8, 2)
    groups = trace_groups(meta, np.ones(8, bool), color="label")
    fig = scatter_figure(
        coords, groups, meta, color="label", symbol="flag", camera=[0, 1, 2, 3], uirevision="u"
    )
    assert fig["data"][0]["type"] == "scatter"  # highlight first, at a fixed index
    points = fig["data"][TRACE_OFFSET : TRACE_OFFSET + len(groups)]
    for tr, g in zip(points, groups, strict=True):
        assert tr["type"] == "scattergl" and tr["name"] == g.name
        assert np.array_equal(decode(tr["x"]), coords[g.rows, 0])
        assert np.array_equal(decode(tr["y"]), coords[g.rows, 1])
        assert len(tr["marker"]["symbol"]) == len(g.rows)
    legend = [t["name"] for t in fig["data"][TRACE_OFFSET + len(groups) :]]
    assert legend == ["flag = False", "flag = True"]
    assert fig["layout"]["xaxis"]["range"] == [0, 1] and fig["layout"]["yaxis"]["range"] == [2, 3]
    assert fig["layout"]["uirevision"] == "u"


def test_typed_array_is_base64_float32():
    a = np.array([1.5, -2, np.nan], dtype=np.float64)
    out = decode(typed_array(a))
    assert out.dtype == np.float32 and out[0] == 1.5 and np.isnan(out[2])


def test_highlight_trace_skips_invalid_rows():
    coords = np.array([[0, 0], [1, 1], [np.nan, np.nan]], np.float32)
    tr = highlight_trace(coords, [1, 0, 2, 77])
    assert tr["x"] == [1.0, 0.0] and tr["marker"]["size"] == [20.0, 12.0]
    assert highlight_trace()["x"] == []


def test_camera_from_relayout():
    assert camera_from_relayout(None) is False
    assert camera_from_relayout({"dragmode": "lasso"}) is False
    assert camera_from_relayout({"xaxis.autorange": True}) is None
    ev = {
        "xaxis.range[0]": 1,
        "xaxis.range[1]": 2.123456789,
        "yaxis.range[0]": -3,
        "yaxis.range[1]": 4,
    }
    assert camera_from_relayout(ev) == [1.0, 2.12346, -3.0, 4.0]
    assert camera_from_relayout({"xaxis.range": [0, 1], "yaxis.range": [2, 3]}) == [0, 1, 2, 3]
    assert camera_from_relayout({**ev, "xaxis.range[0]": float("nan")}) is False


def test_empty_figure_has_message():
    assert empty_figure("hello")["layout"]["annotations"][0]["text"] == "hello"
    assert empty_figure()["data"] == []


def test_long_category_lists_sort_like_the_short_rule():
    import pandas as pd
    from latentmap.components.figures import _natural_key, as_labels, categories

    rng = np.random.default_rng(0)
    vals = (
        [f"img_{i:05d}.png" for i in range(3000)]
        + [str(x) for x in rng.integers(0, 500, 800)]
        + [str(x) for x in rng.normal(size=300)]
        + ["1e3", " 7", "2.5", "B", "a", "-4", "+3", ".5", "inf", "-Inf", "12 ", "3x", "x3"]
        + [None, float("nan")]
    )
    s = pd.Series(vals, dtype=object)
    want = sorted((str(v) for v in np.unique(as_labels(s))), key=_natural_key)
    assert categories(s) == want and len(want) > 1000
