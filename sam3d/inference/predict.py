"""Prediction without labels: a scan, clicks, a checkpoint → a mask in the scan's geometry.

::

    model, spec = load_for_inference("outputs/train/kits/best.pt", sam_checkpoint=...)
    result = predict_file(model, spec, "scan.nii.gz", [(40, 250, 230)], out="mask.nii.gz")

Clicks are ``(d, h, w)`` = (slice, row, column) voxel indices of the input file (see
:mod:`sam3d.inference.geometry`); ``labels`` (one per click: 1 = positive, 0 = negative, None =
all positive) need a model with the negative-click extension for any 0, and every negative
click corrects an object a positive click marks (:mod:`sam3d.inference.predictor`).
Inputs: NIfTI, NRRD/MetaImage or a DICOM series folder. The mask has exactly the input's shape
and geometry; it is written atomically, so a failure leaves no partial file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import (
    CheckpointError,
    CheckpointFile,
    is_official_checkpoint,
    load_checkpoint,
    load_official_checkpoint,
    recorded_training_config,
    split_reference,
)
from ..data.clicks import check_clicks
from ..data.io import Volume, load_volume
from ..data.specs import DatasetSpec, get_spec
from .geometry import model_affine, save_mask, user_shape, user_to_model
from .predictor import Predictor, spec_from_checkpoint


@dataclass
class PredictResult:
    mask: np.ndarray  # X×Y×Z uint8 on the input grid
    reference: Volume
    model_clicks: np.ndarray  # k×3 (d, h, w) on the model grid
    labels: np.ndarray  # (k,) int64: 1 = positive, 0 = negative
    clicks_used: int  # "roi": the clicks inside the one box; else all of them
    seconds: float
    path: Path | None = None


def load_for_inference(checkpoint: str | Path | CheckpointFile,
                       sam_checkpoint: str | Path | None = None,
                       dataset: str | None = None, device="cpu",
                       data_dir: str | Path | None = None):
    """Model and preprocessing spec from a sam3d (training) checkpoint, or from one of the
    authors' released checkpoints (detected by its ``encoder_dict``/``feature_dict``/
    ``decoder_dict``; ``dataset`` required, since it records none).

    The preprocessing constants are those the checkpoint was trained with; ``dataset`` names a
    registered spec to use instead. A checkpoint without recorded constants and a dataset
    without fixed ones (phantoms, samples, custom) fall back to statistics over the training
    split of ``data_dir``, computed as the trainer does. Without ``sam_checkpoint``, a model
    whose frozen weights come from a SAM checkpoint takes the file its training run recorded
    when that file is still there (its SHA-256 is checked against the recorded one as ever).
    ``checkpoint``: a path, or a :class:`~sam3d.checkpoint.CheckpointFile` already read (the
    file is then not read again).
    """
    if not isinstance(checkpoint, CheckpointFile) and not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    read = CheckpointFile.of(checkpoint)
    path, ckpt = read.path, read.contents
    if is_official_checkpoint(ckpt):
        return _official_model(ckpt, path, sam_checkpoint, dataset, device)
    if sam_checkpoint is None and isinstance(ckpt, dict) and ckpt.get("sam_checkpoint_sha256"):
        sam_checkpoint = recorded_sam_file(ckpt)
    model = load_checkpoint(read, sam_checkpoint=sam_checkpoint)
    extra = ckpt.get("extra") or {}
    named = dataset is not None  # the user's choice overrides the recorded constants
    if dataset is None:
        dataset = recorded_training_config(ckpt).get("dataset")
    fallback = get_spec(dataset) if dataset else None
    if named and fallback is not None and fallback.has_statistics:
        return model.to(device).eval(), fallback
    try:
        spec = spec_from_checkpoint(extra, fallback)
    except ValueError:
        if fallback is None or data_dir is None:
            raise
        spec = _statistics_from(fallback, data_dir, split_reference(ckpt))
    return model.to(device).eval(), spec


def _official_model(ckpt: dict, path: Path, sam_checkpoint, dataset: str | None, device):
    """An authors' checkpoint (``encoder_dict``/``feature_dict``/``decoder_dict``, the
    ``vit_b`` model): it holds every weight and records no dataset, so ``dataset`` names the
    preprocessing constants."""
    from ..data.specs import SPECS

    if sam_checkpoint is not None:
        raise CheckpointError(f"{path} is an official 3DSAM-adapter checkpoint, which holds every "
                              "weight: load it without a SAM checkpoint")
    if dataset is None or dataset not in SPECS or not SPECS[dataset].has_statistics:
        raise CheckpointError(f"{path} is an official 3DSAM-adapter checkpoint, which records no "
                              "dataset: name it (--dataset kits|lits|pancreas|colon)")
    try:
        model = load_official_checkpoint(ckpt)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model.to(device).eval(), get_spec(dataset)


def recorded_sam_file(ckpt: dict) -> Path | None:
    """The SAM checkpoint the training run of ``ckpt`` was given, resolved from the project
    root as the trainer resolved it; None when none was recorded or the file is gone."""
    from ..provenance import project_path

    recorded = recorded_training_config(ckpt).get("sam_checkpoint")
    if not recorded:
        return None
    path = project_path(recorded)
    return path if path.is_file() else None


def _statistics_from(spec: DatasetSpec, data_dir: str | Path, split) -> DatasetSpec:
    """The statistics the trainer computed: over the training cases of the run's ``split``."""
    from ..data.layout import read_index
    from ..data.pipeline import spec_with_statistics

    index = read_index(data_dir)
    train = split.resolve(spec.name, index.case_ids())["train"]
    return spec_with_statistics(spec, index, index.lesion_cases(train))


def predict_file(model: torch.nn.Module, spec: DatasetSpec, image: str | Path, clicks,
                 out: str | Path | None = None, mode: str = "roi", device="cpu",
                 labels=None, keep: str | None = None,
                 zoom: int | None = None) -> PredictResult:
    """Segment the lesion under ``clicks`` (``k×3``) labelled ``labels`` (``(k,)``, 1 =
    positive, 0 = negative; None = all positive) in ``image``; write ``out`` if given.
    ``keep``: what the mask keeps, ``zoom``: the zoom factor on a small lesion
    (:class:`~sam3d.inference.predictor.Predictor`; None: the model's own).

    Every input is checked before the image goes through the test chain: the clicks, the
    labels (for this model) and ``out``; a negative click in no object's box (``"objects"``)
    is refused before any encoder pass. A failure writes nothing."""
    t0 = time.time()
    reference = load_volume(image, "image")  # clear errors before any transform runs
    pts = check_clicks(clicks, user_shape(reference))
    predictor = Predictor(model, spec, device, keep=keep, zoom=zoom)
    positive = predictor.check_labels(labels, len(pts))
    if out is not None:
        _check_out(out)
    data = predictor.load(str(image))
    model_pts = user_to_model(pts, reference.affine, model_affine(data["image"]),
                              tuple(data["image"].shape[1:]), user_shape(reference))
    prob = predictor.probabilities(data["image"], model_pts, mode, positive.astype(np.int64))
    mask = predictor.to_input_grid(data, prob)
    if mask.shape != reference.shape:
        raise RuntimeError(f"internal error: mask {mask.shape} vs image {reference.shape}")
    result = PredictResult(mask, reference, model_pts, positive.astype(np.int64),
                           predictor.clicks_used, time.time() - t0)
    if out is not None:
        result.path = save_mask(mask, reference, out)
    return result


def _check_out(out: str | Path) -> None:
    name = Path(out).name.lower()
    if Path(out).is_dir():
        raise ValueError(f"output {out} is a folder; give a mask file name")
    if not name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")):
        raise ValueError(f"output {out}: use .nii.gz, .nii, .nrrd or .mha")
    if not Path(out).parent.is_dir():
        raise ValueError(f"output folder {Path(out).parent} does not exist")
