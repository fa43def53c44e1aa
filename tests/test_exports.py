"""Exports round-trip: seed 002 .npz back through the importer, tables, TensorBoard TSV."""

import numpy as np
import pandas as pd
import pytest
from latentmap.pipeline.datasets import write_dataset
from latentmap.pipeline.exports import (
    ExportError,
    export_npz,
    export_table,
    export_tensorboard,
    import_tensorboard,
)


def _png(v: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), v, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def ds(store):
    S = np.random.default_rng(0).normal(size=(6, 3, 4, 4)).astype(np.float32)
    meta = pd.DataFrame({"qa_category": list("xxyyzz"), "score": np.arange(6) / 2})
    d = write_dataset(
        store,
        name="cosmos",
        vectors={"z": S},
        metadata=meta,
        spatial={"z": S},
        thumbnails=[_png(i * 40) for i in range(5)] + [None],
    )
    return store, d, S


def test_npz_round_trip_through_the_seed_002_importer(ds, tmp_path):
    from latentmap.pipeline.sources import open_embeddings

    store, d, S = ds
    path = export_npz(store, d, "z", tmp_path / "cache.npz")
    with np.load(path) as z:
        assert set(z.files) == {"latents", "metadata", "thumbnails"}
        np.testing.assert_array_equal(z["latents"], S)
    src = open_embeddings(path)
    np.testing.assert_array_equal(src.vectors, S)
    assert src.metadata["qa_category"].tolist() == list("xxyyzz")
    assert src.thumbnails[0] == _png(0) and src.thumbnails[5] is None


def test_tables(ds, tmp_path):
    store, d, S = ds
    coords = np.arange(12, dtype=np.float32).reshape(6, 2)
    csv = export_table(
        store, d, tmp_path / "sel.csv", layer="z", coords=coords, rows=[1, 4], include_vectors=True
    )
    t = pd.read_csv(csv)
    assert t["row"].tolist() == [1, 4] and t["x"].tolist() == [2.0, 8.0]
    np.testing.assert_allclose(
        t[["v0", "v1", "v2"]].to_numpy(), S[[1, 4]].mean(axis=(2, 3)), rtol=1e-5
    )
    pq = export_table(store, d, tmp_path / "all.parquet", layer="z", include_vectors=True)
    assert len(pd.read_parquet(pq)["vector"][0]) == 3
    with pytest.raises(ExportError, match="csv or .parquet"):
        export_table(store, d, tmp_path / "x.xlsx")


def test_tensorboard_round_trip(ds, tmp_path):
    store, d, _ = ds
    vec, meta = export_tensorboard(store, d, "z", tmp_path / "tb")
    V, md = import_tensorboard(vec, meta)
    np.testing.assert_allclose(V, store.vectors(d, "z"), rtol=1e-6)
    assert md["qa_category"].tolist() == list("xxyyzz")
    (tmp_path / "short.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ExportError, match="rows"):
        import_tensorboard(vec, tmp_path / "short.tsv")


def test_npz_metadata_is_the_users_columns_only(ds, tmp_path):
    import json

    store, d, _ = ds
    with np.load(export_npz(store, d, "z", tmp_path / "c.npz")) as z:
        records = json.loads(str(z["metadata"]))
    assert "has_nan" in store.metadata(d).columns
    assert set(records[0]) == {"id", "qa_category", "score"}
    assert [r["score"] for r in records] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_category_column_picks_a_categorical_column():
    from latentmap.pipeline.exports import category_column

    meta = pd.DataFrame(
        {"id": ["a", "b", "c"], "class_id": [1, 1, 1], "qa_category": ["x", "y", "x"]}
    )
    assert category_column(meta) == "qa_category"
    assert category_column(meta[["id", "class_id"]]) is None


def test_save_cache_writes_every_captured_layer(demo, tmp_path):
    from latentmap.pipeline.exports import export_npz_layers
    from latentmap.pipeline.sources import open_embeddings

    store, ds = demo
    written = export_npz_layers(store, ds, tmp_path / "demo.npz")
    layers = [x for x in store.layers(ds) if "@" not in x]
    assert sorted(layer for _, layer in written) == sorted(layers)
    assert written[0] == (tmp_path / "demo.npz", store.manifest(ds)["default_layer"])
    for path, layer in written:
        if layer != written[0][1]:
            assert path.name == f"demo.{layer}.npz"
        S = store.spatial(ds, layer)  # spatial layers are written unpooled, as seed 002 does
        want = store.vectors(ds, layer) if S is None else np.asarray(S)
        with np.load(path) as z:
            np.testing.assert_array_equal(z["latents"], want)
        assert len(open_embeddings(path).vectors) == len(want)
