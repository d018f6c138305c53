"""Tests for sam3d.data.synth_tumours on small made-up volumes (a second or less each)."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d.data.synth_tumours import Pasted, TumourSpec, paste_tumours

SPACING = (1.0, 1.0, 1.5)


def _organ_volume(organ_hu=110.0, shape=(56, 52, 36), seed=0):
    """X×Y×Z HU image of an ellipsoidal organ (``organ_hu`` + noise) in fat, a label with the
    organ as 1 and one small real lesion as 2, and the organ mask."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[(np.arange(n) - n / 2) * s
                            for n, s in zip(shape, SPACING, strict=True)], indexing="ij")
    organ = (x / 25) ** 2 + (y / 23) ** 2 + (z / 24) ** 2 <= 1.0
    image = np.where(organ, organ_hu, -100.0) + rng.normal(0, 10, shape)
    label = organ.astype(np.uint8)
    label[26:29, 20:23, 16:19] = 2
    return image.astype(np.float32), label, organ


def test_same_seed_same_output_other_seed_other_output() -> None:
    image, label, organ = _organ_volume()
    a = paste_tumours(image, label, organ, SPACING, 2, seed=3, spec=TumourSpec(radius_mm=(3, 6)))
    b = paste_tumours(image, label, organ, SPACING, 2, seed=3, spec=TumourSpec(radius_mm=(3, 6)))
    c = paste_tumours(image, label, organ, SPACING, 2, seed=4, spec=TumourSpec(radius_mm=(3, 6)))
    assert isinstance(a, Pasted)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.tumours == b.tumours
    assert not np.array_equal(a.label, c.label) and a.tumours != c.tumours
    np.testing.assert_array_equal(image, _organ_volume()[0])  # inputs untouched


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tumours_inside_organ_and_darker_than_it(seed) -> None:
    image, label, organ = _organ_volume()
    spec = TumourSpec(radius_mm=(3, 7), hu=(-60, -30), texture_hu=6.0)
    out = paste_tumours(image, label, organ, SPACING, 3, seed=seed, spec=spec)
    new = (out.label == 2) & (label != 2)
    assert new.any()
    assert np.all(organ[new]) and np.all(out.organ[new])
    organ_hu = float(np.mean(image[organ & (label != 2)]))
    assert float(np.mean(out.image[new])) < organ_hu - 15.0
    for t in out.tumours:
        assert t["organ_hu"] == pytest.approx(organ_hu, abs=1e-3)
        assert -60 <= t["mean_hu"] - t["organ_hu"] <= -30
    assert np.count_nonzero(new) == sum(t["voxels"] for t in out.tumours)


def test_label_exactly_where_pasted() -> None:
    """With no soft edge, mass effect or capsule, the image changes exactly at the new label
    voxels, whose HU then follow the drawn mean and texture."""
    image, label, organ = _organ_volume()
    spec = TumourSpec(radius_mm=(4, 7), edge_mm=0.0, mass_effect_mm=0.0, capsule_prob=0.0,
                      hu=(-50, -40), texture_hu=5.0)
    out = paste_tumours(image, label, organ, SPACING, 2, seed=7, spec=spec)
    new = (out.label == 2) & (label != 2)
    np.testing.assert_array_equal(out.image != image, new)
    assert np.all(out.label[label == 2] == 2)  # the real lesion is kept
    assert np.array_equal(out.label != label, new)
    for t in out.tumours:
        (x0, x1), (y0, y1), (z0, z1) = t["bbox"]
        inside = np.zeros_like(new)
        inside[x0:x1, y0:y1, z0:z1] = True
        hu = out.image[new & inside]
        assert hu.size >= t["voxels"] // 2
        assert abs(float(hu.mean()) - t["mean_hu"]) < 1.0
        assert 3.0 < float(hu.std()) < 8.0


def test_absolute_hu_lung_nodules_brighter_than_lung() -> None:
    image, label, organ = _organ_volume(organ_hu=-850.0)
    spec = TumourSpec(radius_mm=(3, 6), hu_mode="absolute", hu=(-40, 40), texture_hu=15.0,
                      vessel_hu=None)
    out = paste_tumours(image, label, organ, SPACING, 2, seed=1, spec=spec)
    new = (out.label == 2) & (label != 2)
    assert float(np.mean(out.image[new])) > -600.0
    assert all(-40 <= t["mean_hu"] <= 40 for t in out.tumours)


def test_shrinks_then_refuses_when_no_room() -> None:
    image, label, organ = _organ_volume()
    out = paste_tumours(image, label, organ, SPACING, 1, seed=0,
                        spec=TumourSpec(radius_mm=(4, 40), mass_effect_mm=0.0))
    assert max(out.tumours[0]["semi_axes_mm"]) < 25.0  # redrawn smaller to fit
    with pytest.raises(ValueError, match="no room"):
        paste_tumours(image, label, organ, SPACING, 1, seed=0,
                      spec=TumourSpec(radius_mm=(30, 40), mass_effect_mm=0.0))


@pytest.mark.parametrize("change", [
    {"image": np.zeros((4, 4, 4))}, {"organ": "uint8"}, {"organ": "empty"}, {"n": 0},
    {"seed": -1}, {"spacing": (1.0, -1.0, 1.0)}, {"spacing": (1.0, 1.0)}, {"target": True},
    {"label": "float"}, {"spec": "bad"}])
def test_bad_arguments_rejected(change) -> None:
    image, label, organ = _organ_volume()
    args = {"image": image, "label": label, "organ": organ, "spacing": SPACING, "n": 1,
            "seed": 0, "spec": TumourSpec(), "target": 2}
    for key, value in change.items():
        if isinstance(value, str) and key != "spec":
            value = {"uint8": organ.astype(np.uint8), "empty": np.zeros_like(organ),
                     "float": label.astype(float)}[value]
        args[key] = value
    with pytest.raises(ValueError):
        paste_tumours(**args)


@pytest.mark.parametrize("kwargs", [{"hu_mode": "dark"}, {"radius_mm": (8, 4)},
                                    {"radius_mm": (0.1, 4)}, {"elastic": 2.0},
                                    {"hu": (float("nan"), 1.0)}, {"capsule_prob": 1.5},
                                    {"mass_effect_mm": 3.0, "radius_mm": (4, 8)},
                                    {"vessel_hu": -5.0}, {"texture_hu": True}])
def test_bad_spec_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        TumourSpec(**kwargs)
