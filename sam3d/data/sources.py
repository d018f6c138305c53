"""Public sources of the paper's four benchmark datasets, and ``download_dataset``.

Each dataset is a frozen :class:`DatasetSource` in ``SOURCES``. Its files are
:class:`RemoteFile` entries whose URL is ``<host>/<path>``: ``download_dataset(...,
base_url=URL)`` swaps every host for ``URL`` (a mirror, or a local test server) and keeps the
paths. Raw files land in ``<raw_root>/<name>/``; archives are unpacked there with
:func:`~sam3d.data.download.safe_extract`. ``sam3d.data.prepare`` converts the raw layout to the
project's common layout (``sam3d.data.layout``).

A mirror that re-packs the files (so the published md5s no longer match) comes with a local
checksums file from its operator, ``{"format": "sam3d-checksums/1", "sha256": {"<remote path>":
"<hex>"}}`` keyed by ``RemoteFile.path`` formatted (``Task07_Pancreas.tar``,
``master_00013.nii.gz``): :func:`~sam3d.data.download.load_checksums` reads it and
``download_dataset(..., checksums=...)`` verifies every file with its SHA-256 instead.

Case ids are those of the official 3DSAM-adapter split files (``shared/paper/splits``):
``case_00013`` (KiTS21), ``volume-97`` (LiTS17), ``pancreas_299`` (MSD Task07), ``colon_008``
(MSD Task10).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .download import (
    CHECKSUMS_FORMAT,
    DownloadError,
    download_file,
    extracted_marker,
    load_checksums,
    safe_extract,
)

MSD_HOST = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
KITS_IMAGING_HOST = "https://kits19.sfo2.digitaloceanspaces.com"
GITHUB_RAW_HOST = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: ``<host>/<path>`` saved as ``<raw_root>/<dataset>/<dest>``.

    ``path`` and ``dest`` may hold ``{i}`` (the case number, e.g. ``{i:05d}``) for per-case files.
    ``extract``: the file is an archive unpacked into the dataset folder after download.
    """

    host: str
    path: str
    dest: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False

    def url(self, base_url: str | None = None, **fmt) -> str:
        """The download URL; ``base_url`` replaces the default host."""
        host = (base_url or self.host).rstrip("/")
        return f"{host}/{self.path.format(**fmt).lstrip('/')}"

    def destination(self, dataset_dir: Path, **fmt) -> Path:
        """Where the file is saved under the dataset's raw folder."""
        return dataset_dir / self.dest.format(**fmt)


@dataclass(frozen=True)
class DatasetSource:
    """Where a benchmark dataset comes from and what its labels mean."""

    name: str
    title: str
    homepage: str
    licence: str
    approx_size: str
    labels: Mapping[int, str]
    target: int
    files: tuple[RemoteFile, ...]
    case_pattern: str  # regular expression every case id matches
    case_format: str  # case id from the case number, e.g. "case_{i:05d}"
    raw_layout: str  # what download_dataset leaves in <raw_root>/<name>/ (for messages)
    case_numbers: tuple[int, ...] = ()  # per-case files: the numbers available
    msd_task: str = ""  # MSD archives: the task folder, e.g. "Task07_Pancreas"
    msd_prefix: str = ""  # MSD archives: the file-name prefix, e.g. "pancreas"
    note: str = ""

    @property
    def per_case(self) -> bool:
        """True when files are fetched case by case (KiTS), False for a single archive."""
        return bool(self.case_numbers)

    def case_id(self, number: int) -> str:
        """The official case id of case number ``number`` (e.g. 13 → ``case_00013``)."""
        return self.case_format.format(i=int(number))

    def is_case_id(self, case_id: str) -> bool:
        """True when ``case_id`` has this dataset's official form."""
        return re.fullmatch(self.case_pattern, case_id) is not None


def _labels(*names: str) -> Mapping[int, str]:
    """Read-only ``{0: names[0], 1: names[1], ...}``."""
    return MappingProxyType(dict(enumerate(names)))


KITS = DatasetSource(
    name="kits",
    title="KiTS21 (2021 Kidney and Kidney Tumor Segmentation Challenge), 300 training cases",
    homepage="https://kits-challenge.org/kits21/",
    licence="CC BY-NC-SA 4.0",
    approx_size="approximately 26 GB of imaging for the 300 cases",
    labels=_labels("background", "kidney", "tumour", "cyst"),
    target=2,
    files=(
        RemoteFile(KITS_IMAGING_HOST, "master_{i:05d}.nii.gz", "case_{i:05d}/imaging.nii.gz"),
        RemoteFile(GITHUB_RAW_HOST,
                   "neheller/kits21/master/kits21/data/case_{i:05d}/aggregated_MAJ_seg.nii.gz",
                   "case_{i:05d}/aggregated_MAJ_seg.nii.gz"),
    ),
    case_pattern=r"case_\d{5}",
    case_format="case_{i:05d}",
    raw_layout="case_XXXXX/imaging.nii.gz + case_XXXXX/aggregated_MAJ_seg.nii.gz",
    case_numbers=tuple(range(300)),
    note="KiTS21 publishes no checksums for these files: downloads are not hash-verified "
         "(an existing file is kept; a truncated one fails when prepared).",
)
"""KiTS21: imaging from the challenge's DigitalOcean bucket (the URLs the official
``kits21`` repository's ``get_imaging.py`` uses), majority-vote segmentations from the
``neheller/kits21`` GitHub repository. No checksums are published for either, so these
downloads are not verified. Labels 0 background, 1 kidney, 2 tumour, 3 cyst; target 2."""

PANCREAS = DatasetSource(
    name="pancreas",
    title="Medical Segmentation Decathlon Task07 Pancreas (pancreas and tumour), 281 cases",
    homepage="http://medicaldecathlon.com/",
    licence="CC BY-SA 4.0",
    approx_size="approximately 11.4 GB (tar)",
    labels=_labels("background", "pancreas", "tumour"),
    target=2,
    files=(RemoteFile(MSD_HOST, "Task07_Pancreas.tar", "Task07_Pancreas.tar",
                      md5="4f7080cfca169fa8066d17ce6eb061e4", extract=True),),
    case_pattern=r"pancreas_\d{3}",
    case_format="pancreas_{i:03d}",
    raw_layout="Task07_Pancreas/imagesTr/pancreas_XXX.nii.gz + labelsTr/pancreas_XXX.nii.gz",
    msd_task="Task07_Pancreas",
    msd_prefix="pancreas",
)
"""MSD Task07_Pancreas from MONAI's mirror (md5 as in MONAI's ``DecathlonDataset``). Inside:
``Task07_Pancreas/{imagesTr,labelsTr}/pancreas_XXX.nii.gz`` and ``dataset.json`` (plus macOS
``._*`` junk files, ignored). Labels 0 background, 1 pancreas, 2 tumour; target 2."""

COLON = DatasetSource(
    name="colon",
    title="Medical Segmentation Decathlon Task10 Colon (colon cancer), 126 cases",
    homepage="http://medicaldecathlon.com/",
    licence="CC BY-SA 4.0",
    approx_size="approximately 5.4 GB (tar)",
    labels=_labels("background", "colon cancer"),
    target=1,
    files=(RemoteFile(MSD_HOST, "Task10_Colon.tar", "Task10_Colon.tar",
                      md5="bad7a188931dc2f6acf72b08eb6202d0", extract=True),),
    case_pattern=r"colon_\d{3}",
    case_format="colon_{i:03d}",
    raw_layout="Task10_Colon/imagesTr/colon_XXX.nii.gz + labelsTr/colon_XXX.nii.gz",
    msd_task="Task10_Colon",
    msd_prefix="colon",
)
"""MSD Task10_Colon from MONAI's mirror: ``colon_XXX``; labels 0 background, 1 colon cancer;
target 1."""

LITS = DatasetSource(
    name="lits",
    title="LiTS17 (Liver Tumor Segmentation Benchmark), 131 training volumes",
    homepage="https://competitions.codalab.org/competitions/17094",
    licence="CC BY-NC-SA 4.0",
    approx_size="approximately 28 GB (MSD Task03_Liver tar)",
    labels=_labels("background", "liver", "tumour"),
    target=2,
    files=(RemoteFile(MSD_HOST, "Task03_Liver.tar", "Task03_Liver.tar",
                      md5="a90ec6c4aa7f6a3d087205e23d4e6397", extract=True),),
    case_pattern=r"volume-\d+",
    case_format="volume-{i}",
    raw_layout="Task03_Liver/imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz, or LiTS "
               "volume-N.nii + segmentation-N.nii at any depth (or the LiTS zips)",
    note="The 131 LiTS training volumes are the MSD Task03_Liver training set (liver_N is "
         "LiTS volume-N). The original release (volume-N.nii, segmentation-N.nii, downloaded "
         "by hand from CodaLab) can be prepared instead: put its folders or zips in the raw "
         "folder.",
    msd_task="Task03_Liver",
    msd_prefix="liver",
)
"""LiTS17 through MSD Task03_Liver (``liver_N.nii.gz`` ↔ LiTS ``volume-N``), md5 from MONAI's
``DecathlonDataset``; or the original CodaLab release, downloaded by hand, with
``volume-N.nii`` / ``segmentation-N.nii`` at any folder depth (or still in its zips). Labels 0
background, 1 liver, 2 tumour; target 2."""

SOURCES: Mapping[str, DatasetSource] = MappingProxyType(
    {s.name: s for s in (KITS, PANCREAS, LITS, COLON)})


def get_source(name: str) -> DatasetSource:
    """The source called ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of "
                         f"{', '.join(SOURCES)}") from None


def parse_cases(text: str) -> list[int]:
    """``"0-9,13,20-22"`` → sorted case numbers; ``ValueError`` on malformed text."""
    numbers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"bad case list {text!r}: {part!r} is not N or N-M")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise ValueError(f"bad case list {text!r}: range {part!r} is reversed")
        numbers.update(range(lo, hi + 1))
    return sorted(numbers)


def _planned(source: DatasetSource, dataset_dir: Path, numbers: list[int] | None
             ) -> list[tuple[RemoteFile, dict]]:
    """(file, format arguments) of every file to fetch; extracted archives are left out."""
    if numbers is not None:
        return [(remote, {"i": i}) for i in numbers for remote in source.files]
    return [(remote, {}) for remote in source.files
            if not (remote.extract and extracted_marker(remote.destination(dataset_dir),
                                                        dataset_dir).is_file())]


def download_dataset(name: str, raw_root: str | Path, *, cases: Iterable[int] | None = None,
                     base_url: str | None = None, progress: bool = True,
                     keep_archives: bool = True,
                     checksums: Mapping[str, str] | None = None) -> Path:
    """Download (resumably, hash-verified where hashes exist) and unpack a dataset.

    Files go to ``<raw_root>/<name>/``, which is returned. ``cases`` limits per-case datasets
    (KiTS) to those case numbers; it is refused for archive datasets. ``base_url`` replaces
    every default host. An archive already extracted (its ``.extracted-*`` marker exists) is
    neither downloaded nor unpacked again; ``keep_archives=False`` deletes it after unpacking.
    ``checksums`` (``{remote path: sha256 hex}``, see ``load_checksums``) replaces the
    published hashes: every file to fetch must have an entry (checked before any download) and
    is verified with that SHA-256.

    Raises:
        DownloadError: a download, checksum or extraction failed, or a file to fetch has no
            entry in ``checksums``.
        ValueError: unknown dataset or case numbers.
    """
    source = get_source(name)
    dataset_dir = Path(raw_root) / source.name
    numbers = None
    if source.per_case:
        numbers = list(source.case_numbers) if cases is None else sorted({int(c) for c in cases})
        unknown = sorted(set(numbers) - set(source.case_numbers))
        if unknown:
            raise ValueError(f"{name}: no case number(s) {unknown[:10]}; available "
                             f"{source.case_numbers[0]}..{source.case_numbers[-1]}")
    elif cases is not None:
        raise ValueError(f"{name}: --cases only applies to per-case datasets (kits); "
                         f"{name} is a single archive")
    plan = _planned(source, dataset_dir, numbers)
    table = None if checksums is None else {k.lstrip("/"): v for k, v in checksums.items()}
    if table is not None:
        missing = [key for key in (r.path.format(**fmt).lstrip("/") for r, fmt in plan)
                   if key not in table]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DownloadError(f"no entry in the checksums file for {', '.join(missing[:3])}"
                                f"{more}; nothing was downloaded")
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for remote, fmt in plan:
        md5, sha256 = remote.md5, remote.sha256
        if table is not None:
            md5, sha256 = None, table[remote.path.format(**fmt).lstrip("/")]
        dest = remote.destination(dataset_dir, **fmt)
        download_file(remote.url(base_url, **fmt), dest, md5=md5, sha256=sha256,
                      progress=progress)
        if remote.extract:
            if progress:
                print(f"extracting {dest.name} into {dataset_dir}", file=sys.stderr)
            safe_extract(dest, dataset_dir)
            if not keep_archives:
                dest.unlink()
    return dataset_dir


# --------------------------------------------------------------------------------------
# Finding the cases in a raw folder
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RawCase:
    """One case found in a raw folder: its official id and its image and label files."""

    case_id: str
    image: Path
    label: Path
    note: str = ""


@dataclass
class RawScan:
    """The cases found in a raw folder, and what was wrong or odd there."""

    cases: list[RawCase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _visible(path: Path, root: Path) -> bool:
    """False for hidden files and folders (macOS ``._*`` junk, staging folders, markers)."""
    return not any(p.startswith(".") for p in path.relative_to(root).parts)


def _find_kits(source: DatasetSource, raw: Path, scan: RawScan) -> None:
    for folder in sorted(p for p in raw.rglob("case_*") if p.is_dir() and _visible(p, raw)):
        if not source.is_case_id(folder.name):
            continue
        image, label = folder / "imaging.nii.gz", folder / "aggregated_MAJ_seg.nii.gz"
        if not image.is_file() or not label.is_file():
            missing = image if not image.is_file() else label
            scan.problems.append(f"{missing}: missing (download the case again)")
            continue
        scan.cases.append(RawCase(folder.name, image, label))


def _find_msd(source: DatasetSource, raw: Path, scan: RawScan) -> None:
    pattern = re.compile(rf"{source.msd_prefix}_(\d+)\.nii\.gz")
    folders = [raw / "imagesTr"] if (raw / "imagesTr").is_dir() else []
    folders += sorted(p for p in raw.rglob("imagesTr") if p.is_dir() and _visible(p, raw))
    for images in dict.fromkeys(folders):
        for image in sorted(images.iterdir()):
            if image.name.startswith("."):  # macOS AppleDouble "._pancreas_001.nii.gz"
                continue
            match = pattern.fullmatch(image.name)
            if not match:
                scan.warnings.append(f"{image}: not a {source.msd_task} image name; ignored")
                continue
            label = images.parent / "labelsTr" / image.name
            if not label.is_file():
                scan.problems.append(f"{label}: missing label for {image}")
                continue
            if source.name == "lits":  # liver_N is LiTS volume-N
                scan.cases.append(RawCase(source.case_id(int(match.group(1))), image, label,
                                          f"MSD {source.msd_task} {image.name}"))
            else:
                scan.cases.append(RawCase(image.name[: -len(".nii.gz")], image, label))


def _find_lits(source: DatasetSource, raw: Path, scan: RawScan) -> None:
    for archive in sorted(p for p in raw.rglob("*.zip") if _visible(p, raw)):
        try:
            safe_extract(archive, archive.with_suffix(""))
        except DownloadError as exc:
            scan.problems.append(str(exc))
    files: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for path in sorted(raw.rglob("*")):
        match = re.fullmatch(r"(volume|segmentation)-(\d+)\.nii(\.gz)?", path.name)
        if match and path.is_file() and _visible(path, raw):
            seen = files[match.group(1)].setdefault(int(match.group(2)), path)
            if seen != path:
                scan.warnings.append(f"{path}: duplicate of {seen}; ignored")
    for number, image in sorted(files["volume"].items()):
        label = files["segmentation"].get(number)
        if label is None:
            scan.problems.append(f"{image}: no segmentation-{number}.nii found for it")
            continue
        scan.cases.append(RawCase(source.case_id(number), image, label, "LiTS original release"))
    have = {c.case_id for c in scan.cases}
    msd = RawScan(problems=scan.problems, warnings=scan.warnings)
    _find_msd(source, raw, msd)
    if any(c.case_id in have for c in msd.cases):
        scan.warnings.append(f"{raw}: both original LiTS files and MSD Task03_Liver found; "
                             "the original files are used where both exist")
    scan.cases += [c for c in msd.cases if c.case_id not in have]


_FINDERS = {"kits": _find_kits, "pancreas": _find_msd, "colon": _find_msd, "lits": _find_lits}


def find_raw_cases(name: str, raw_dir: str | Path) -> RawScan:
    """The cases of dataset ``name`` in its raw layout under ``raw_dir`` (any folder depth).

    Hidden files (macOS ``._*`` junk) are ignored. LiTS zips found there are extracted first
    (next to themselves). Missing partners are problems; odd names are warnings.
    """
    source = get_source(name)
    scan = RawScan()
    _FINDERS[name](source, Path(raw_dir), scan)
    return scan


__all__ = ["CHECKSUMS_FORMAT", "SOURCES", "DatasetSource", "DownloadError", "RawCase", "RawScan",
           "RemoteFile", "download_dataset", "find_raw_cases", "get_source", "load_checksums",
           "parse_cases"]
