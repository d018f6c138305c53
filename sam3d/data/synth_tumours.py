"""Synthetic tumours pasted into real CT, after Hu et al., "Label-Free Liver Tumor
Segmentation" (CVPR 2023), written from the paper's description.

Per tumour (:func:`paste_tumours`), all drawn from ``numpy.random.default_rng(seed)``:

* **location**: a voxel of the organ mask whose distance to the organ's border is at least the
  tumour's largest semi-axis plus ``border_mm`` (and the mass-effect displacement; the volume's
  edge counts as a border), away from
  bright vessels (organ voxels brighter than the organ mean by ``vessel_hu``, when set) and
  from lesions already in the label (where no voxel qualifies, the tumour is scaled by
  :data:`SHRINK` until one does, or until it would be smaller than ``radius_mm``'s low end);
* **shape**: an ellipsoid with semi-axes drawn from ``radius_mm``, randomly rotated, whose
  coordinates are displaced by a smooth random field (Gaussian-filtered noise, largest
  displacement ``elastic`` × the mean semi-axis): an elastic deformation;
* **texture**: Gaussian noise smoothed over ``texture_mm`` and scaled to ``texture_hu``
  standard deviation over the tumour, around a mean HU (the tumour's mean): the organ's mean
  HU plus a contrast drawn from ``hu`` (``hu_mode`` "relative": darker than the parenchyma for
  liver) or drawn from ``hu`` itself (``hu_mode`` "absolute": soft-tissue nodules in lung);
* **edge**: the mask blurred over ``edge_mm`` is the blending weight α (kept inside the organ):
  ``ct ← (1 − α)·ct + α·texture``; the tumour's label is α ≥ 0.5;
* **mass effect** (optional): before pasting, the CT and its label around the tumour are pushed
  outwards by up to ``mass_effect_mm``; **capsule** (optional, probability ``capsule_prob``):
  ``capsule_hu`` added on a thin rim, peaking at the label's edge.

Arrays are (x, y, z), ``spacing`` in mm along them. The output label is the input label with
the tumour voxels set to ``target``; nothing outside the tumours' local boxes changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

HU_MODES = ("relative", "absolute")
SHRINK = 0.8  # scale of a tumour redrawn smaller where the organ has no room for it
TRIES = 200  # candidate centres drawn per size before a tumour is shrunk


def _pair(name: str, value, low: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or (low is not None and a < low):
        raise ValueError(f"{name} must be finite with {'' if low is None else f'{low} ≤ '}"
                         f"low ≤ high, got {value!r}")
    return a, b


@dataclass(frozen=True)
class TumourSpec:
    """How to draw tumours (see the module docstring); lengths in mm, intensities in HU."""

    radius_mm: tuple[float, float] = (4.0, 12.0)
    elastic: float = 0.25
    hu_mode: str = "relative"
    hu: tuple[float, float] = (-70.0, -25.0)
    texture_hu: float = 8.0
    texture_mm: float = 2.0
    edge_mm: float = 1.0
    border_mm: float = 3.0
    mass_effect_mm: float = 1.0
    capsule_prob: float = 0.3
    capsule_hu: float = 20.0
    vessel_hu: float | None = 60.0

    def __post_init__(self):
        object.__setattr__(self, "radius_mm", _pair("radius_mm", self.radius_mm, 0.5))
        object.__setattr__(self, "hu", _pair("hu", self.hu))
        if self.hu_mode not in HU_MODES:
            raise ValueError(f"hu_mode must be one of {HU_MODES}, got {self.hu_mode!r}")
        for name, lo, hi in (("elastic", 0.0, 0.6), ("texture_hu", 0.0, 200.0),
                             ("texture_mm", 0.0, 20.0), ("edge_mm", 0.0, 10.0),
                             ("border_mm", 0.0, 50.0), ("mass_effect_mm", 0.0, 5.0),
                             ("capsule_prob", 0.0, 1.0), ("capsule_hu", -200.0, 200.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        if self.mass_effect_mm > 0.5 * self.radius_mm[0]:
            raise ValueError(f"mass_effect_mm ({self.mass_effect_mm}) must be at most 0.5 × the "
                             f"smallest radius ({self.radius_mm[0]})")
        if self.vessel_hu is not None and (isinstance(self.vessel_hu, bool)
                                           or not self.vessel_hu > 0):
            raise ValueError(f"vessel_hu must be positive or None, got {self.vessel_hu!r}")

    def params(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Pasted:
    """Result of :func:`paste_tumours`: X×Y×Z ``image`` (float32 HU), ``label`` (input dtype),
    ``organ`` (bool, after the mass effect) and one record per tumour."""

    image: np.ndarray
    label: np.ndarray
    organ: np.ndarray
    tumours: list[dict]


def _check_inputs(image, label, organ, spacing, n, seed, target):
    image, label, organ = np.asarray(image), np.asarray(label), np.asarray(organ)
    if image.ndim != 3 or label.shape != image.shape or organ.shape != image.shape:
        raise ValueError(f"image, label and organ must be 3-D of one shape, got {image.shape}, "
                         f"{label.shape}, {organ.shape}")
    if organ.dtype != bool:
        raise ValueError(f"organ must be a boolean mask, got dtype {organ.dtype}")
    if not organ.any():
        raise ValueError("organ mask is empty")
    sp = np.asarray(spacing, float)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    for name, v, least in (("n", n, 1), ("seed", seed, 0), ("target", target, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {v!r}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer array, got dtype {label.dtype}")
    return image, label, organ, sp


def paste_tumours(image, label, organ, spacing, n: int, seed: int,
                  spec: TumourSpec = TumourSpec(), target: int = 2) -> Pasted:
    """Paste ``n`` tumours drawn with ``seed`` into copies of ``image``/``label`` (X×Y×Z).

    ``organ``: X×Y×Z bool mask of the organ to paste into; its voxels that already carry
    ``target`` in ``label`` are avoided. Raises ValueError for bad arguments and when the organ
    has no room left for a tumour of the drawn size.
    """
    image, label, organ, sp = _check_inputs(image, label, organ, spacing, n, seed, target)
    if not isinstance(spec, TumourSpec):
        raise ValueError(f"spec must be a TumourSpec, got {type(spec).__name__}")
    rng = np.random.default_rng(int(seed))
    img = image.astype(np.float32, copy=True)
    lab, org = label.copy(), organ.copy()
    organ_hu = float(np.mean(img[org & (lab != target)])) if (org & (lab != target)).any() \
        else float(np.mean(img[org]))
    tumours = []
    room = _Room(img, lab, org, sp, target, organ_hu, spec)
    for k in range(n):
        axes = np.sort(rng.uniform(*spec.radius_mm, size=3))[::-1]
        centre = room.draw(rng, lab, float(axes[0]))
        while centre is None and axes[0] * SHRINK >= spec.radius_mm[0]:
            axes = axes * SHRINK  # no room for this size: the same shape, smaller
            centre = room.draw(rng, lab, float(axes[0]))
        if centre is None:
            raise ValueError(f"no room in the organ for tumour {k + 1} of {n} (largest "
                             f"semi-axis {axes[0]:.1f} mm, border {spec.border_mm} mm)")
        tumours.append(_paste_one(rng, img, lab, org, sp, target, organ_hu, centre, axes, spec))
    return Pasted(image=img, label=lab, organ=org, tumours=tumours)


class _Room:
    """Where tumours may go: the organ's border distance and its bright vessels, computed once
    per :func:`paste_tumours` call from the input (the mass effect moves the organ's border by
    less than the margin kept for it)."""

    def __init__(self, img, lab, org, sp, target, organ_hu, spec):
        self.box = ndimage.find_objects(org.astype(np.uint8))[0]
        inside = org[self.box] & (lab[self.box] != target)
        # padded with background: the volume's edge is a border too (the organ may go on)
        self.dist = ndimage.distance_transform_edt(np.pad(inside, 1),
                                                   sampling=sp)[1:-1, 1:-1, 1:-1]
        self.vessels = np.zeros(img.shape, bool)
        if spec.vessel_hu is not None:
            smooth = ndimage.gaussian_filter(img[self.box], 1.0 / sp, truncate=2.0)
            self.vessels[self.box] = org[self.box] & (smooth > organ_hu + spec.vessel_hu)
        self.sp, self.target, self.spec = sp, target, spec

    def draw(self, rng, lab, radius: float):
        """A voxel index (x, y, z) for a tumour of largest semi-axis ``radius`` mm, or None:
        up to :data:`TRIES` voxels deep enough in the organ are drawn, the first with no
        lesion or vessel voxel within ``radius + border_mm`` is taken."""
        spec, sp = self.spec, self.sp
        where = np.flatnonzero(self.dist >= radius + spec.border_mm + spec.mass_effect_mm)
        if where.size == 0:
            return None
        clear = radius + spec.border_mm
        for pick in rng.integers(where.size, size=TRIES):
            local = np.unravel_index(where[pick], self.dist.shape)
            centre = tuple(int(i + s.start) for i, s in zip(local, self.box, strict=True))
            near = _local_box(centre, clear, sp, lab.shape)
            away = (lab[near] == self.target) | self.vessels[near]
            if not away.any():
                return centre
            grids = np.meshgrid(*[(np.arange(b.start, b.stop) - c) * d
                                  for b, c, d in zip(near, centre, sp, strict=True)],
                                indexing="ij")
            if float(np.sqrt(sum(g ** 2 for g in grids))[away].min()) >= clear:
                return centre
        return None


def _local_box(centre, half_mm, sp, shape):
    half = np.ceil(half_mm / sp).astype(int)
    return tuple(slice(max(0, c - h), min(n, c + h + 1))
                 for c, h, n in zip(centre, half, shape, strict=True))


def _paste_one(rng, img, lab, org, sp, target, organ_hu, centre, axes, spec) -> dict:
    box = _local_box(centre, 3.0 * axes[0] + 2.0 * spec.edge_mm, sp, img.shape)
    grids = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * d
                          for s, c, d in zip(box, centre, sp, strict=True)], indexing="ij")
    p = np.stack(grids)  # 3×x×y×z mm offsets from the centre
    rot = Rotation.random(random_state=rng).as_matrix()
    # elastic deformation: a smooth displacement field of the ellipsoid's coordinates
    field = rng.standard_normal(p.shape)
    smooth_vox = 0.5 * float(np.mean(axes)) / sp
    field = np.stack([ndimage.gaussian_filter(f, smooth_vox, mode="nearest") for f in field])
    peak = float(np.abs(field).max())
    if peak > 0:
        field *= spec.elastic * float(np.mean(axes)) / peak
    q = np.einsum("ij,j...->i...", rot.T, p + field)
    mask = np.sum((q / axes[:, None, None, None]) ** 2, axis=0) <= 1.0
    # mass effect: the surroundings pushed outwards (output(p) = input(p·k(r)), k < 1 near 0)
    push = rng.uniform(0.0, spec.mass_effect_mm) if spec.mass_effect_mm > 0 else 0.0
    if push > 0:
        r = np.sqrt(np.sum(p ** 2, axis=0))
        k = 1.0 - (push / axes[0]) * np.exp(-(r / axes[0]) ** 2)
        src = np.stack([(p[i] * k) / sp[i] + (centre[i] - box[i].start) for i in range(3)])
        img[box] = ndimage.map_coordinates(img[box], src, order=1, mode="nearest")
        lab[box] = ndimage.map_coordinates(lab[box], src, order=0, mode="nearest")
        org[box] = ndimage.map_coordinates(org[box].astype(np.uint8), src, order=0,
                                           mode="nearest").astype(bool)
    organ_local = org[box] & (lab[box] != target)
    alpha = (ndimage.gaussian_filter(mask.astype(np.float32), spec.edge_mm / sp)
             if spec.edge_mm > 0 else mask.astype(np.float32))
    alpha *= organ_local
    if spec.hu_mode == "relative":
        mean_hu = organ_hu + rng.uniform(*spec.hu)
    else:
        mean_hu = rng.uniform(*spec.hu)
    noise = rng.standard_normal(mask.shape)
    if spec.texture_mm > 0:
        noise = ndimage.gaussian_filter(noise, spec.texture_mm / sp, mode="nearest")
    # zero mean and unit deviation over the tumour, so its mean HU is the one drawn
    core = mask & organ_local if (mask & organ_local).any() else mask
    noise = noise - float(noise[core].mean())
    std = float(noise[core].std())
    texture = mean_hu + (noise / std if std > 0 else noise) * spec.texture_hu
    capsule = bool(rng.random() < spec.capsule_prob)
    out = (1.0 - alpha) * img[box] + alpha * texture
    if capsule:
        out += spec.capsule_hu * 4.0 * alpha * (1.0 - alpha)
    img[box] = out.astype(np.float32)
    tumour = (alpha >= 0.5) & organ_local
    lab[box][tumour] = target
    where = np.argwhere(tumour)
    if where.size == 0:  # cannot happen for a centre this deep in the organ; kept explicit
        raise ValueError(f"tumour at {centre} has no voxel inside the organ")
    lo, hi = where.min(0), where.max(0) + 1
    return {"centre": [int(c) for c in centre], "semi_axes_mm": [round(float(a), 3) for a in axes],
            "mean_hu": round(float(mean_hu), 3), "organ_hu": round(organ_hu, 3),
            "mass_effect_mm": round(float(push), 3), "capsule": capsule,
            "voxels": int(tumour.sum()),
            "bbox": [[int(a + s.start), int(b + s.start)]
                     for a, b, s in zip(lo, hi, box, strict=True)]}
