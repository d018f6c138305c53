"""Foreground intensity statistics (sam3d.data.stats) against numpy on tiny data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from sam3d.data.layout import case_record, read_index, write_index
from sam3d.data.stats import (
    HU_MAX,
    HU_MIN,
    IntensityAccumulator,
    IntensityStats,
    compute_statistics,
    foreground_values,
    statistics_rows,
)

QS = (0.0, 0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5, 100.0)


def _reference(values: np.ndarray, qs=QS) -> list[float]:
    return [float(np.percentile(values, q, method="inverted_cdf")) for q in qs]


@pytest.mark.parametrize("seed", range(6))
def test_percentiles_match_numpy_inverted_cdf(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    values = rng.integers(-1100, 2500, size=n).astype(np.float64)
    acc = IntensityAccumulator()
    acc.add(values)
    assert [acc.percentile(q) for q in QS] == _reference(values)


@pytest.mark.parametrize("n", [1, 2, 3, 199, 200, 201, 1000])
def test_percentiles_at_rank_boundaries(n):
    """Sizes where q·n/100 is (nearly) an integer for q = 0.5 and 99.5."""
    values = np.random.default_rng(n).permutation(np.arange(n) * 3 - 50).astype(float)
    acc = IntensityAccumulator()
    acc.add(values)
    assert [acc.percentile(q) for q in QS] == _reference(values)


@pytest.mark.parametrize("seed", range(3))
def test_several_adds_equal_one_big_add(seed):
    rng = np.random.default_rng(100 + seed)
    chunks = [rng.normal(60, 55, size=int(rng.integers(0, 400))).round() for _ in range(5)]
    chunks.append(rng.integers(-54, 247, size=(4, 5, 6)))  # any shape is flattened
    values = np.concatenate([c.ravel() for c in chunks]).astype(np.float64)

    many, one = IntensityAccumulator(), IntensityAccumulator()
    for c in chunks:
        many.add(c)
    one.add(values)

    np.testing.assert_array_equal(many.hist, one.hist)
    assert many.n == one.n == values.size
    assert [many.percentile(q) for q in QS] == [one.percentile(q) for q in QS]
    assert [many.percentile(q) for q in QS] == _reference(values)
    assert many.result("any").mean == pytest.approx(values.mean(), rel=1e-9)
    assert many.result("any").std == pytest.approx(values.std(), rel=1e-9)
    assert many.cases == sum(1 for c in chunks if c.size) and one.cases == 1


@pytest.mark.parametrize("loc, scale", [(60.0, 55.0), (-700.0, 200.0), (8000.0, 0.2)])
def test_mean_and_std_match_numpy(loc, scale):
    """Also a narrow spread far from 0, where sum(x²)/n − mean² would lose ~1e-7."""
    rng = np.random.default_rng(7)
    values = rng.normal(loc, scale, size=200_000)
    acc = IntensityAccumulator()
    for chunk in np.array_split(values, 13):
        acc.add(chunk)
    stats = acc.result("any")
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    assert stats.std == pytest.approx(values.std(), rel=1e-9)  # population std (ddof=0)
    assert stats.n_voxels == values.size and stats.n_cases == 13


def test_result_fields():
    acc = IntensityAccumulator()
    acc.add(np.arange(-100, 101, dtype=float))  # 201 values, mean 0
    stats = acc.result("target", percentiles=(10, 90))
    assert isinstance(stats, IntensityStats)
    assert stats.window == (-80.0, 80.0)
    assert stats.mean == pytest.approx(0.0, abs=1e-12)
    assert stats.std == pytest.approx(np.arange(-100, 101).std())
    assert stats.foreground == "target" and stats.percentiles == (10, 90)
    assert stats.as_dict()["n_voxels"] == 201 and stats.as_dict()["n_cases"] == 1


def test_values_are_rounded_and_clipped_into_the_histogram():
    acc = IntensityAccumulator()
    values = np.array([HU_MIN - 500.0, 10.4, 10.6, HU_MAX + 500.0])
    acc.add(values)
    assert acc.percentile(0) == HU_MIN and acc.percentile(100) == HU_MAX
    assert acc.percentile(50) == 10.0 and acc.percentile(75) == 11.0
    # The moments use the raw values, neither rounded nor clipped.
    assert acc.result("any").mean == pytest.approx(values.mean(), rel=1e-12)
    assert acc.result("any").std == pytest.approx(values.std(), rel=1e-12)


def test_empty_accumulator():
    acc = IntensityAccumulator()
    acc.add(np.array([]))
    assert acc.n == 0 and acc.cases == 0
    with pytest.raises(ValueError, match="no foreground"):
        acc.percentile(50)
    with pytest.raises(ValueError, match="no foreground"):
        acc.result("any")


def test_foreground_any_vs_target():
    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    label = np.zeros((2, 3, 4), np.int16)
    label[0, 0, :2] = 1
    label[1, 2, 3] = 2
    label[1, 0, 0] = 3
    np.testing.assert_array_equal(np.sort(foreground_values(image, label, 2)), [0, 1, 12, 23])
    np.testing.assert_array_equal(foreground_values(image, label, 2, "target"), [23])
    np.testing.assert_array_equal(foreground_values(image, label, 1, "target"), [0, 1])
    with pytest.raises(ValueError, match="foreground"):
        foreground_values(image, label, 2, "lesion")


# ------------------------------------------------------------- prepared dataset


def _prepared_dataset(root, n_cases: int = 4):
    """Tiny cases in the common layout; returns (index, images, labels) by case id."""
    rng = np.random.default_rng(42)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    cases, images, labels = {}, {}, {}
    for k in range(n_cases):
        case_id = f"case_{k}"
        shape = (6, 7, 8 + k)
        image = rng.integers(-1000, 1500, size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[1:5, 2:6, 2:7] = 1
        label[2:4, 3:5, 3 + k % 2:5 + k] = 2
        (root / case_id).mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), str(root / case_id / "image.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / case_id / "label.nii.gz"))
        cases[case_id] = case_record(case_id, image, (0.8, 0.8, 2.0), label, 2)
        images[case_id], labels[case_id] = image, label
    write_index(root, "phantoms", {0: "background", 1: "organ", 2: "tumour"}, 2, cases)
    return read_index(root), images, labels


@pytest.mark.parametrize("foreground", ["any", "target"])
def test_compute_statistics_equals_numpy(tmp_path, foreground):
    index, images, labels = _prepared_dataset(tmp_path)
    ids = ["case_0", "case_2", "case_3"]  # a "training split"
    mask = (lambda lab: lab > 0) if foreground == "any" else (lambda lab: lab == 2)
    values = np.concatenate([images[i][mask(labels[i])] for i in ids]).astype(np.float64)

    stats = compute_statistics(index, ids, foreground=foreground)

    assert stats.window == tuple(_reference(values, (0.5, 99.5)))
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    assert stats.std == pytest.approx(values.std(), rel=1e-9)
    assert stats.n_voxels == values.size and stats.n_cases == 3
    assert stats.foreground == foreground


def test_compute_statistics_any_differs_from_target(tmp_path):
    index, _, _ = _prepared_dataset(tmp_path)
    ids = index.case_ids()
    any_fg = compute_statistics(index, ids, "any")
    target = compute_statistics(index, ids, "target")
    assert any_fg.n_voxels > target.n_voxels
    assert target.n_voxels == sum(index.cases[i].target_voxels for i in ids)


def test_compute_statistics_needs_cases(tmp_path):
    index, _, _ = _prepared_dataset(tmp_path, 1)
    with pytest.raises(ValueError, match="no cases"):
        compute_statistics(index, [])


# -------------------------------------------------------------------- table rows


def test_statistics_rows_for_kits():
    recomputed = {
        "any": IntensityStats((-60.0, 250.0), 58.0, 54.0, 1000, 209, "any"),
        "target": IntensityStats((-20.0, 300.0), 80.0, 40.0, 100, 209, "target"),
    }
    rows = statistics_rows("kits", recomputed)
    assert [r["source"] for r in rows] == ["official code (hard-coded)", "paper",
                                           "recomputed (any)", "recomputed (target)"]
    assert all(r["dataset"] == "kits" for r in rows)
    official, paper, any_row, target_row = rows
    assert (official["window_low"], official["window_high"]) == (-54.0, 247.0)
    assert official["mean"] == 59.53867 and official["std"] == 55.457336
    assert "not reported" in paper["note"]
    assert all(paper[k] is None for k in ("window_low", "window_high", "mean", "std"))
    assert any_row == {"dataset": "kits", "source": "recomputed (any)", "window_low": -60.0,
                       "window_high": 250.0, "mean": 58.0, "std": 54.0, "cases": 209}
    assert target_row["mean"] == 80.0 and target_row["window_low"] == -20.0


def test_statistics_rows_without_constants_or_recomputation():
    rows = statistics_rows("phantoms")
    assert len(rows) == 1 and rows[0]["source"] == "paper"
    with pytest.raises(KeyError, match="unknown dataset"):
        statistics_rows("nope")
