"""Shared fixtures: the real frames beside the repository and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL = Path(os.environ.get("CCDASK_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def real_dir(name: str) -> Path:
    """A folder of real frames, or skip the test saying where they were looked for."""
    path = REAL / name
    if not path.is_dir():
        pytest.skip(f"real frames not available: {path} is absent (set CCDASK_REAL_DATA)")
    return path


@pytest.fixture
def isis_dir() -> Path:
    return real_dir("wht_isis_red")


@pytest.fixture
def kast_dir() -> Path:
    return real_dir("shane_kast_blue")


@pytest.fixture
def saao_dir() -> Path:
    return real_dir("saao_1m_ste3")
