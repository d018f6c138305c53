"""The two evaluation protocols side by side (:mod:`sam3d.experiments.protocols`): the click
carried from the official grid to sam3d's is the same physical point, each row equals its own
protocol's entry point, and the content cache returns the rows it stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam3d.build import build_sam3d
from sam3d.data.specs import get_spec
from sam3d.evaluation import official
from sam3d.experiments import protocols as P
from sam3d.golden import default_official_eval_dir

FIXTURE = default_official_eval_dir()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    if not (FIXTURE / "manifest.json").is_file():
        pytest.skip(f"official-eval fixture not found: {FIXTURE} (set SAM3D_OFFICIAL_EVAL_DIR)")
    return P.fixture_runs(FIXTURE, runs=("p1", "p3"))


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam3d("tiny").eval()


def test_official_clicks_map_back_to_the_stored_voxel_they_came_from() -> None:
    # transpose only (1 mm files): the click is the stored voxel with its axes reversed
    assert P.official_to_file([[3, 4, 5]], (10, 11, 12), (10, 11, 12), (2, 1, 0)).tolist() \
        == [[5, 4, 3]]
    assert P.official_to_file([[3, 4, 5]], (10, 11, 12), (10, 11, 12), (0, 1, 2)).tolist() \
        == [[3, 4, 5]]
    # a resize: the stored voxel whose centre is nearest the click's centre (align_corners=False)
    grid, label = (120, 128, 128), (48, 160, 160)
    clicks = np.array([[0, 0, 0], [69, 48, 45], [119, 127, 127]])
    stored = P.official_to_file(clicks, grid, label, (2, 1, 0))
    centre = (clicks + 0.5) * np.array(label) / np.array(grid) - 0.5
    assert np.all(np.abs(stored[:, ::-1] - centre) <= 0.5 + 1e-9)


def test_rows_are_their_protocols_own_results_from_one_physical_click(runs, tiny) -> None:
    import nibabel as nib

    from sam3d.inference.geometry import model_affine
    from sam3d.inference.predictor import Predictor

    for run in runs:
        spec = get_spec(run["dataset"])
        rows = P.compare_case(tiny, spec, run["image"], run["label"], run["dataset"],
                              case_id=run["case"], k=run["k"], click_indices=run["click_indices"])
        off, ours = rows
        assert (off["protocol"], ours["protocol"]) == ("official", "sam3d")
        direct = official.evaluate_case(tiny, run["image"], run["label"], run["dataset"],
                                        click_indices=run["click_indices"])
        assert (off["dice"], off["nsd"]) == (direct["dice"], direct["nsd"])
        assert off["input"] == "×".join(map(str, (1, 3, *direct["image_shape"])))
        assert ours["on_lesion"], run["case"]  # the carried clicks hit sam3d's lesion
        assert ours["axes"] == "(S, A, R)"
        # the same physical point: the stored voxel's centre and sam3d's voxel agree in mm
        affine = nib.load(str(run["image"])).affine
        data = Predictor(tiny, spec).load(run["image"], run["label"], official.get_dataset(
            run["dataset"]).target)
        mine = model_affine(data["image"])
        stored = np.array([[int(v) for v in p.split(",")] for p in off["file_voxels"].split(";")])
        theirs = np.array([[int(v) for v in p.split(",")] for p in ours["clicks"].split(";")])
        world_a = stored @ affine[:3, :3].T + affine[:3, 3]
        world_b = theirs[:, ::-1] @ mine[:3, :3].T + mine[:3, 3]
        half = 0.5 * np.linalg.norm(np.abs(affine[:3, :3]).sum(0)) + 0.5 * np.sqrt(3)
        assert np.linalg.norm(world_a - world_b, axis=1).max() <= half, run["case"]


def test_rows_are_cached_by_content(runs, tiny, tmp_path) -> None:
    run = runs[0]
    calls = []

    def model_fn():
        calls.append(1)
        return tiny

    spec = get_spec(run["dataset"])
    args = (run["image"], run["label"], run["dataset"])
    kw = {"case_id": run["case"], "click_indices": run["click_indices"], "root": tmp_path}
    first = P.cached_compare(model_fn, "w1", spec, *args, **kw)
    again = P.cached_compare(model_fn, "w1", spec, *args, **kw)
    assert not first["cached"] and again["cached"] and again["rows"] == first["rows"]
    assert len(calls) == 1 and again["path"] == first["path"]
    other = P.cached_compare(model_fn, "w2", spec, *args, **kw)  # other weights: another key
    assert not other["cached"] and other["key"] != first["key"] and len(calls) == 2
    table = P.table(first["rows"])
    assert list(table["protocol"]) == ["official", "sam3d"]
    assert table["Dice %"].tolist() == pytest.approx([100 * r["dice"] for r in first["rows"]],
                                                     abs=1e-3)


def test_bad_cases_are_refused(runs, tiny, tmp_path) -> None:
    import nibabel as nib

    run = runs[0]
    with pytest.raises(official.OfficialError, match="knows|unknown|dataset"):
        P.compare_case(tiny, get_spec("lits"), run["image"], run["label"], "brats", case_id="x")
    ref = nib.load(str(run["label"]))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine), empty)
    with pytest.raises(official.OfficialError, match="no voxel of the target"):
        P.compare_case(tiny, get_spec("lits"), run["image"], empty, "lits", case_id="x")
    with pytest.raises(ValueError, match="no case"):
        P.checkpoint_comparison(tmp_path / "none.pt", [])
    with pytest.raises(FileNotFoundError, match="fixture not found"):
        P.fixture_runs(tmp_path)


@pytest.mark.slow
@pytest.mark.warms_cache
@pytest.mark.parametrize("case", ["lits_like", "kits_like", "thick_slices"])
def test_golden_rows_match_the_fixture(runs, case, official_runs, monkeypatch) -> None:
    """The golden weights (vit_b, two 128³ forwards, about 2 min): the official row equals the
    authors' ``test.py`` Dice and NSD, the sam3d row's clicks hit its lesion. Always computed
    afresh (``refresh=True``) into the content-keyed cache under ``outputs/protocols``, where
    the Table 1 chapter (smoke and rehearsal) finds them. The official forward is the session's
    (``official_runs``): ``tests/evaluation/test_official.py`` checks the same run's probability
    and mask against the fixture, so it is computed once for both."""
    monkeypatch.setattr(official, "evaluate_case", official_runs)
    before = official_runs.golden_calls
    rows = P.fixture_comparison(FIXTURE, cases=[case], root=REPO / "outputs" / "protocols",
                                refresh=True)
    off, ours = rows
    assert (off["case"], off["protocol"], ours["protocol"]) == (case, "official", "sam3d")
    assert not off["cached"] and official_runs.golden_calls == before + 1  # the shared forward
    assert abs(off["dice"] - off["fixture_dice"]) <= 1e-5
    assert abs(off["nsd"] - off["fixture_nsd"]) <= 1e-4
    assert ours["on_lesion"] and 0 <= ours["dice"] <= 1 and 0 <= ours["nsd"] <= 1
    print(f"\n{case}: official {off['dice']:.8f}/{off['nsd']:.8f} (fixture "
          f"{off['fixture_dice']:.8f}/{off['fixture_nsd']:.8f}); sam3d {ours['dice']:.8f}/"
          f"{ours['nsd']:.8f}")
