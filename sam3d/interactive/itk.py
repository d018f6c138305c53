"""Optional 3D view with itkwidgets 1.0: the volume and the predicted mask, and its slice planes
taken as a click.

**Never call these in a headless run.** After ``itkwidgets.view()`` every later notebook cell
waits for a browser to connect, so papermill, CI and the book build would hang; the chapter
guards them behind ``ITK_VIEWER`` (off by default). The viewer app itself loads from the
internet in the reader's browser.

itkwidgets reads a numpy array in ITK's index order, ``[z, y, x]``: a ``D×H×W`` array is shown
with x = w, y = h, z = d, and world position = index × spacing + origin. itkwidgets 1.0 does not
report a clicked point, but Python can read the positions of its three slicing planes
(``get_x_slice`` / ``get_y_slice`` / ``get_z_slice``); their intersection is a 3D point, which
:func:`slices_to_click` turns into a viewer click.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..data.clicks import ClickError, check_clicks


def _resolve(value: object, name: str) -> float:
    """A getter's value: a number, or a finished future/task holding one."""
    if hasattr(value, "done") and hasattr(value, "result"):
        if not value.done():
            raise ClickError(f"the itkwidgets {name} position has not arrived yet: read it in a "
                             "later cell, after the viewer has rendered in the browser")
        value = value.result()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ClickError(f"itkwidgets {name} position must be a finite number, got {value!r}")
    return float(value)


def slices_to_click(x_slice, y_slice, z_slice, shape: tuple[int, int, int],
                    spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> tuple[int, int, int]:
    """World positions of the X, Y, Z slicing planes → the click ``(d, h, w)``.

    ``shape`` is the ``D×H×W`` shape; ``spacing`` and ``origin`` are ``(x, y, z)`` as given to
    itkwidgets (numpy input: 1 and 0). Positions round to the nearest voxel; a plane outside the
    volume raises :class:`ClickError`.
    """
    sp = np.asarray(spacing, dtype=float)
    org = np.asarray(origin, dtype=float)
    if sp.shape != (3,) or org.shape != (3,) or not np.all(sp > 0):
        raise ValueError(f"spacing (positive) and origin must be 3 numbers (x, y, z), got "
                         f"{spacing!r}, {origin!r}")
    world = np.array([_resolve(v, n) for v, n in ((x_slice, "x_slice"), (y_slice, "y_slice"),
                                                   (z_slice, "z_slice"))])
    index_xyz = np.floor((world - org) / sp + 0.5).astype(np.int64)
    point = tuple(int(v) for v in index_xyz[::-1])
    return tuple(int(v) for v in check_clicks([point], shape, "itk slice point")[0])


def itk_view(image: np.ndarray, mask: np.ndarray | None = None, point=None, **kwargs):
    """``itkwidgets.view`` of a ``D×H×W`` image with the mask as a label map.

    ``point`` ``(d, h, w)`` places the three slicing planes through it. The view displays
    itself in the running cell; returns the itkwidgets ``Viewer``. Only in a notebook opened in
    a browser (see the module docstring).
    """
    import itkwidgets

    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be D×H×W, got shape {image.shape}")
    if mask is not None:
        mask = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
        kwargs["label_image"] = mask
    if point is not None:
        d, h, w = (int(v) for v in check_clicks([point], image.shape)[0])
        kwargs.update(x_slice=float(w), y_slice=float(h), z_slice=float(d))
    return itkwidgets.view(image=image, **kwargs)


def request_slices(viewer) -> tuple:
    """Ask a live itkwidgets viewer for its three slice positions (futures; read them in a
    later cell with :func:`slices_to_click`)."""
    return viewer.get_x_slice(), viewer.get_y_slice(), viewer.get_z_slice()
