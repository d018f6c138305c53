"""Slice-by-slice 2D SAM baseline with a stub predictor (hand-checkable masks), a tiny random
SAM, and (``slow``) the real MobileSAM on LiTS case 117."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3d.baselines.sam2d import (
    evaluate_case,
    segment_slices,
    segment_slices_multi,
    slice_rng,
    window_slice,
)
from sam3d.data.layout import CaseEntry, read_index
from sam3d.evaluation.metrics import dice
from sam3d.viz import to_dhw

REPO = Path(__file__).resolve().parents[2]


class BoxPredictor:
    """Stub SamPredictor: the mask is the inclusive bounding box of the given points."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.calls: list[tuple[int, np.ndarray, np.ndarray, bool]] = []

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        assert image_format == "RGB" and image.dtype == np.uint8 and image.shape[2] == 3
        self.images.append(image.copy())

    def predict(self, point_coords, point_labels, multimask_output=True):
        self.calls.append((len(self.images) - 1, np.array(point_coords), np.array(point_labels),
                           multimask_output))
        (x0, y0), (x1, y1) = point_coords.min(0).astype(int), point_coords.max(0).astype(int)
        mask = np.zeros((1, *self.images[-1].shape[:2]), dtype=bool)
        mask[0, y0:y1 + 1, x0:x1 + 1] = True
        return mask, np.ones(1, np.float32), np.zeros((1, 256, 256), np.float32)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """D×H×W = 5×8×10: a HU ramp; lesion at (1, 2, 7) and at (3, 4, 1) + (3, 6, 5)."""
    image = np.linspace(-400.0, 500.0, 5 * 8 * 10).reshape(5, 8, 10).astype(np.float32)
    label = np.zeros((5, 8, 10), dtype=bool)
    label[1, 2, 7] = True
    label[3, 4, 1] = label[3, 6, 5] = True
    return image, label


def test_window_slice_maps_the_window_to_0_255_grey_rgb() -> None:
    hu = np.array([[-1000.0, -160.0, 40.0], [0.0, 240.0, 3000.0]])
    rgb = window_slice(hu)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert (rgb == rgb[:, :, :1]).all()
    # 40 HU → 255·200/400 = 127.5 → 128 (half to even); 0 HU → 255·160/400 = 102
    assert rgb[:, :, 0].tolist() == [[0, 0, 128], [102, 255, 255]]
    assert window_slice(np.array([[50.0, 10.0]]), (0, 100))[:, :, 0].tolist() == [[128, 26]]
    for bad in [(240, -160), (0, float("nan")), (1,), "ab"]:
        with pytest.raises(ValueError, match="window"):
            window_slice(hu, bad)
    with pytest.raises(ValueError, match="H×W"):
        window_slice(np.zeros((2, 2, 2)))


def test_only_lesion_slices_are_prompted_with_points_in_x_y_order() -> None:
    image, label = _volume()
    stub = BoxPredictor()
    mask = segment_slices(stub, image, label, 3, np.random.default_rng(0))
    assert mask.shape == label.shape and mask.dtype == bool
    assert len(stub.images) == 2
    np.testing.assert_array_equal(stub.images[0], window_slice(image[1]))
    np.testing.assert_array_equal(stub.images[1], window_slice(image[3]))
    assert [c[0] for c in stub.calls] == [0, 1]
    _, coords, labels, multi = stub.calls[0]
    assert coords.tolist() == [[7.0, 2.0]] * 3  # (x, y) = (w, h) of the single lesion pixel
    assert labels.tolist() == [1, 1, 1] and multi is False
    expected = np.zeros_like(label)
    expected[1, 2, 7] = True
    xs, ys = stub.calls[1][1][:, 0].astype(int), stub.calls[1][1][:, 1].astype(int)
    assert set(zip(ys.tolist(), xs.tolist(), strict=True)) <= {(4, 1), (6, 5)}  # lesion pixels only
    expected[3, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    np.testing.assert_array_equal(mask, expected)
    assert not mask[[0, 2, 4]].any()


def test_ten_points_cover_both_pixels_of_a_two_pixel_lesion() -> None:
    image, label = _volume()
    mask = segment_slices(BoxPredictor(), image, label, 10, np.random.default_rng(0))
    box = np.zeros((8, 10), dtype=bool)
    box[4:7, 1:6] = True  # rows 4..6, columns 1..5: the box of (4, 1) and (6, 5)
    np.testing.assert_array_equal(mask[3], box)
    assert mask.sum() == 1 + 15


def test_points_are_seeded_and_uniform_over_the_slice_lesion() -> None:
    image = np.zeros((3, 16, 16), np.float32)
    label = np.zeros((3, 16, 16), dtype=bool)
    label[1, 3:13, 2:14] = True

    def points(seed: int, k: int = 5) -> np.ndarray:
        stub = BoxPredictor()
        segment_slices(stub, image, label, k, np.random.default_rng(seed))
        return stub.calls[0][1]

    np.testing.assert_array_equal(points(7), points(7))
    assert not np.array_equal(points(7), points(8))
    many = points(1, 4000)
    assert many[:, 0].min() == 2 and many[:, 0].max() == 13  # x = w
    assert many[:, 1].min() == 3 and many[:, 1].max() == 12  # y = h
    assert abs(many[:, 0].mean() - 7.5) < 0.2 and abs(many[:, 1].mean() - 7.5) < 0.2


def test_several_k_at_once_equal_each_k_alone() -> None:
    image, label = _volume()
    label[2, 0:4, 0:5] = True
    masks, timing = segment_slices_multi(
        BoxPredictor(), image, label, {1: np.random.default_rng(1), 3: np.random.default_rng(3)})
    for k in (1, 3):
        alone = segment_slices(BoxPredictor(), image, label, k, np.random.default_rng(k))
        np.testing.assert_array_equal(masks[k], alone)
    assert timing["lesion_slices"] == 3 and set(timing["decoder_seconds"]) == {1, 3}


def test_arguments_are_checked() -> None:
    image, label = _volume()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="positive integer"):
        segment_slices(BoxPredictor(), image, label, 0, rng)
    with pytest.raises(ValueError, match="bool lesion mask"):
        segment_slices(BoxPredictor(), image, label.astype(np.uint8), 1, rng)
    with pytest.raises(ValueError, match="one shape"):
        segment_slices(BoxPredictor(), image[:, :4], label, 1, rng)
    with pytest.raises(TypeError, match="numpy Generator"):
        segment_slices(BoxPredictor(), image, label, 1, 0)
    with pytest.raises(TypeError, match="set_image"):
        segment_slices(object(), image, label, 1, rng)


def test_a_tiny_random_sam_runs_through_sam_predictor() -> None:
    import torch

    from sam3d.baselines.weights import build_sam_model

    torch.manual_seed(0)
    sam = build_sam_model("tiny_vit", img_size=64)
    image, label = _volume()
    mask = segment_slices(sam, image, label, 2, np.random.default_rng(0))
    assert mask.shape == label.shape and mask.dtype == bool
    assert not mask[[0, 2, 4]].any()


def _write_case(folder: Path) -> CaseEntry:
    """A 5×8×10 (D×H×W) case stored as NIfTI X×Y×Z with spacing x, y, z = 0.8, 0.9, 2.5 mm."""
    image, lesion = _volume()
    labels = np.where(lesion, 2, 0).astype(np.uint8)
    labels[0, 0, 0] = labels[4, 7, 9] = 1  # liver: not the target
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("image", image), ("label", labels)):
        nib.save(nib.Nifti1Image(np.transpose(arr, (2, 1, 0)), affine), folder / f"{name}.nii.gz")
    return CaseEntry("toy", folder / "image.nii.gz", folder / "label.nii.gz", (10, 8, 5),
                     (0.8, 0.9, 2.5), target=2)


def test_evaluate_case_scores_each_k_in_d_h_w(tmp_path) -> None:
    entry = _write_case(tmp_path / "toy")
    stub = BoxPredictor()
    rows = evaluate_case(stub, entry, ks=(3, 1), seed=4)
    assert [r["k"] for r in rows] == [3, 1]
    assert len(stub.images) == 2  # one embedding per lesion slice for both k
    image, lesion = _volume()
    np.testing.assert_array_equal(stub.images[1], window_slice(image[3]))
    for row in rows:
        assert row["case"] == "toy" and row["seed"] == 4 and row["lesion_slices"] == 2
        assert row["spacing"] == pytest.approx([2.5, 0.9, 0.8]) and row["slices"] == 5
        assert row["seconds"] >= row["encoder_seconds"] >= 0
        expected = segment_slices(BoxPredictor(), image, lesion, row["k"],
                                  slice_rng(4, "toy", row["k"]))
        assert row["dice"] == pytest.approx(dice(expected, lesion))
        assert 0 < row["dice"] <= 1 and 0 < row["nsd"] <= 1
    with pytest.raises(ValueError, match="distinct"):
        evaluate_case(stub, entry, ks=(1, 1))


def test_lesion_slab_is_centred_on_the_lesion_and_kept_inside(tmp_path) -> None:
    from sam3d.baselines.sam2d import lesion_slab

    lesion = np.zeros((20, 4, 4), bool)
    lesion[[3, 4, 5, 9]] = True  # lesion slices 3, 4, 5, 9: the middle one is 5
    assert lesion_slab(lesion, None) == (0, 20)
    assert lesion_slab(lesion, 4) == (3, 7)
    assert lesion_slab(lesion, 30) == (0, 20)  # never past the volume
    edge = np.zeros((10, 2, 2), bool)
    edge[9] = True
    assert lesion_slab(edge, 4) == (6, 10)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="slab"):
            lesion_slab(lesion, bad)
    with pytest.raises(ValueError, match="no lesion"):
        lesion_slab(np.zeros((5, 2, 2), bool), 2)
    entry = _write_case(tmp_path / "toy")  # lesion slices 2 and 3 of 5
    whole = evaluate_case(BoxPredictor(), entry, ks=(1,), seed=4)[0]
    part = evaluate_case(BoxPredictor(), entry, ks=(1,), seed=4, slab=1)[0]
    assert whole["slab"] == [0, 5] and part["slab"] == [3, 4]  # the upper middle of 2, 3
    assert part["lesion_slices"] == 1 and part["slices"] == 1


#: slices through the LiTS 117 lesion the slow test scores (the book's chapter runs all 123;
#: tests/test_notebooks.py gives chapter 4 the same slab, so it reuses this test's cache)
TEST_SLAB = 8


@pytest.mark.slow
def test_mobile_sam_on_lits117_one_point_per_slice() -> None:
    """The real MobileSAM on LiTS 117, k = 1 (and 3, 10: each slice is embedded once for all),
    on :data:`TEST_SLAB` slices through the lesion's middle (the whole case takes ~5 minutes).

    Always computed afresh (``refresh=True``) and stored in the content-keyed cache under
    ``outputs/sam2d``, where the Table 1 chapter's smoke test finds it.
    """
    from sam3d.baselines.sam2d import lesion_slab
    from sam3d.baselines.sam2d_cache import cached_evaluate_case
    from sam3d.baselines.weights import fetch_mobile_sam

    samples = REPO / "data" / "samples"
    if not (samples / "dataset.json").is_file():
        pytest.skip("sample data absent: python data_scripts/fetch_samples.py --out data/samples")
    entry = read_index(samples).cases["lits117"]
    weights = fetch_mobile_sam(REPO / "data" / "weights")
    start = time.perf_counter()
    res = cached_evaluate_case(weights, entry, ks=(1, 3, 10), seed=0,
                               root=REPO / "outputs" / "sam2d", refresh=True, slab=TEST_SLAB)
    assert not res["cached"] and res["path"].is_file()
    rows = {r["k"]: r for r in res["rows"]}
    for k, row in rows.items():
        print(f"\nMobileSAM LiTS 117 k={k}: Dice {row['dice']:.4f} NSD {row['nsd']:.4f} "
              f"{row['lesion_slices']} slices {row['slab']}")
    print(f"total {time.perf_counter() - start:.1f} s")
    lesion = to_dhw(np.asarray(nib.load(entry.label).dataobj) == 2)
    d0, d1 = lesion_slab(lesion, TEST_SLAB)
    assert d1 - d0 == TEST_SLAB and lesion[(d0 + d1) // 2].any()
    lesion_slices = int(lesion[d0:d1].any(axis=(1, 2)).sum())
    assert all(r["lesion_slices"] == lesion_slices and r["slab"] == [d0, d1]
               for r in rows.values())
    assert rows[1]["dice"] > 0.2 and rows[1]["nsd"] > 0.2
    assert all(0.2 < r["dice"] <= 1 and 0.2 < r["nsd"] <= 1 for r in rows.values())
