"""Moving between latentmap and other tools: TensorBoard projector TSV import (and the round trip
from our own export), and the app's download of a box / lasso selection as CSV / parquet."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from latentmap.callbacks import exports, scatter, url
from latentmap.components.figures import TRACE_OFFSET
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.exports import export_tensorboard
from latentmap.pipeline.reduce import cached_projection, projection
from latentmap.pipeline.sources import SourceError, open_embeddings, open_source
from latentmap.pipeline.store import Store
from test_app_support import make_dataset


@pytest.fixture
def tb_folder(store, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, 5)).astype(np.float32)
    meta = pd.DataFrame(
        {
            "id": [f"item-{i}" for i in range(7)],
            "label": list("aabbccd"),
            "note": ["tab\there", "x", "", "y", "z", "w", "v"],
        }
    )
    ds = write_dataset(store, name="tb", vectors={"z": X}, metadata=meta)
    export_tensorboard(store, ds, "z", tmp_path / "tb")
    return tmp_path / "tb", X


# --------------------------------------------------------------------------- projector TSV


def test_projector_round_trip_keeps_vectors_ids_and_metadata(tb_folder):
    folder, X = tb_folder
    src = open_embeddings(folder / "vectors.tsv")  # metadata.tsv beside it is picked up
    np.testing.assert_allclose(src.vectors, X, rtol=1e-6)
    md = src.metadata
    assert md["id"].tolist() == [f"item-{i}" for i in range(7)]
    assert md["label"].tolist() == list("aabbccd")
    assert md["note"][0] == "tab here"  # a tab inside a cell cannot survive TSV
    assert "has_nan" not in md.columns
    assert any("metadata.tsv" in n for n in src.notices)
    # the folder itself, and an explicit --labels, give the same
    assert open_source(folder).metadata["label"].tolist() == list("aabbccd")
    explicit = open_embeddings(folder / "vectors.tsv", labels=folder / "metadata.tsv")
    assert explicit.metadata["id"].tolist() == md["id"].tolist()


def test_projector_import_through_the_cli(tb_folder, tmp_path, capsys):
    from latentmap.cli import main

    folder, X = tb_folder
    code = main(["--cache-dir", str(tmp_path / "c2"), "encode", str(folder), "--name", "fromtb"])
    out, err = capsys.readouterr()
    assert code == 0, err
    ds = out.strip().splitlines()[-1]
    store = Store(tmp_path / "c2")
    np.testing.assert_allclose(store.vectors(ds, store.layers(ds)[0]), X, rtol=1e-6)
    assert store.metadata(ds)["label"].tolist() == list("aabbccd")


def test_single_column_metadata_has_no_header(tmp_path):
    (tmp_path / "v.tsv").write_text("1\t2\n3\t4\n5\t6\n")
    (tmp_path / "m.tsv").write_text("cat\ndog\ncat\n")
    src = open_embeddings(tmp_path / "v.tsv", labels=tmp_path / "m.tsv")
    assert src.metadata["label"].tolist() == ["cat", "dog", "cat"]
    assert src.vectors.shape == (3, 2)


def test_ragged_row_names_its_line(tmp_path):
    (tmp_path / "vectors.tsv").write_text("1\t2\t3\n4\t5\t6\n\n7\t8\n")
    with pytest.raises(SourceError, match=r"vectors.tsv, line 4: 2 values, but line 1 has 3"):
        open_embeddings(tmp_path / "vectors.tsv")


def test_non_number_names_its_line(tmp_path):
    (tmp_path / "vectors.tsv").write_text("1\t2\n3\tabc\n")
    with pytest.raises(SourceError, match=r"line 2: 'abc' is not a number"):
        open_embeddings(tmp_path / "vectors.tsv")


def test_metadata_row_count_must_match(tmp_path):
    (tmp_path / "vectors.tsv").write_text("1\t2\n3\t4\n")
    (tmp_path / "metadata.tsv").write_text("a\tb\n1\t2\n3\t4\n5\t6\n")
    with pytest.raises(SourceError, match="metadata.tsv has 3 rows but there are 2 vectors"):
        open_embeddings(tmp_path / "vectors.tsv")


# --------------------------------------------------------------------------- selection download


@pytest.fixture
def shown_env(tmp_path):
    store = Store(tmp_path / "cache")
    ds = make_dataset(store, n=30)
    projection(store, ds, "z2", "pca")
    spec = url.sync(store, None, None, f"?ds={ds}&layer=z2&method=pca", {}, None, None)["spec"]
    shown = scatter.render(store, spec, None, None, None, None, None, None)[1]
    return store, ds, shown


def _points(store, shown, rows):
    from latentmap.callbacks import data

    pts = []
    for c, g in enumerate(data.groups(store, shown)):
        for i, r in enumerate(g.rows):
            if int(r) in rows:
                pts.append({"curveNumber": TRACE_OFFSET + c, "pointIndex": i})
    return {"points": pts}


def test_selection_csv_has_rows_metadata_and_map_coordinates(shown_env):
    store, ds, shown = shown_env
    name, content = exports.selection_file(store, _points(store, shown, {2, 7, 11}), shown, "csv")
    assert name.endswith("-3.csv") and name.startswith("selection-")
    t = pd.read_csv(io.BytesIO(content))
    assert sorted(t["row"]) == [2, 7, 11]
    assert {"file", "label", "x", "y"} <= set(t.columns) and "has_nan" not in t.columns
    coords = cached_projection(store, ds, "z2", "pca")["coords"]
    t = t.set_index("row")
    np.testing.assert_allclose(t.loc[7, ["x", "y"]].to_numpy(float), coords[7], rtol=1e-5)
    assert t.loc[7, "file"] == "img_007.png"


def test_selection_parquet_with_vectors(shown_env):
    store, ds, shown = shown_env
    name, content = exports.selection_file(
        store, _points(store, shown, {0, 1}), shown, "parquet", include_vectors=True
    )
    t = pd.read_parquet(io.BytesIO(content))
    assert name.endswith(".parquet") and len(t) == 2
    vec = dict(zip(t["row"], t["vector"], strict=True))
    np.testing.assert_allclose(vec[1], store.vectors(ds, "z2")[1], rtol=1e-6)


def test_no_selection_gives_nothing_and_bad_format_is_refused(shown_env):
    store, _, shown = shown_env
    assert exports.selection_file(store, None, shown, "csv") is None
    assert exports.selection_file(store, {"points": []}, shown, "csv") is None
    with pytest.raises(ValueError, match="csv or parquet"):
        exports.selection_file(store, _points(store, shown, {1}), shown, "xlsx")


def test_download_controls_are_in_the_layout():
    from latentmap.components import ids
    from latentmap.components.layout import build_layout

    text = str(build_layout().to_plotly_json())
    for i in (ids.SELECTION_CSV, ids.SELECTION_PARQUET, ids.SELECTION_DOWNLOAD):
        assert f"'{i}'" in text
