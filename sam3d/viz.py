"""Three-plane views of a CT volume with label overlays and clicks (matplotlib).

Arrays are in the model's axis order ``D×H×W``; :func:`to_dhw` turns a NIfTI-ordered
``X×Y×Z`` array into it. Planes: axial (fixed d, shows H×W), coronal (fixed h, D×W) and
sagittal (fixed w, D×H), drawn with the first array axis upwards.
"""

from __future__ import annotations

import numpy as np

PLANES = ("axial", "coronal", "sagittal")
#: Soft-tissue window used for abdominal CT figures (HU).
ABDOMEN_WINDOW = (-160.0, 240.0)
#: Lung window (HU).
LUNG_WINDOW = (-1000.0, 400.0)


def to_dhw(volume_xyz: np.ndarray) -> np.ndarray:
    """``X×Y×Z`` (NIfTI order, slice axis last) → ``D×H×W`` = ``Z×Y×X``."""
    if volume_xyz.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {volume_xyz.shape}")
    return np.ascontiguousarray(np.transpose(volume_xyz, (2, 1, 0)))


def plane(volume: np.ndarray, name: str, index: int) -> np.ndarray:
    """The 2D slice ``name`` at ``index`` of a ``D×H×W`` array."""
    axis = _axis(name)
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"{name} index {index} outside 0..{volume.shape[axis] - 1}")
    return np.take(volume, index, axis=axis)


def lesion_centre(label: np.ndarray) -> tuple[int, int, int]:
    """Voxel nearest the centroid of the nonzero voxels of ``label`` (the centre if empty)."""
    idx = np.argwhere(label > 0)
    if idx.size == 0:
        return tuple(int(s) // 2 for s in label.shape)
    centroid = idx.mean(axis=0)
    return tuple(int(v) for v in idx[np.argmin(((idx - centroid) ** 2).sum(axis=1))])


def show_planes(image: np.ndarray, label: np.ndarray | None = None, *,
                point: tuple[int, int, int] | None = None, clicks: np.ndarray | None = None,
                positive: np.ndarray | None = None, window=ABDOMEN_WINDOW,
                title: str | None = None, axes=None, label_color=(1.0, 0.2, 0.2),
                label_alpha: float = 0.45):
    """Draw the three planes through ``point`` (default: the lesion centre).

    ``image``, ``label``: ``D×H×W``; ``clicks``: ``k×3`` (d, h, w), drawn on every plane they lie
    within one voxel of (green: positive, yellow ×: negative, per ``positive``). Returns the
    figure.
    """
    import matplotlib.pyplot as plt

    if image.ndim != 3:
        raise ValueError(f"image must be D×H×W, got shape {image.shape}")
    if label is not None and label.shape != image.shape:
        raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
    if point is None:
        point = lesion_centre(label) if label is not None else tuple(s // 2 for s in image.shape)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), constrained_layout=True)
    else:
        fig = axes[0].figure
    clicks = np.zeros((0, 3), int) if clicks is None else np.asarray(clicks).reshape(-1, 3)
    positive = np.ones(len(clicks), bool) if positive is None else np.asarray(positive, bool)
    for ax, name in zip(axes, PLANES, strict=False):
        axis = _axis(name)
        index = int(point[axis])
        ax.imshow(plane(image, name, index), cmap="gray", vmin=window[0], vmax=window[1],
                  origin="lower", interpolation="nearest")
        if label is not None:
            mask = plane(label, name, index) > 0
            overlay = np.zeros((*mask.shape, 4))
            overlay[mask] = (*label_color, label_alpha)
            ax.imshow(overlay, origin="lower", interpolation="nearest")
        keep = np.abs(clicks[:, axis] - index) <= 1
        rest = [a for a in range(3) if a != axis]
        for pos, marker, color in ((True, "o", "lime"), (False, "x", "yellow")):
            sel = keep & (positive == pos)
            if sel.any():
                ax.scatter(clicks[sel, rest[1]], clicks[sel, rest[0]], s=28, marker=marker,
                           c=color, edgecolors="black" if pos else None, linewidths=0.6)
        ax.set_title(f"{name} ({'dhw'[axis]} = {index})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _axis(name: str) -> int:
    if name not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {name!r}")
    return PLANES.index(name)
