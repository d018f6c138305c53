"""A lesion-level split of one labelled volume into a training slab and a test slab.

One CT with many lesions (the LiTS 117 sample) can give both training and held-out lesions if
the two sets are separated in space. The volume is cut across one axis into three slabs::

    [ test slab | guard band | training slab ]      (or mirrored: side "high")

and the test and training slabs are written as separate sub-volumes, so no training crop can
see a voxel of the test slab or of the band.

The cut is chosen by a fixed rule computed from the label (:func:`choose_split`):

1. The lesions are the connected components of ``label == target`` (26-connectivity by default).
2. Every axis, both sides and every test-slab thickness ``t`` are tried, with the band
   ``band`` voxels thick and the training slab the rest (at least ``min_train`` voxels thick).
3. A candidate is admissible when at least ``min_test_lesions`` lesions of at least
   ``min_lesion_voxels`` voxels lie wholly in the test slab.
4. Its score is the voxel count of the lesions wholly in the test slab less the tumour voxels
   of the test slab that belong to lesions cut by the slab's inner face (those are *excluded*:
   written with label :data:`EXCLUDED`, neither target nor background, see below). The highest
   score wins; ties go to the lower axis, then side "low", then the thinner test slab.

On real data a clean cut (no lesion crossing any face) may not exist — in LiTS 117 no plane
across x or y is crossed by no lesion, and across z only planes 1–5 and 26 are, which leaves
at most two test lesions; nor is there a cut with three whole test lesions of ≥ 100 voxels
whose test and training slabs share no lesion (a band of 8, a training slab of ≥ 64).
Hence the roles:

* ``test``: wholly in the test slab — the held-out lesions, label ``target`` there. Being whole
  in the test slab, none of their voxels is in the band or the training sub-volume.
* ``excluded``: in the test slab but not wholly: label :data:`EXCLUDED` in the test sub-volume,
  so evaluation treats them as non-target (no click is placed there, and a model that segments
  them is penalised: a pessimistic, never an optimistic, bias). A part of one that reaches the
  training slab stays target there: it is training data, never a scored test lesion.
* ``train``: wholly in the training slab.
* ``train_cut``: in the training slab and the band: kept as target in the training
  sub-volume, cut at its face as any random crop cuts lesions.
* ``band``: wholly in the band, in neither sub-volume.

Arrays are (x, y, z) as read by :func:`sam3d.data.io.load_volume`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EXCLUDED = 3
SIDES = ("low", "high")
ROLES = ("test", "excluded", "train", "train_cut", "band")


@dataclass(frozen=True)
class Lesion:
    """One connected lesion: ``id`` (component number), ``voxels``, ``bbox`` = three
    half-open ``(start, stop)`` voxel ranges of the full volume, ``role`` (see module)."""

    id: int
    voxels: int
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    role: str

    def as_dict(self) -> dict:
        return {"id": self.id, "voxels": self.voxels, "bbox": [list(b) for b in self.bbox],
                "role": self.role}


@dataclass(frozen=True)
class LesionSplit:
    """A chosen cut of a volume of ``shape``: half-open ranges along ``axis`` of the test slab,
    guard band and training slab, and every lesion with its role."""

    shape: tuple[int, int, int]
    axis: int
    side: str
    test: tuple[int, int]
    band: tuple[int, int]
    train: tuple[int, int]
    connectivity: int
    target: int
    lesions: tuple[Lesion, ...]

    def region(self, part: str) -> tuple[slice, slice, slice]:
        """Index of the ``part`` ("test", "band" or "train") sub-volume in the full volume."""
        if part not in ("test", "band", "train"):
            raise ValueError(f"part must be 'test', 'band' or 'train', got {part!r}")
        lo, hi = getattr(self, part)
        index = [slice(0, s) for s in self.shape]
        index[self.axis] = slice(lo, hi)
        return index[0], index[1], index[2]

    def offset(self, part: str) -> tuple[int, int, int]:
        """Voxel index in the full volume of the ``part`` sub-volume's first voxel."""
        x, y, z = (int(s.start) for s in self.region(part))
        return x, y, z

    def with_role(self, role: str) -> list[Lesion]:
        return [les for les in self.lesions if les.role == role]

    def as_dict(self) -> dict:
        return {"rule": "sam3d.data.lesion_split.choose_split", "shape": list(self.shape),
                "axis": self.axis, "side": self.side, "test": list(self.test),
                "band": list(self.band), "train": list(self.train),
                "offsets": {p: list(self.offset(p)) for p in ("test", "band", "train")},
                "connectivity": self.connectivity, "target": self.target,
                "lesions": [les.as_dict() for les in self.lesions]}


def lesion_components(label: np.ndarray, target: int, connectivity: int = 26):
    """``(components, n)``: X×Y×Z int32 component numbers (0 outside) of ``label == target``."""
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity!r}")
    if np.asarray(label).ndim != 3:
        raise ValueError(f"label must be 3-D (x, y, z), got shape {np.shape(label)}")
    structure = np.ones((3, 3, 3), bool) if connectivity == 26 else None
    comp, n = ndimage.label(np.asarray(label) == target, structure=structure)
    return comp.astype(np.int32), int(n)


def _ranges(side: str, n: int, thick: int, band: int):
    if side == "low":
        return (0, thick), (thick, thick + band), (thick + band, n)
    return (n - thick, n), (n - thick - band, n - thick), (0, n - thick - band)


def choose_split(label: np.ndarray, target: int = 2, *, band: int = 8, min_train: int = 64,
                 min_test_lesions: int = 3, min_lesion_voxels: int = 100,
                 connectivity: int = 26) -> LesionSplit:
    """The admissible cut of highest score by the module's rule; ``label`` is X×Y×Z.

    Raises ValueError for bad arguments and when no cut is admissible.
    """
    for name, value, least in (("band", band, 1), ("min_train", min_train, 1),
                               ("min_test_lesions", min_test_lesions, 1),
                               ("min_lesion_voxels", min_lesion_voxels, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")
    comp, n = lesion_components(label, target, connectivity)
    if n == 0:
        raise ValueError(f"label has no voxel of target {target}")
    ids = np.arange(1, n + 1)
    sizes = np.asarray(ndimage.sum(np.ones(comp.shape), comp, ids), dtype=np.int64)
    boxes = ndimage.find_objects(comp)
    best = None
    for axis in range(3):
        size = comp.shape[axis]
        # per slice along the axis: voxel count of every component (n_slices × n)
        moved = np.moveaxis(comp, axis, 0).reshape(size, -1)
        per_slice = np.stack([np.bincount(s, minlength=n + 1)[1:] for s in moved])
        for side in SIDES:
            for thick in range(1, size - band - min_train + 1):
                test, _, _ = _ranges(side, size, thick, band)
                in_test = per_slice[test[0]:test[1]].sum(0)
                whole = in_test == sizes
                if np.count_nonzero(whole & (sizes >= min_lesion_voxels)) < min_test_lesions:
                    continue
                score = int(sizes[whole].sum() - in_test[~whole].sum())
                if best is None or score > best[0]:
                    best = (score, axis, side, thick)
    if best is None:
        raise ValueError(f"no admissible cut: no slab with ≥ {min_test_lesions} whole lesions "
                         f"of ≥ {min_lesion_voxels} voxels, a {band}-voxel band and a training "
                         f"slab ≥ {min_train} voxels thick")
    _, axis, side, thick = best
    test, band_r, train = _ranges(side, comp.shape[axis], thick, band)
    lesions = []
    for i, box in enumerate(boxes):
        lo, hi = box[axis].start, box[axis].stop
        in_test, in_train = _overlaps((lo, hi), test), _overlaps((lo, hi), train)
        inside_test = test[0] <= lo and hi <= test[1]
        inside_train = train[0] <= lo and hi <= train[1]
        role = ("test" if inside_test else "excluded" if in_test else "train" if inside_train
                else "train_cut" if in_train else "band")
        bx, by, bz = ((int(b.start), int(b.stop)) for b in box)
        lesions.append(Lesion(i + 1, int(sizes[i]), (bx, by, bz), role))
    sx, sy, sz = (int(s) for s in comp.shape)
    return LesionSplit(shape=(sx, sy, sz), axis=axis, side=side, test=test, band=band_r,
                       train=train, connectivity=connectivity, target=int(target),
                       lesions=tuple(lesions))


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def split_arrays(image: np.ndarray, label: np.ndarray, affine: np.ndarray, split: LesionSplit,
                 connectivity: int | None = None) -> dict[str, tuple]:
    """``{"train": (image, label, affine), "test": (...)}``: copies of the two sub-volumes.

    ``image``/``label``: X×Y×Z of ``split.shape``; each sub-affine maps the sub-volume's voxel
    (0, 0, 0) to the same point as the full volume's voxel at :meth:`LesionSplit.offset`. In the
    test label the voxels of ``excluded`` lesions get :data:`EXCLUDED`.
    """
    image, label, affine = np.asarray(image), np.asarray(label), np.asarray(affine, float)
    if image.shape != tuple(split.shape) or label.shape != tuple(split.shape):
        raise ValueError(f"image {image.shape} and label {label.shape} must have the split's "
                         f"shape {split.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4×4, got {affine.shape}")
    if np.any(label == EXCLUDED) and split.target != EXCLUDED:
        raise ValueError(f"label already holds the value {EXCLUDED} that marks excluded lesions")
    comp, _ = lesion_components(label, split.target, connectivity or split.connectivity)
    out = {}
    for part in ("train", "test"):
        index = split.region(part)
        sub_label = label[index].copy()
        if part == "test":
            excluded = [les.id for les in split.with_role("excluded")]
            sub_label[np.isin(comp[index], excluded)] = EXCLUDED
        sub_affine = affine.copy()
        sub_affine[:3, 3] = affine[:3, :3] @ np.asarray(split.offset(part), float) + affine[:3, 3]
        out[part] = (image[index].copy(), sub_label, sub_affine)
    return out
