"""``sam3d predict`` / :func:`sam3d.inference.predict.predict_file` on real and synthetic scans.

A randomly initialised ``tiny`` model (64³ crop) saved as a sam3d checkpoint stands in for a
trained one: these tests are about geometry (the mask has the input's shape, affine and file
type) and about errors (exit status 2, a clear message, no output written or touched), not
about accuracy. The real sample CTs come from ``data/samples``, fetched on first use (as
``python data_scripts/fetch_samples.py --out data/samples`` does, idempotently).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sam3d import cli
from sam3d.build import build_sam3d
from sam3d.checkpoint import save_checkpoint
from sam3d.data.io import load_volume
from sam3d.data.samples import fetch_samples
from sam3d.data.specs import get_spec
from sam3d.inference.predict import load_for_inference, predict_file

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
PREPROCESSING = {"name": "lits", "window": [-48, 163], "mean": 60.06, "std": 40.2,
                 "spacing": 1.0}
SMALL_SHAPE = (20, 24, 10)  # X×Y×Z, smaller than the 64³ crop on every axis
SMALL_AFFINE = np.array([[-1.0, 0, 0, 12.5], [0, 1.0, 0, -30.0], [0, 0, 3.0, 7.0],
                         [0, 0, 0, 1]])  # 1×1×3 mm, x flipped (LAS): not already canonical


def _tiny_checkpoint(path: Path, extra: dict | None) -> Path:
    torch.manual_seed(0)
    save_checkpoint(build_sam3d("tiny"), path, extra=extra)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    return _tiny_checkpoint(folder / "tiny.pt", {"train": {"preprocessing": PREPROCESSING}})


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_for_inference(checkpoint)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Small scans and broken files shared by the error tests."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    paths = {name: folder / name for name in (
        "small.nii.gz", "flat.nii.gz", "t4.nii.gz", "truncated.nii.gz", "garbage.pt",
        "other.pt")}
    image = rng.normal(40.0, 60.0, SMALL_SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(image, SMALL_AFFINE), paths["small.nii.gz"])
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), paths["flat.nii.gz"])
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 10, 2), np.float32), np.eye(4)),
             paths["t4.nii.gz"])
    whole = paths["small.nii.gz"].read_bytes()  # random data: the gzip stream is ~19 kB
    paths["truncated.nii.gz"].write_bytes(whole[: len(whole) // 2])  # header ok, data cut
    paths["garbage.pt"].write_bytes(b"\x00\x13not a checkpoint\xff" * 64)
    torch.save({"a": 1}, paths["other.pt"])
    return paths


def _sample(case: str) -> tuple[Path, Path, int]:
    fetch_samples(SAMPLES)  # idempotent: downloads only on a fresh checkout
    image, label = SAMPLES / case / "image.nii.gz", SAMPLES / case / "label.nii.gz"
    target = json.loads((SAMPLES / "dataset.json").read_text())["cases"][case]["target"]
    return image, label, int(target)


def _lesion_click(label: Path, target: int) -> tuple[int, int, int]:
    """A lesion voxel of the label as a user click (d, h, w) = voxel (k, j, i)."""
    array = load_volume(label, "label").array
    voxels = np.argwhere(array == target)
    i, j, k = (int(v) for v in voxels[len(voxels) // 2])
    assert array[i, j, k] == target
    return k, j, i


def _file_dtype(path: Path) -> np.dtype:
    if path.name.endswith((".nii", ".nii.gz")):
        return np.dtype(nib.load(path).get_data_dtype())
    return sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).dtype


def _check_written(out: Path, image: Path, mask: np.ndarray) -> None:
    """``out`` is a uint8 0/1 mask with the image's shape and affine, equal to ``mask``."""
    written, reference = load_volume(out, "label"), load_volume(image, "image")
    assert written.shape == reference.shape == mask.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    assert _file_dtype(out) == np.uint8
    assert set(np.unique(written.array).tolist()) <= {0, 1}
    np.testing.assert_array_equal(written.array, mask)


def _main(argv: list[str]) -> int:
    """``cli.main`` with argparse's ``SystemExit`` turned into its exit status."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code)


# ------------------------------------------------------------------ real samples, round trip


def test_lits117_nifti_round_trip(loaded, tmp_path, capsys) -> None:
    image, label, target = _sample("lits117")
    click = _lesion_click(label, target)
    out = tmp_path / "mask.nii.gz"
    t0 = time.perf_counter()
    result = predict_file(*loaded, image, [click], out=out)
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nlits117 128^3 roi prediction (tiny model, CPU): {seconds:.2f} s wall")
    assert result.path == out and out.is_file()
    assert result.mask.shape == (128, 128, 128) and result.mask.dtype == np.uint8
    # lits117 is RAS at 1 mm: the model grid is the input grid, so the click is unchanged
    np.testing.assert_array_equal(result.model_clicks, [click])
    _check_written(out, image, result.mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]  # no temporary left


def test_lung2_nrrd_round_trip_keeps_the_lps_geometry(loaded, tmp_path) -> None:
    image, label, target = _sample("lung2")
    nrrd = tmp_path / "lung2.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(nrrd), useCompression=True)
    np.testing.assert_allclose(load_volume(nrrd).affine, load_volume(image).affine, atol=1e-4)
    click = _lesion_click(label, target)
    out = tmp_path / "mask.nrrd"
    result = predict_file(*loaded, nrrd, [click], out=out)  # lung2 is resampled only here
    assert result.mask.shape == (512, 512, 61) and result.path == out
    _check_written(out, nrrd, result.mask)
    _check_written(out, image, result.mask)  # the NIfTI original: same grid
    scan, mask = sitk.ReadImage(str(nrrd)), sitk.ReadImage(str(out))
    assert mask.GetSize() == scan.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), scan.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), scan.GetDirection(), atol=1e-6)


# -------------------------------------------------------------------- smaller than the ROI


@pytest.mark.parametrize("clicks", [[(0, 0, 0)], [(9, 23, 19)], [(0, 23, 0), (9, 0, 19)]],
                         ids=["first-corner", "last-corner", "two-opposite-borders"])
def test_volume_smaller_than_the_roi_and_border_clicks(loaded, inputs, tmp_path, clicks) -> None:
    out = tmp_path / "mask.nii.gz"
    result = predict_file(*loaded, inputs["small.nii.gz"], clicks, out=out)
    assert result.mask.shape == SMALL_SHAPE
    assert len(result.model_clicks) == len(clicks)
    _check_written(out, inputs["small.nii.gz"], result.mask)


# ---------------------------------------------------------------------------- command line


def test_cli_sliding_mode_subprocess(loaded, checkpoint, tmp_path) -> None:
    image, _, _ = _sample("lits117")
    out = tmp_path / "sliding.nii.gz"
    # 96 is the start of the last 64³ window on each axis of 128 and no other window holds
    # it, so exactly one window votes, and that window is the ROI box centred on the click
    proc = subprocess.run(
        [sys.executable, "-m", "sam3d.cli", "predict", "--checkpoint", str(checkpoint),
         "--image", str(image), "--click", "96,96,96", "--mode", "sliding", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "lesion voxels" in proc.stdout
    written = load_volume(out, "label")
    assert written.shape == (128, 128, 128) and _file_dtype(out) == np.uint8
    np.testing.assert_allclose(written.affine, load_volume(image).affine, atol=1e-4)
    assert not written.array[:64].any() and not written.array[:, :64].any()
    assert not written.array[:, :, :64].any()  # nothing outside the one prompted window
    roi = predict_file(*loaded, image, [(96, 96, 96)], mode="roi").mask
    assert roi.any()  # the seeded random model marks ~78k voxels: the comparison is not empty
    assert np.count_nonzero(written.array != roi) <= 0.001 * roi.size


def test_cli_error_subprocess_exit_status_and_message(inputs, tmp_path) -> None:
    out = tmp_path / "mask.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "sam3d.cli", "predict", "--checkpoint",
         str(inputs["garbage.pt"]), "--image", str(inputs["small.nii.gz"]),
         "--click", "1,2,3", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("sam3d predict: error: ")
    assert "not a readable PyTorch checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_in_process_success(checkpoint, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "mask.mha"
    assert _main(["predict", "--checkpoint", str(checkpoint), "--image",
                  str(inputs["small.nii.gz"]), "--click", "5,12,10", "--click", "0,0,0",
                  "--out", str(out)]) == 0
    assert f"{out}:" in capsys.readouterr().out
    mask = load_volume(out, "label")
    _check_written(out, inputs["small.nii.gz"], mask.array)


# (what to change in the good call, the expected message after "sam3d predict: error: ")
ERRORS = {
    "missing-checkpoint": ({"--checkpoint": "missing.pt"}, r"checkpoint not found: .*missing"),
    "corrupt-checkpoint": ({"--checkpoint": "garbage.pt"},
                           r"garbage\.pt is not a readable PyTorch checkpoint"),
    "other-format": ({"--checkpoint": "other.pt"}, r"other\.pt is not a sam3d checkpoint"),
    "click-outside": ({"--click": "1,2,30"},
                      r"click 0 \(1, 2, 30\) is outside the volume of shape \(10, 24, 20\)"),
    "click-malformed": ({"--click": "1,2"},
                        r"argument --click: click must be d,h,w integers, got '1,2'"),
    "2d-image": ({"--image": "flat.nii.gz"},
                 r"flat\.nii\.gz: expected a 3D volume: the array of shape \(20, 20\) is 2D"),
    "4d-image": ({"--image": "t4.nii.gz"},
                 r"t4\.nii\.gz: expected a 3D volume: the array of shape \(20, 20, 10, 2\) is 4D"),
    "truncated-image": ({"--image": "truncated.nii.gz"},
                        r"truncated\.nii\.gz: unreadable NIfTI \(truncated or corrupt"),
    "png-output": ({"--out": "mask.png"}, r"mask\.png: use \.nii\.gz, \.nii, \.nrrd or \.mha"),
    "missing-folder": ({"--out": "nowhere/mask.nii.gz"},
                       r"output folder .*nowhere does not exist"),
    "folder-output": ({"--out": "mask.nii.gz"}, r"mask\.nii\.gz is a folder"),
    "zoom-zero": ({"--zoom": "0"}, r"zoom must be an integer factor ≥ 1 \(1: no zoom\), got 0"),
    "zoom-uneven": ({"--zoom": "3"}, r"zoom 3 must divide the model's crop 64"),
    "zoom-text": ({"--zoom": "two"}, r"argument --zoom: invalid int value: 'two'"),
}
CASES = [pytest.param(name, existing, id=f"{name}-{'existing' if existing else 'new'}-out")
         for name in ERRORS for existing in (False, True)
         if not (existing and name in ("missing-folder", "folder-output"))]


@pytest.mark.parametrize(("name", "existing"), CASES)
def test_cli_errors_exit_2_and_write_nothing(checkpoint, inputs, tmp_path, capsys, name,
                                             existing) -> None:
    changes, message = ERRORS[name]
    args = {"--checkpoint": str(checkpoint), "--image": str(inputs["small.nii.gz"]),
            "--click": "1,2,3", "--out": str(tmp_path / "mask.nii.gz")}
    for key, value in changes.items():
        folder = tmp_path if key == "--out" else inputs["small.nii.gz"].parent
        args[key] = value if key in ("--click", "--zoom") else str(folder / value)
    out = Path(args["--out"])
    if name == "folder-output":
        out.mkdir()
    previous = b"an earlier mask, which must survive a failed call\n"
    if existing:
        out.write_bytes(previous)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["predict"] + [part for item in args.items() for part in item]
    assert _main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("sam3d predict: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), err  # the message is on the error line itself
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file, no temporary
    if existing:
        assert out.read_bytes() == previous
    elif name == "folder-output":
        assert list(out.iterdir()) == []
    else:
        assert not out.exists()


# ----------------------------------------------------------------------- load_for_inference


def test_checkpoint_without_preprocessing_needs_a_dataset(tmp_path, capsys, inputs) -> None:
    path = _tiny_checkpoint(tmp_path / "bare.pt", None)
    with pytest.raises(ValueError, match=r"records no preprocessing statistics; name the "
                                         r"dataset .*--dataset kits"):
        load_for_inference(path)
    out = tmp_path / "mask.nii.gz"
    assert _main(["predict", "--checkpoint", str(path), "--image", str(inputs["small.nii.gz"]),
                  "--click", "1,2,3", "--out", str(out)]) == 2
    assert "--dataset" in capsys.readouterr().err and not out.exists()
    model, spec = load_for_inference(path, dataset="kits")
    kits = get_spec("kits")
    assert spec.name == "kits" and spec.window == kits.window == (-54.0, 247.0)
    assert (spec.mean, spec.std) == (kits.mean, kits.std) == (59.53867, 55.457336)
    assert not model.training


def test_named_dataset_overrides_the_recorded_constants(checkpoint) -> None:
    _, recorded = load_for_inference(checkpoint)
    assert (recorded.window, recorded.mean, recorded.std) == ((-48, 163), 60.06, 40.2)
    _, spec = load_for_inference(checkpoint, dataset="kits")
    assert (spec.name, spec.window, spec.mean) == ("kits", (-54.0, 247.0), 59.53867)


def test_recorded_constants_win_over_the_recorded_dataset_registry(tmp_path) -> None:
    """A trainer checkpoint records its config (dataset) and the constants it trained with;
    prediction must use the recorded constants, not the registry's current ones."""
    pre = dict(PREPROCESSING, mean=61.5, std=39.0)
    path = _tiny_checkpoint(tmp_path / "trained.pt",
                            {"train": {"config": {"dataset": "lits"}, "preprocessing": pre}})
    _, spec = load_for_inference(path)
    assert spec.name == "lits" and (spec.mean, spec.std) == (61.5, 39.0)
    assert spec.mean != get_spec("lits").mean


def test_the_sam_file_a_training_run_recorded_is_used_when_none_is_given(tmp_path) -> None:
    """A checkpoint on SAM weights loads without ``sam_checkpoint`` while the file its training
    run recorded is there (hash checked); without it, the error says what to pass."""
    from sam3d.checkpoint import CheckpointError
    from sam3d.rehearsal.sam_weights import write_sam_checkpoint

    sam = write_sam_checkpoint(tmp_path / "sam.pth")
    torch.manual_seed(0)
    model = build_sam3d("tiny", sam_checkpoint=sam)
    extra = {"train": {"preprocessing": PREPROCESSING, "config": {"sam_checkpoint": str(sam)}}}
    save_checkpoint(model, tmp_path / "run.pt", extra=extra)
    loaded, _ = load_for_inference(tmp_path / "run.pt")
    assert loaded.sam_checkpoint_sha256 == model.sam_checkpoint_sha256
    frozen = "blocks.0.attn.qkv.weight"
    assert torch.equal(loaded.image_encoder.state_dict()[frozen],
                       model.image_encoder.state_dict()[frozen])
    sam.unlink()
    with pytest.raises(CheckpointError, match="sam_checkpoint"):
        load_for_inference(tmp_path / "run.pt")
