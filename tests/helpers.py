"""Helpers shared by the whole suite: where the real frames are, and proof of laziness."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest

REAL = Path(os.environ.get("CCDASK_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def real_dir(name: str) -> Path:
    """A folder of real frames, or skip the test saying where they were looked for."""
    path = REAL / name
    if not path.is_dir():
        pytest.skip(f"real frames not available: {path} is absent (set CCDASK_REAL_DATA)")
    return path


def raising_scheduler(*args, **kwargs):
    """A dask scheduler that fails: graph builders must not compute anything."""
    raise AssertionError("something was computed while the graph was being built")


@contextlib.contextmanager
def no_compute() -> Iterator[None]:
    """Within this block, any dask computation (on the default scheduler) fails the test."""
    with dask.config.set(scheduler=raising_scheduler):
        yield
