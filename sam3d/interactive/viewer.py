"""The orthogonal three-plane viewer: matplotlib planes + ipywidgets controls.

::

    %matplotlib widget                       # live, in JupyterLab (ipympl)
    viewer = ThreePlaneViewer(segmenter.image, segmenter)
    viewer.show()

A left click on any plane adds a positive click at the 3D point under the mouse (the clicked
plane's slice gives the third coordinate, :func:`sam3d.interactive.state.plane_click`) and moves
the other planes through it; a right click (or a left click while the *negative clicks* toggle
is on, for touchpads) adds a negative click, which tells the model "not this" — when the model
has the negative-click extension (``segment.negative_clicks``; otherwise the click is refused
in the status line). Positive clicks are drawn as lime dots, negative ones as magenta crosses.
The mouse wheel steps a plane's slice; *Segment* calls ``segment(clicks, labels)`` and overlays
the mask on all three planes, the status line giving its size, the click counts and the time
the call took; *Undo* removes the last click (with its label), *Clear* all of them.

Without ipympl (papermill, tests, the book build) the figure is a plain Agg figure: the same
logic runs, clicks come from :meth:`ThreePlaneViewer.add_click` or from synthetic mouse events
(:meth:`ThreePlaneViewer.simulate_click`, sent through ``fig.canvas.callbacks.process`` as the
GUI would), and ``viewer.figure`` is a static picture of the state.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

import numpy as np

from ..data.clicks import ClickError
from ..viz import ABDOMEN_WINDOW, PLANES
from .state import (
    AXES,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    ViewerState,
    overlay_rgba,
    plane_axis,
)

#: Figure size (inches) and each plane's axes rectangle (figure fractions: left, bottom,
#: width, height). The images keep square voxels and sit centred in their rectangle, so the
#: rectangle's centre is the image centre (the browser test clicks there).
FIGSIZE = (9.9, 3.6)
AXES_RECTS = {
    "axial": (0.005, 0.02, 0.325, 0.85),
    "coronal": (0.3375, 0.02, 0.325, 0.85),
    "sagittal": (0.67, 0.02, 0.325, 0.85),
}
STATUS_CLASS = "sam3d-status"  # CSS classes the browser test looks for
SEGMENT_CLASS = "sam3d-segment"
NEGATIVE_CLASS = "sam3d-negative"
#: ``segment(clicks k×3 int64 (d, h, w), labels (k,) int64 1/0) → D×H×W mask``.
Segment = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: The mouse button of a negative click (matplotlib's ``MouseButton.RIGHT``).
RIGHT_BUTTON = 3
POSITIVE_ONLY = "this model takes positive clicks only (negative_clicks=False)"


def is_widget_backend() -> bool:
    """True when pyplot draws into ipympl canvases (``%matplotlib widget``)."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    return "ipympl" in backend or backend in ("widget", "ipympl")


class ThreePlaneViewer:
    """Axial, coronal and sagittal planes of a ``D×H×W`` image with click prompts.

    ``segment``: ``(clicks, labels)`` → ``D×H×W`` mask, with ``k×3`` (d, h, w) int64 clicks
    and ``(k,)`` int64 labels (1 = positive, 0 = negative), e.g. a
    :class:`sam3d.interactive.segment.Segmenter`; its ``negative_clicks`` attribute (False when
    absent) says whether it takes negative clicks. ``None`` disables *Segment*. ``window``:
    grey-level range (HU); ``position``: the starting ``(d, h, w)`` of the planes;
    ``reference``: an optional ``D×H×W`` ground-truth mask drawn as a yellow outline.
    """

    def __init__(self, image: np.ndarray, segment: Segment | None = None, *,
                 window=ABDOMEN_WINDOW, position=None, title: str | None = None,
                 reference: np.ndarray | None = None, live: bool | None = None):
        image = np.asarray(image)
        if image.ndim != 3 or 0 in image.shape:
            raise ValueError(f"image must be a non-empty D×H×W array, got shape {image.shape}")
        if segment is not None and not callable(segment):
            raise TypeError(f"segment must be callable (clicks → mask), got {type(segment)}")
        lo, hi = (float(v) for v in window)
        if not lo < hi:
            raise ValueError(f"window must be (low, high) with low < high, got {window!r}")
        if reference is not None:
            reference = np.asarray(reference) != 0
            if reference.shape != image.shape:
                raise ValueError(f"reference shape {reference.shape} differs from the image "
                                 f"shape {image.shape}")
        self.image, self.window, self._segment = image, (lo, hi), segment
        self.reference = reference
        self.state = ViewerState(tuple(int(s) for s in image.shape), position)
        self.live = is_widget_backend() if live is None else bool(live)
        self.title = title
        self.status = "click on a plane to add a point"
        self.last_error: str | None = None
        self.segment_seconds = 0.0
        self.negative_clicks = bool(getattr(segment, "negative_clicks", False))
        self.negative_mode = False  # the "negative clicks" toggle: left clicks are negative
        self._widget = None
        self._syncing = False
        self.figure, self.axes = self._make_figure()
        self._artists = {p: self._draw_plane(p) for p in PLANES}
        self.figure.canvas.mpl_connect("button_press_event", self._on_press)
        self.figure.canvas.mpl_connect("scroll_event", self._on_scroll)
        self.refresh()

    # ------------------------------------------------------------------------ figure
    def _make_figure(self):
        if self.live:
            import matplotlib.pyplot as plt

            with plt.ioff():
                fig = plt.figure(figsize=FIGSIZE)
            canvas = fig.canvas
            for trait, value in (("header_visible", False), ("footer_visible", False),
                                 ("toolbar_visible", False), ("resizable", False),
                                 ("capture_scroll", True)):
                if hasattr(canvas, trait):
                    setattr(canvas, trait, value)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=FIGSIZE)
            FigureCanvasAgg(fig)
        axes = {p: fig.add_axes(AXES_RECTS[p]) for p in PLANES}
        if self.title:
            fig.suptitle(self.title, fontsize=9, y=0.995)
        return fig, axes

    def _draw_plane(self, plane: str) -> dict:
        ax = self.axes[plane]
        axis = plane_axis(plane)
        blank = np.take(self.image, 0, axis=axis)
        img = ax.imshow(blank, cmap="gray", vmin=self.window[0], vmax=self.window[1],
                        origin="lower", interpolation="nearest")
        over = ax.imshow(overlay_rgba(np.zeros(blank.shape, bool)), origin="lower",
                         interpolation="nearest")
        hline = ax.axhline(0, color="deepskyblue", lw=0.6, alpha=0.7)
        vline = ax.axvline(0, color="deepskyblue", lw=0.6, alpha=0.7)
        dots = ax.scatter([], [], s=30, c=POSITIVE_COLOUR, edgecolors="black", linewidths=0.6,
                          zorder=3)
        negative = ax.scatter([], [], s=40, c=NEGATIVE_COLOUR, marker="X", edgecolors="black",
                              linewidths=0.6, zorder=3)
        ax.set_xticks([])
        ax.set_yticks([])
        return {"image": img, "overlay": over, "hline": hline, "vline": vline, "dots": dots,
                "negative": negative, "outline": None}

    def refresh(self) -> None:
        """Redraw every plane from :attr:`state` and update the widgets."""
        for plane in PLANES:
            art, axis = self._artists[plane], plane_axis(plane)
            index = self.state.position[axis]
            art["image"].set_data(np.take(self.image, index, axis=axis))
            art["overlay"].set_data(overlay_rgba(self.state.mask_plane(plane)))
            x, y = self.state.crosshair(plane)
            art["hline"].set_ydata([y, y])
            art["vline"].set_xdata([x, x])
            art["dots"].set_offsets(self.state.plane_clicks(plane, positive=True))
            art["negative"].set_offsets(self.state.plane_clicks(plane, positive=False))
            self._draw_outline(plane, index)
            self.axes[plane].set_title(f"{plane} ({AXES[axis]} = {index})", fontsize=9)
        self.figure.canvas.draw_idle()
        self._sync_widgets()

    def _draw_outline(self, plane: str, index: int) -> None:
        art = self._artists[plane]
        if art["outline"] is not None:
            art["outline"].remove()
            art["outline"] = None
        if self.reference is None:
            return
        ref = np.take(self.reference, index, axis=plane_axis(plane))
        if ref.any() and not ref.all():
            art["outline"] = self.axes[plane].contour(ref.astype(float), levels=[0.5],
                                                      colors="yellow", linewidths=0.8)

    # ------------------------------------------------------------------------ actions
    def _check_kind(self, positive: bool) -> None:
        if not positive and not self.negative_clicks:
            raise ClickError(f"{POSITIVE_ONLY}: negative click not added")

    def _added(self, p: tuple[int, int, int], positive: bool, where: str = "") -> None:
        kind = "positive" if positive else "negative"
        self._set_status(f"{kind} click {len(self.state.prompts)} at (d, h, w) = {p}{where}; "
                         f"{self.state.describe_clicks()}; press Segment")
        self.refresh()

    def add_click(self, point, positive: bool = True) -> tuple[int, int, int]:
        """Add a 3D click ``(d, h, w)``, positive or negative (validated; :class:`ClickError`
        if outside the volume, or negative with a model without the extension)."""
        self._check_kind(positive)
        p = self.state.add_click(point, positive=positive)
        self._added(p, positive)
        return p

    def add_plane_click(self, plane: str, x: float, y: float,
                        positive: bool = True) -> tuple[int, int, int]:
        """Add the click at data coordinates ``(x, y)`` of ``plane``."""
        self._check_kind(positive)
        p = self.state.add_plane_click(plane, x, y, positive=positive)
        self._added(p, positive, f" on the {plane} plane")
        return p

    def set_negative_mode(self, on: bool) -> None:
        """The *negative clicks* toggle: while on, a left click adds a negative click."""
        if on and not self.negative_clicks:
            self.negative_mode = False
            self._set_status(f"{POSITIVE_ONLY}: the negative-click toggle stays off")
        else:
            self.negative_mode = bool(on)
            self._set_status("left clicks add negative clicks (toggle off for positive ones)"
                             if self.negative_mode else "left clicks add positive clicks")
        if self._widget is not None and self._w["negative"].value != self.negative_mode:
            self._w["negative"].value = self.negative_mode

    def go_to(self, point) -> None:
        """Move all three planes through ``(d, h, w)``."""
        self.state.go_to(point)
        self.refresh()

    def set_slice(self, plane: str, index: int) -> None:
        self.state.set_slice(plane, index)
        self.refresh()

    def undo(self) -> None:
        """Remove the last click (positive or negative) and the mask it no longer matches."""
        last = self.state.undo()
        if last is None:
            self._set_status("nothing to undo: " + self.state.summary())
        else:
            kind = "positive" if last[1] else "negative"
            self._set_status(f"removed {kind} click at (d, h, w) = {last[0]}; "
                             + self.state.summary())
        self.refresh()

    def clear(self) -> None:
        self.state.clear()
        self._set_status("cleared: " + self.state.summary())
        self.refresh()

    def segment(self) -> np.ndarray:
        """Run ``segment`` on the clicks, store and overlay the mask; returns it (bool D×H×W)."""
        if self._segment is None:
            raise RuntimeError("this viewer has no segmentation function (segment=None)")
        clicks, labels = self.state.click_array(), self.state.label_array()
        if len(clicks) == 0:
            raise ClickError("no click: add at least one point before segmenting")
        self._set_status(f"segmenting with {self.state.describe_clicks()}…")
        t0 = time.perf_counter()
        mask = self._segment(clicks, labels)
        self.segment_seconds = time.perf_counter() - t0
        self.state.set_mask(mask)
        self._set_status(f"{self.state.summary()}, {self.segment_seconds:.1f} s")
        self.refresh()
        return self.state.mask

    # ----------------------------------------------------------------------- events
    def plane_of(self, ax) -> str | None:
        for plane, a in self.axes.items():
            if a is ax:
                return plane
        return None

    def _on_press(self, event) -> None:
        plane = self.plane_of(event.inaxes)
        toolbar = getattr(self.figure.canvas, "toolbar", None)
        button = getattr(event, "button", None)
        zooming = bool(getattr(toolbar, "mode", ""))  # a pan/zoom drag, not a click
        if plane is None or button not in (1, RIGHT_BUTTON) or zooming:
            return
        positive = button == 1 and not self.negative_mode
        try:
            self.add_plane_click(plane, event.xdata, event.ydata, positive)
            self.last_error = None
        except ClickError as exc:
            self.last_error = str(exc)
            self._set_status(f"error: {exc}")

    def _on_scroll(self, event) -> None:
        plane = self.plane_of(event.inaxes)
        if plane is None:
            return
        axis = plane_axis(plane)
        step = 1 if getattr(event, "button", "up") == "up" else -1
        index = int(np.clip(self.state.position[axis] + step, 0, self.state.shape[axis] - 1))
        self.set_slice(plane, index)

    def data_to_display(self, plane: str, x: float, y: float) -> tuple[float, float]:
        """Canvas pixel position (matplotlib display coordinates) of data point ``(x, y)``."""
        self.figure.canvas.draw()  # applies the equal aspect, so transData is final
        px, py = self.axes[plane].transData.transform((x, y))
        return float(px), float(py)

    def simulate_click(self, plane: str, x: float, y: float, button: int = 1):
        """Feed a synthetic click at data ``(x, y)`` of ``plane`` through the canvas
        callbacks, as a GUI backend does (``button`` 1 left, 3 right). Returns the
        :class:`MouseEvent`."""
        from matplotlib.backend_bases import MouseEvent

        px, py = self.data_to_display(plane, x, y)
        event = MouseEvent("button_press_event", self.figure.canvas, px, py, button=button)
        self.figure.canvas.callbacks.process("button_press_event", event)
        return event

    def to_png(self, dpi: int = 100) -> bytes:
        """The figure as PNG bytes (a static picture of the current state)."""
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    # ----------------------------------------------------------------------- widgets
    def _set_status(self, text: str) -> None:
        self.status = text
        if self._widget is not None:
            self._w["status"].value = f"<b>{html.escape(text)}</b>"

    def _sync_widgets(self) -> None:
        if self._widget is None:
            return
        self._syncing = True
        try:
            for plane in PLANES:
                self._w[plane].value = int(self.state.position[plane_axis(plane)])
        finally:
            self._syncing = False
        items = "".join(
            f"<li style='color:{POSITIVE_COLOUR if positive else NEGATIVE_COLOUR}'>"
            f"<span style='color:initial'>{'+' if positive else '−'} (d, h, w) = {p}</span></li>"
            for p, positive in self.state.prompts)
        self._w["clicks"].value = f"<ol>{items}</ol>" if items else "<i>no clicks yet</i>"
        if "png" in self._w:
            self._w["png"].value = self.to_png()

    def _press(self, action: Callable[[], object]) -> None:
        buttons = [self._w[k] for k in ("segment", "undo", "clear", "negative")]
        for b in buttons:
            b.disabled = True
        try:
            action()
        except Exception as exc:  # noqa: BLE001 — a widget callback must report, not raise
            self.last_error = str(exc)
            self._set_status(f"error: {exc}")
        finally:
            for b in buttons:
                b.disabled = False
            self._w["segment"].disabled = self._segment is None
            self._w["negative"].disabled = not self.negative_clicks

    @property
    def widget(self):
        """The ipywidgets box: figure, one slider per plane, buttons, status and clicks."""
        if self._widget is None:
            self._widget = self._build_widget()
            self._set_status(self.status)
            self._sync_widgets()
        return self._widget

    def _build_widget(self):
        import ipywidgets as W

        w = self._w = {}
        for plane in PLANES:
            axis = plane_axis(plane)
            slider = W.IntSlider(value=self.state.position[axis], min=0,
                                 max=self.state.shape[axis] - 1,
                                 description=f"{plane} ({AXES[axis]})",
                                 continuous_update=False,
                                 style={"description_width": "initial"})
            slider.observe(self._slider_moved(plane), names="value")
            w[plane] = slider
        w["segment"] = W.Button(description="Segment", button_style="primary",
                                disabled=self._segment is None, icon="play")
        w["segment"].add_class(SEGMENT_CLASS)
        w["undo"] = W.Button(description="Undo")
        w["clear"] = W.Button(description="Clear", button_style="warning")
        w["negative"] = W.ToggleButton(
            value=self.negative_mode, description="negative clicks", icon="minus",
            disabled=not self.negative_clicks,
            tooltip=("on: a left click adds a negative click (as a right click does)"
                     if self.negative_clicks else POSITIVE_ONLY))
        w["negative"].add_class(NEGATIVE_CLASS)
        w["negative"].observe(lambda change: self.set_negative_mode(change["new"]),
                              names="value")
        w["segment"].on_click(lambda _: self._press(self.segment))
        w["undo"].on_click(lambda _: self._press(self.undo))
        w["clear"].on_click(lambda _: self._press(self.clear))
        w["status"] = W.HTML()
        w["status"].add_class(STATUS_CLASS)
        w["legend"] = W.HTML(self._legend())
        w["clicks"] = W.HTML()
        if isinstance(self.figure.canvas, W.DOMWidget):
            view = self.figure.canvas
        else:  # Agg: a picture of the figure, redrawn with the state (no mouse clicks)
            w["png"] = view = W.Image(format="png")
        controls = W.VBox([W.HBox([w[p] for p in PLANES]),
                           W.HBox([w["segment"], w["undo"], w["clear"], w["negative"]]),
                           w["status"], w["legend"], w["clicks"]])
        return W.VBox([view, controls])

    def _legend(self) -> str:
        negative = ("right click (or the toggle) = negative" if self.negative_clicks
                    else f"negative clicks: off — {POSITIVE_ONLY}")
        return (f"<span style='color:{POSITIVE_COLOUR}'>●</span> left click = positive &nbsp; "
                f"<span style='color:{NEGATIVE_COLOUR}'>✖</span> {html.escape(negative)} "
                "&nbsp; <span style='color:red'>■</span> mask"
                + (" &nbsp; <span style='color:#c9a800'>□</span> reference outline"
                   if self.reference is not None else ""))

    def _slider_moved(self, plane: str):
        def moved(change) -> None:
            if not self._syncing and change["new"] != self.state.position[plane_axis(plane)]:
                self.set_slice(plane, int(change["new"]))
        return moved

    def show(self):
        """Display the widget (in a notebook) and return it."""
        from IPython.display import display

        display(self.widget)
        return self.widget

    def close(self) -> None:
        """Release the figure (and its pyplot manager when live)."""
        if self.live:
            import matplotlib.pyplot as plt

            plt.close(self.figure)
        if self._widget is not None:
            self._widget.close()
