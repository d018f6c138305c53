"""Embed each window once: the image embeddings of the windows a predictor has seen.

A sam3d model's image encoder never sees the clicks (:meth:`sam3d.modeling.sam3d.Sam3D.
encode`), so a window predicted again with other clicks — the next click in the viewer, the
next step of a refinement curve, the same sliding window of one volume — needs only
:meth:`~sam3d.modeling.sam3d.Sam3D.decode`. :class:`EmbeddingCache` keeps the embeddings of
the windows seen last, keyed by the window's exact bytes (a changed volume is a new key),
within a memory budget, oldest dropped first. ``decode(encode(v), p)`` is ``forward(v, p)``,
so the logits are bit for bit those of a fresh forward pass. Models without ``encode`` (the
prompt-free baselines) and models in training mode are called as they are.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["DEFAULT_BUDGET", "EmbeddingCache"]

#: Default memory budget: about 12 vit_b windows at 128³ (≈ 170 MB each).
DEFAULT_BUDGET = 2 << 30


def window_key(window: torch.Tensor) -> tuple:
    """Shape, dtype, device and SHA-256 of the window's bytes."""
    data = window.detach().to("cpu").contiguous().numpy().tobytes()
    return (tuple(window.shape), str(window.dtype), str(window.device),
            hashlib.sha256(data).hexdigest())


class EmbeddingCache:
    """``EmbeddingCache(model, max_bytes)``; ``cache.logits(window, points)`` equals
    ``model(window, points)``. ``stats``: ``{"hits", "misses"}``."""

    def __init__(self, model: torch.nn.Module, max_bytes: int = DEFAULT_BUDGET) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer ≥ 0, got {max_bytes!r}")
        self.model = model
        self.max_bytes = max_bytes
        self._model: Any = model  # a Sam3D when usable (encode/decode)
        self.stats = {"hits": 0, "misses": 0}
        self._store: OrderedDict[tuple, Any] = OrderedDict()  # key → Embedding
        self._bytes = 0

    @property
    def usable(self) -> bool:
        """Whether the model can be embedded once and prompted many times."""
        return callable(getattr(self.model, "encode", None)) and not self.model.training

    def embed(self, window: torch.Tensor):
        """The embedding of ``window`` ``B×C×D×H×W`` (stored, or computed and stored)."""
        key = window_key(window)
        if key in self._store:
            self.stats["hits"] += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.stats["misses"] += 1
        emb = self._model.encode(window)
        size = emb.nbytes()
        if size <= self.max_bytes:
            self._store[key] = emb
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._store.popitem(last=False)
                self._bytes -= old.nbytes()
        return emb

    def logits(self, window: torch.Tensor, points: torch.Tensor | None,
               labels: torch.Tensor | None = None, first_prompt: int = 0) -> torch.Tensor:
        """``model(window, points, labels)``, decoding a stored embedding when there is one
        (``labels`` ``B×N``, None: all positive; ``first_prompt``: the clicks a model with
        click maps keeps out of its maps, :meth:`Sam3D.decode`; 0 for any other model)."""
        extra: tuple = () if labels is None else (labels,)
        kw = {"first_prompt": first_prompt} if first_prompt else {}
        if not self.usable:
            return self.model(window, points, *extra, **kw)
        return self._model.decode(self.embed(window), points, *extra, **kw)

    def clear(self) -> None:
        self._store.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._store)
