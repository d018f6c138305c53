"""The viewer's segmentation call: clicks on the displayed volume → a mask on the same grid.

The displayed volume is the image file's array in ``D×H×W`` = (slice, row, column) order
(:func:`sam3d.viz.to_dhw` of :func:`sam3d.data.io.load_volume`), so a viewer click is exactly a
``sam3d predict --click d,h,w`` click and is mapped the same way
(:func:`sam3d.inference.geometry.user_to_model`): the test chain runs once per image, then
each call predicts on the model grid (:class:`sam3d.inference.predictor.Predictor`) and maps
the probability back to the input grid (``Invertd``), thresholded at 0.5.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.clicks import ClickError, check_clicks
from ..data.io import load_volume
from ..data.specs import DatasetSpec
from ..inference.geometry import model_affine, user_shape, user_to_model
from ..inference.predictor import MODES, Predictor
from ..viz import to_dhw

PROMPTED = ("objects", "roi", "sliding")


class Segmenter:
    """``Segmenter(model, spec, image)(clicks)`` → bool ``D×H×W`` mask of the displayed volume.

    ``model``: a promptable sam3d model (``B×3×c³`` crop and ``B×k×3`` clicks → ``B×2×c³``
    logits, with a ``crop`` attribute); ``spec``: preprocessing constants (window/mean/std);
    ``image``: the image file. ``image`` (``D×H×W`` float array) is what the viewer shows.
    ``mode``: "objects" (default: a box per object, fixed by its first click, so a follow-up
    click inside it only decodes the stored embedding), "roi" (the official box at the clicks'
    midpoint) or "sliding" (the whole volume). ``seconds``: the last call's wall time.
    """

    def __init__(self, model: torch.nn.Module, spec: DatasetSpec, image: str | Path,
                 mode: str = "objects", device="cpu"):
        if mode not in PROMPTED:
            raise ValueError(f"mode must be one of {PROMPTED} (promptable), got {mode!r}"
                             if mode in MODES else f"mode must be one of {MODES}, got {mode!r}")
        path = Path(image)
        self.reference = load_volume(path, "image")  # clear errors before any transform
        self.image = to_dhw(self.reference.array)
        self.shape = user_shape(self.reference)
        self.mode = mode
        self.predictor = Predictor(model, spec, device)
        self._data = self.predictor.load(str(path))
        self._affine = model_affine(self._data["image"])
        self.seconds = 0.0

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, image: str | Path,
                        dataset: str | None = None, mode: str = "objects", device="cpu",
                        sam_checkpoint: str | Path | None = None) -> Segmenter:
        """Load a sam3d checkpoint as ``sam3d predict`` does and prepare ``image``."""
        from ..inference.predict import load_for_inference

        model, spec = load_for_inference(checkpoint, sam_checkpoint, dataset, device)
        return cls(model, spec, image, mode, device)

    def model_clicks(self, clicks: object) -> np.ndarray:
        """Viewer clicks ``k×3`` (d, h, w) → model-grid voxels ``k×3``."""
        pts = check_clicks(clicks, self.shape)
        if len(pts) == 0:
            raise ClickError("no click: add at least one point before segmenting")
        image = self._data["image"]
        return user_to_model(pts, self.reference.affine, self._affine, tuple(image.shape[1:]),
                             self.shape)

    @property
    def negative_clicks(self) -> bool:
        """Whether the model takes negative clicks (the negative-click extension)."""
        return self.predictor.negative_clicks

    def __call__(self, clicks: object, labels: object = None) -> np.ndarray:
        """Mask for viewer ``clicks`` ``k×3`` with ``labels`` ``(k,)`` (1 = positive,
        0 = negative; None = all positive)."""
        t0 = time.perf_counter()
        model_pts = self.model_clicks(clicks)
        prob = self.predictor.probabilities(self._data["image"], model_pts, self.mode, labels)
        mask = self.predictor.to_input_grid(self._data, prob)  # X×Y×Z
        self.seconds = time.perf_counter() - t0
        return to_dhw(mask) != 0
