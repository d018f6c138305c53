"""Slice-by-slice 2D SAM baseline: the paper's Table 1 "SAM-B, k pts/slice" rows.

Protocol (3DSAM-adapter, Gong et al., 2023, Table 1): SAM segments each axial slice on its
own, prompted with ``k`` positive points drawn from the ground-truth lesion of that slice;
slices without lesion get no prompt and are background. Here:

* volumes are ``D×H×W`` = (z, y, x), axial slices along D (:func:`sam3d.viz.to_dhw` of the
  NIfTI array);
* each lesion slice (``H×W`` HU) is windowed to an RGB uint8 image by :func:`window_slice`:
  ``round(255 · (clip(HU, lo, hi) − lo) / (hi − lo))`` (round half to even), the grey value
  copied to R, G and B; default window −160…240 HU (abdomen);
* ``k`` points uniformly *with replacement* from the slice's lesion pixels
  (:func:`sam3d.data.clicks.lesion_clicks` on the one slice), given to
  ``SamPredictor.predict`` as pixel indices ``(x, y) = (w, h)`` (SAM's convention; its prompt
  encoder adds the half-pixel shift itself), all labelled positive, ``multimask_output=False``;
* the stacked per-slice masks are scored in 3D against the lesion: Dice and NSD at 5 mm with
  the voxel spacing of the file (:mod:`sam3d.evaluation.metrics`).

The predictor resizes each slice so its longer side is the encoder's input size (1024 for SAM
and MobileSAM: a 128² slice is upsampled 8×) and maps the mask back to the slice's size.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..data.clicks import case_rng, lesion_clicks
from ..data.io import load_case
from ..evaluation.metrics import dice, nsd
from ..viz import ABDOMEN_WINDOW, to_dhw

__all__ = [
    "METHOD",
    "evaluate_case",
    "lesion_slab",
    "segment_slices",
    "segment_slices_multi",
    "slice_rng",
    "window_slice",
]

METHOD = "SAM 2D, k pts/slice"


def _window(window: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in window)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"window must be two numbers (lo, hi) in HU, got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"window must be finite with lo < hi, got {window!r}")
    return lo, hi


def window_slice(hu: np.ndarray, window: Sequence[float] = ABDOMEN_WINDOW) -> np.ndarray:
    """``H×W`` HU → ``H×W×3`` uint8 RGB: ``round(255·(clip(HU, lo, hi) − lo)/(hi − lo))``."""
    lo, hi = _window(window)
    hu = np.asarray(hu)
    if hu.ndim != 2:
        raise ValueError(f"expected an H×W slice, got shape {hu.shape}")
    scaled = (np.clip(hu.astype(np.float64), lo, hi) - lo) * 255.0 / (hi - lo)
    grey = np.rint(scaled).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def slice_rng(seed: int, case_id: str, k: int) -> np.random.Generator:
    """The generator :func:`evaluate_case` uses for ``k`` points per slice of ``case_id``."""
    return case_rng(seed, case_id, f"sam2d/k={k}")


def _predictor(predictor_or_model: object):
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    if isinstance(predictor_or_model, Sam):
        return SamPredictor(predictor_or_model)
    if not (callable(getattr(predictor_or_model, "set_image", None))
            and callable(getattr(predictor_or_model, "predict", None))):
        raise TypeError("expected a segment_anything Sam model or a predictor with set_image() "
                        f"and predict(), got {type(predictor_or_model).__name__}")
    return predictor_or_model


def _k(k: object) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k (points per slice) must be a positive integer, got {k!r}")
    return int(k)


def segment_slices_multi(predictor_or_model: object, image: np.ndarray, label: np.ndarray,
                         rngs: Mapping[int, np.random.Generator],
                         window: Sequence[float] = ABDOMEN_WINDOW,
                         ) -> tuple[dict[int, np.ndarray], dict[str, object]]:
    """:func:`segment_slices` for several ``k`` at once, embedding each slice only once.

    ``rngs`` maps each ``k`` to its own generator, so the masks for one ``k`` equal those of
    ``segment_slices(..., k, rng)`` with that generator alone. Returns ``({k: D×H×W bool},
    timing)`` with timing ``{"encoder_seconds": float, "decoder_seconds": {k: float},
    "lesion_slices": int}`` (set_image vs predict wall time, summed over slices).
    """
    predictor = _predictor(predictor_or_model)
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim != 3 or label.shape != image.shape:
        raise ValueError(f"image and label must be D×H×W arrays of one shape, got "
                         f"{image.shape} and {label.shape}")
    if label.dtype != bool:
        raise ValueError(f"label must be a bool lesion mask, got dtype {label.dtype}")
    if not rngs:
        raise ValueError("rngs must map at least one k to a generator")
    for k, rng in rngs.items():
        _k(k)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng for k={k} must be a numpy Generator, got {type(rng).__name__}")
    window = _window(window)
    masks = {k: np.zeros(label.shape, dtype=bool) for k in rngs}
    enc, dec = 0.0, {k: 0.0 for k in rngs}
    slices = [d for d in range(label.shape[0]) if label[d].any()]
    for d in slices:
        t0 = time.perf_counter()
        predictor.set_image(window_slice(image[d], window), image_format="RGB")
        enc += time.perf_counter() - t0
        for k, rng in rngs.items():
            points = lesion_clicks(label[d][None], k, rng)[:, 1:]  # k×2 (h, w)
            t0 = time.perf_counter()
            out, _, _ = predictor.predict(point_coords=points[:, ::-1].astype(np.float64),
                                          point_labels=np.ones(k, dtype=np.int64),
                                          multimask_output=False)
            dec[k] += time.perf_counter() - t0
            out = np.asarray(out)
            if out.shape not in ((1, *label.shape[1:]), label.shape[1:]):
                raise ValueError(f"predictor returned a mask of shape {out.shape} for a slice "
                                 f"of shape {label.shape[1:]}")
            masks[k][d] = out.reshape(label.shape[1:]).astype(bool)
    return masks, {"encoder_seconds": enc, "decoder_seconds": dec, "lesion_slices": len(slices)}


def segment_slices(predictor_or_model: object, image: np.ndarray, label: np.ndarray, k: int,
                   rng: np.random.Generator, window: Sequence[float] = ABDOMEN_WINDOW,
                   ) -> np.ndarray:
    """2D SAM on every lesion slice of a volume, ``k`` positive points per slice.

    Arguments:
      predictor_or_model: a ``segment_anything`` ``Sam`` (wrapped in ``SamPredictor``) or any
        object with ``set_image(H×W×3 uint8, image_format="RGB")`` and ``predict(point_coords
        k×2 (x, y), point_labels (k,), multimask_output=False) -> (1×H×W masks, scores,
        logits)``.
      image: ``D×H×W`` CT in HU; label: ``D×H×W`` bool lesion mask.
      k: points per slice, drawn uniformly with replacement from the slice's lesion pixels,
        slices in increasing ``d``, all from ``rng``.
      window: HU window mapped to 0…255 (see :func:`window_slice`).

    Returns the ``D×H×W`` bool prediction; slices without lesion are all background.
    """
    k = _k(k)
    return segment_slices_multi(predictor_or_model, image, label, {k: rng}, window)[0][k]


def lesion_slab(lesion: np.ndarray, slab: int | None) -> tuple[int, int]:
    """``(d0, d1)``: the ``slab`` consecutive slices centred on the middle lesion slice of
    ``lesion`` (``D×H×W``), kept inside the volume; the whole depth for ``slab=None``."""
    depth = int(lesion.shape[0])
    if slab is None:
        return 0, depth
    if isinstance(slab, bool) or not isinstance(slab, int) or slab < 1:
        raise ValueError(f"slab must be a positive integer or None, got {slab!r}")
    with_lesion = np.flatnonzero(lesion.any(axis=(1, 2)))
    if with_lesion.size == 0:
        raise ValueError("the case has no lesion slice")
    middle = int(with_lesion[with_lesion.size // 2])
    d0 = min(max(0, middle - slab // 2), max(0, depth - slab))
    return d0, min(depth, d0 + slab)


def evaluate_case(model: object, case_entry, ks: Sequence[int] = (1, 3, 10), seed: int = 0,
                  window: Sequence[float] = ABDOMEN_WINDOW, tolerance_mm: float = 5.0,
                  slab: int | None = None) -> list[dict]:
    """Run the baseline on one case of the common layout for each ``k``; one row per ``k``.

    ``case_entry`` is a :class:`sam3d.data.layout.CaseEntry` (lesion = its ``target`` label).
    Points for ``k`` come from :func:`slice_rng` ``(seed, case id, k)``. Each slice is
    embedded once for all ``k``. Row: ``case``, ``method``, ``k``, ``seed``, ``dice``,
    ``nsd`` (at ``tolerance_mm``, spacing from the file in D×H×W order), ``seconds`` (what a
    run for this ``k`` alone costs: all ``set_image`` time + this ``k``'s ``predict`` time),
    ``encoder_seconds``, ``decoder_seconds``, ``lesion_slices``, ``slices``, ``spacing``,
    ``slab`` ([d0, d1): the slices scored).

    ``slab``: score only that many consecutive slices through the lesion's middle
    (:func:`lesion_slab`; Dice and NSD of that sub-volume) — a test's few slices; None (the
    paper's protocol, the book): the whole volume.
    """
    ks = [_k(k) for k in ks]
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers, got {ks!r}")
    image, label = load_case(case_entry.image, case_entry.label, target=case_entry.target)
    spacing = tuple(reversed(image.spacing))  # (x, y, z) → D×H×W = (z, y, x)
    vol = to_dhw(image.array)
    lesion = to_dhw(label.array == case_entry.target)
    d0, d1 = lesion_slab(lesion, slab)
    vol, lesion = vol[d0:d1], lesion[d0:d1]
    rngs = {k: slice_rng(seed, case_entry.case_id, k) for k in ks}
    masks, timing = segment_slices_multi(model, vol, lesion, rngs, window)
    rows = []
    for k in ks:
        rows.append({
            "case": case_entry.case_id, "method": METHOD, "k": k, "seed": seed,
            "dice": dice(masks[k], lesion),
            "nsd": nsd(masks[k], lesion, spacing, tolerance_mm),
            "seconds": timing["encoder_seconds"] + timing["decoder_seconds"][k],
            "encoder_seconds": timing["encoder_seconds"],
            "decoder_seconds": timing["decoder_seconds"][k],
            "lesion_slices": timing["lesion_slices"], "slices": int(lesion.shape[0]),
            "spacing": list(spacing), "slab": [d0, d1],
        })
    return rows
