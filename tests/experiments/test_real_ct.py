"""The real-CT chapter helpers (sam3d.experiments.real_ct): per-lesion scores, their mean and the
pooled Dice, on hand-made lesion cases with stand-in models whose masks are known."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_eval_data import SHAPE, SPEC, FloodModel

from sam3d.data import layout
from sam3d.data.splits import save_split
from sam3d.experiments import real_ct as R

BIG, SMALL = (slice(3, 8),) * 3, (slice(15, 18),) * 3  # 125 and 27 voxels


def _lesion_cases(root: Path) -> Path:
    """Two cases, both cubes bright in each image: in ``lesion_big`` the 5³ one is the target
    (the 3³ one a neighbour, background), in ``lesion_small`` the reverse."""
    cases = {}
    for cid, target in (("lesion_big", BIG), ("lesion_small", SMALL)):
        (root / cid).mkdir(parents=True)
        image, label = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)
        image[BIG] = image[SMALL] = 100.0
        label[target] = 1
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / cid / "image.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / cid / "label.nii.gz")
        cases[cid] = layout.case_record(cid, SHAPE, (1, 1, 1), label, 1)
    layout.write_index(root, "custom", {0: "background", 1: "lesion"}, 1, cases)
    save_split(root / "split.json", {"train": [], "val": [], "test": sorted(cases)})
    return root


class AllBright(FloodModel):
    """Segments every bright region of its box, clicked or not (a model that also marks the
    clicked lesion's neighbours)."""

    def forward(self, volume, points):
        import torch

        fg = (volume[:, 0] > self.level).float()
        return torch.stack([-10 * fg, 10 * fg - 10 * (1 - fg)], 1)


def test_each_lesion_the_mean_and_the_pooled_dice(tmp_path, monkeypatch):
    lesions = _lesion_cases(tmp_path / "lesions")
    models = {"exact": FloodModel(crop=48), "neighbours": AllBright(crop=48)}  # boxes hold all
    from sam3d.inference import predict

    monkeypatch.setattr(predict, "load_for_inference",
                        lambda checkpoint, *a, **k: (models[Path(checkpoint).stem], SPEC))
    res = R.lesion_scores({"exact": tmp_path / "exact.pt", "neighbours": tmp_path / "neighbours.pt",
                           "neighbours, clicked": tmp_path / "neighbours.pt"},
                          tmp_path / "out", lesions=lesions, ks=(1, 3),
                          keep={"neighbours, clicked": "clicked"})
    per = res["per_lesion"].set_index(["model", "lesion", "k"])["dice"]
    summary = res["summary"].set_index(["model", "k"])
    for k in (1, 3):
        assert per["exact", "big", k] == pytest.approx(100) == per["exact", "small", k]
        # both cubes marked: 2·125 / (152 + 125) and 2·27 / (152 + 27)
        assert per["neighbours", "big", k] == pytest.approx(100 * 250 / 277)
        assert per["neighbours", "small", k] == pytest.approx(100 * 54 / 179)
        assert summary.loc[("neighbours", k), "mean Dice"] == pytest.approx(
            50 * (250 / 277 + 54 / 179))
        assert summary.loc[("neighbours", k), "pooled Dice"] == pytest.approx(
            100 * 2 * 152 / (2 * 152 + 152))
        assert summary.loc[("neighbours, clicked", k), "pooled Dice"] == pytest.approx(100)
        assert summary.loc[("exact", k), "lesions"] == 2
    assert set(res["per_lesion"]["voxels"]) == {125, 27}
    assert (tmp_path / "out" / "neighbours_clicked" / "per_case.csv").is_file()
    with pytest.raises(ValueError, match="empty"):
        R.lesion_scores({}, tmp_path / "x", lesions=lesions)
    with pytest.raises(ValueError, match="unknown models"):
        R.lesion_scores({"a": tmp_path / "exact.pt"}, tmp_path / "x", lesions=lesions,
                        keep={"b": "all"})
    with pytest.raises(ValueError, match=r"zoom names unknown models \['b'\]"):
        R.lesion_scores({"a": tmp_path / "exact.pt"}, tmp_path / "x", lesions=lesions,
                        zoom={"b": 2})


def test_a_zoomed_model_scores_the_same_exact_masks(tmp_path, monkeypatch):
    """``zoom`` reaches each model's predictor: the oracle's cubes fit in the 24³ zoomed box
    and come back exact; a factor that does not divide the crop is refused there."""
    lesions = _lesion_cases(tmp_path / "lesions")
    from sam3d.inference import predict

    monkeypatch.setattr(predict, "load_for_inference",
                        lambda checkpoint, *a, **k: (FloodModel(crop=48), SPEC))
    res = R.lesion_scores({"zoomed": tmp_path / "exact.pt"}, tmp_path / "out", lesions=lesions,
                          ks=(1,), zoom={"zoomed": 2})
    assert res["per_lesion"]["dice"].tolist() == pytest.approx([100, 100])
    with pytest.raises(ValueError, match="zoom 5 must divide the model's crop 48"):
        R.lesion_scores({"z": tmp_path / "exact.pt"}, tmp_path / "x", lesions=lesions,
                        zoom={"z": 5})


def test_click_positions_on_the_held_out_lesions(tmp_path, monkeypatch):
    """Chapter 6's real-CT table: one evaluation per position, each with its own clicks."""
    lesions = _lesion_cases(tmp_path / "lesions")
    from sam3d.data.click_store import load_clicks
    from sam3d.inference import predict

    monkeypatch.setattr(predict, "load_for_inference",
                        lambda checkpoint, *a, **k: (FloodModel(crop=48), SPEC))
    res = R.position_scores(tmp_path / "m.pt", tmp_path / "out", lesions=lesions,
                            positions=("centre", "margin"))
    summary = res["summary"].set_index("position")
    assert list(summary.index) == ["centre", "margin"] and "model" not in summary.columns
    assert list(summary["mean Dice"]) == pytest.approx([100, 100])
    assert (summary["lesions"] == 2).all()
    assert len(res["per_lesion"]) == 4 and set(res["seconds"]) == {"centre", "margin"}
    clicks = {}
    for position in ("centre", "margin"):
        (cset,) = [c for c in load_clicks(tmp_path / "out" / position / "clicks.json")
                   if c.case == "lesion_big"]
        clicks[position] = tuple(int(v) for v in cset.array()[0])
    assert clicks["centre"] == (5, 5, 5)  # the 5³ cube's deepest voxel
    assert 3 in clicks["margin"] or 7 in clicks["margin"]  # on its outer layer
    with pytest.raises(ValueError, match="among"):
        R.position_scores(tmp_path / "m.pt", tmp_path / "x", lesions=lesions,
                          positions=("middle",))
    with pytest.raises(ValueError, match="positive integer"):
        R.position_scores(tmp_path / "m.pt", tmp_path / "x", lesions=lesions, k=0)
