"""The GPU encode path: out-of-memory halving (exercised on any machine with torch's own
CUDA OOM exception), and on a CUDA machine the real thing (AMP, pinned memory, workers).
The CUDA tests skip cleanly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from latentmap.pipeline.jobs import EncodeRequest, encode

OOM_MODEL = '''
import torch
from torch import nn


class Picky(nn.Module):
    """Raises CUDA's out-of-memory error for batches above 3 items, like a full GPU."""

    calls = []

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        Picky.calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.proj(x.flatten(1))
'''


def test_out_of_memory_halves_the_batch_and_continues(store, image_folder, tmp_path):
    model = tmp_path / "picky.py"
    model.write_text(OOM_MODEL)
    req = EncodeRequest(
        source=str(image_folder), model=f"{model}:Picky", batch_size=16, workers=0, image_size=8
    )
    res = encode(store, req)
    X = store.vectors(res.ds_id, store.layers(res.ds_id)[0])
    assert res.n_encoded == len(X) > 3 and np.isfinite(X).all()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_encode_matches_cpu(store, image_folder, tmp_path):
    from latentmap.pipeline.store import Store

    gstore = Store(tmp_path / "gpu-cache")  # the device is not part of the dataset key
    cpu = encode(store, EncodeRequest(source=str(image_folder), model="pixels", device="cpu"))
    gpu = encode(gstore, EncodeRequest(source=str(image_folder), model="pixels", device="cuda"))
    assert not gpu.reused
    layer = store.layers(cpu.ds_id)[0]
    # AMP (bf16/fp16) on the GPU: equal to the CPU within half-precision rounding
    np.testing.assert_allclose(
        gstore.vectors(gpu.ds_id, layer), store.vectors(cpu.ds_id, layer), rtol=2e-2, atol=2e-2
    )


@cuda
def test_cuda_device_is_picked_automatically():
    from latentmap.pipeline.jobs import pick_device

    assert pick_device("auto") == "cuda"


def test_cpu_libraries_without_cuml(monkeypatch):
    from latentmap.pipeline import reduce

    monkeypatch.setenv("LATENTMAP_CUML", "0")
    assert reduce.gpu_backend() is None
    key = reduce.projection_key("d", "z", "umap", {"n_neighbors": 15}, 0)
    assert "backend" not in key  # CPU keys are what they always were


@pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib").util.find_spec("cuml") is None,
    reason="needs RAPIDS cuML and a CUDA GPU",
)
def test_cuml_layouts_on_the_gpu():
    from latentmap.pipeline.reduce import reduce

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(600, 16)) + 5 * np.eye(16)[rng.integers(0, 4, 600)]).astype(np.float32)
    for method in ("umap", "tsne"):
        coords, info = reduce(X, method)
        assert coords.shape == (600, 2) and np.isfinite(coords).all()
        assert any("cuML" in n for n in info["notices"])


def _item(i: int, shape=(3, 4, 4), err=None):
    x = None if err else np.full(shape, i, np.float32)
    return (i, x, b"png", err, (0, 0))


def test_a_loader_batch_arrives_stacked_with_its_arrays_sent_once():
    from latentmap.pipeline.jobs import collate_list

    items, inputs = collate_list([_item(0), _item(1, err="truncated"), _item(2)])
    assert isinstance(inputs, torch.Tensor) and inputs.shape == (2, 3, 4, 4)
    assert inputs[:, 0, 0, 0].tolist() == [0.0, 2.0]  # the readable items, in order
    assert [x for _i, x, *_ in items] == [None, None, None]  # not sent a second time
    assert [err for _i, _x, _t, err, _c in items] == [None, "truncated", None]
    # nothing readable, or shapes that differ: the items as they are, no stack
    assert collate_list([_item(0, err="bad")])[1] is None
    mixed, none = collate_list([_item(0), _item(1, shape=(3, 5, 5))])
    assert none is None and mixed[1][1].shape == (3, 5, 5)


@cuda
def test_cuda_loader_batches_are_pinned():
    from latentmap.pipeline.jobs import collate_list

    loader = torch.utils.data.DataLoader(
        [_item(i) for i in range(8)],
        batch_size=4,
        collate_fn=collate_list,
        pin_memory=True,
        num_workers=2,
    )
    for _items, inputs in loader:
        assert inputs.is_pinned()
