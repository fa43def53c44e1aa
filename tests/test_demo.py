"""The embedded demo: real digits, a trained CNN, three layers, all projections cached."""

import numpy as np
import pytest
from latentmap.pipeline.demo import DEMO_LAYERS, ensure_demo
from latentmap.pipeline.reduce import METHODS, cached_projection

pytestmark = pytest.mark.slow


def test_demo_dataset_is_complete(demo):
    store, ds = demo
    m = store.manifest(ds)
    assert m["status"] == "complete" and m["n"] == 1797
    assert list(m["layers"]) == list(DEMO_LAYERS)
    assert m["layers"]["features"]["pooled_from"] == [32, 4, 4]
    md = store.metadata(ds)
    assert {"label", "pred", "split", "pred_score"} <= set(md.columns)
    assert set(md["split"]) == {"train", "test"}
    # the CNN really learned: held-out accuracy well above chance (10 %)
    test = md["split"] == "test"
    assert (md.loc[test, "label"] == md.loc[test, "pred"]).mean() > 0.9
    for layer in DEMO_LAYERS:
        for method in METHODS:
            e = cached_projection(store, ds, layer, method)
            assert e is not None, (layer, method)
            assert e["coords"].shape == (1797, 2) and np.isfinite(e["coords"]).all()
    assert store.thumbnail_path(ds, 0) is not None


def test_demo_is_cached_and_deterministic(demo):
    store, ds = demo
    assert ensure_demo(store) == ds  # second call: reused, same id


def test_head_layer_separates_classes(demo):
    from sklearn.metrics import silhouette_score

    store, ds = demo
    labels = store.metadata(ds)["label"].to_numpy()
    head = np.asarray(store.vectors(ds, "head"))
    feats = np.asarray(store.vectors(ds, "features"))
    # deeper layers cluster the digits better than the first conv stage
    assert silhouette_score(head, labels) > silhouette_score(feats, labels)
