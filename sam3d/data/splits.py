"""Train/validation/test splits.

The official fold files (converted from the authors' ``datafile/*/split.pkl``) ship with the
package under ``sam3d/data/splits/``; fold 0 is the paper's. Any other dataset — the samples,
the phantoms, a user's own folder — gets a seeded 70/10/20 split from :func:`make_split`.
Split files are JSON: ``{"format": "sam3d-split/1", "train": [...], "val": [...],
"test": [...], "seed": 0, "source": "..."}``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_json

FORMAT = "sam3d-split/1"
PARTS = ("train", "val", "test")
OFFICIAL = ("kits", "lits", "pancreas", "colon")


class SplitError(ValueError):
    """A split is malformed or does not fit the dataset."""


def official_split(name: str, fold: int = 0) -> dict[str, list[str]]:
    """Case ids of fold ``fold`` (0–4) of the official split of ``name``."""
    if name not in OFFICIAL:
        raise SplitError(f"no official split for {name!r}; official: {', '.join(OFFICIAL)}")
    doc = json.loads(resources.files("sam3d.data").joinpath(f"splits/{name}.json")
                     .read_text(encoding="utf-8"))
    folds = doc["folds"]
    if not 0 <= fold < len(folds):
        raise SplitError(f"{name}: fold must be in 0..{len(folds) - 1}, got {fold}")
    return {part: sorted(folds[fold][part]) for part in PARTS}


def make_split(case_ids, seed: int = 0, fractions=(0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """A seeded split of ``case_ids`` into train/val/test by ``fractions``.

    Independent of the input order (ids are sorted first). With at least three cases every
    part gets at least one; validation and test sizes are rounded, train takes the rest.
    """
    case_ids = list(case_ids)  # an iterator would be exhausted by the first pass
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise SplitError("case ids are not unique")
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise SplitError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{fractions}")
    n = len(ids)
    if n < 3:
        raise SplitError(f"need at least 3 cases to split, got {n}")
    n_val = max(1, round(n * f[1])) if f[1] > 0 else 0
    n_test = max(1, round(n * f[2])) if f[2] > 0 else 0
    if n - n_val - n_test < 1:
        raise SplitError(f"{n} cases leave no training case with fractions {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {"train": sorted(shuffled[n_val + n_test:]),
            "val": sorted(shuffled[:n_val]),
            "test": sorted(shuffled[n_val:n_val + n_test])}


def save_split(path: str | Path, split: dict[str, list[str]], seed: int | None = None,
               source: str = "") -> Path:
    """Write a split file atomically."""
    check_split(split)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "seed": seed, "source": source,
           **{part: sorted(split[part]) for part in PARTS}}
    return atomic_write_json(path, doc)


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split file written by :func:`save_split`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitError(f"{path}: cannot read split ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SplitError(f"{path}: not a {FORMAT} file")
    # No list() coercion: it would turn a string into its characters; check_split rejects it.
    split = {part: doc.get(part, []) for part in PARTS}
    check_split(split, str(path))
    return split


def check_split(split: dict[str, list[str]], where: str = "split") -> None:
    """Parts must be lists of strings and must not overlap."""
    seen: dict[str, str] = {}
    for part in PARTS:
        ids = split.get(part)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SplitError(f"{where}: {part!r} must be a list of case ids")
        for i in ids:
            if i in seen:
                raise SplitError(f"{where}: case {i!r} is in both {seen[i]!r} and {part!r}")
            seen[i] = part


def resolve_split(name: str, available, *, split_file: str | Path | None = None,
                  fold: int = 0, seed: int = 0) -> dict[str, list[str]]:
    """The split to use for the cases ``available`` of dataset ``name``.

    A split file wins; otherwise the official fold for the four benchmark datasets, restricted
    (with a warning) to the cases actually prepared; otherwise a seeded 70/10/20 split.
    Cases of a given split that are not available raise (split file) or are dropped (official).
    """
    available = set(available)
    if split_file is not None:
        split = load_split(split_file)
        missing = sorted(set().union(*split.values()) - available)
        if missing:
            raise SplitError(f"{split_file}: {len(missing)} case(s) not in the dataset, "
                             f"e.g. {missing[:3]}")
        return split
    if name in OFFICIAL:
        split = official_split(name, fold)
        listed = set().union(*split.values())
        if not available <= listed:
            extra = sorted(available - listed)[:3]
            raise SplitError(f"{name}: prepared cases {extra} are not in the official split — "
                             "is this the right dataset name?")
        if listed - available:
            warnings.warn(f"{name}: {len(listed - available)} of {len(listed)} cases of the "
                          "official split are not prepared; using the rest", stacklevel=2)
            split = {p: [i for i in ids if i in available] for p, ids in split.items()}
        return split
    return make_split(available, seed=seed)


@dataclass(frozen=True)
class SplitRef:
    """Which split a training run used: ``split_file`` (wins), else the official ``fold`` of a
    benchmark, else the 70/10/20 split seeded with ``seed`` (:func:`resolve_split`).

    Every checkpoint records it (its training configuration holds the three); evaluation,
    the chapters and the preprocessing statistics resolve held-out cases through
    :meth:`resolve` of the training run's reference, so a test case is never a training case.
    """

    split_file: str | None = None
    fold: int = 0
    seed: int = 0

    @classmethod
    def of(cls, config: Mapping | None) -> SplitRef:
        """The reference of a training configuration (a ``TrainConfig.as_dict()`` or the one a
        checkpoint recorded); the defaults (fold 0, seed 0) for ``None`` or ``{}``."""
        config = config or {}
        split_file = config.get("split_file")
        return cls(None if split_file is None else str(split_file), int(config.get("fold", 0)),
                   int(config.get("seed", 0)))

    def replace(self, **changes) -> SplitRef:
        """This reference with some fields set (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolve(self, name: str, available) -> dict[str, list[str]]:
        """The split of dataset ``name`` over the cases ``available``."""
        return resolve_split(name, available, split_file=self.split_file, fold=self.fold,
                             seed=self.seed)
