"""Small fixture datasets in each benchmark source's raw download layout.

``write_raw_fixture("kits", mirror)`` writes under ``mirror`` exactly the files the source's
``RemoteFile.path`` entries name (:data:`sam3d.data.sources.SOURCES`), so that a local HTTP
server on ``mirror`` (:mod:`sam3d.rehearsal.server`) stands in for every real host and the real
``download_datasets.py --base-url`` fetches them:

* KiTS21: ``master_{i:05d}.nii.gz`` (imaging) and
  ``neheller/kits21/master/kits21/data/case_{i:05d}/aggregated_MAJ_seg.nii.gz`` per case,
  stored like KiTS21: array (z, y, x), slices first, affine with the slice spacing in the first
  column (``[[0, 0, -sx, 0], [0, -sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]]``); labels 1 kidney,
  2 tumour, 3 cyst.
* MSD (pancreas, LiTS through Task03_Liver, colon): the task tar (``Task07_Pancreas.tar``, …)
  holding ``TaskXX_Name/imagesTr/<prefix>_N.nii.gz``, ``labelsTr/<prefix>_N.nii.gz``, an
  MSD-like ``dataset.json`` and one macOS ``._`` junk file, as the real archives do; arrays
  (x, y, z) with MSD's scanner-style affine ``diag(-sx, -sy, sz)`` (x and y flipped). Pancreas
  and LiTS label the organ 1 and the tumour 2; colon only the cancer, 1.

Volumes are :data:`SHAPE` (48 × 48 in-plane × 24 slices) of :data:`SPACING` (1.5, 1.5, 3.0) mm,
72 mm along every axis, so 72 voxels at the pipeline's 1 mm (the tiny model's crop is 64³).
Their anatomy is a :mod:`sam3d.data.phantoms` phantom (air −1000 HU, body ~40 HU, an organ
with one tumour, noise) saved as int16 HU, drawn from ``seed`` and the case id; files are
byte-identical for the same seed (gzip and tar times fixed). The SHA-256 of every file goes
to a ``sam3d-checksums/1`` file beside (never inside) the mirror: the fixture tars are not the
published ones, exactly the "mirror that re-packs" case of ``download_datasets.py --checksums``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..data.download import CHECKSUMS_FORMAT
from ..data.phantoms import PhantomSpec, make_phantom
from ..data.sources import get_source
from ..utils.files import atomic_write_bytes, atomic_write_json

FIXTURE_VERSION = 1  # bump when the files change: prepared rehearsal data is then rebuilt
SHAPE = (48, 48, 24)  # x, y in-plane, z slices
SPACING = (1.5, 1.5, 3.0)  # mm along x, y, z
SPEC = PhantomSpec(shape=SHAPE, spacing=SPACING, difficulty=0.2, n_tumours=1, noise_hu=10.0)
MTIME = 1525478400  # 2018-05-05, the MSD release: fixed member times keep the tars identical

FIXTURE_CASES: dict[str, tuple[str, ...]] = {
    "kits": ("case_00000", "case_00001", "case_00020", "case_00002", "case_00005"),
    "lits": ("volume-1", "volume-3", "volume-2", "volume-0", "volume-5"),
    "pancreas": ("pancreas_001", "pancreas_004", "pancreas_056", "pancreas_006", "pancreas_010"),
    "colon": ("colon_001", "colon_005", "colon_015", "colon_008", "colon_009"),
}
"""Five real case ids per dataset from the official fold 0: the first two of train, the first
of val and the first two of test, in case-number order (``volume-N`` is MSD ``liver_N``)."""

_MSD = {  # dataset.json fields of the real archives
    "pancreas": ("Pancreas", "Pancreas and cancer segmentation",
                 {"0": "background", "1": "pancreas", "2": "cancer"}),
    "lits": ("Liver", "Liver and liver tumour segmentation",
             {"0": "background", "1": "liver", "2": "cancer"}),
    "colon": ("Colon", "Colon cancer segmentation",
              {"0": "background", "1": "colon cancer primaries"}),
}
_JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"  # AppleDouble header
CYST = 3


def case_number(case_id: str) -> int:
    """The number in an official case id: ``case_00020`` → 20, ``volume-3`` → 3."""
    match = re.search(r"(\d+)$", case_id)
    if match is None:
        raise ValueError(f"no case number in {case_id!r}")
    return int(match.group(1))


def case_seed(dataset: str, case_id: str, seed: int = 0) -> int:
    """Phantom seed of one fixture case: a hash of ``(seed, dataset, case id)``."""
    digest = hashlib.sha256(f"{dataset}/{case_id}".encode()).digest()
    state = np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")])
    return int(state.generate_state(1, np.uint32)[0])


def fixture_volume(dataset: str, case_id: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of one case in RAS voxel order (x, y, z), shape :data:`SHAPE`.

    ``image`` int16 HU; ``label`` uint8 with the dataset's labels: organ 1 and tumour 2
    (KiTS also a cyst 3 inside the kidney, away from the tumour); colon only the cancer, 1.
    """
    ph = make_phantom(SPEC, case_seed(dataset, case_id, seed))
    image, label = ph.image.copy(), ph.label.copy()
    if dataset == "kits":  # a small water-like cyst where the organ is deepest, off the tumour
        depth = ndimage.distance_transform_edt(label == 1, sampling=SPACING)
        away = ndimage.distance_transform_edt(label != 2, sampling=SPACING)
        score = np.where(away > 8.0, depth, 0.0)
        centre = np.array(np.unravel_index(int(np.argmax(score)), SHAPE))
        grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
        r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING, strict=True))
        cyst = (r2 <= min(3.5, float(score.max())) ** 2) & (label == 1)
        label[cyst] = CYST
        image[cyst] = 10.0
    elif dataset == "colon":
        label = (label == 2).astype(np.uint8)
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return hu, label.astype(np.uint8)


def _nifti_gz(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 bytes of ``data`` (stored as given) with ``affine`` (scanner space)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def kits_files(image: np.ndarray, label: np.ndarray) -> tuple[bytes, bytes]:
    """KiTS21 storage of RAS (x, y, z) arrays: (z, y, x) arrays, every axis reversed.

    Voxel ``[i, j, k]`` of the stored array is RAS voxel ``[nx-1-k, ny-1-j, nz-1-i]``; the
    affine maps it back to the same world position: columns ``(-sz e_z, -sy e_y, -sx e_x)``.
    """
    sx, sy, sz = SPACING
    nx, ny, nz = image.shape
    affine = np.array([[0.0, 0.0, -sx, sx * (nx - 1)], [0.0, -sy, 0.0, sy * (ny - 1)],
                       [-sz, 0.0, 0.0, sz * (nz - 1)], [0.0, 0.0, 0.0, 1.0]])
    flip = (slice(None, None, -1),) * 3

    def stored(a):
        return np.ascontiguousarray(a[flip].transpose(2, 1, 0))

    return _nifti_gz(stored(image), affine), _nifti_gz(stored(label), affine)


def msd_files(image: np.ndarray, label: np.ndarray) -> tuple[bytes, bytes]:
    """MSD storage of RAS (x, y, z) arrays: x and y reversed, affine ``diag(-sx, -sy, sz)``
    with the volume centred on the scanner origin in x and y."""
    sx, sy, sz = SPACING
    nx, ny, nz = image.shape
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (nx - 1) / 2, sy * (ny - 1) / 2, -sz * (nz - 1)]

    def stored(a):
        return np.ascontiguousarray(a[::-1, ::-1, :])

    return _nifti_gz(stored(image), affine), _nifti_gz(stored(label), affine)


def msd_file_name(dataset: str, case_id: str) -> str:
    """The MSD file name of a case: ``pancreas_001.nii.gz``; LiTS ``volume-3`` → ``liver_3``."""
    if dataset == "lits":
        return f"liver_{case_number(case_id)}.nii.gz"
    return f"{case_id}.nii.gz"


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    """An uncompressed tar of (name, bytes) files and (name, None) folders, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _msd_tar(dataset: str, cases: tuple[str, ...], seed: int) -> bytes:
    task = get_source(dataset).msd_task
    title, description, labels = _MSD[dataset]
    names = [msd_file_name(dataset, c) for c in cases]
    doc = {"name": title, "description": f"{description} (sam3d rehearsal fixture: "
                                         "synthetic phantoms, not MSD data)",
           "reference": "sam3d.rehearsal.fixtures", "licence": "CC-BY-SA 4.0",
           "release": f"sam3d rehearsal fixture {FIXTURE_VERSION}", "tensorImageSize": "3D",
           "modality": {"0": "CT"}, "labels": labels, "numTraining": len(cases), "numTest": 0,
           "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
           "test": []}
    members: list[tuple[str, bytes | None]] = [
        (f"{task}/", None), (f"{task}/dataset.json", json.dumps(doc, indent=4).encode()),
        (f"{task}/imagesTr/", None), (f"{task}/labelsTr/", None), (f"{task}/imagesTs/", None),
        (f"{task}/imagesTr/._{names[0]}", _JUNK)]
    for case_id, name in zip(cases, names, strict=True):
        image, label = msd_files(*fixture_volume(dataset, case_id, seed))
        members += [(f"{task}/imagesTr/{name}", image), (f"{task}/labelsTr/{name}", label)]
    return _tar(members)


def write_raw_fixture(dataset: str, mirror_root: str | Path, seed: int = 0) -> dict:
    """Write the fixture files of ``dataset`` under ``mirror_root`` (the mirror's document root).

    Writes exactly the files the source's ``RemoteFile.path`` entries name (formatted with the
    case numbers for KiTS), plus ``mirror_root.parent / f"{dataset}-checksums.json"``
    (``sam3d-checksums/1``: the SHA-256 of every file, keyed by its remote path) outside it.
    Returns ``{"cases": [case ids], "case_numbers": [KiTS numbers; [] for the archive
    datasets], "files": [remote paths], "checksums": Path}``.
    """
    if dataset not in FIXTURE_CASES:
        raise ValueError(f"no rehearsal fixture for {dataset!r}; choose one of "
                         f"{', '.join(FIXTURE_CASES)}")
    source, cases = get_source(dataset), FIXTURE_CASES[dataset]
    mirror_root = Path(mirror_root)
    files: dict[str, bytes] = {}
    numbers = [case_number(c) for c in cases] if source.per_case else []
    if source.per_case:
        image_file, label_file = source.files
        for case_id, i in zip(cases, numbers, strict=True):
            image, label = kits_files(*fixture_volume(dataset, case_id, seed))
            files[image_file.path.format(i=i)] = image
            files[label_file.path.format(i=i)] = label
    else:
        (archive,) = source.files
        files[archive.path] = _msd_tar(dataset, cases, seed)
    for path, data in files.items():
        atomic_write_bytes(mirror_root / path, data)
    checksums = mirror_root.parent / f"{dataset}-checksums.json"
    table = {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}
    atomic_write_json(checksums, {"format": CHECKSUMS_FORMAT, "sha256": table})
    return {"cases": list(cases), "case_numbers": numbers, "files": sorted(files),
            "checksums": checksums}
