"""Click files for exact replay: one JSON file per evaluation holding every case's clicks.

``{"format": "sam3d-clicks/1", "cases": [<ClickSet.to_dict()>, ...]}``, one case per line,
written atomically (temporary file, then rename) and validated on load (format, types, every
click inside its volume, no case repeated). Clicks come from :mod:`sam3d.data.clicks`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_text
from .clicks import Click, ClickError, ClickFileError, _is_int, _shape, check_clicks

FORMAT = "sam3d-clicks/1"
DEFAULT_SPACE = "DHW voxel indices of the model's 1 mm grid"
_KEYS = ("case", "protocol", "seed", "shape", "space", "points", "positive")


@dataclass(frozen=True)
class ClickSet:
    """Clicks of one case for exact replay: ``points`` (d, h, w) inside ``shape`` (D, H, W).

    ``positive[i]`` labels ``points[i]``; ``protocol`` names how they were drawn (e.g.
    "test-k10"), ``seed`` is the seed given to :func:`case_rng`. Points given as a k×3 array
    are normalised to a list of int tuples.
    """

    case: str
    points: list[tuple[int, int, int]]
    positive: list[bool]
    protocol: str
    seed: int
    shape: tuple[int, int, int]
    space: str = DEFAULT_SPACE

    def __post_init__(self) -> None:
        for key in ("case", "protocol", "space"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ClickError(f"ClickSet.{key} must be a non-empty string, got {value!r}")
        where = f"case {self.case!r}"
        if not _is_int(self.seed) or self.seed < 0:
            raise ClickError(f"{where}: seed must be an integer ≥ 0, got {self.seed!r}")
        try:
            shape = _shape(self.shape, f"{where}: shape")
        except ValueError as exc:
            raise ClickError(str(exc)) from None
        points = check_clicks(self.points, shape, name=f"{where}: click")
        flags = self.positive
        positive = list(flags) if isinstance(flags, (list, tuple, np.ndarray)) else [None]
        if not all(isinstance(b, (bool, np.bool_)) for b in positive):
            raise ClickError(f"{where}: positive must be a list of only bools, got {flags!r}")
        if len(positive) != len(points):
            raise ClickError(f"{where}: {len(points)} points but {len(positive)} positive flags")
        object.__setattr__(self, "points", [tuple(int(v) for v in row) for row in points])
        object.__setattr__(self, "positive", [bool(b) for b in positive])
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "seed", int(self.seed))

    @classmethod
    def from_clicks(
        cls, case: str, clicks: Sequence[Click], protocol: str, seed: int, shape: object
    ) -> ClickSet:
        """Build from a sequence of :class:`Click` (e.g. successive :func:`error_click`)."""
        if not all(isinstance(c, Click) for c in clicks):
            raise TypeError("clicks must all be Click instances")
        return cls(case, [c.point for c in clicks], [c.positive for c in clicks], protocol,
                   seed, shape)  # type: ignore[arg-type]

    def array(self) -> np.ndarray:
        """The points as a k×3 int64 array (d, h, w)."""
        return np.array(self.points, dtype=np.int64).reshape(-1, 3)

    def to_dict(self) -> dict:
        """JSON-ready dict (lists instead of tuples)."""
        return {"case": self.case, "protocol": self.protocol, "seed": self.seed,
                "shape": list(self.shape), "space": self.space,
                "points": [list(p) for p in self.points], "positive": list(self.positive)}

    @classmethod
    def from_dict(cls, data: object) -> ClickSet:
        """Inverse of :meth:`to_dict`; raises :class:`ClickError` on missing/unknown keys."""
        if not isinstance(data, dict):
            raise ClickError(f"a case must be a JSON object, got {type(data).__name__}")
        where = f"case {data.get('case')!r}"
        missing = [k for k in _KEYS if k not in data and k != "space"]
        unknown = sorted(set(data) - set(_KEYS))
        if missing or unknown:
            raise ClickError(f"{where}: missing keys {missing}, unknown keys {unknown}")
        for key in ("points", "positive", "shape"):
            if not isinstance(data[key], list):
                raise ClickError(f"{where}: {key} must be a list, got {data[key]!r}")
        return cls(data["case"], data["points"], data["positive"], data["protocol"],
                   data["seed"], tuple(data["shape"]), data.get("space", DEFAULT_SPACE))


def _check_unique(sets: Sequence[ClickSet], where: str) -> None:
    seen: set[tuple[str, str, int]] = set()
    for s in sets:
        key = (s.case, s.protocol, s.seed)
        if key in seen:
            raise ClickFileError(f"{where}: duplicate case/protocol/seed {key}")
        seen.add(key)


def save_clicks(path: str | os.PathLike, sets: Iterable[ClickSet]) -> Path:
    """Write click sets to one JSON file atomically (temporary file, then rename)."""
    path = Path(path)
    sets = list(sets)
    if not all(isinstance(s, ClickSet) for s in sets):
        raise TypeError("save_clicks takes an iterable of ClickSet")
    _check_unique(sets, str(path))
    lines = ",\n".join(json.dumps(s.to_dict(), ensure_ascii=False) for s in sets)
    text = f'{{"format": "{FORMAT}", "cases": [\n{lines}\n]}}\n'
    return atomic_write_text(path, text)


def load_clicks(path: str | os.PathLike) -> list[ClickSet]:
    """Read a file written by :func:`save_clicks`, validating format, types and bounds."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # binary garbage is malformed too
        raise ClickFileError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ClickFileError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    if set(doc) != {"format", "cases"} or not isinstance(doc["cases"], list):
        raise ClickFileError(f"{path}: expected keys 'format' and 'cases' (a list)")
    sets = []
    for i, item in enumerate(doc["cases"]):
        try:
            sets.append(ClickSet.from_dict(item))
        except ClickError as exc:
            raise ClickFileError(f"{path}: cases[{i}]: {exc}") from None
    _check_unique(sets, str(path))
    return sets
