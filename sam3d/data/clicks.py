"""Seeded click simulation for promptable 3D segmentation, stored as JSON for exact replay.

Conventions: masks are numpy arrays in the model's axis order ``D×H×W`` (bool or integer; a
voxel is lesion when nonzero, so binarise multi-label maps first). A click is an integer voxel
index ``(d, h, w)`` inside the array; batches are ``k×3`` int64 arrays (columns d, h, w).
Randomness comes only from a :class:`numpy.random.Generator` given by the caller;
:func:`case_rng` derives one from ``(seed, case id, purpose)`` through SHA-256, independent of
Python's hash randomisation and of the order cases are visited.

Protocols of the official 3DSAM-adapter code: test = ``k`` lesion voxels uniformly *with
replacement*, k in 1, 3, 10 (:func:`lesion_clicks`); training = 10 lesion voxels (when the crop
has any) then 20 voxels uniformly from the *whole* crop (:func:`training_clicks`; the official
code calls the 20 "negative" points, but they carry no label and may fall inside the lesion);
validation = 10 lesion voxels, or 10 random voxels without lesion (:func:`validation_clicks`).

Prompt-position ablation (our definition; the paper only says "a point at the object centre,
adjacent to it, or on its margin"): take the largest connected lesion component
(26-connectivity; ties go to the component met first in C order), and its Euclidean distance
transform in millimetres (``distance_transform_edt(..., sampling=spacing)``; the array border
counts as background). With ``r`` the maximal EDT, the normalised depth is ``EDT / r``
(1 at the centre, about ``spacing / r`` on the boundary).

* ``"centre"``: a voxel of maximal EDT (ties broken by the rng);
* ``"adjacent"``: uniformly among voxels of normalised depth in [0.4, 0.6], halfway between
  centre and boundary;
* ``"margin"``: uniformly among the outermost voxel layer, i.e. voxels with a background
  6-neighbour (with isotropic spacing exactly the voxels of smallest EDT).

Only the adjacent band can be empty (tiny lesions); then the voxels of depth nearest to the band
are used, :class:`PositionBand` records ``fallback=True`` and a
:class:`PositionFallbackWarning` is issued. For small lesions the bands may overlap.

Error-driven refinement (as in the CVPR 2025 interactive 3D segmentation challenge,
:func:`error_click`): false negatives ``gt & ~pred`` and false positives ``pred & ~gt``; the
largest 26-connected error component by voxel count (FN wins ties); the click is its voxel
farthest from the component's boundary (maximal EDT in mm, array border = background), ties
broken by the lowest flat index, or uniformly when an rng is given.

Storage for exact replay (``ClickSet``, ``save_clicks``, ``load_clicks``) lives in
:mod:`sam3d.data.click_store`.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import operator
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

POSITIONS = ("centre", "adjacent", "margin")
ADJACENT_BAND = (0.4, 0.6)
AXES = "DHW"
_TOL = 1e-9
_ISO = (1.0, 1.0, 1.0)
Spacing = Sequence[float]  # voxel spacing in mm along D, H, W
_CONN26 = np.ones((3, 3, 3), dtype=bool)
_CONN6 = ndimage.generate_binary_structure(3, 1)


class EmptyMaskError(ValueError):
    """The mask has no lesion voxel, so no lesion click can be drawn."""


class ClickError(ValueError):
    """A click is malformed or lies outside its volume."""


class ClickFileError(ClickError):
    """A click file is malformed: format tag, types, duplicates, or a click outside its shape."""


class PositionFallbackWarning(UserWarning):
    """The requested prompt-position band was empty; the nearest depth was used instead."""


# ----------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _count(value: object, name: str) -> int:
    if not _is_int(value) or operator.index(value) < 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")
    return operator.index(value)  # type: ignore[arg-type]


def _mask(mask: object, name: str = "mask") -> np.ndarray:
    """Validate a D×H×W bool/integer array and return it as bool (lesion = nonzero)."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (D×H×W), got {type(mask).__name__}")
    if mask.ndim != 3:
        raise ValueError(f"{name} must be 3-D (D×H×W), got shape {mask.shape}")
    if mask.size == 0:
        raise ValueError(f"{name} has no voxel (shape {mask.shape})")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"{name} must be bool or integer (binarise it first), got {mask.dtype}")
    return mask if mask.dtype == bool else mask != 0


def _rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (case_rng), got {type(rng)}")
    return rng


def _triple(value: object) -> tuple:
    ok = isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict))
    return tuple(value) if ok else ()  # type: ignore[arg-type]


def _spacing(spacing: object) -> tuple[float, float, float]:
    """Validate a voxel spacing (mm along D, H, W): three finite positive numbers."""
    values = _triple(spacing)
    if len(values) != 3 or not all(
        isinstance(s, numbers.Real) and not isinstance(s, (bool, np.bool_))
        and math.isfinite(s) and s > 0 for s in values
    ):
        raise ValueError(f"spacing must be 3 finite positive numbers (D, H, W), got {spacing!r}")
    return tuple(float(s) for s in values)  # type: ignore[return-value]


def _shape(shape: object, name: str = "shape") -> tuple[int, int, int]:
    """Validate a volume shape: three positive integers (D, H, W)."""
    values = _triple(shape)
    if len(values) != 3 or not all(_is_int(s) and s > 0 for s in values):
        raise ValueError(f"{name} must be 3 positive integers (D, H, W), got {shape!r}")
    return tuple(int(s) for s in values)  # type: ignore[return-value]


def _unravel(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat C-order indices (k,) → k×3 int64 array of (d, h, w)."""
    return np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int64).reshape(-1, 3)


def check_clicks(points: object, shape: object, name: str = "click") -> np.ndarray:
    """Check user clicks against a D×H×W volume; return them as a k×3 int64 array.

    ``points`` is a sequence of (d, h, w) triples or a k×3 integer array. Raises
    :class:`ClickError` naming the offending click's index and coordinates when a click does
    not have 3 coordinates, has a non-integer coordinate (floats are rejected, even 3.0), or
    lies outside the volume (index < 0 or ≥ size along its axis).
    """
    dims = _shape(shape)
    if isinstance(points, np.ndarray):
        if points.size == 0:
            return np.zeros((0, 3), dtype=np.int64)
        if points.ndim != 2:
            raise ClickError(f"{name}s must be a k×3 array of (d, h, w), got shape {points.shape}")
    if isinstance(points, (str, bytes)) or not isinstance(points, Iterable):
        raise ClickError(f"{name}s must be a sequence of (d, h, w) triples, got {points!r}")
    rows = []
    for i, row in enumerate(points):
        if isinstance(row, (str, bytes)) or not isinstance(row, Iterable):
            raise ClickError(f"{name} {i} {row!r} must be 3 integer coordinates (d, h, w)")
        coords = tuple(int(v) if _is_int(v) else v for v in row)
        if len(coords) != 3:
            raise ClickError(f"{name} {i} {coords} must have 3 coordinates (d, h, w)")
        for axis, v in enumerate(coords):
            if type(v) is not int:  # bools and floats (even 3.0) are rejected
                raise ClickError(
                    f"{name} {i} {coords} has a non-integer {AXES[axis]} coordinate {v!r}; "
                    "clicks are integer voxel indices"
                )
            if not 0 <= v < dims[axis]:
                bound = "< 0" if v < 0 else f"≥ {dims[axis]}"
                raise ClickError(
                    f"{name} {i} {coords} is outside the volume of shape {dims} (D×H×W): "
                    f"{AXES[axis]} index {v} {bound}"
                )
        rows.append(coords)
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def check_label_rows(positive: object, negative_clicks: bool) -> None:
    """Raise :class:`ClickError` unless every row of ``positive`` (``B×N`` bool, True = a
    positive click) holds a positive click and, for a model without the negative-click
    extension (``negative_clicks=False``), no click is negative. The predictor checks this
    before any encoder pass; the model itself checks shapes only."""
    rows = np.atleast_2d(np.asarray(positive, dtype=bool))
    if not rows.any(1).all():
        raise ClickError("every prompt needs a positive click: a negative click alone marks "
                         "no object")
    if not negative_clicks and not rows.all():
        raise ClickError("this model has no negative-click extension (its configuration has "
                         "negative_clicks=False): give positive clicks only, or use a model "
                         "trained with the extension (e.g. tiny_interactive)")


# ------------------------------------------------------------------------ seeded sampling


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def case_rng(seed: int, case_id: str, purpose: str = "") -> np.random.Generator:
    """Generator derived stably from (seed, case id, purpose).

    ``default_rng([seed, sha256(case_id)[:8], sha256(purpose)[:8]])`` (little-endian 64-bit
    words): independent of Python's hash randomisation, the process and the visit order.
    """
    seed = _count(seed, "seed")
    if not isinstance(case_id, str) or not case_id:
        raise ValueError(f"case_id must be a non-empty string, got {case_id!r}")
    if not isinstance(purpose, str):
        raise TypeError(f"purpose must be a string, got {purpose!r}")
    return np.random.default_rng([seed, _hash64(case_id), _hash64(purpose)])


def random_clicks(shape: object, n: int, rng: np.random.Generator) -> np.ndarray:
    """n voxels uniformly from a whole D×H×W volume (with replacement) → n×3 int64."""
    dims, n, rng = _shape(shape), _count(n, "n"), _rng(rng)
    return _unravel(rng.integers(0, math.prod(dims), size=n), dims)


def lesion_clicks(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k lesion voxels of a D×H×W mask, uniformly with replacement → k×3 int64 (d, h, w)."""
    m, k, rng = _mask(mask), _count(k, "k"), _rng(rng)
    flat = np.flatnonzero(m)
    if flat.size == 0:
        raise EmptyMaskError(f"mask of shape {m.shape} has no lesion voxel; no lesion click")
    return _unravel(flat[rng.integers(0, flat.size, size=k)], m.shape)


def training_clicks(
    mask: np.ndarray, rng: np.random.Generator, n_lesion: int = 10, n_random: int = 20
) -> np.ndarray:
    """Official training prompts for one D×H×W crop → (n_lesion + n_random)×3 int64.

    ``n_lesion`` lesion voxels (with replacement) when the crop has any, then always
    ``n_random`` voxels uniformly from the whole crop, lesion first. The official code calls
    the random ones "negatives" although they carry no label (they may hit the lesion). A crop
    without lesion gives only the ``n_random`` random clicks.
    """
    m, rng = _mask(mask), _rng(rng)
    n_lesion, n_random = _count(n_lesion, "n_lesion"), _count(n_random, "n_random")
    parts = [lesion_clicks(m, n_lesion, rng)] if m.any() else []
    parts.append(random_clicks(m.shape, n_random, rng))
    return np.concatenate(parts)


def validation_clicks(mask: np.ndarray, rng: np.random.Generator, n: int = 10) -> np.ndarray:
    """Official validation prompts: n lesion voxels, or n random voxels without lesion → n×3."""
    m, rng, n = _mask(mask), _rng(rng), _count(n, "n")
    return lesion_clicks(m, n, rng) if m.any() else random_clicks(m.shape, n, rng)


# ------------------------------------------------------------------ components and depths


def _largest_component(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Largest 26-connected component of a D×H×W bool mask (ties: first in C order).

    Returns ``(crop, offset, size)``: the component's bounding box zero-padded by one voxel
    (so the array border counts as background), the (3,) offset that maps crop indices to
    full-array indices, and its voxel count; None when the mask is empty.
    """
    labels, n = ndimage.label(m, structure=_CONN26)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    lab = int(np.argmax(sizes)) + 1
    box = ndimage.find_objects(labels, max_label=lab)[lab - 1]
    return np.pad(labels[box] == lab, 1), np.array([s.start - 1 for s in box]), int(sizes[lab - 1])


@dataclass(frozen=True, eq=False)
class PositionBand:
    """Candidate voxels of one prompt position in the largest lesion component.

    ``points``: n×3 int64 (d, h, w) candidates; ``depth``: (n,) their normalised EDT (1 at the
    centre); ``radius_mm``: r, the component's maximal EDT in mm; ``fallback``: True when the
    requested band was empty and the voxels of nearest depth were used.
    """

    position: str
    points: np.ndarray
    depth: np.ndarray
    radius_mm: float
    fallback: bool


def position_candidates(mask: np.ndarray, position: str, spacing: Spacing = _ISO) -> PositionBand:
    """Candidate voxels for ``position`` in {"centre", "adjacent", "margin"} (module docstring)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    m, sp = _mask(mask), _spacing(spacing)
    comp = _largest_component(m)
    if comp is None:
        raise EmptyMaskError(f"mask of shape {m.shape} has no lesion voxel; no {position} click")
    crop, offset, _ = comp
    edt = ndimage.distance_transform_edt(crop, sampling=sp)
    r = float(edt.max())
    depth = edt / r
    fallback = False
    if position == "centre":
        sel = crop & (edt == r)
    elif position == "margin":
        sel = crop & ~ndimage.binary_erosion(crop, structure=_CONN6)
    else:
        lo, hi = ADJACENT_BAND
        gap = np.where(crop, np.maximum(np.maximum(lo - depth, depth - hi), 0.0), np.inf)
        sel = gap <= _TOL
        if not sel.any():
            fallback = True
            sel = gap <= gap.min() + _TOL
    return PositionBand(position, np.argwhere(sel) + offset, depth[sel], r, fallback)


def position_clicks(
    mask: np.ndarray, position: str, k: int, rng: np.random.Generator, spacing: Spacing = _ISO
) -> np.ndarray:
    """k clicks at ``position`` (with replacement) → k×3 int64; warns on a band fallback."""
    k, rng = _count(k, "k"), _rng(rng)
    band = position_candidates(mask, position, spacing)
    if band.fallback:
        warnings.warn(
            f"no voxel of the largest lesion component (r = {band.radius_mm:.2f} mm) has "
            f"normalised depth in {list(ADJACENT_BAND)}; using the {len(band.points)} voxel(s) "
            f"at the nearest depth(s) {sorted({round(float(d), 3) for d in band.depth})}",
            PositionFallbackWarning,
            stacklevel=2,
        )
    return band.points[rng.integers(0, len(band.points), size=k)]


def position_click(
    mask: np.ndarray, position: str, rng: np.random.Generator, spacing: Spacing = _ISO
) -> np.ndarray:
    """One click at ``position`` in {"centre", "adjacent", "margin"} → (3,) int64 (d, h, w)."""
    return position_clicks(mask, position, 1, rng, spacing)[0]


# ------------------------------------------------------------------------ error clicks


@dataclass(frozen=True)
class Click:
    """One click: voxel ``point`` (d, h, w) and whether it marks lesion (``positive``)."""

    point: tuple[int, int, int]
    positive: bool

    def __post_init__(self) -> None:
        point = check_clicks([self.point], (2**63 - 1,) * 3, name="Click point")[0]
        if not isinstance(self.positive, (bool, np.bool_)):
            raise TypeError(f"Click.positive must be a bool, got {self.positive!r}")
        object.__setattr__(self, "point", tuple(int(v) for v in point))
        object.__setattr__(self, "positive", bool(self.positive))


def error_click(
    pred: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator | None = None,
    spacing: Spacing = _ISO,
) -> Click | None:
    """Next refinement click for a D×H×W prediction against the ground truth, or None if equal.

    The deepest voxel (max EDT in mm) of the largest error component; positive when the
    component is missed lesion (FN), negative when it is false lesion (FP); FN wins size ties.
    """
    p, g, sp = _mask(pred, "pred"), _mask(gt, "gt"), _spacing(spacing)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if rng is not None:
        _rng(rng)
    fn, fp = _largest_component(g & ~p), _largest_component(p & ~g)
    if fn is None and fp is None:
        return None
    positive = fp is None or (fn is not None and fn[2] >= fp[2])
    crop, offset, _ = fn if positive else fp  # type: ignore[misc]
    edt = ndimage.distance_transform_edt(crop, sampling=sp)
    ties = np.argwhere(edt == edt.max())  # C order = increasing flat index
    pick = 0 if rng is None else int(rng.integers(0, len(ties)))
    return Click(tuple(int(v) for v in ties[pick] + offset), positive)
