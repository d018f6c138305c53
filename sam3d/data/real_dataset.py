"""A training dataset from the real sample CTs: real LiTS lesions plus synthetic tumours.

:func:`write_real_dataset` writes, in the common layout (:mod:`sam3d.data.layout`), from the
sample folder (``data/samples``, :mod:`sam3d.data.samples`):

* ``lits117_train`` / ``lits117_test``: the training and test sub-volumes of LiTS 117's
  lesion-level split (:mod:`sam3d.data.lesion_split`, whose cut, band, offsets and per-lesion
  list the two cases record under ``"lesion_split"``); the test label marks the lesions cut by
  the test slab's face with :data:`~sam3d.data.lesion_split.EXCLUDED` (not the target);
* ``synth_<source>_<i>``: ``per_source`` cases per source with synthetic tumours
  (:mod:`sam3d.data.synth_tumours`) pasted into the liver of ``lits117_train`` (outside its
  real lesions: many small tumours), the liver of ``totalseg_ct`` (TotalSegmentator class
  :data:`~sam3d.data.organ_masks.TOTALSEG_LIVER`: large ones) — the default sources,
  :data:`LIVER_SOURCES` — and, when asked, the lungs of ``lung1``/``lung2`` (mask from HU,
  :func:`~sam3d.data.organ_masks.lung_mask`; the CT is cropped to the lungs; their real tumour
  is kept as target; the lungs themselves are left unlabelled, so the statistics over labelled
  voxels, :mod:`sam3d.data.stats`, keep a soft-tissue window);
* optionally ``phantom_<i>`` (:mod:`sam3d.data.phantoms`).

Labels: 0 background, 1 the organ (liver), 2 tumour (the target), 3 excluded tumour. Volumes
keep their own voxel size (the pipeline resamples to the spec's spacing).
``<root>/split.json``: test = ``lits117_test`` only, validation = the last synthetic case of
each of ``val_sources``, training = the rest. Deterministic: every case draws from
:func:`~sam3d.data.phantoms.case_seed` of ``seed``; nothing is written when ``root`` already
holds the dataset of the same parameters and source files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hashing import sha256_file
from . import layout
from .io import load_volume, save_nifti
from .lesion_split import EXCLUDED, choose_split, lesion_components, split_arrays
from .organ_masks import TOTALSEG_LIVER, label_mask, lung_mask
from .phantoms import PhantomSpec, case_seed, make_phantom
from .splits import save_split
from .synth_tumours import TumourSpec, paste_tumours

VERSION = 3
TARGET = 2
LABELS = {0: "background", 1: "organ", 2: "tumour", 3: "tumour excluded from scoring"}
SOURCES = ("lits117", "totalseg_ct", "lung1", "lung2")
#: the sources written by default: the two livers. With the lung cases (nodules brighter than
#: the air around them) the book's model also marked the liver lesions next to the clicked
#: one (smoke, held-out LiTS 117 lesions: README); they stay available (``sources``)
LIVER_SOURCES = ("lits117", "totalseg_ct")
SPLIT_FILE = "split.json"
LUNG_MARGIN_MM = 10.0
# Tumour settings per source (how each tumour is drawn, (fewest, most) tumours per case):
# liver tumours darker than the parenchyma (LiTS 117's real lesions are ~50 HU below its
# enhanced liver). In LiTS 117's liver, many small ones (radius 2.5-6 mm, 60-900 voxels, the
# size of most of its real lesions and of four of the five held-out ones), allowed within 1 mm
# of the liver's border, where three of those four lie; in the TotalSegmentator liver (3 mm
# voxels), large ones (radius 8-20 mm). Lung nodules at soft-tissue density.
TUMOURS = {
    "lits117": (TumourSpec(radius_mm=(2.5, 6.0), hu=(-60.0, -25.0), border_mm=1.0), (6, 12)),
    "totalseg_ct": (TumourSpec(radius_mm=(8.0, 20.0), hu=(-55.0, -20.0), edge_mm=1.5), (6, 12)),
    "lung": (TumourSpec(radius_mm=(4.0, 12.0), hu_mode="absolute", hu=(-60.0, 40.0),
                        texture_hu=20.0, vessel_hu=None), (2, 4)),
}


@dataclass(frozen=True)
class RealDatasetSpec:
    """What to write: ``per_source`` synthetic cases for each of ``sources`` (≥ 2 for the
    validation sources), ``tumours`` = (fewest, most) synthetic tumours per case (None: each
    source's own, :data:`TUMOURS`), ``phantoms`` extra phantom cases, the split's ``band`` and
    ``min_train`` (voxels)."""

    seed: int = 0
    sources: tuple[str, ...] = LIVER_SOURCES
    per_source: int = 6
    tumours: tuple[int, int] | None = None
    val_sources: tuple[str, ...] = ("lits117", "totalseg_ct")
    phantoms: int = 0
    band: int = 8
    min_train: int = 64

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "val_sources", tuple(self.val_sources))
        if self.tumours is not None:
            object.__setattr__(self, "tumours", tuple(self.tumours))
        for name in ("seed", "per_source", "phantoms", "band", "min_train"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown or not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must be distinct names from {SOURCES}, got "
                             f"{self.sources!r}")
        if not set(self.val_sources) <= set(self.sources):
            raise ValueError(f"val_sources {self.val_sources!r} must be among the sources")
        if self.val_sources and self.per_source < 2:
            raise ValueError("per_source must be ≥ 2 when validation cases are taken from it")
        if self.tumours is not None:  # None: each source's own counts (TUMOURS)
            lo, hi = self.tumours if len(self.tumours) == 2 else (0, -1)
            if isinstance(lo, bool) or not isinstance(lo, int) or not 1 <= lo <= hi:
                raise ValueError(f"tumours must be (fewest, most) with 1 ≤ fewest ≤ most, got "
                                 f"{self.tumours!r}")

    def params(self) -> dict:
        return {"seed": self.seed, "sources": list(self.sources), "per_source": self.per_source,
                "tumours": None if self.tumours is None else list(self.tumours),
                "val_sources": list(self.val_sources),
                "phantoms": self.phantoms, "band": self.band, "min_train": self.min_train}


def _source_files(samples: Path, sources) -> dict[str, tuple[Path, Path]]:
    names = sorted({"lits117", *sources})
    index = layout.read_index(samples)
    missing = [n for n in names if n not in index.cases]
    if missing:
        raise ValueError(f"{samples}: sample case(s) {missing} missing (fetch the samples: "
                         "python data_scripts/fetch_samples.py --out data/samples)")
    return {n: (index.cases[n].image, index.cases[n].label) for n in names}


def _organs(name: str, files) -> tuple[tuple, np.ndarray]:
    """``((image, label 0/1/2, organ mask, spacing, extra record), affine)``: the base of a
    source's synthetic cases, X×Y×Z arrays."""
    image, label = load_volume(files[0]), load_volume(files[1], "label")
    if name == "totalseg_ct":
        organ = label_mask(label.array, TOTALSEG_LIVER)
        return (image.array, organ.astype(np.uint8), organ, image.spacing,
                {"organ": f"liver (TotalSegmentator class {TOTALSEG_LIVER})",
                 "labels": {**LABELS, 1: "liver"}}), image.affine
    lungs = lung_mask(image.array, image.spacing)
    # the real tumour stays; the lungs stay unlabelled (background), so the intensity
    # statistics over labelled voxels (sam3d.data.stats) keep a soft-tissue window
    lab = np.where(label.array == 1, TARGET, 0).astype(np.uint8)
    sp = np.asarray(image.spacing)
    box = np.argwhere(lungs | (label.array == 1))
    margin = np.ceil(LUNG_MARGIN_MM / sp).astype(int)
    lo = np.maximum(box.min(0) - margin, 0)
    hi = np.minimum(box.max(0) + 1 + margin, lungs.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ lo + image.affine[:3, 3]
    return (image.array[crop], lab[crop], lungs[crop], image.spacing,
            {"organ": "lungs (HU < -400 inside the body)", "crop_offset": [int(v) for v in lo],
             "labels": {0: "background (lungs included)", 2: "tumour"}, "organ_label": 0}
            ), affine


def _hu(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def write_real_dataset(root: str | Path, samples: str | Path,
                       spec: RealDatasetSpec = RealDatasetSpec()) -> Path:
    """Write the dataset (see the module docstring) to ``root``; returns ``root``."""
    if not isinstance(spec, RealDatasetSpec):
        raise ValueError(f"spec must be a RealDatasetSpec, got {type(spec).__name__}")
    root, samples = Path(root), Path(samples)
    files = _source_files(samples, spec.sources)
    params = {"generator": "sam3d.data.real_dataset", "version": VERSION, **spec.params(),
              "inputs": {n: [sha256_file(p) for p in pair] for n, pair in files.items()}}
    description = ("Real CT training data: LiTS 117's lesion-level split plus synthetic "
                   "tumours in real liver and lung. Parameters: " + json.dumps(params,
                                                                                sort_keys=True))
    ids = _case_ids(spec)
    if layout.up_to_date(root, description, ids) and (root / SPLIT_FILE).is_file():
        return root
    cases: dict[str, dict] = {}

    def write(case_id, image, label, affine, spacing, **extra):
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        hu, lab = _hu(image), np.asarray(label).astype(np.uint8)
        save_nifti(folder / "image.nii.gz", hu, affine)
        save_nifti(folder / "label.nii.gz", lab, affine)
        cases[case_id] = layout.case_record(case_id, hu, spacing, lab, TARGET, **extra)

    image = load_volume(files["lits117"][0])
    label = load_volume(files["lits117"][1], "label")
    split = choose_split(label.array, TARGET, band=spec.band, min_train=spec.min_train)
    parts = split_arrays(image.array, label.array, image.affine, split)
    meta = split.as_dict()
    lits_labels = {0: "background", 1: "liver", 2: "tumour", EXCLUDED: LABELS[EXCLUDED]}
    for part in ("train", "test"):
        write(f"lits117_{part}", *parts[part], image.spacing, labels=lits_labels,
              lesion_split=meta, offset=list(split.offset(part)),
              note=f"LiTS 117 {part} sub-volume of the lesion-level split")
    bases = {"lits117": ((parts["train"][0], parts["train"][1], parts["train"][1] == 1,
                          image.spacing, {"organ": "liver of lits117_train",
                                          "labels": {**LABELS, 1: "liver"}}), image.affine)}
    for k, name in enumerate(spec.sources):
        base = bases.get(name) or _organs(name, files[name])
        (img, lab, organ, spacing, extra), affine = base
        tumour_spec, counts = TUMOURS["lung" if name.startswith("lung") else name]
        counts = spec.tumours or counts
        for i in range(spec.per_source):
            rng = np.random.default_rng(case_seed(spec.seed, 1000 * (k + 1) + i))
            n = int(rng.integers(counts[0], counts[1] + 1))
            out = paste_tumours(img, lab, organ, spacing, n, int(rng.integers(2 ** 31)),
                                tumour_spec, target=TARGET)
            organ_value = extra.get("organ_label", 1)
            lab_out = np.where(out.label == TARGET, TARGET,
                               np.where(out.organ, organ_value, 0)).astype(np.uint8)
            write(f"synth_{name}_{i}", out.image, lab_out, affine, spacing,
                  source=name, synthetic=out.tumours, tumour_spec=tumour_spec.params(),
                  **extra)
    for i in range(spec.phantoms):
        ph = make_phantom(PhantomSpec(), case_seed(spec.seed, i))
        write(f"phantom_{i:03d}", ph.image, ph.label, ph.affine, ph.spacing,
              note=f"phantom seed={ph.seed}")
    layout.write_index(root, name="real_ct", labels=LABELS, target=TARGET, cases=cases,
                       source=f"{samples} (sam3d.data.samples) + sam3d.data.synth_tumours",
                       description=description)
    save_split(root / SPLIT_FILE, make_real_split(spec), seed=spec.seed,
               source="sam3d.data.real_dataset: test = LiTS 117's test slab")
    return root


def _case_ids(spec: RealDatasetSpec) -> list[str]:
    return (["lits117_train", "lits117_test"]
            + [f"synth_{n}_{i}" for n in spec.sources for i in range(spec.per_source)]
            + [f"phantom_{i:03d}" for i in range(spec.phantoms)])


def make_real_split(spec: RealDatasetSpec) -> dict[str, list[str]]:
    """Train/val/test case ids of the dataset ``spec`` describes."""
    val = [f"synth_{n}_{spec.per_source - 1}" for n in spec.val_sources]
    ids = _case_ids(spec)
    return {"train": sorted(i for i in ids if i not in val and i != "lits117_test"),
            "val": sorted(val), "test": ["lits117_test"]}


def write_lesion_cases(root: str | Path, out: str | Path, min_voxels: int = 100) -> Path:
    """One test case per held-out lesion: ``<out>/lits117_test_lesion_<id>``, the test
    sub-volume of the dataset at ``root`` with only that lesion as target (the other test
    lesions get :data:`~sam3d.data.lesion_split.EXCLUDED`), for per-lesion 1-click scores of
    the lesions of at least ``min_voxels`` voxels. Returns ``out`` (with its split file: all
    test)."""
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, int) or min_voxels < 1:
        raise ValueError(f"min_voxels must be a positive integer, got {min_voxels!r}")
    root, out = Path(root), Path(out)
    index = layout.read_index(root)
    doc = json.loads((root / layout.INDEX).read_text(encoding="utf-8"))["cases"]["lits117_test"]
    meta = doc["lesion_split"]
    image = load_volume(index.cases["lits117_test"].image)
    label = load_volume(index.cases["lits117_test"].label, "label")
    comp, _ = lesion_components(np.where(label.array == TARGET, TARGET, 0), TARGET,
                                meta["connectivity"])
    full = {les["id"]: les for les in meta["lesions"] if les["role"] == "test"}
    cases: dict[str, dict] = {}
    for lesion_id in sorted(i for i, les in full.items() if les["voxels"] >= min_voxels):
        voxels = full[lesion_id]["voxels"]
        # components numbered in the sub-volume: the one of this lesion's size and bbox
        here = _match(comp, full[lesion_id], doc["offset"])
        lab = label.array.astype(np.uint8)
        lab[(label.array == TARGET) & (comp != here)] = EXCLUDED
        case_id = f"lits117_test_lesion_{lesion_id}"
        folder = out / case_id
        folder.mkdir(parents=True, exist_ok=True)
        save_nifti(folder / "image.nii.gz", _hu(image.array), image.affine)
        save_nifti(folder / "label.nii.gz", lab, image.affine)
        cases[case_id] = layout.case_record(case_id, image.array, image.spacing, lab, TARGET,
                                            note=f"LiTS 117 test lesion {lesion_id} "
                                                 f"({voxels} voxels) alone as target")
    layout.write_index(out, name="real_ct_lesions", labels=LABELS, target=TARGET, cases=cases,
                       source=str(root), description="held-out LiTS 117 lesions, one per case")
    save_split(out / SPLIT_FILE, {"train": [], "val": [], "test": sorted(cases)},
               source="sam3d.data.real_dataset.write_lesion_cases")
    return out


def held_out_lesions(label: np.ndarray, spec: RealDatasetSpec = RealDatasetSpec(),
                     min_voxels: int = 100) -> list[dict]:
    """The held-out lesions of at least ``min_voxels`` voxels of LiTS 117's lesion-level split
    (the cut :func:`write_real_dataset` makes with ``spec``) of its X×Y×Z ``label``, largest
    first: their records (``id``, ``voxels``, ``bbox`` in ``label``, ``role``)."""
    split = choose_split(np.asarray(label), TARGET, band=spec.band, min_train=spec.min_train)
    return sorted((les.as_dict() for les in split.with_role("test") if les.voxels >= min_voxels),
                  key=lambda les: (-les["voxels"], les["id"]))


def lesion_mask(label: np.ndarray, lesion: dict, target: int = TARGET,
                offset=(0, 0, 0)) -> np.ndarray:
    """The voxels (X×Y×Z bool) of ``lesion`` (a record of :func:`held_out_lesions`) in
    ``label``, the whole sample volume's label or a sub-volume of it starting at ``offset``."""
    comp, _ = lesion_components(label, target)
    return comp == _match(comp, lesion, offset)


def _match(comp: np.ndarray, lesion: dict, offset) -> int:
    """The component number in ``comp`` (a sub-volume at ``offset``) of ``lesion``."""
    lo = [b[0] - o for b, o in zip(lesion["bbox"], offset, strict=True)]
    hi = [b[1] - o for b, o in zip(lesion["bbox"], offset, strict=True)]
    window = comp[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    ids, counts = np.unique(window[window > 0], return_counts=True)
    hit = [int(i) for i, c in zip(ids, counts, strict=True) if c == lesion["voxels"]]
    if len(hit) != 1:
        raise ValueError(f"lesion {lesion['id']} not found whole in the test sub-volume")
    return hit[0]
