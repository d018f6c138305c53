"""MONAI transform chains reproducing the official preprocessing (spec §4.2).

Each chain takes a case dict ``{"image": path, "label": path, "target": t, "case": id}`` and
returns ``image`` as a 3×D×H×W float tensor (z-scored, channel repeated ×3 as in the official
code) and ``label`` as a 1×D×H×W float tensor of 0/1 (lesion = the case's target value).

Differences from the official code, on purpose:

* Orientation is made canonical (RAS) with MONAI's ``Orientationd`` and the axes are then
  ordered (D, H, W) = (S–I, A–P, R–L); the official code instead reverses the axes for LiTS,
  Pancreas and Colon and leaves KiTS as stored. The model sees the same anatomy either way,
  and every user's volume gets one convention.
* Resampling to 1 mm uses MONAI's ``Spacingd`` (trilinear for the image; the binarised label is
  interpolated trilinearly and thresholded at 0.5, as the official code does). The official
  two-step resize for volumes with spacing ratio > 8 is not reproduced.

``preprocessing="official"`` (the recipe key ``preprocessing: official``) replaces both with the
official loader's raw axis order and ``F.interpolate`` resampling (:class:`OfficialLoadd`), so a
model trained by sam3d sees volumes laid out as the released checkpoints saw them.

The deterministic prefix (load, orient, resample, binarise, clip) comes first, so MONAI's
``PersistentDataset`` caches it and an epoch does not redo the resampling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandShiftIntensityd,
    RandSpatialCropd,
    RandZoomd,
    RepeatChanneld,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    Transposed,
)

from .io import VolumeError, check_pair, load_volume
from .lesion_crops import LesionCentredCropd
from .official import OfficialError, get_dataset, read_volume, resample_image, resize_label
from .specs import DatasetSpec

KEYS = ("image", "label")
MODES = ("train", "val", "test")
#: how volumes are read and resampled: sam3d's canonical way, or the official loader's
PREPROCESSING = ("sam3d", "official")
#: how training and validation crops are placed: the official pos/neg crop, or centred on a
#: lesion voxel with the lesions drawn by balanced weights (:mod:`sam3d.data.lesion_crops`)
SAMPLING = ("paper", "lesion")


class LoadCased(MapTransform):
    """Read and check image + label (:mod:`sam3d.data.io`), binarise the label to the target.

    Output: ``image`` 1×X×Y×Z float32 and ``label`` 1×X×Y×Z float32 MetaTensors carrying the
    affine, so MONAI's spatial transforms (and their inverses) know the geometry. A bad file
    raises :class:`sam3d.data.io.VolumeError` naming it. Without a ``label`` entry (prediction)
    only the image is loaded.
    """

    def __init__(self, default_target: int = 1):
        super().__init__(KEYS, allow_missing_keys=True)
        self.default_target = int(default_target)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image = load_volume(d["image"], "image")
        d["image"] = _meta(image.array, image.affine, image.path)
        if d.get("label") is not None:
            label = load_volume(d["label"], "label")
            check_pair(image, label)
            target = int(d.get("target", self.default_target))
            d["label"] = _meta((label.array == target).astype(np.float32), label.affine,
                               label.path)
        return d


class OfficialLoadd(MapTransform):
    """Read image + label as the official loader does (:mod:`sam3d.data.official`): the raw
    array transposed by the dataset's ``spatial_index``, the image resampled to 1 mm with
    ``F.interpolate``; the label binarised to the target and resampled the same way (train,
    val: trilinear, thresholded at 0.5 next) or nearest-resized to the image grid (test: the
    official prompt grid). Output: 1×D×H×W float32 MetaTensors, already in (D, H, W) order at
    1 mm (identity affine: the official path ignores the file's geometry)."""

    def __init__(self, dataset: str, mode: str):
        super().__init__(KEYS, allow_missing_keys=True)
        self.dataset = get_dataset(dataset)
        self.mode = mode

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        order = self.dataset.spatial_index
        try:
            raw, zooms = read_volume(d["image"], order, "image")
            image = resample_image(raw, zooms)[0]
            label = None
            if d.get("label") is not None:
                lab, _ = read_volume(d["label"], order, "label")
                if lab.shape != raw.shape:
                    raise OfficialError(f"{d['label']}: label grid {lab.shape} differs from the "
                                        f"image's {raw.shape}")
                target = (lab == int(d.get("target", self.dataset.target))).astype(np.float32)
                label = (resize_label(target, tuple(image.shape[1:])).astype(np.float32)
                         if self.mode == "test" else resample_image(target, zooms)[0, 0].numpy())
        except OfficialError as exc:
            raise VolumeError(d.get("case", d["image"]), str(exc)) from None
        eye = np.eye(4)
        d["image"] = _meta(image[0].numpy(), eye, str(d["image"]))
        if label is not None:
            d["label"] = _meta(label, eye, str(d["label"]))
        return d


def input_error(exc: BaseException) -> VolumeError | None:
    """The :class:`VolumeError` behind MONAI's "applying transform …" wrapper, if any."""
    seen = exc
    while seen is not None:
        if isinstance(seen, VolumeError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Chain(Compose):
    """``Compose`` that re-raises a bad input file as the :class:`VolumeError` naming it,
    instead of MONAI's generic ``RuntimeError("applying transform …")``."""

    def __call__(self, input_, *args, **kwargs):
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as exc:
            err = input_error(exc)
            if err is None:
                raise
            raise err from None


def _meta(array: np.ndarray, affine: np.ndarray, path: str) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None],
                      affine=torch.as_tensor(affine, dtype=torch.float64),
                      meta={"filename_or_obj": path})


class Above:
    """Picklable ``select_fn`` for ``CropForegroundd``: voxels strictly above ``value``."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, x):
        return x > self.value


def deterministic_prefix(spec: DatasetSpec, mode: str, keys=KEYS,
                         preprocessing: str = "sam3d") -> list:
    """Load → orient (RAS) → resample to ``spec.spacing`` mm → (D,H,W) axes → clip; with
    ``preprocessing="official"`` load → the official axis order and resampling
    (:class:`OfficialLoadd`) → clip."""
    lo, hi = _window(spec)
    clip = ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True)
    binarise = AsDiscreted(keys="label", threshold=0.5, allow_missing_keys=True)
    if preprocessing == "official":
        return [OfficialLoadd(spec.name, mode), binarise, clip]
    if preprocessing != "sam3d":
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
    label_mode = "nearest" if mode == "test" else "bilinear"
    return [
        LoadCased(spec.target),
        Orientationd(keys=keys, axcodes="RAS", labels=None, allow_missing_keys=True),
        Spacingd(keys=keys, pixdim=spec.spacing, mode=("bilinear", label_mode),
                 dtype=np.float32, allow_missing_keys=True),
        binarise,
        Transposed(keys=keys, indices=(0, 3, 2, 1), allow_missing_keys=True),
        clip,
    ]


def augmentation(spec: DatasetSpec) -> list:
    """The official per-dataset augmentation (spec §4.2)."""
    if spec.augmentation == "3d":  # KiTS, LiTS: isotropic zoom
        return [RandZoomd(keys=KEYS, prob=0.8, min_zoom=0.85, max_zoom=1.25,
                          mode=("trilinear", "trilinear"))]
    # Pancreas, Colon ("dummy 2D"): rotation about the slice axis, in-plane zoom
    return [
        RandRotated(keys=KEYS, range_x=math.radians(30), prob=0.3, keep_size=False,
                    mode=("bilinear", "bilinear")),
        RandZoomd(keys=KEYS, prob=0.3, min_zoom=(1.0, 0.9, 0.9), max_zoom=(1.0, 1.1, 1.1),
                  mode=("trilinear", "trilinear")),
    ]


def build_transforms(spec: DatasetSpec, mode: str, crop: int = 128, seed: int | None = None,
                     preprocessing: str = "sam3d", sampling: str = "paper") -> Chain:
    """The transform chain of ``mode`` ("train", "val" or "test") for a ``crop``³ model.

    train: ±20 HU shift (p 0.5) → crop to the body (> window minimum) → z-score → augmentation
    → pad to round(1.2·crop) → pos/neg crop (2:1) of that size → random ``crop``³ → flips on
    each axis (p 0.5) → 0–3 quarter turns in the D–H plane (p 0.5) → channel ×3.
    val: pad → lesion-centred ``crop``³ → z-score → channel ×3.
    test: the whole volume, z-scored, channel ×3 (label resampled with nearest neighbour).
    ``preprocessing``: "sam3d" (canonical RAS, MONAI resampling) or "official" (the authors'
    raw axis order and ``F.interpolate``, as the released checkpoints saw the volumes; the
    four benchmarks only) — the steps after the deterministic prefix are the same.
    ``sampling="lesion"`` (not the paper) replaces the train and val crops by the ``crop``³ test
    ROI of a click on a lesion voxel, the lesions drawn with balanced weights
    (:mod:`sam3d.data.lesion_crops`); train flips and turns the volume before that crop, so
    the drawn voxel is at index ``crop // 2``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if crop < 8:
        raise ValueError(f"crop must be at least 8 voxels, got {crop}")
    if not spec.has_statistics:
        raise ValueError(f"dataset {spec.name!r} has no intensity statistics: compute them with "
                         "sam3d.data.stats.compute_statistics and spec.with_statistics(...)")
    lo, _ = _window(spec)
    zscore = NormalizeIntensityd(keys="image", subtrahend=spec.mean, divisor=spec.std)
    steps = deterministic_prefix(spec, mode, preprocessing=preprocessing)
    if mode == "train":
        big = round(1.2 * crop)
        steps += [
            RandShiftIntensityd(keys="image", offsets=20.0, prob=0.5),
            CropForegroundd(keys=KEYS, source_key="image", select_fn=Above(lo),
                            allow_smaller=True),
            zscore,
            *augmentation(spec),
            AsDiscreted(keys="label", threshold=0.5),
        ]
        flips = [
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=0),
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=1),
            RandFlipd(keys=KEYS, prob=0.5, spatial_axis=2),
            RandRotate90d(keys=KEYS, prob=0.5, max_k=3),
        ]
        if sampling == "lesion":
            steps += [*flips, LesionCentredCropd(KEYS, crop)]
        else:
            steps += [
                SpatialPadd(keys=KEYS, spatial_size=(big,) * 3),
                RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=(big,) * 3,
                                       pos=2, neg=1, num_samples=1),
                RandSpatialCropd(keys=KEYS, roi_size=(crop,) * 3, random_size=False),
                *flips,
            ]
    elif mode == "val" and sampling == "lesion":
        steps += [zscore, LesionCentredCropd(KEYS, crop)]
    elif mode == "val":
        steps += [
            SpatialPadd(keys=KEYS, spatial_size=(crop,) * 3),
            RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=(crop,) * 3,
                                   pos=1, neg=0, num_samples=1),
            zscore,
        ]
    else:
        steps += [zscore]
    steps.append(RepeatChanneld(keys="image", repeats=3))
    chain = Chain(steps)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


def _window(spec: DatasetSpec) -> tuple[float, float]:
    if spec.window is None:
        raise ValueError(f"dataset {spec.name!r} has no clip window")
    return float(spec.window[0]), float(spec.window[1])
