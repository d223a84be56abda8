"""Shared fixtures: the real frames beside the repository, and simulated nights made once per
session for each set of parameters (``sim_night``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import real_dir


@pytest.fixture(scope="session")
def sim_night(tmp_path_factory) -> Callable[..., Any]:
    """``sim_night(**params)``: the simulated night of ``ccdask.simulate_night(**params)``, made
    once per test session and shared by every test asking for the same parameters. Read-only by
    convention: a test that edits files copies the raw folder first."""
    from ccdask import simulate_night

    made: dict[str, Any] = {}

    def make(**params: Any) -> Any:
        key = repr(sorted(params.items()))
        if key not in made:
            made[key] = simulate_night(tmp_path_factory.mktemp("night"), **params)
        return made[key]

    return make


@pytest.fixture
def isis_dir() -> Path:
    return real_dir("wht_isis_red")


@pytest.fixture
def kast_dir() -> Path:
    return real_dir("shane_kast_blue")


@pytest.fixture
def saao_dir() -> Path:
    return real_dir("saao_1m_ste3")
