"""Shared fixtures: the real frames beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import real_dir


@pytest.fixture
def isis_dir() -> Path:
    return real_dir("wht_isis_red")


@pytest.fixture
def kast_dir() -> Path:
    return real_dir("shane_kast_blue")


@pytest.fixture
def saao_dir() -> Path:
    return real_dir("saao_1m_ste3")
