"""Click-prompted prediction on a whole volume, shared by ``evaluate`` and ``predict``.

A :class:`Predictor` runs the test chain (canonical orientation, 1 mm, clip, z-score), predicts
the lesion probability on that model grid from clicks, and maps it back to the input's own grid
with MONAI's inverse transforms (``Invertd``: un-transpose, un-resample trilinearly, un-orient),
thresholded at 0.5 as the official evaluation does.

Two ways to cover the volume:

* ``"roi"`` — the official protocol: one ``crop``³ box centred on the clicks (the midpoint of
  their bounding box), zero-padded where it leaves the volume; everything outside it is
  background. Clicks outside the box (clicks spread wider than it) are left out and counted
  in ``clicks_used``; the official code passed them to the model, where they sampled zeros.
* ``"sliding"`` — MONAI ``sliding_window_inference`` over the whole volume (``crop``³ windows,
  overlap 0.5, Gaussian blending). Each window is prompted with the clicks that fall inside
  it; windows without a click do not vote (a promptable model segments only what it is
  pointed at), and a voxel no prompted window covers is background. This sees lesions the
  single box cannot reach.
* ``"objects"`` — interactive use (the viewer, ``sam3d predict``): an object's box is fixed by
  its first click (centred on it); a later click inside a box joins that box's prompt, a click
  outside every box opens a new box centred on it; the probability is the maximum over the
  boxes. A click inside a box therefore changes only that box's prompt, and the box's image
  embedding is reused (:class:`~sam3d.inference.embeddings.EmbeddingCache`): a follow-up
  click costs a decode, not an encoder pass.
* ``"auto"`` — automatic segmentation for prompt-free models (the paper's Table 2 variants and
  the supervised baselines): every window votes, clicks are ignored.

Click labels (``labels``: 1 = positive, 0 = negative; None = all positive) need a model with
the negative-click extension for any 0. A negative click corrects an object, it never places
one: boxes are placed by positive clicks only ("roi": centred on the positive clicks;
"objects": a negative click joins every box that contains it, and one in no box is refused;
"sliding": a window votes only when it holds a positive click).

Every prompted window goes through the predictor's :class:`~sam3d.inference.embeddings.
EmbeddingCache`: a window seen before (the next refinement click, the same sliding window) is
decoded from its stored embedding, with logits equal to a fresh forward pass.

``keep``: "all" (the paper: every predicted voxel) or "clicked" (only the predicted components
a positive click is on, :mod:`sam3d.inference.components`); by default the model's own: "clicked"
for the ``*_maps`` variants, which are trained to segment the lesion a click is on.

``zoom``: a factor ``z`` ≥ 1 ("roi" and "objects"): a box first tried at ``1/z`` of the crop's
edge, enlarged to the crop, and kept where the clicked lesion fits in it
(:mod:`sam3d.inference.zoom`); by default the model's own: 2 for the ``*_maps`` variants, 1 (no
zoom, the paper) for every other model. "sliding" and "auto" never zoom.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd

from ..data.clicks import check_clicks, check_label_rows
from ..data.specs import DatasetSpec
from ..data.transforms import build_transforms
from ..modeling.common import check_positive
from .components import KEEP, keep_clicked, segments_clicked_lesion
from .embeddings import DEFAULT_BUDGET, EmbeddingCache
from .roi import Box, clicks_in_roi, crop_roi, paste_roi, roi_box
from .zoom import check_zoom, default_zoom, enlarge, fits, shrink, zoom_points

MODES = ("roi", "sliding", "objects", "auto")


class Predictor:
    """``Predictor(model, spec, device)``; ``spec`` must carry window/mean/std.
    ``cache_bytes``: the memory budget of the window embeddings kept for reuse; ``keep``: "all"
    or "clicked" (None: the model's own, see the module); ``zoom``: a factor ≥ 1 (None: the
    model's own, see the module)."""

    def __init__(self, model: torch.nn.Module, spec: DatasetSpec, device="cpu",
                 overlap: float = 0.5, cache_bytes: int = DEFAULT_BUDGET,
                 keep: str | None = None, zoom: int | None = None):
        if not spec.has_statistics:
            raise ValueError(f"spec {spec.name!r} has no intensity statistics")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if keep is None:
            keep = "clicked" if segments_clicked_lesion(model) else "all"
        if keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
        self.keep = keep
        self.model = model.eval()
        self.spec = spec
        self.device = torch.device(device)
        self.overlap = overlap
        # Sam3D and the prompt-free baselines expose the crop edge as an int property
        self.crop = cast(int, model.crop)
        self.zoom = check_zoom(default_zoom(model) if zoom is None else zoom, self.crop)
        self.chain = build_transforms(spec, "test", crop=self.crop)
        self.embeddings = EmbeddingCache(self.model, cache_bytes)
        self.boxes: list[Box] = []  # the boxes of the last "roi" / "objects" prediction

    # --------------------------------------------------------------------------- inputs
    def load(self, image: str, label: str | None = None, target: int | None = None) -> dict:
        """Run the test chain: ``image`` 3×D×H×W (model grid) and, with a label, 1×D×H×W."""
        case: dict[str, object] = {"image": str(image)}
        if label is not None:
            case.update(label=str(label), target=spec_target(self.spec, target))
        return self.chain(case)

    # ----------------------------------------------------------------------- prediction
    @property
    def negative_clicks(self) -> bool:
        """Whether the model takes negative clicks (the negative-click extension)."""
        return bool(self.model.negative_clicks)

    def check_labels(self, labels: object, k: int) -> np.ndarray:
        """Click labels → ``(k,)`` bool (True = positive); None means all positive."""
        if labels is None:
            return np.ones(k, dtype=bool)
        arr = np.asarray(labels)
        if arr.shape != (k,) or not np.isin(arr, (0, 1)).all() or arr.dtype.kind not in "biu":
            raise ValueError(f"labels must be {k} values 0 (negative) or 1 (positive), one per "
                             f"click, got {arr.tolist()!r}")
        out = arr.astype(bool)
        if k:
            check_label_rows(out[None], self.negative_clicks)
        return out

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor, clicks: np.ndarray, mode: str = "roi",
                      labels: object = None, first_prompt: int = 1) -> torch.Tensor:
        """Lesion probability ``D×H×W`` on the model grid for model-grid clicks ``k×3`` with
        ``labels`` ``(k,)`` (1 = positive, 0 = negative; None = all positive).

        ``first_prompt``: for a model with click maps, how many of each box's first clicks are
        its prompt (tokens only); the later ones are corrections and also enter as maps
        (:meth:`Sam3D.decode`). 1: an object's first click prompts it, every later click
        corrects it (the viewer, refinement); the paper's k clicks at once pass k.

        The boundary of every click-prompted prediction: the image must be ``C×D×H×W`` and
        finite, the clicks integer voxel indices inside it (:func:`~sam3d.data.clicks.
        check_clicks`), the labels 0/1 with a positive click; the model checks shapes only."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        volume = torch.as_tensor(image).float()
        if volume.ndim != 4:
            raise ValueError(f"image must be C×D×H×W on the model grid, got shape "
                             f"{tuple(volume.shape)}")
        if not torch.isfinite(volume).all():
            raise ValueError("image contains NaN or Inf values")
        check_positive(first_prompt=first_prompt)
        # 0: no corrective clicks to tell apart (a model without click maps or refiner)
        first = first_prompt if getattr(self.model, "takes_first_prompt", False) else 0
        shape = tuple(volume.shape[1:])
        clicks = check_clicks(np.zeros((0, 3), np.int64) if clicks is None else clicks, shape)
        positive = self.check_labels(labels, len(clicks)) if mode != "auto" else None
        if mode == "auto":
            self.clicks_used, self.boxes = len(clicks), []
            return self._automatic(volume)
        assert positive is not None
        if mode == "roi":
            zoomed = self._zoomed(volume, clicks, positive, first)
            if zoomed is not None:
                box, box_prob = zoomed
                inside = _inside(clicks, box.start, box.size)
            else:
                box = roi_box(clicks[positive], shape, self.crop)
                inside = _inside(clicks, box.start, self.crop)
                if not (inside & positive).any():  # clicks spread wider than the box: centre
                    box = roi_box(clicks[positive][:1], shape, self.crop)  # on the first
                    inside = _inside(clicks, box.start, self.crop)  # positive
                box_prob = self._box_probability(volume, clicks[inside], box, positive[inside],
                                                 first)
            self.clicks_used = int(inside.sum())
            self.boxes = [box]
            prob = paste_roi(box_prob, box, shape)
            used = clicks[inside & positive]
        else:
            self.clicks_used = len(clicks)
            if mode == "objects":
                prob = self._objects(volume, clicks, positive, first)
            else:
                self.boxes = []
                prob = self._sliding(volume, clicks, positive, first)
            used = clicks[positive]
        return keep_clicked(prob, used) if self.keep == "clicked" else prob

    def _labels(self, positive: np.ndarray) -> torch.Tensor | None:
        """``1×k`` labels for the model, None when all are positive (the paper's prompt)."""
        if positive.all():
            return None
        return torch.as_tensor(positive, dtype=torch.long)[None].to(self.device)

    def _box_probability(self, volume: torch.Tensor, clicks: np.ndarray, box: Box,
                         positive: np.ndarray, first: int) -> torch.Tensor:
        """Lesion probability ``s×s×s`` of ``box`` (edge ``s``: the crop, or the crop over the
        zoom factor, enlarged to the crop for the model) prompted with its ``clicks`` (volume
        grid) labelled ``positive`` ``(k,)``; ``first``: the first prompt's size for a model
        with click maps (capped at the clicks; 0 without maps)."""
        factor = self.crop // box.size
        patch = crop_roi(volume, box)[None].to(self.device)
        rel = clicks_in_roi(clicks, box)
        if factor > 1:
            patch, rel = enlarge(patch, self.crop), zoom_points(rel, factor)
        pts = torch.as_tensor(rel, dtype=torch.float32)[None].to(self.device)
        logits = self.embeddings.logits(patch, pts, self._labels(positive),
                                        min(first, len(rel)))
        prob = torch.softmax(logits, 1)[0, 1].cpu()
        return shrink(prob, factor) if factor > 1 else prob

    def _zoomed(self, volume: torch.Tensor, clicks: np.ndarray, positive: np.ndarray,
                first: int) -> tuple[Box, torch.Tensor] | None:
        """The zoomed box of the clicks and its probability (``s×s×s``) when the clicked
        lesion fits in it (:func:`~sam3d.inference.zoom.fits`), else None (and without zoom,
        or when a positive click lies outside the small box)."""
        if self.zoom == 1:
            return None
        box = roi_box(clicks[positive], tuple(volume.shape[1:]), self.crop // self.zoom)
        inside = _inside(clicks, box.start, box.size)
        if not inside[positive].all():
            return None
        prob = self._box_probability(volume, clicks[inside], box, positive[inside], first)
        return (box, prob) if fits(prob, clicks_in_roi(clicks[inside & positive], box)) \
            else None

    def _objects(self, volume: torch.Tensor, clicks: np.ndarray,
                 positive: np.ndarray, first: int) -> torch.Tensor:
        """One box per object: fixed by its first click, joined by later clicks inside it (a
        negative click joins every box that holds it)."""
        shape = tuple(volume.shape[1:])
        if len(clicks) == 0:
            raise ValueError("mode 'objects' needs at least one click")
        groups: list[tuple[Box, list[int]]] = []
        for i, click in enumerate(clicks):
            homes = [g for g in groups if _inside(click[None], g[0].start, g[0].size)[0]]
            if not positive[i]:
                if not homes:
                    raise ValueError(f"negative click {tuple(int(v) for v in click)} lies in no "
                                     "object's box: a negative click corrects an object, so "
                                     "click the object (positive) first")
                for home in homes:
                    home[1].append(i)
            elif homes:
                homes[0][1].append(i)
            else:  # a new object: its box (zoomed if its lesion fits) fixed by this click
                zoomed = self._zoomed(volume, click[None], positive[i:i + 1], first)
                box = roi_box(click[None], shape, self.crop) if zoomed is None else zoomed[0]
                groups.append((box, [i]))
        out = torch.zeros(shape)
        for box, members in groups:
            prob = paste_roi(self._box_probability(volume, clicks[members], box,
                                                   positive[members], first), box, shape)
            out = torch.maximum(out, prob)
        self.boxes = [box for box, _ in groups]
        return out

    def _automatic(self, volume: torch.Tensor) -> torch.Tensor:
        c = self.crop

        def predictor(window: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.model(window, None), 1)

        prob = sliding_window_inference(
            volume[None].to(self.device), roi_size=(c, c, c), sw_batch_size=1,
            predictor=predictor, overlap=self.overlap, mode="gaussian", padding_mode="constant",
            cval=0.0)
        # a tensor, as the predictor returns one (MONAI mirrors a tuple or dict predictor)
        return cast(torch.Tensor, prob)[0, 1].cpu()

    def _sliding(self, volume: torch.Tensor, clicks: np.ndarray,
                 positive: np.ndarray, first: int) -> torch.Tensor:
        """Blend only the windows that hold a positive click: each window returns (p·v, v)
        with v = 1 when prompted, 0 otherwise; the blended ratio is the prompted windows'
        average."""
        c = self.crop
        pts = torch.as_tensor(clicks, dtype=torch.float32)
        pos = torch.as_tensor(positive)

        def predictor(window: torch.Tensor, location) -> torch.Tensor:
            out = torch.zeros(window.shape[0], 2, *window.shape[2:], device=window.device)
            for b in range(window.shape[0]):
                start = torch.tensor([sl.start for sl in location[b][-3:]], dtype=torch.float32)
                rel = pts - start
                inside = ((rel >= 0) & (rel < c)).all(1)
                if (inside & pos).any():
                    logits = self.embeddings.logits(window[b:b + 1],
                                                    rel[inside][None].to(window.device),
                                                    self._labels(pos[inside].numpy()),
                                                    min(first, int(inside.sum())))
                    out[b, 0] = torch.softmax(logits, 1)[0, 1]
                    out[b, 1] = 1.0
            return out

        blended = sliding_window_inference(
            volume[None].to(self.device), roi_size=(c, c, c), sw_batch_size=1,
            predictor=predictor, overlap=self.overlap, mode="gaussian", padding_mode="constant",
            cval=0.0, with_coord=True)[0].cpu()
        votes = blended[1]
        return torch.where(votes > 1e-6, blended[0] / votes.clamp_min(1e-6),
                           torch.zeros_like(votes))

    # ---------------------------------------------------------------------- back-mapping
    def to_input_grid(self, data: dict, prob: torch.Tensor) -> np.ndarray:
        """Probability on the model grid → binary mask ``X×Y×Z`` on the input image's grid."""
        image = data["image"]
        pred = MetaTensor(prob[None].float(), meta=dict(image.meta))  # meta holds the affine
        pred.applied_operations = [dict(op) for op in image.applied_operations]
        inverter = Invertd(keys="pred", transform=self.chain, orig_keys="image",
                           nearest_interp=False)
        out = inverter({"pred": pred, "image": image})["pred"]
        return (np.asarray(out[0].detach().cpu()) >= 0.5).astype(np.uint8)


def _inside(clicks: np.ndarray, start, size: int) -> np.ndarray:
    rel = clicks - np.asarray(start, dtype=np.int64)
    # k×3 reduced over axis 1: an array of k booleans (numpy's stubs also allow a scalar)
    return cast(np.ndarray, ((rel >= 0) & (rel < size)).all(axis=1))


def spec_target(spec: DatasetSpec, target: int | None) -> int:
    return int(spec.target if target is None else target)


def spec_from_checkpoint(extra: dict, fallback: DatasetSpec | None = None) -> DatasetSpec:
    """The preprocessing a checkpoint was trained with (saved by the trainer), else ``fallback``."""
    pre = ((extra or {}).get("train") or {}).get("preprocessing")
    if pre:
        from ..data.specs import get_spec

        base = get_spec(pre["name"]) if fallback is None else fallback
        return dataclasses.replace(base, window=tuple(pre["window"]), mean=pre["mean"],
                                   std=pre["std"], spacing=pre.get("spacing", 1.0))
    if fallback is None or not fallback.has_statistics:
        raise ValueError("the checkpoint records no preprocessing statistics; name the dataset "
                         "whose constants to use (--dataset kits|lits|pancreas|colon)")
    return fallback
