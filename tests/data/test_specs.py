"""The per-dataset preprocessing registry (sam3d.data.specs)."""

from __future__ import annotations

import dataclasses

import pytest

from sam3d.data.specs import AUGMENTATIONS, SPECS, DatasetSpec, get_spec
from sam3d.data.splits import OFFICIAL, official_split

#: name: (window, mean, std, target, augmentation) — the official code's constants.
OFFICIAL_CONSTANTS = {
    "kits": ((-54.0, 247.0), 59.53867, 55.457336, 2, "3d"),
    "lits": ((-48.0, 163.0), 60.057533, 40.198017, 2, "3d"),
    "pancreas": ((-39.0, 204.0), 68.45214, 63.422806, 2, "2d"),
    "colon": ((-57.0, 175.0), 65.175035, 32.651197, 1, "2d"),
}


def test_registry_names():
    assert set(OFFICIAL_CONSTANTS) <= set(SPECS)
    assert {"samples", "phantoms", "custom"} <= set(SPECS)
    assert all(name == spec.name for name, spec in SPECS.items())
    assert AUGMENTATIONS == ("3d", "2d")


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONSTANTS))
def test_official_constants(name):
    window, mean, std, target, augmentation = OFFICIAL_CONSTANTS[name]
    spec = get_spec(name)
    assert spec.window == window
    assert spec.mean == mean and spec.std == std
    assert spec.target == target
    assert spec.augmentation == augmentation
    assert spec.has_statistics
    assert spec.spacing == 1.0
    assert spec.split == name and name in OFFICIAL
    assert len(official_split(spec.split)["test"]) > 0  # the named split file ships
    assert spec.labels[target] in ("tumour", "colon cancer")
    assert spec.labels[0] == "background"


@pytest.mark.parametrize("name", ["samples", "phantoms", "custom"])
def test_specs_without_constants(name):
    spec = get_spec(name)
    assert spec.window is None and spec.mean is None and spec.std is None
    assert not spec.has_statistics
    assert spec.split is None


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("kits").target = 1  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, match", [
    ({"augmentation": "4d"}, "augmentation"),
    ({"window": (100.0, 100.0), "mean": 1.0, "std": 1.0}, "low < high"),
    ({"window": (200.0, -100.0)}, "low < high"),
    ({"mean": 1.0, "std": 0.0}, "std must be positive"),
    ({"mean": 1.0, "std": -2.0}, "std must be positive"),
    ({"mean": 1.0}, "both mean and std"),
    ({"std": 1.0}, "both mean and std"),
    ({"spacing": 0.0}, "spacing"),
])
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DatasetSpec("x", 1, **kwargs)


def test_valid_spec():
    spec = DatasetSpec("x", 3, (-100.0, 200.0), 10.0, 5.0, "2d", spacing=1.5)
    assert spec.has_statistics and spec.augmentation == "2d" and spec.spacing == 1.5
    assert not DatasetSpec("y", 1, window=(-1.0, 1.0)).has_statistics  # window, no mean


def test_get_spec_overrides():
    spec = get_spec("kits", spacing=1.5, augmentation="2d")
    assert spec.spacing == 1.5 and spec.augmentation == "2d"
    assert spec.window == (-54.0, 247.0) and spec.target == 2
    assert get_spec("kits").spacing == 1.0 and get_spec("kits").augmentation == "3d"  # unchanged
    assert get_spec("kits") is SPECS["kits"]
    with pytest.raises(ValueError, match="augmentation"):
        get_spec("kits", augmentation="none")  # overrides are validated too


def test_get_spec_unknown_name():
    with pytest.raises(KeyError, match="unknown dataset 'kits19'") as info:
        get_spec("kits19")
    for name in ("colon", "custom", "kits", "lits", "pancreas", "phantoms", "samples"):
        assert name in str(info.value)


def test_with_statistics():
    base = get_spec("phantoms")
    spec = base.with_statistics((-50, 250), 60, 40)
    assert spec.window == (-50.0, 250.0) and isinstance(spec.window[0], float)
    assert spec.mean == 60.0 and spec.std == 40.0 and isinstance(spec.mean, float)
    assert spec.has_statistics
    assert spec.name == "phantoms" and spec.target == base.target and spec.labels == base.labels
    assert not base.has_statistics  # the registry entry is not modified
    assert get_spec("kits").with_statistics([-1, 1], 0.5, 2.0).window == (-1.0, 1.0)
    with pytest.raises(ValueError, match="std must be positive"):
        base.with_statistics((-50, 250), 60, 0)
    with pytest.raises(ValueError, match="low < high"):
        base.with_statistics((250, -50), 60, 40)
