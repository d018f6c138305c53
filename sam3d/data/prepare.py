"""Convert raw downloads (or a user's own NIfTI/NRRD folders) to the common layout.

``prepare_dataset(name, raw_dir, out_dir)`` finds the cases of one benchmark dataset in its raw
layout (see ``sam3d.data.sources``) and writes ``<out>/<case id>/{image,label}.nii.gz`` plus
``<out>/dataset.json`` (``sam3d.data.layout``). ``prepare_folder`` does the same for any pair
of image / label folders. NIfTI data and affines are kept: ``.nii.gz`` files are copied byte
for byte, ``.nii`` files gzip-compressed as they are, other formats (NRRD, MetaImage) converted
with SimpleITK, keeping the stored dtype.

Every case is checked with :mod:`sam3d.data.io`'s own checks
(:func:`~sam3d.data.io.volume_problems`, :func:`~sam3d.data.io.grid_problems`: readable; 3D,
further axes only of length 1, no axis shorter than 2; finite image; integer label fitting 32
bits; image and label on the same grid), so a prepared case is one that training can load.
It is written to a temporary folder that is renamed into place, so a case folder is either
complete or absent. Problems are collected over the whole run; the good cases are still written
and listed in ``dataset.json``, then one :class:`PrepareError` reports all problems. A case
whose label holds no target voxel is kept (``target_voxels: 0``) with a warning.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..utils.files import replace_dir
from . import layout
from .io import SUFFIXES, grid_problems, squeeze_to_3d, volume_problems
from .sources import DatasetSource, RawCase, find_raw_cases, get_source

SIDECAR = "source.json"  # per case: source files, their sizes and the case record


class PrepareError(ValueError):
    """Input data that cannot be prepared; ``problems`` lists one message per problem."""

    def __init__(self, problems: list[str] | str, report: PrepareReport | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.report = report
        super().__init__("\n".join(self.problems))


class PrepareWarning(UserWarning):
    """Something worth knowing that does not stop preparation (e.g. a case without lesion)."""


@dataclass
class PrepareReport:
    """What a preparation run did."""

    name: str
    out_dir: Path
    index: Path | None = None
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already prepared from the same sources
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, PrepareWarning, stacklevel=3)


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


# --------------------------------------------------------------------------------------
# Converting and checking one case
# --------------------------------------------------------------------------------------

def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _stage(src: Path, dst: Path) -> None:
    """Write ``src`` as gzip NIfTI ``dst`` without touching its data."""
    suffix = _suffix(src)
    if suffix == ".nii.gz" and _is_gzip(src):
        shutil.copyfile(src, dst)
    elif suffix in (".nii", ".nii.gz"):  # uncompressed NIfTI (even if misnamed .nii.gz)
        with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    else:
        import SimpleITK as sitk

        try:
            sitk.WriteImage(sitk.ReadImage(str(src)), str(dst), True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc
            raise PrepareError(f"{src}: cannot read ({first})") from None


def _load(src: Path, staged: Path, role: str,
          ) -> tuple[nib.Nifti1Image, np.ndarray, list[str]]:
    """Load a staged file fully (so truncation shows), check it as ``role`` ("image" or
    "label") with :func:`sam3d.data.io.volume_problems` and bring it to 3D; returns the image,
    its unscaled data and the problems found."""
    try:
        img = nib.load(staged)
        data = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise PrepareError(f"{src}: cannot read (truncated or corrupt file?): "
                           f"{exc.__class__.__name__}: {exc}") from None
    problems = [f"{src}: {p}" for p in volume_problems(_scaled(img, data), role)]
    if data.ndim > 3 and squeeze_to_3d(data).ndim == 3:
        # drop trailing size-1 axes, keeping dtype, scaling and affine
        data = squeeze_to_3d(data)
        slope, inter = img.dataobj.slope, img.dataobj.inter
        img = nib.Nifti1Image(data, img.affine, header=img.header.copy())
        img.header.set_slope_inter(slope, inter)
        nib.save(img, staged)
    return img, data, problems


def _scaled(img: nib.Nifti1Image, raw: np.ndarray) -> np.ndarray:
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return raw if (slope, inter) == (1.0, 0.0) else raw * slope + inter


def _convert(case: RawCase, folder: Path, target: int) -> tuple[dict, list[str]]:
    """Write ``folder/{image,label}.nii.gz`` for ``case``; returns (case record, warnings)."""
    problems, staged = [], {}
    for role, src in (("image", case.image), ("label", case.label)):
        dst = folder / f"{role}.nii.gz"
        try:
            _stage(src, dst)
            img, data, found = _load(src, dst, role)
            staged[role] = (src, img, data)
            problems += found
        except PrepareError as exc:
            problems.extend(exc.problems)
        except OSError as exc:
            problems.append(f"{src}: cannot read ({exc})")
    if len(staged) == 2 and all(data.ndim == 3 for _, _, data in staged.values()):
        (isrc, img, idata), (lsrc, lab, ldata) = staged["image"], staged["label"]
        problems += [f"{lsrc}: {p}" for p in grid_problems(idata.shape, img.affine,
                                                           ldata.shape, lab.affine, str(isrc))]
    if problems:
        raise PrepareError(problems)
    (isrc, img, idata), (lsrc, lab, ldata) = staged["image"], staged["label"]
    label = _scaled(lab, ldata)
    spacing = img.header.get_zooms()[:3]
    record = layout.case_record(case.case_id, idata.shape, spacing, label, target,
                                note=case.note or None)
    notes = []
    if record["target_voxels"] == 0:
        notes.append(f"{case.case_id}: label {lsrc} has no voxel of target {target} "
                     "(kept with target_voxels 0; skipped where lesion clicks are needed)")
    return record, notes


def _signature(case: RawCase, target: int) -> dict:
    return {"image": str(case.image), "image_size": case.image.stat().st_size,
            "label": str(case.label), "label_size": case.label.stat().st_size,
            "target": int(target)}


def _read_sidecar(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    complete = all((folder / f).is_file() for f in ("image.nii.gz", "label.nii.gz"))
    return doc if complete and isinstance(doc, dict) and "record" in doc else None


def _prepare_case(case: RawCase, out_dir: Path, name: str, target: int, overwrite: bool,
                  report: PrepareReport) -> None:
    final = out_dir / case.case_id
    try:
        signature = _signature(case, target)
    except OSError as exc:
        report.problems.append(f"{exc.filename}: cannot read ({exc.strerror})")
        return
    old = _read_sidecar(final)
    if not overwrite and old and old.get("signature", {}) == signature:
        report.kept.append(case.case_id)
        return
    tmp = out_dir / f".{case.case_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    tmp.mkdir(parents=True)
    try:
        record, notes = _convert(case, tmp, target)
        doc = {"dataset": name, "case": case.case_id, "signature": signature, "record": record}
        (tmp / SIDECAR).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        replace_dir(tmp, final)
    except PrepareError as exc:
        report.problems.extend(exc.problems)
        return
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.written.append(case.case_id)
    for note in notes:
        report.warn(note)


def _run(report: PrepareReport, cases: list[RawCase], labels: Mapping[int, str], target: int,
         overwrite: bool, source: str, description: str) -> PrepareReport:
    out_dir = report.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    layout.check_case_ids(c.case_id for c in cases)
    for case in cases:
        _prepare_case(case, out_dir, report.name, target, overwrite, report)
    records = {}
    for folder in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        doc = _read_sidecar(folder)
        if doc and doc.get("dataset") == report.name and doc.get("case") == folder.name:
            records[folder.name] = doc["record"]
    if records:
        report.index = layout.write_index(out_dir, report.name, dict(labels), target, records,
                                          source=source, description=description)
    if report.problems:
        raise PrepareError(report.problems, report)
    return report


def _wanted(source: DatasetSource, cases: Iterable[int | str]) -> set[str]:
    return {source.case_id(c) if isinstance(c, int) else str(c) for c in cases}


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, *,
                    cases: Iterable[int | str] | None = None,
                    overwrite: bool = False) -> PrepareReport:
    """Convert dataset ``name`` from its raw layout in ``raw_dir`` to the common layout.

    ``raw_dir`` is the dataset's raw folder (``<raw_root>/<name>``, as ``download_dataset``
    writes it) or the raw root holding it. ``cases`` limits the run to case numbers (``13`` →
    ``case_00013``) or case ids. Cases already prepared from source files of the same sizes are
    kept unless ``overwrite``. Returns a :class:`PrepareReport`.

    Raises:
        PrepareError: listing every problem found (the good cases are written nevertheless;
            the report is ``exc.report``).
    """
    source = get_source(name)
    raw = Path(raw_dir)
    if (raw / name).is_dir():
        raw = raw / name
    if not raw.is_dir():
        raise PrepareError(f"{raw}: raw folder not found (download it first: "
                           f"python data_scripts/download_datasets.py --dataset {name})")
    report = PrepareReport(name, Path(out_dir))
    scan = find_raw_cases(name, raw)
    report.problems += scan.problems
    for message in scan.warnings:
        report.warn(message)
    found = scan.cases
    if cases is not None:
        wanted = _wanted(source, cases)
        report.problems += [f"{raw}: case {c} not found" for c in
                            sorted(wanted - {c.case_id for c in found})]
        found = [c for c in found if c.case_id in wanted]
    if not found and not report.problems:
        raise PrepareError(f"{raw}: no {name} cases found; expected {source.raw_layout}")
    odd = [c.case_id for c in found if not source.is_case_id(c.case_id)]
    if odd:
        report.problems.append(f"{raw}: unexpected case ids {odd[:5]}")
        found = [c for c in found if source.is_case_id(c.case_id)]
    return _run(report, found, source.labels, source.target, overwrite,
                source=f"{source.title} ({source.homepage}; licence {source.licence})",
                description=source.note)


# --------------------------------------------------------------------------------------
# A user's own folders
# --------------------------------------------------------------------------------------

IMAGE_WORDS = ("imaging", "image", "img", "volume", "vol", "ct")
LABEL_WORDS = ("segmentation", "labels", "label", "seg", "mask", "gt")


def _strip(stem: str, words: tuple[str, ...]) -> str:
    """``stem`` without one leading or trailing word of ``words`` (separated by ``_ - .``)."""
    alt = "|".join(words)
    key = re.sub(rf"^(?:{alt})[_\-.]+|[_\-.]+(?:{alt})$", "", stem, count=1, flags=re.IGNORECASE)
    return "" if key.lower() in words else key


def pair_files(images_dir: str | Path, labels_dir: str | Path
               ) -> tuple[list[RawCase], list[Path], list[str]]:
    """Pair image and label files; returns (pairs, unmatched files, problems).

    Rule: files (``.nii.gz .nii .nrrd .nhdr .mha .mhd``, hidden files ignored) with identical
    names (less the extension) pair first, the case id being that name. Remaining names are
    reduced to a key: images lose a trailing ``_0000`` (nnU-Net) and one leading or trailing
    word ``imaging|image|img|volume|vol|ct``, labels one word
    ``segmentation|labels|label|seg|mask|gt`` (``case1_image`` ↔ ``case1_label``,
    ``volume-3`` ↔ ``segmentation-3``); equal keys pair, the key being the case id. When both
    folders are the same, files with a label word are the labels.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise PrepareError(f"{d}: folder not found")

    def listing(d: Path) -> dict[str, Path]:
        return {p.name[: -len(_suffix(p))]: p for p in sorted(d.iterdir())
                if p.is_file() and not p.name.startswith(".") and _suffix(p)}

    images, labels = listing(images_dir), listing(labels_dir)
    if images_dir.resolve() == labels_dir.resolve():
        labels = {s: p for s, p in images.items() if _strip(s, LABEL_WORDS) != s}
        images = {s: p for s, p in images.items() if s not in labels}
    same = sorted(set(images) & set(labels))
    pairs = {s: RawCase(s, images.pop(s), labels.pop(s)) for s in same}
    problems = []
    keyed: dict[str, dict[str, list[Path]]] = {"image": {}, "label": {}}
    for role, files, words in (("image", images, IMAGE_WORDS), ("label", labels, LABEL_WORDS)):
        for stem, path in files.items():
            base = re.sub(r"_0000$", "", stem) if role == "image" else stem
            keyed[role].setdefault(_strip(base, words) or stem, []).append(path)
    unmatched = []
    for key in sorted(set(keyed["image"]) | set(keyed["label"])):
        imgs, labs = keyed["image"].get(key, []), keyed["label"].get(key, [])
        if len(imgs) == 1 and len(labs) == 1 and key not in pairs:
            pairs[key] = RawCase(key, imgs[0], labs[0])
        elif imgs and labs:
            problems.append(f"ambiguous pairing for case {key!r}: "
                            f"{', '.join(p.name for p in imgs + labs)}")
        else:
            unmatched += imgs + labs
    return [pairs[k] for k in sorted(pairs)], unmatched, problems


def prepare_folder(images_dir: str | Path, labels_dir: str | Path, out_dir: str | Path, *,
                   name: str, target: int, labels: Mapping[int, str] | None = None,
                   overwrite: bool = False) -> PrepareReport:
    """Convert a folder of images and one of labels to the common layout (see ``pair_files``).

    ``target`` is the label value of the lesion; ``labels`` names the label values (default
    ``{0: "background", target: "target"}``). Unmatched files are reported as warnings.

    Raises:
        PrepareError: listing every problem (good cases are written nevertheless).
    """
    report = PrepareReport(name, Path(out_dir))
    pairs, unmatched, problems = pair_files(images_dir, labels_dir)
    report.problems += problems
    report.unmatched = unmatched
    for path in unmatched:
        report.warn(f"{path}: no matching image or label file found; not prepared")
    if not pairs and not problems:
        raise PrepareError(f"{images_dir}: no image/label pairs found (see pair_files for the "
                           "naming rule)", report)
    labels = dict(labels) if labels else {0: "background", int(target): "target"}
    return _run(report, pairs, labels, int(target), overwrite, source=str(Path(images_dir)),
                description=f"prepared from {images_dir} and {labels_dir}")
