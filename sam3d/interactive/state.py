"""What the three-plane viewer knows, without any widget: slice positions, clicks, the mask.

Axis order is the displayed volume's ``D×H×W`` = (slice, row, column), the order of
``sam3d predict --click d,h,w`` (:mod:`sam3d.inference.geometry`) and of :mod:`sam3d.viz`.
Each plane shows one fixed index of one axis and draws the two others with the first of them
upwards (``imshow(origin="lower")``), so a mouse position ``(x, y)`` in data coordinates is

* axial (fixed ``d``): ``x = w``, ``y = h``;
* coronal (fixed ``h``): ``x = w``, ``y = d``;
* sagittal (fixed ``w``): ``x = h``, ``y = d``;

and the missing coordinate of the 3D point is the plane's own slice position. A voxel covers
``[i − 0.5, i + 0.5)`` in data coordinates, so a position rounds to the nearest voxel (halves
up) and anything outside ``[−0.5, n − 0.5)`` is outside the volume (:class:`ClickError`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..data.clicks import ClickError, check_clicks
from ..viz import PLANES

AXES = "dhw"
#: Overlay colour (RGBA) of the predicted mask.
MASK_RGBA = (1.0, 0.15, 0.15, 0.5)
#: Marker colours of positive and negative clicks (the status and click list use the same).
POSITIVE_COLOUR = "lime"
NEGATIVE_COLOUR = "magenta"


def plane_axis(plane: str) -> int:
    """The axis a plane holds fixed: axial 0 (d), coronal 1 (h), sagittal 2 (w)."""
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    return PLANES.index(plane)


def shown_axes(plane: str) -> tuple[int, int]:
    """``(vertical, horizontal)`` axes a plane draws: its y then x data coordinate."""
    axis = plane_axis(plane)
    rest = [a for a in range(3) if a != axis]
    return rest[0], rest[1]


def _voxel(value: object, size: int, what: str, plane: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ClickError(f"{plane} click: {what} must be a finite number, got {value!r}")
    if not -0.5 <= float(value) < size - 0.5:
        raise ClickError(f"{plane} click at {what} = {float(value):.1f} lies outside the volume "
                         f"(valid voxels 0..{size - 1})")
    return math.floor(float(value) + 0.5)


def plane_click(plane: str, x: object, y: object, position: object,
                shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """A click at data coordinates ``(x, y)`` on ``plane`` → the 3D voxel ``(d, h, w)``.

    ``position`` is the current ``(d, h, w)`` slice position of the three planes (only the
    clicked plane's own axis is used); ``shape`` the volume's ``(D, H, W)``. Raises
    :class:`sam3d.data.clicks.ClickError` when the click is off the image or not a number.
    """
    shape = _shape(shape)
    axis = plane_axis(plane)
    pos = check_clicks([position], shape)[0]
    vertical, horizontal = shown_axes(plane)
    point = [0, 0, 0]
    point[axis] = int(pos[axis])
    point[vertical] = _voxel(y, shape[vertical], f"y ({AXES[vertical]})", plane)
    point[horizontal] = _voxel(x, shape[horizontal], f"x ({AXES[horizontal]})", plane)
    return tuple(point)  # type: ignore[return-value]


def overlay_rgba(mask2d: np.ndarray, rgba=MASK_RGBA) -> np.ndarray:
    """``H×W×4`` float image: ``rgba`` where ``mask2d`` is nonzero, transparent elsewhere."""
    mask2d = np.asarray(mask2d)
    if mask2d.ndim != 2:
        raise ValueError(f"mask2d must be 2D, got shape {mask2d.shape}")
    out = np.zeros((*mask2d.shape, 4), dtype=np.float32)
    out[mask2d != 0] = rgba
    return out


def _shape(shape: object) -> tuple[int, int, int]:
    values = tuple(shape) if isinstance(shape, tuple | list) else ()
    if len(values) != 3 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in values
    ):
        raise ValueError(f"shape must be 3 positive integers (D, H, W), got {shape!r}")
    return tuple(int(s) for s in values)  # type: ignore[return-value]


class ViewerState:
    """Slice positions, the clicks with their labels and the current mask of one ``D×H×W``
    volume.

    ``position`` starts at the centre (or ``position``). ``prompts`` is the list of clicks in
    the order given, each ``((d, h, w), positive)``: one list, so a click and its label are
    added and undone together; :attr:`clicks` and :attr:`labels` are views of it. ``mask`` is
    ``None`` or a bool ``D×H×W`` array. Every mutator validates its input, and a new click,
    :meth:`undo` or :meth:`clear` drops the mask (it no longer matches the clicks).
    """

    def __init__(self, shape: tuple[int, int, int], position: object = None):
        self.shape = _shape(shape)
        self.position = (tuple(s // 2 for s in self.shape) if position is None
                         else self._point(position))
        self.prompts: list[tuple[tuple[int, int, int], bool]] = []
        self.mask: np.ndarray | None = None

    def _point(self, point: object) -> tuple[int, int, int]:
        return tuple(int(v) for v in check_clicks([point], self.shape)[0])  # type: ignore

    @property
    def clicks(self) -> list[tuple[int, int, int]]:
        """The clicked voxels ``(d, h, w)``, in order (a copy)."""
        return [p for p, _ in self.prompts]

    @property
    def labels(self) -> list[int]:
        """One label per click: 1 = positive, 0 = negative (a copy)."""
        return [int(positive) for _, positive in self.prompts]

    # ------------------------------------------------------------------------ mutators
    def set_slice(self, plane: str, index: object) -> None:
        """Move ``plane`` to slice ``index`` of its axis."""
        axis = plane_axis(plane)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                or not 0 <= index < self.shape[axis]:
            raise ValueError(f"{plane} slice must be an integer in 0..{self.shape[axis] - 1}, "
                             f"got {index!r}")
        pos = list(self.position)
        pos[axis] = int(index)
        self.position = tuple(pos)  # type: ignore[assignment]

    def go_to(self, point: object) -> None:
        """Move all three planes through the voxel ``(d, h, w)``."""
        self.position = self._point(point)

    def add_click(self, point: object, move: bool = True, *, positive: object = True
                  ) -> tuple[int, int, int]:
        """Add a 3D click ``(d, h, w)``, positive (``True``) or negative (``False``); with
        ``move`` every plane goes through it."""
        if not isinstance(positive, bool | np.bool_):
            raise TypeError(f"positive must be True (positive click) or False (negative), "
                            f"got {positive!r}")
        p = self._point(point)
        self.prompts.append((p, bool(positive)))
        self.mask = None
        if move:
            self.position = p
        return p

    def add_plane_click(self, plane: str, x: object, y: object, move: bool = True, *,
                        positive: object = True) -> tuple[int, int, int]:
        """Add the click at data coordinates ``(x, y)`` of ``plane`` (:func:`plane_click`)."""
        return self.add_click(plane_click(plane, x, y, self.position, self.shape), move,
                              positive=positive)

    def undo(self) -> tuple[tuple[int, int, int], bool] | None:
        """Remove the last click with its label; returns it (``None`` when there was none)."""
        if not self.prompts:
            return None
        self.mask = None
        return self.prompts.pop()

    def clear(self) -> None:
        """Forget every click and the mask."""
        self.prompts.clear()
        self.mask = None

    def set_mask(self, mask: object) -> None:
        """Store a ``D×H×W`` mask (bool or 0/1) of the volume's shape."""
        arr = np.asarray(mask)
        if arr.shape != self.shape:
            raise ValueError(f"mask shape {arr.shape} differs from the volume shape {self.shape}")
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"mask must be bool or integer (threshold first), got {arr.dtype}")
        self.mask = arr != 0

    # -------------------------------------------------------------------------- views
    def click_array(self) -> np.ndarray:
        """The clicks as a ``k×3`` int64 array (d, h, w)."""
        return np.asarray(self.clicks, dtype=np.int64).reshape(-1, 3)

    def label_array(self) -> np.ndarray:
        """The labels as a ``(k,)`` int64 array, row for row with :meth:`click_array`:
        1 = positive, 0 = negative."""
        return np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def counts(self) -> tuple[int, int]:
        """``(positive, negative)`` click counts."""
        positive = sum(self.labels)
        return positive, len(self.prompts) - positive

    def plane_clicks(self, plane: str, within: int = 0, positive: bool | None = None
                     ) -> np.ndarray:
        """``m×2`` ``(x, y)`` of the clicks within ``within`` slices of ``plane``'s position:
        all of them (``positive=None``), the positive or the negative ones."""
        axis = plane_axis(plane)
        vertical, horizontal = shown_axes(plane)
        pts = self.click_array()
        keep = np.abs(pts[:, axis] - self.position[axis]) <= within
        if positive is not None:
            keep &= self.label_array() == int(positive)
        return np.stack([pts[keep, horizontal], pts[keep, vertical]], axis=1).astype(float)

    def mask_plane(self, plane: str) -> np.ndarray:
        """The mask's 2D slice on ``plane`` (all False before a segmentation)."""
        axis = plane_axis(plane)
        if self.mask is None:
            shape = [s for a, s in enumerate(self.shape) if a != axis]
            return np.zeros(shape, dtype=bool)
        return np.take(self.mask, self.position[axis], axis=axis)

    def crosshair(self, plane: str) -> tuple[int, int]:
        """``(x, y)`` where the two other planes cut ``plane``."""
        vertical, horizontal = shown_axes(plane)
        return self.position[horizontal], self.position[vertical]

    def describe_clicks(self) -> str:
        """``"3 clicks (2+, 1−)"``."""
        positive, negative = self.counts()
        k = positive + negative
        return f"{k} click{'' if k == 1 else 's'} ({positive}+, {negative}−)"

    def summary(self) -> str:
        """One line for the status widget."""
        if self.mask is not None:
            return f"mask: {int(self.mask.sum())} voxels, {self.describe_clicks()}"
        if self.prompts:
            return f"{self.describe_clicks()}; press Segment"
        return "click on a plane to add a point"
