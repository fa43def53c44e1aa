"""Decoded images of latents (samples, interpolation steps), cached like every derived entry.

The key holds the latents' checksum and a fingerprint of the decoder's files (the TorchScript
file, or the class's source file and the state-dict checkpoint), so it is known without
loading torch: a request handler can ask whether decoded images are ready.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from latentmap.pipeline.sampling import SamplingError
from latentmap.pipeline.store import Entry, Store, array_checksum, file_digest

DECODED_VERSION = 1


def decoder_fingerprint(spec: str, checkpoint: str | None = None) -> str:
    """A digest of the files a decoder spec names; SamplingError when one is missing."""
    spec = (spec or "").strip()
    if not spec:
        raise SamplingError("no decoder given")
    parts = [spec]
    module, sep, _cls = spec.rpartition(":")
    if sep and module.endswith(".py"):
        files = [module]
    elif sep:
        files = []  # an importable module: its name stands for it
    else:
        files = [spec]
    if checkpoint:
        files.append(str(checkpoint))
    for f in files:
        path = Path(f).expanduser()
        if not path.is_file():
            raise SamplingError(f"decoder file not found: {f}")
        parts.append(file_digest(path))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def decoded_latents(
    store: Store,
    ds_id: str,
    layer: str,
    latents: np.ndarray,
    spec: str,
    checkpoint: str | None = None,
) -> Entry:
    """PNG thumbnails of ``decoder(latent)`` for each row of ``latents`` (cached).

    A decoder whose input size does not match the layer is a SamplingError naming both sizes.
    """
    from latentmap.pipeline.decoders import check_decoder, decode_images, load_decoder

    latents = np.ascontiguousarray(latents, dtype=np.float32)
    key = {
        "kind": "decoded",
        "version": DECODED_VERSION,
        "dataset": ds_id,
        "layer": layer,
        "latents": array_checksum(latents),
        "decoder": decoder_fingerprint(spec, checkpoint),
    }

    def compute():
        dec = load_decoder(spec, checkpoint)
        check_decoder(dec, latents.shape[1], layer=layer)
        pngs = decode_images(dec, latents)
        offsets = np.cumsum([0] + [len(p) for p in pngs]).astype(np.int64)
        blob = np.frombuffer(b"".join(pngs), dtype=np.uint8).copy()
        return {"png": blob, "offsets": offsets}, {"n": len(pngs), "decoder": spec}

    return store.get_or_compute(key, compute)


def entry_pngs(entry: Entry) -> list[bytes]:
    """The PNG bytes of a ``decoded_latents`` entry, one per latent."""
    blob, off = np.asarray(entry["png"]), np.asarray(entry["offsets"])
    return [blob[off[i] : off[i + 1]].tobytes() for i in range(len(off) - 1)]
