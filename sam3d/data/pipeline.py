"""From a prepared dataset folder to MONAI datasets of model-ready crops.

::

    ds = build_dataset("data/prepared/kits", "kits", "train", crop=128, cache_dir="cache/")
    sample = ds[0][0]        # train/val: a list with one crop → dict
    sample["image"].shape    # 3×128×128×128, z-scored
    sample["label"].shape    # 1×128×128×128, 0/1

Cases without a single lesion voxel (``target_voxels == 0`` in ``dataset.json``) are skipped
with a warning for training and validation (lesion clicks cannot be drawn from them); the
test split keeps them only if ``keep_empty=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

from monai.data import Dataset, PersistentDataset

from ..utils.files import atomic_write_text
from .layout import DatasetIndex, read_index
from .specs import DatasetSpec, get_spec
from .splits import resolve_split
from .stats import compute_statistics
from .transforms import build_transforms, input_error


class _SurfaceInputErrors:
    """Dataset mixin: a bad file surfaces as the VolumeError naming it (see ``input_error``)."""

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except RuntimeError as exc:
            err = input_error(exc)
            if err is None:
                raise
            raise err from None


class CaseDataset(_SurfaceInputErrors, Dataset):
    """MONAI ``Dataset`` of case dicts."""


class CachedCaseDataset(_SurfaceInputErrors, PersistentDataset):
    """MONAI ``PersistentDataset``: the deterministic prefix is cached on disk."""


def case_dicts(index: DatasetIndex, ids: list[str]) -> list[dict]:
    """MONAI input dicts (image/label paths, target, case id) for ``ids``."""
    missing = [i for i in ids if i not in index.cases]
    if missing:
        raise KeyError(f"{index.root}: unknown case(s) {missing[:5]}")
    return [index.cases[i].as_dict() for i in ids]


def spec_with_statistics(spec: DatasetSpec, index: DatasetIndex, train_ids: list[str],
                         cache_dir: str | Path | None = None) -> DatasetSpec:
    """``spec`` itself when it has constants; else statistics over ``train_ids`` (cached)."""
    if spec.has_statistics:
        return spec
    key = hashlib.sha256(json.dumps([str(index.root.resolve()), sorted(train_ids)])
                         .encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"stats-{spec.name}-{key}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        s = json.loads(cache.read_text(encoding="utf-8"))
        return spec.with_statistics(s["window"], s["mean"], s["std"])
    stats = compute_statistics(index, index.lesion_cases(train_ids) or train_ids)
    if cache is not None:
        atomic_write_text(cache, json.dumps(stats.as_dict()))
    return spec.with_statistics(stats.window, stats.mean, stats.std)


def build_dataset(root: str | Path, dataset: str | DatasetSpec, part: str = "train", *,
                  crop: int = 128, split_file: str | Path | None = None, fold: int = 0,
                  seed: int = 0, cache_dir: str | Path | None = None, keep_empty: bool = False,
                  ids: list[str] | None = None, preprocessing: str = "sam3d",
                  sampling: str = "paper") -> Dataset:
    """A MONAI dataset of ``part`` ("train", "val" or "test") of a prepared dataset.

    ``dataset`` names a registered spec (or is one); its split comes from ``split_file``, the
    official fold, or a seeded 70/10/20 split (:func:`sam3d.data.splits.resolve_split`);
    ``ids`` replaces the split (and, for a spec without constants, is also the set the
    statistics are computed over). With ``cache_dir`` the deterministic preprocessing is cached
    on disk (``PersistentDataset``); random transforms are seeded with ``seed``.
    ``preprocessing``: "sam3d" or "official"; ``sampling``: "paper" or "lesion" (the train and
    val crops; :func:`sam3d.data.transforms.build_transforms`).
    """
    index = read_index(root)
    spec = get_spec(dataset) if isinstance(dataset, str) else dataset
    if spec.target != index.target and spec.name not in ("samples", "custom"):
        spec = dataclasses.replace(spec, target=index.target)
    if ids is None:
        split = resolve_split(spec.name, index.case_ids(), split_file=split_file, fold=fold,
                              seed=seed)
        chosen = split[part]
    else:  # explicit cases: statistics (if needed) come from these cases themselves
        chosen = list(ids)
        split = {"train": chosen}
    unknown = [i for i in chosen if i not in index.cases]
    if unknown:
        raise KeyError(f"{index.root}: unknown case(s) {unknown[:5]}")
    if part != "test" or not keep_empty:
        kept = index.lesion_cases(chosen)
        if len(kept) < len(chosen):
            warnings.warn(f"{index.root}: skipping {len(chosen) - len(kept)} case(s) without "
                          f"lesion voxels: {sorted(set(chosen) - set(kept))[:5]}", stacklevel=2)
        chosen = kept
    if not chosen:
        raise ValueError(f"{index.root}: no cases in part {part!r}")
    spec = spec_with_statistics(spec, index, split["train"] or chosen, cache_dir)
    chain = build_transforms(spec, part, crop=crop, seed=seed, preprocessing=preprocessing,
                             sampling=sampling)
    data = case_dicts(index, chosen)
    if cache_dir is None:
        return CaseDataset(data, chain)
    # new constants or a new way of reading the volumes: a new cache
    # (the lesion-centred val chain z-scores before its first random step, so its cached
    # volumes differ from the paper's: a cache of its own)
    key = (spec, preprocessing) if preprocessing != "sam3d" else spec
    key = (key, sampling) if sampling != "paper" and part == "val" else key
    tag = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
    return CachedCaseDataset(data, chain, cache_dir=Path(cache_dir) / f"{spec.name}-{part}-{tag}")
