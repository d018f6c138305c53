"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import make_dataset


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")
