"""The common on-disk layout every dataset is converted to.

::

    <root>/dataset.json
    <root>/<case id>/image.nii.gz     CT in Hounsfield units, NIfTI (i, j, k) = (x, y, z)
    <root>/<case id>/label.nii.gz     integer label map on the same grid (same shape and affine)

``dataset.json`` (format ``sam3d-dataset/1``)::

    {"format": "sam3d-dataset/1", "name": "kits", "source": "...", "description": "...",
     "labels": {"0": "background", "1": "kidney", "2": "tumour"}, "target": 2,
     "cases": {"case_00000": {"image": "case_00000/image.nii.gz",
                              "label": "case_00000/label.nii.gz",
                              "shape": [512, 512, 611], "spacing": [0.78, 0.78, 0.5],
                              "target_voxels": 12345,
                              # optional per-case overrides:
                              "target": 1, "labels": {...}, "note": "..."}}}

``spacing`` is the original voxel size in mm in NIfTI axis order; ``target`` is the label value
of the lesion the model segments (tumour = 2 for KiTS, Pancreas and LiTS; cancer = 1 for Colon);
``target_voxels`` is how many voxels carry it (0: the case has no lesion and is skipped, with a
warning, wherever lesion clicks are needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_json

FORMAT = "sam3d-dataset/1"
INDEX = "dataset.json"


class LayoutError(ValueError):
    """A dataset folder or its ``dataset.json`` is not in the common layout."""


@dataclass(frozen=True)
class CaseEntry:
    """One case of a dataset in the common layout (paths are absolute)."""

    case_id: str
    image: Path
    label: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    target: int
    target_voxels: int | None = None
    labels: dict[int, str] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict:
        """MONAI-style dict: ``{"image": path, "label": path, "case": id, "target": t}``."""
        return {"case": self.case_id, "image": str(self.image), "label": str(self.label),
                "target": self.target, "spacing": list(self.spacing)}


@dataclass(frozen=True)
class DatasetIndex:
    """A parsed ``dataset.json``."""

    root: Path
    name: str
    labels: dict[int, str]
    target: int
    cases: dict[str, CaseEntry]
    source: str = ""
    description: str = ""

    def case_ids(self) -> list[str]:
        return sorted(self.cases)

    def lesion_cases(self, ids: list[str] | None = None) -> list[str]:
        """Ids (from ``ids`` or all) whose label has at least one target voxel (unknown = kept)."""
        ids = self.case_ids() if ids is None else ids
        return [i for i in ids if self.cases[i].target_voxels != 0]


def case_record(case_id: str, image: np.ndarray | tuple, spacing, label: np.ndarray | None,
                target: int, **extra) -> dict:
    """The ``cases`` entry for one case; ``target_voxels`` is counted from ``label`` when given."""
    shape = image.shape if isinstance(image, np.ndarray) else tuple(image)
    rec = {"image": f"{case_id}/image.nii.gz", "label": f"{case_id}/label.nii.gz",
           "shape": [int(s) for s in shape], "spacing": [float(s) for s in spacing]}
    if label is not None:
        rec["target_voxels"] = int(np.count_nonzero(np.asarray(label) == target))
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def write_index(root: str | Path, name: str, labels: dict[int, str], target: int,
                cases: dict[str, dict], source: str = "", description: str = "") -> Path:
    """Write ``<root>/dataset.json`` atomically (temporary file, then rename)."""
    root = Path(root)
    check_case_ids(cases)
    doc = {"format": FORMAT, "name": name, "source": source, "description": description,
           "labels": {str(k): v for k, v in sorted(labels.items())}, "target": int(target),
           "cases": {k: cases[k] for k in sorted(cases)}}
    root.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(root / INDEX, doc)


def check_case_ids(ids) -> None:
    for case_id in ids:
        if (not isinstance(case_id, str) or not case_id or case_id in (".", "..")
                or "/" in case_id or "\\" in case_id or case_id.startswith(".")):
            raise LayoutError(f"invalid case id {case_id!r} (must be a plain folder name)")


def read_index(root: str | Path) -> DatasetIndex:
    """Parse and check ``<root>/dataset.json`` (files are checked to exist, not read)."""
    root = Path(root)
    path = root / INDEX
    if not path.is_file():
        raise LayoutError(f"{path}: not found — prepare the dataset first "
                          "(data_scripts/prepare_dataset.py) or point to a prepared folder")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LayoutError(f"{path}: format is "
                          f"{doc.get('format') if isinstance(doc, dict) else doc!r}"
                          f", expected {FORMAT!r}")
    try:
        labels = {int(k): str(v) for k, v in doc["labels"].items()}
        target = int(doc["target"])
        raw_cases = doc["cases"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LayoutError(f"{path}: missing or malformed field ({exc})") from None
    if not isinstance(raw_cases, dict):
        raise LayoutError(f"{path}: 'cases' must be an object mapping case ids to records")
    check_case_ids(raw_cases)
    cases = {}
    for case_id, rec in raw_cases.items():
        try:
            entry = CaseEntry(
                case_id=case_id,
                image=_inside(root, rec["image"], path),
                label=_inside(root, rec["label"], path),
                shape=tuple(int(s) for s in rec["shape"]),
                spacing=tuple(float(s) for s in rec["spacing"]),
                target=int(rec.get("target", target)),
                target_voxels=(None if rec.get("target_voxels") is None
                               else int(rec["target_voxels"])),
                labels={int(k): str(v) for k, v in rec.get("labels", labels).items()},
                note=str(rec.get("note", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LayoutError(f"{path}: case {case_id!r} malformed ({exc})") from None
        if len(entry.shape) != 3 or len(entry.spacing) != 3:
            raise LayoutError(f"{path}: case {case_id!r} needs a 3D shape and spacing")
        for f in (entry.image, entry.label):
            if not f.is_file():
                raise LayoutError(f"{path}: case {case_id!r}: file {f} is missing")
        cases[case_id] = entry
    return DatasetIndex(root=root, name=str(doc.get("name", root.name)), labels=labels,
                        target=target, cases=cases, source=str(doc.get("source", "")),
                        description=str(doc.get("description", "")))


def up_to_date(root: str | Path, description: str, ids) -> bool:
    """Whether ``root`` already holds a written dataset with this ``description`` and exactly
    the cases ``ids`` (every file present: :func:`read_index` checks), so a generator need not
    write it again."""
    try:
        index = read_index(root)
    except LayoutError:
        return False
    return index.description == description and sorted(index.cases) == sorted(ids)


def _inside(root: Path, rel: str, index_path: Path) -> Path:
    """``root / rel``, refusing absolute paths and anything that resolves outside ``root``."""
    p = Path(rel)
    full = (root / p).resolve()
    if p.is_absolute() or not full.is_relative_to(root.resolve()):
        raise LayoutError(f"{index_path}: path {rel!r} points outside the dataset folder")
    return root / p
