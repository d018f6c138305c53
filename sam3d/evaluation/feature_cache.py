"""Reuse the image features of a window that is predicted again with other clicks.

In sam3d the image encoder does not see the clicks: they enter afterwards (prompt encoders on
the feature levels, then the decoder). The refinement curve predicts the *same* sliding windows
of one volume once per click, so while :func:`reuse_image_features` is active the encoder runs
once per distinct window (``B×C×D×H×W`` input, keyed by its exact bytes) and every later call
gets the stored feature levels; the results are bit-for-bit those of a fresh forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict

import torch


def _key(volume: torch.Tensor) -> tuple:
    data = volume.detach().to("cpu").contiguous().numpy().tobytes()
    return (tuple(volume.shape), str(volume.dtype), str(volume.device),
            hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def reuse_image_features(model: torch.nn.Module, max_windows: int = 64):
    """Within the block, ``model.image_encoder`` computes each distinct input once (at most
    ``max_windows`` kept, oldest dropped). Models without an ``image_encoder`` (prompt-free
    baselines, stand-ins) and models in training mode are left as they are. Yields the cache
    statistics ``{"hits": int, "misses": int}``."""
    if not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"max_windows must be a positive integer, got {max_windows!r}")
    stats = {"hits": 0, "misses": 0}
    encoder = getattr(model, "image_encoder", None)
    if not isinstance(encoder, torch.nn.Module) or model.training or "forward" in vars(encoder):
        yield stats
        return
    original = encoder.forward
    cache: OrderedDict[tuple, list] = OrderedDict()

    def forward(volume: torch.Tensor):
        key = _key(volume)
        if key in cache:
            stats["hits"] += 1
            cache.move_to_end(key)
        else:
            stats["misses"] += 1
            cache[key] = list(original(volume))
            if len(cache) > max_windows:
                cache.popitem(last=False)
        return list(cache[key])  # a fresh list: the model replaces levels in it

    encoder.forward = forward
    try:
        yield stats
    finally:
        del encoder.forward
