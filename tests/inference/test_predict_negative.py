"""``sam3d predict --click d,h,w --negative-click d,h,w``: click labels on the command line.

Untrained ``tiny`` (the paper's model) and ``tiny_interactive`` (the negative-click extension)
checkpoints stand in for trained ones: these tests are about the command (the order of the
clicks, the labels reaching the model, the errors), not about accuracy. The scan is 100 slices
deep, longer than the 64³ box, so a click can lie outside the first object's box.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sam3d import cli
from sam3d.build import build_sam3d
from sam3d.checkpoint import save_checkpoint
from sam3d.data.io import load_volume
from sam3d.inference.predict import load_for_inference, predict_file

REPO = Path(__file__).resolve().parents[2]
PREPROCESSING = {"name": "lits", "window": [-48, 163], "mean": 60.06, "std": 40.2,
                 "spacing": 1.0}
SHAPE_XYZ = (24, 20, 100)  # RAS, 1 mm: the user's (d, h, w) = (z, y, x), D×H×W = 100×20×24


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("negative")
    paths = {}
    for variant in ("tiny", "tiny_interactive"):
        torch.manual_seed(0)
        paths[variant] = folder / f"{variant}.pt"
        save_checkpoint(build_sam3d(variant), paths[variant],
                        extra={"train": {"preprocessing": PREPROCESSING}})
    image = np.random.default_rng(0).normal(40.0, 60.0, SHAPE_XYZ).astype(np.float32)
    paths["image"] = folder / "long.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), paths["image"])
    return paths


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def test_clicks_keep_the_order_given() -> None:
    args = cli.build_parser().parse_args(
        ["predict", "--checkpoint", "c.pt", "--image", "i.nii.gz", "--out", "m.nii.gz",
         "--click", "1,2,3", "--negative-click", "4,5,6", "--click", "7,8,9"])
    assert args.prompts == [((1, 2, 3), 1), ((4, 5, 6), 0), ((7, 8, 9), 1)]


def test_negative_click_reaches_the_model(files, tmp_path, capsys) -> None:
    out = tmp_path / "mask.nii.gz"
    argv = ["predict", "--checkpoint", str(files["tiny_interactive"]), "--image",
            str(files["image"]), "--mode", "objects", "--click", "20,10,12",
            "--negative-click", "22,10,12", "--out", str(out)]
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{out}:" in printed and "from 2 click(s) (1+, 1−)" in printed
    written = load_volume(out, "label").array
    model, spec = load_for_inference(files["tiny_interactive"])
    res = predict_file(model, spec, files["image"], [(20, 10, 12), (22, 10, 12)],
                       mode="objects", labels=[1, 0])
    assert res.labels.tolist() == [1, 0] and res.clicks_used == 2
    np.testing.assert_array_equal(written, res.mask)
    positive_only = predict_file(model, spec, files["image"], [(20, 10, 12), (22, 10, 12)],
                                 mode="objects")
    assert positive_only.labels.tolist() == [1, 1]
    assert not np.array_equal(positive_only.mask, res.mask)  # the label changed the logits


def test_roi_mode_counts_the_clicks_outside_its_box(files, tmp_path, capsys) -> None:
    out = tmp_path / "mask.nii.gz"
    assert _main(["predict", "--checkpoint", str(files["tiny_interactive"]), "--image",
                  str(files["image"]), "--negative-click", "90,10,12", "--click", "20,10,12",
                  "--out", str(out)]) == 0  # roi: the box is centred on the positive clicks
    assert "(1+, 1−, 1 of them inside the roi box)" in capsys.readouterr().out


# (model, click arguments, the message after "sam3d predict: error: ")
BAD = {
    "negative-paper-model": ("tiny", ["--click", "20,10,12", "--negative-click", "22,10,12"],
                             r"no negative-click extension .*negative_clicks=False"),
    "negative-alone": ("tiny_interactive", ["--negative-click", "22,10,12"],
                       r"give at least one --click d,h,w .*--negative-click alone"),
    "no-click": ("tiny_interactive", [], r"give at least one --click d,h,w"),
    "negative-outside-volume": ("tiny_interactive",
                                ["--click", "20,10,12", "--negative-click", "22,20,12"],
                                r"click 1 \(22, 20, 12\) is outside the volume of shape "
                                r"\(100, 20, 24\)"),
    "negative-in-no-box": ("tiny_interactive", ["--mode", "objects", "--click", "20,10,12",
                                                "--negative-click", "90,10,12"],
                           r"negative click \(90, 10, 12\) lies in no object's box"),
    "negative-before-its-object": ("tiny_interactive",
                                   ["--mode", "objects", "--negative-click", "22,10,12",
                                    "--click", "20,10,12"],
                                   r"negative click \(22, 10, 12\) lies in no object's box"),
    "negative-malformed": ("tiny_interactive", ["--click", "20,10,12", "--negative-click", "1,2"],
                           r"argument --negative-click: click must be d,h,w integers, "
                           r"got '1,2'"),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "existing-out"])
@pytest.mark.parametrize("name", list(BAD))
def test_bad_clicks_exit_2_and_write_nothing(files, tmp_path, capsys, name, existing) -> None:
    model, clicks, message = BAD[name]
    out = tmp_path / "mask.nii.gz"
    previous = b"an earlier mask, which must survive a failed call\n"
    if existing:
        out.write_bytes(previous)
    assert _main(["predict", "--checkpoint", str(files[model]), "--image", str(files["image"]),
                  "--out", str(out), *clicks]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("sam3d predict: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["mask.nii.gz"] if existing else [])
    if existing:
        assert out.read_bytes() == previous


def test_predict_file_checks_the_labels(files) -> None:
    model, spec = load_for_inference(files["tiny_interactive"])
    clicks = [(20, 10, 12), (22, 10, 12)]
    for labels in ([1], [1, 2], [[1, 0]], [1.0, 0.0]):
        with pytest.raises(ValueError, match=r"labels must be 2 values 0 \(negative\) or 1"):
            predict_file(model, spec, files["image"], clicks, labels=labels)
    with pytest.raises(ValueError, match="a negative click alone marks no object"):
        predict_file(model, spec, files["image"], clicks, labels=[0, 0])


def test_negative_click_error_subprocess(files, tmp_path) -> None:
    out = tmp_path / "mask.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "sam3d.cli", "predict", "--checkpoint", str(files["tiny"]),
         "--image", str(files["image"]), "--click", "20,10,12", "--negative-click", "22,10,12",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=300, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sam3d predict: error: "), proc.stderr
    assert "negative_clicks=False" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_click_map_model_gets_each_box_first_click_as_its_prompt() -> None:
    """The Predictor tells a model with click maps how many clicks form the first prompt:
    1 by default (the viewer and refinement: later clicks are corrections), k when the
    protocol gives the paper's k clicks at once; a model without maps is not told."""
    from sam3d.data.specs import get_spec
    from sam3d.inference.predictor import Predictor

    torch.manual_seed(0)
    model = build_sam3d("tiny_interactive_maps").eval()
    seen: list[int] = []
    decode = model.decode

    def spy(emb, points, labels=None, first_prompt=0):
        seen.append(first_prompt)
        return decode(emb, points, labels, first_prompt)

    model.decode = spy  # type: ignore[method-assign]
    spec = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)
    predictor = Predictor(model, spec)
    image = torch.zeros(1, 64, 64, 64)
    clicks = np.array([[30, 30, 30], [34, 30, 30], [30, 36, 30]])
    predictor.probabilities(image, clicks, "roi", [1, 0, 1])
    predictor.probabilities(image, clicks, "roi", [1, 0, 1], first_prompt=3)
    predictor.probabilities(image, clicks, "roi", [1, 0, 1], first_prompt=9)  # capped at 3
    assert seen == [1, 3, 3]
    with pytest.raises(ValueError, match="first_prompt must be a positive integer"):
        predictor.probabilities(image, clicks, "roi", [1, 0, 1], first_prompt=0)
    plain = build_sam3d("tiny_interactive").eval()
    plain_seen: list[dict] = []
    plain_decode = plain.decode
    plain.decode = lambda *a, **kw: plain_seen.append(kw) or plain_decode(*a, **kw)  # type: ignore
    Predictor(plain, spec).probabilities(image, clicks, "roi", [1, 0, 1], first_prompt=3)
    assert plain_seen == [{}]
