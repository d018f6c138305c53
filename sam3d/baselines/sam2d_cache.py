"""Compute the SAM 2D slice-wise baseline once per content, reuse it everywhere.

The MobileSAM run on a real case costs minutes on a CPU (one 1024² image embedding per lesion
slice). :func:`cached_evaluate_case` keys the result by *content* — the SHA-256 of the SAM
weights, of the case's image and label files, the case id, the image encoder, the ``ks``, the
seed, the HU window and the NSD tolerance — and keeps it as JSON in
``root/<case>-<key>.json``. Any changed input gives a new key, so a stale result is never
mistaken for a current one; ``refresh=True`` recomputes and overwrites the entry of the same
key (the slow test does this, so the book chapter run after it in CI reuses fresh numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..content_cache import content_key, read_entry, write_entry
from ..hashing import sha256_file
from ..viz import ABDOMEN_WINDOW

__all__ = ["cache_key", "cached_evaluate_case"]

CACHE_FORMAT = "sam3d-sam2d/1"


def cache_key(weights_sha256: str, case_entry, ks: Sequence[int], seed: int,
              encoder: str = "tiny_vit", window: Sequence[float] = ABDOMEN_WINDOW,
              tolerance_mm: float = 5.0, slab: int | None = None) -> str:
    """12 hex digits of everything the baseline's numbers depend on."""
    doc = {"format": CACHE_FORMAT, "weights": weights_sha256, "encoder": encoder,
           "case": case_entry.case_id, "image": sha256_file(case_entry.image),
           "label": sha256_file(case_entry.label), "target": int(case_entry.target),
           "ks": [int(k) for k in ks], "seed": int(seed),
           "window": [float(w) for w in window], "tolerance_mm": float(tolerance_mm)}
    if slab is not None:  # absent while None, so the keys of whole-volume runs stay as they were
        doc["slab"] = int(slab)
    return content_key(doc)


def cached_evaluate_case(weights: str | Path, case_entry, ks: Sequence[int] = (1, 3, 10),
                         seed: int = 0, root: str | Path = "outputs/sam2d",
                         encoder: str = "tiny_vit", window: Sequence[float] = ABDOMEN_WINDOW,
                         tolerance_mm: float = 5.0, refresh: bool = False,
                         slab: int | None = None) -> dict:
    """:func:`sam3d.baselines.sam2d.evaluate_case` of the SAM checkpoint ``weights`` (``encoder``
    "tiny_vit" for MobileSAM, "vit_b" for SAM ViT-B, "vit" for a ViT SAM of any size) on
    ``case_entry`` (``slab``: only that many slices through the lesion), cached by content.

    Returns ``{"rows": [...one per k...], "cached": bool, "path": Path, "key": str}``;
    ``cached`` says whether the rows came from an earlier run.
    """
    from .sam2d import evaluate_case
    from .weights import build_sam_from_checkpoint

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {weights}")
    ks = [int(k) for k in ks]
    key = cache_key(sha256_file(weights), case_entry, ks, seed, encoder, window, tolerance_mm,
                    slab)
    path = Path(root) / f"{case_entry.case_id}-{key}.json"
    doc = None if refresh else read_entry(path, CACHE_FORMAT, key)
    if doc is not None:
        return {"rows": doc["rows"], "cached": True, "path": path, "key": key}
    sam = build_sam_from_checkpoint(weights, encoder)
    rows = evaluate_case(sam, case_entry, ks=ks, seed=seed, window=window,
                         tolerance_mm=tolerance_mm, slab=slab)
    write_entry(path, {"format": CACHE_FORMAT, "key": key, "weights": str(weights),
                       "encoder": encoder, "rows": rows})
    return {"rows": rows, "cached": False, "path": path, "key": key}
