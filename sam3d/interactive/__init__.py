"""Interactive click prompts on a CT volume: an orthogonal three-plane viewer (matplotlib +
ipywidgets, live with ``%matplotlib widget``), the segmentation call behind its *Segment*
button, and an optional itkwidgets 3D view.

* :mod:`.state` — slice positions, clicks, mask; the click → 3D point mapping (no widgets);
* :mod:`.segment` — :class:`Segmenter`: clicks on the displayed volume → mask, as
  ``sam3d predict`` maps them;
* :mod:`.viewer` — :class:`ThreePlaneViewer`, the widget wiring;
* :mod:`.itk` — itkwidgets 3D view (never in headless runs: it waits for a browser).
"""

from .segment import Segmenter
from .state import ViewerState, plane_click
from .viewer import ThreePlaneViewer

__all__ = ["Segmenter", "ThreePlaneViewer", "ViewerState", "plane_click"]
