"""Dataset intensity statistics, recomputed the way the authors describe.

The official code hard-codes, per dataset, a clip window and a z-score mean/std; the authors
(3DSAM-adapter issue #40) say the window is the 0.5/99.5 percentiles of the foreground voxels
and the mean/std are those of the foreground voxels, over the training set. This module
recomputes them from the original-resolution volumes of a split, streaming one case at a
time: intensities are accumulated in a 1 HU histogram (exact percentiles to 1 HU, constant
memory) and in float64 sums for the mean and standard deviation.

"Foreground" is every labelled voxel (label > 0, organ and lesion) by default, or only the
lesion (``foreground="target"``); the official text does not say which, and the book reports
both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .io import load_case
from .layout import DatasetIndex
from .specs import get_spec

#: Histogram range in HU (values outside are clipped into the end bins).
HU_MIN, HU_MAX = -4096, 8191
FOREGROUNDS = ("any", "target")


@dataclass(frozen=True)
class IntensityStats:
    """Clip window (percentiles), mean and std of the foreground voxels of ``n_cases`` cases."""

    window: tuple[float, float]
    mean: float
    std: float
    n_voxels: int
    n_cases: int
    foreground: str
    percentiles: tuple[float, float] = (0.5, 99.5)

    def as_dict(self) -> dict:
        return asdict(self)


class IntensityAccumulator:
    """Streaming histogram + moments of foreground intensities."""

    def __init__(self) -> None:
        self.hist = np.zeros(HU_MAX - HU_MIN + 1, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self._mean = 0.0  # running mean and sum of squared deviations (Chan et al. merge),
        self._m2 = 0.0  # stable where total_sq / n - mean² would cancel
        self.cases = 0

    def add(self, values: np.ndarray) -> None:
        """Add the foreground intensities (HU, any shape) of one case."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        bins = np.clip(np.rint(v), HU_MIN, HU_MAX).astype(np.int64) - HU_MIN
        self.hist += np.bincount(bins, minlength=self.hist.size)
        batch_mean = float(v.mean())
        batch_m2 = float(np.square(v - batch_mean).sum())
        n = self.n + v.size
        delta = batch_mean - self._mean
        self._mean += delta * v.size / n
        self._m2 += batch_m2 + delta * delta * self.n * v.size / n
        self.n = n
        self.total += float(v.sum())
        self.total_sq += float(np.square(v).sum())
        self.cases += 1

    def percentile(self, q: float) -> float:
        """The value at percentile ``q`` (0–100) to 1 HU (nearest rank on rounded values)."""
        if self.n == 0:
            raise ValueError("no foreground voxels were added")
        rank = min(self.n - 1, max(0, int(np.ceil(q / 100.0 * self.n)) - 1))
        return float(np.searchsorted(np.cumsum(self.hist), rank + 1) + HU_MIN)

    def result(self, foreground: str, percentiles=(0.5, 99.5)) -> IntensityStats:
        mean = self._mean if self.n else float("nan")
        var = max(self._m2 / self.n, 0.0) if self.n else float("nan")
        lo, hi = (self.percentile(q) for q in percentiles)
        return IntensityStats((lo, hi), mean, float(np.sqrt(var)), self.n, self.cases,
                              foreground, tuple(percentiles))


def foreground_values(image: np.ndarray, label: np.ndarray, target: int,
                      foreground: str = "any") -> np.ndarray:
    """Intensities of the foreground voxels (label > 0, or label == target)."""
    if foreground not in FOREGROUNDS:
        raise ValueError(f"foreground must be one of {FOREGROUNDS}, got {foreground!r}")
    mask = label > 0 if foreground == "any" else label == target
    return image[mask]


def compute_statistics(index: DatasetIndex, case_ids: list[str], foreground: str = "any",
                       percentiles=(0.5, 99.5), progress: bool = False) -> IntensityStats:
    """Recompute window/mean/std over ``case_ids`` of a prepared dataset."""
    if not case_ids:
        raise ValueError("no cases to compute statistics over")
    if foreground == "target":  # cases without a lesion (or with target 0) have no such voxels
        case_ids = [i for i in case_ids
                    if index.cases[i].target and index.cases[i].target_voxels != 0]
        if not case_ids:
            raise ValueError("none of the cases has lesion voxels")
    acc = IntensityAccumulator()
    ids = case_ids
    if progress:
        from tqdm.auto import tqdm

        ids = tqdm(case_ids, desc="statistics", unit="case")
    for case_id in ids:
        entry = index.cases[case_id]
        image, label = load_case(entry.image, entry.label)
        acc.add(foreground_values(image.array, label.array, entry.target, foreground))
    return acc.result(foreground, percentiles)


def statistics_rows(name: str, recomputed: dict[str, IntensityStats] | None = None) -> list[dict]:
    """Rows for the statistics table: the official code's constants, the paper, recomputed.

    The paper reports none of these numbers, so its row says so instead of inventing them.
    """
    spec = get_spec(name)
    rows = []
    if spec.has_statistics:
        rows.append({"dataset": name, "source": "official code (hard-coded)",
                     "window_low": spec.window[0], "window_high": spec.window[1],
                     "mean": spec.mean, "std": spec.std, "cases": None})
    rows.append({"dataset": name, "source": "paper", "window_low": None, "window_high": None,
                 "mean": None, "std": None, "cases": None, "note": "not reported in the paper"})
    for label, s in (recomputed or {}).items():
        rows.append({"dataset": name, "source": f"recomputed ({label})",
                     "window_low": s.window[0], "window_high": s.window[1], "mean": s.mean,
                     "std": s.std, "cases": s.n_cases})
    return rows
