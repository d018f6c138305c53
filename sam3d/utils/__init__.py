"""Small utilities shared by the whole package, with no torch import (so the data scripts stay
quick to start): atomic file writes (:mod:`sam3d.utils.files`) and safe archive extraction
(:mod:`sam3d.utils.archives`). File digests live in :mod:`sam3d.hashing`."""
