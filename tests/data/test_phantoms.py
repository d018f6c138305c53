"""Synthetic CT phantoms: determinism, anatomy in HU, tumour placement and the dataset writer."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sam3d.data import layout
from sam3d.data.phantoms import (
    MIN_TUMOUR_MM3,
    ORGAN_HU,
    Phantom,
    PhantomSpec,
    case_seed,
    make_phantom,
    write_phantom_dataset,
)

SEEDS = (0, 1, 2)
_CACHE: dict[tuple, Phantom] = {}


def phantom(seed: int = 0, **kw) -> Phantom:
    """Cached ``make_phantom(PhantomSpec(**kw), seed)`` (arrays are treated as read-only)."""
    key = (seed, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = make_phantom(PhantomSpec(**kw), seed)
    return _CACHE[key]


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    a, b = phantom(0), make_phantom(PhantomSpec(), 0)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.label, b.label)
    assert a.tumours == b.tumours
    c = phantom(1)
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(a.image, c.image)
    assert a.tumours[0]["centre"] != c.tumours[0]["centre"]


def test_shapes_dtypes_affine():
    ph = phantom(0)
    assert ph.image.shape == ph.label.shape == (96, 96, 64)
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert ph.affine.dtype == np.float64 and np.array_equal(ph.affine, np.eye(4))
    assert set(np.unique(ph.label).tolist()) == {0, 1, 2}
    assert ph.seed == 0 and ph.spacing == (1.0, 1.0, 1.0)
    aniso = phantom(0, shape=(120, 120, 26), spacing=(0.8, 0.8, 2.5))
    assert aniso.image.shape == (120, 120, 26)
    assert np.array_equal(aniso.affine, np.diag([0.8, 0.8, 2.5, 1.0]))


def test_tissue_hounsfield_units():
    for seed in SEEDS[:2]:
        ph = phantom(seed)
        corner = ph.image[:8, :8, :]  # outside the body
        assert abs(float(corner.mean()) + 1000.0) < 5.0
        assert 8.0 < float(corner.std()) < 16.0  # noise_hu = 12
        assert float(ph.image.max()) > 250.0  # vertebra
        assert abs(float(ph.image[ph.label == 1].mean()) - ORGAN_HU) < 15.0
        assert float(ph.image.min()) >= -1024.0
    quiet = make_phantom(PhantomSpec(noise_hu=0.0), 0)
    assert float(quiet.image[:8, :8, :].std()) < 1e-3


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_tumours_lie_inside_the_organ(difficulty):
    for seed in SEEDS:
        ph = phantom(seed, difficulty=difficulty)
        box = ndimage.find_objects(ph.label)[1]  # bounding box of the tumours
        box = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
        label = ph.label[box]
        tumour = label == 2
        assert 1 <= len(ph.tumours) <= ph.spec.tumour_range[1]
        assert sum(t["voxels"] for t in ph.tumours) == int(tumour.sum()) == (ph.label == 2).sum()
        # rule: the tumour dilated by one voxel (26-neighbourhood) stays inside organ ∪ tumour
        grown = ndimage.binary_dilation(tumour, np.ones((3, 3, 3), bool))
        assert np.all(label[grown] >= 1)
        # separate tumours are separate connected components
        _, n = ndimage.label(tumour, np.ones((3, 3, 3), bool))
        assert n >= len(ph.tumours)
        for t in ph.tumours:
            assert ph.label[tuple(t["centre"])] >= 1


def _contrast_and_size(difficulty: float) -> tuple[float, float]:
    contrasts, sizes = [], []
    for seed in SEEDS:
        ph = phantom(seed, difficulty=difficulty)
        organ = ndimage.binary_erosion(ph.label == 1, iterations=2)
        contrasts.append(ph.image[organ].mean() - ph.image[ph.label == 2].mean())
        sizes.extend(t["voxels"] for t in ph.tumours)
    return float(np.mean(contrasts)), float(np.mean(sizes))


def test_contrast_and_size_shrink_with_difficulty():
    c0, s0 = _contrast_and_size(0.0)
    c5, s5 = _contrast_and_size(0.5)
    c1, s1 = _contrast_and_size(1.0)
    assert c0 > c5 > c1 > 3.0  # hard tumours are still darker than the organ ...
    assert c1 < 15.0  # ... but only by about the noise level
    assert c0 > 35.0
    assert s0 > s5 > s1
    assert s0 > 4 * s1


def test_hard_tumours_are_small_but_not_trivial():
    for seed in SEEDS:
        for t in phantom(seed, difficulty=1.0).tumours:
            assert t["voxels"] >= 30 and t["voxels"] * 1.0 >= MIN_TUMOUR_MM3
            assert t["radius_mm"] < 5.0 and t["contrast_hu"] < 15.0
    ph = phantom(0, shape=(120, 120, 26), spacing=(0.8, 0.8, 2.5), difficulty=1.0)
    for t in ph.tumours:
        assert t["voxels"] * 0.8 * 0.8 * 2.5 >= MIN_TUMOUR_MM3


def test_anatomy_is_defined_in_millimetres():
    for seed in SEEDS[:2]:
        iso = phantom(seed)
        aniso = phantom(seed, shape=(120, 120, 26), spacing=(0.8, 0.8, 2.5))
        v_iso = np.count_nonzero(iso.label >= 1) * 1.0
        v_aniso = np.count_nonzero(aniso.label >= 1) * 0.8 * 0.8 * 2.5
        assert abs(v_aniso / v_iso - 1.0) < 0.15


def test_difficulty_changes_only_the_tumours():
    easy, hard = phantom(0, difficulty=0.0), phantom(0, difficulty=1.0)
    assert np.array_equal(easy.label >= 1, hard.label >= 1)
    assert not np.array_equal(easy.label, hard.label)


def test_tumour_count():
    assert len(phantom(2, n_tumours=2).tumours) == 2
    none = make_phantom(PhantomSpec(n_tumours=0), 0)
    assert none.tumours == [] and not np.any(none.label == 2)
    counts = {len(phantom(s).tumours) for s in SEEDS}
    assert counts <= {1, 2, 3}


def test_spec_normalises_sequences():
    spec = PhantomSpec(shape=[32, 40, 48], spacing=[1, 1, 2], n_tumours=[1, 2], difficulty=1)
    assert spec.shape == (32, 40, 48) and spec.spacing == (1.0, 1.0, 2.0)
    assert spec.n_tumours == (1, 2) and spec.difficulty == 1.0
    assert PhantomSpec(n_tumours=2).tumour_range == (2, 2)
    json.dumps(spec.params())


@pytest.mark.parametrize("kw", [
    {"shape": (15, 96, 64)}, {"shape": (96, 96)}, {"shape": (96.0, 96, 64)},
    {"shape": (96, True, 64)}, {"shape": "96"}, {"spacing": (0.0, 1, 1)},
    {"spacing": (1, 1, math.nan)}, {"spacing": (1, 1)}, {"spacing": (1, 1, -2)},
    {"difficulty": -0.1}, {"difficulty": 1.5}, {"difficulty": math.nan}, {"difficulty": "1"},
    {"n_tumours": (3, 1)}, {"n_tumours": -1}, {"n_tumours": (0, 11)}, {"n_tumours": 11},
    {"n_tumours": (1, 2, 3)}, {"n_tumours": 1.0}, {"noise_hu": -1.0}, {"noise_hu": math.inf},
])
def test_spec_validation(kw):
    with pytest.raises(ValueError):
        PhantomSpec(**kw)


def test_argument_validation():
    for seed in (-1, 1.5, "0", True):
        with pytest.raises(ValueError, match="seed"):
            make_phantom(PhantomSpec(), seed)
    with pytest.raises(TypeError, match="PhantomSpec"):
        make_phantom({"shape": (96, 96, 64)}, 0)
    with pytest.raises(ValueError, match="organ too small"):
        make_phantom(PhantomSpec(shape=(16, 16, 16)), 0)
    for kw in ({"n_cases": 0}, {"n_cases": 1, "prefix": "a/b"}, {"n_cases": 1, "prefix": ""},
               {"n_cases": 1, "seed": -1}):
        with pytest.raises(ValueError):
            write_phantom_dataset("/nonexistent/never-written", **kw)


def test_case_seed():
    assert case_seed(0, 1) == case_seed(0, 1)
    assert len({case_seed(s, i) for s in range(3) for i in range(5)}) == 15


def test_write_phantom_dataset(tmp_path):
    spec = PhantomSpec(shape=(64, 64, 32), difficulty=0.7)
    root = tmp_path / "phantoms"
    assert write_phantom_dataset(root, 2, seed=3, spec=spec) == root
    index = layout.read_index(root)
    assert index.case_ids() == ["phantom_000", "phantom_001"]
    assert index.target == 2 and index.labels == {0: "background", 1: "organ", 2: "tumour"}
    for i, case_id in enumerate(index.case_ids()):
        entry = index.cases[case_id]
        assert entry.target_voxels > 0 and entry.shape == spec.shape
        assert entry.spacing == spec.spacing
        ph = make_phantom(spec, case_seed(3, i))
        image, label = nib.load(entry.image), nib.load(entry.label)
        assert np.allclose(image.affine, ph.affine) and np.allclose(label.affine, ph.affine)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert np.array_equal(np.asarray(label.dataobj), ph.label)
        hu = np.asarray(image.dataobj)
        assert hu.shape == spec.shape and np.abs(hu - ph.image).max() <= 0.5 + 1e-3
        assert entry.target_voxels == int((ph.label == 2).sum())
    # idempotent: same parameters and all files present -> nothing is rewritten
    files = [root / "dataset.json", *root.glob("*/*.nii.gz")]
    assert len(files) == 5
    before = {f: f.stat().st_mtime_ns for f in files}
    write_phantom_dataset(root, 2, seed=3, spec=spec)
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # other parameters (or a missing file) -> regenerated
    (root / "phantom_001" / "label.nii.gz").unlink()
    write_phantom_dataset(root, 2, seed=3, spec=spec)
    assert (root / "phantom_001" / "label.nii.gz").is_file()
    write_phantom_dataset(root, 3, seed=4, spec=spec, prefix="ph")
    index = layout.read_index(root)
    assert index.case_ids() == ["ph_000", "ph_001", "ph_002"]
    assert '"seed": 4' in index.description


def test_without_replace_another_dataset_is_never_written_over(tmp_path, monkeypatch):
    from sam3d.data import phantoms as P

    spec = PhantomSpec(shape=(32, 32, 24))
    root = write_phantom_dataset(tmp_path / "ph", 2, seed=0, spec=spec)
    stamps = {f: f.stat().st_mtime_ns for f in root.rglob("*") if f.is_file()}
    assert write_phantom_dataset(root, 2, seed=0, spec=spec, replace=False) == root  # the same
    with pytest.raises(FileExistsError, match=r'other parameters: \{"seed": 0\}.*not written'):
        write_phantom_dataset(root, 2, seed=1, spec=spec, replace=False)
    with pytest.raises(FileExistsError, match=r'"n_cases": 2'):
        write_phantom_dataset(root, 3, seed=0, spec=spec, replace=False)
    assert {f: f.stat().st_mtime_ns for f in root.rglob("*") if f.is_file()} == stamps
    # an incomplete folder of the same phantoms is completed, an older version replaced
    (root / "phantom_001" / "label.nii.gz").unlink()
    write_phantom_dataset(root, 2, seed=0, spec=spec, replace=False)
    assert (root / "phantom_001" / "label.nii.gz").is_file()
    monkeypatch.setattr(P, "GENERATOR_VERSION", P.GENERATOR_VERSION + 1)
    write_phantom_dataset(root, 2, seed=0, spec=spec, replace=False)
    assert f'"version": {P.GENERATOR_VERSION}' in layout.read_index(root).description
    # a dataset of another kind (a prepared benchmark, say) is never written over
    other = tmp_path / "kits"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"name": "kits", "description": "KiTS"}))
    with pytest.raises(FileExistsError, match="not written by this generator"):
        write_phantom_dataset(other, 2, seed=0, spec=spec, replace=False)
    assert sorted(p.name for p in other.iterdir()) == ["dataset.json"]
