"""Run Siril's ``stack`` (Debian's ``siril-cli``) on FITS files written by astropy and read its result.

Siril is a reference to measure against. Tests that need it call :func:`require_siril`, which skips
with the reason when ``siril-cli`` is not installed, unless ``CCDASK_REQUIRE_SIRIL=1`` (set by
``.ci/run`` after it installed Siril) turns the missing tool into a failure.

Siril works on a sequence: ``convert`` copies the FITS files of its working directory into its own
sequence (``.fit`` files, float32 kept as float32 when the values lie in [0, 1], which the helper
checks), then ``stack ... rej <kind> <low> <high> -nonorm`` combines it with the mean of the
survivors (float32 output). Siril's missing value is 0: :func:`siril_stack` writes NaN as 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

__all__ = ["require_siril", "siril_stack", "siril_version"]


def require_siril() -> str:
    """The path of ``siril-cli``; skip (or fail under ``CCDASK_REQUIRE_SIRIL=1``) when it is missing."""
    exe = shutil.which("siril-cli")
    if exe is None:
        reason = "Siril's siril-cli is not installed (Debian: apt-get install siril)"
        if os.environ.get("CCDASK_REQUIRE_SIRIL") == "1":
            pytest.fail(f"CCDASK_REQUIRE_SIRIL=1 but {reason}")
        pytest.skip(reason)
    return exe


def _run(exe: str, workdir: Path, lines: Sequence[str]) -> str:
    script = workdir / "siril_run.ssf"
    script.write_text("requires 1.0.0\n" + "".join(f"{line}\n" for line in lines))
    # HOME: Siril creates its configuration folder there (not in the user's)
    env = {**os.environ, "HOME": str(workdir)}
    proc = subprocess.run(
        [exe, "-d", str(workdir), "-s", str(script)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Script execution finished successfully" not in log:
        raise RuntimeError(f"siril-cli failed (exit {proc.returncode}):\n{log}")
    return log


def siril_version() -> str:
    """``siril-cli --version`` (e.g. ``siril 1.0.6``)."""
    exe = require_siril()
    return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()


def siril_stack(stack: np.ndarray, workdir: Path, rejections: Sequence[str]) -> list[np.ndarray]:
    """Siril's rejection-mean stacks of ``stack`` (N, ny, nx), one per ``rejections`` entry.

    Each entry is what follows ``rej`` in Siril's ``stack`` command, e.g. ``"w 3 3"``,
    ``"l 2.5 3"``, ``"g 0.3 0.05"`` or ``"s 3 3"``; ``-nonorm`` is added. The frames are written
    as float32 (NaN as 0, Siril's missing value; values must lie in (0, 1]) and converted once.
    Returns Siril's float32 results as float32 arrays, in the order of ``rejections``.
    """
    exe = require_siril()
    data = np.asarray(stack, dtype=np.float32)
    data = np.where(np.isfinite(data), data, np.float32(0))
    if data.min() < 0 or data.max() > 1:
        raise ValueError("Siril keeps float32 values unchanged only within [0, 1]")
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ValueError(f"{workdir} must be empty: Siril's convert takes every image in it")
    for i, plane in enumerate(data):
        fits.writeto(workdir / f"frame{i:04d}.fits", plane)
    lines = ["convert seq"]
    for i, rej in enumerate(rejections):
        lines.append(f"stack seq rej {rej} -nonorm -out=result{i}")
    log = _run(exe, workdir, lines)
    # the sequence holds the frames in order and unchanged (no rescaling, no flip)
    for i, plane in enumerate(data):
        with fits.open(workdir / f"seq_{i + 1:05d}.fit") as hdul:
            if not np.array_equal(np.asarray(hdul[0].data, dtype=np.float32), plane):
                raise RuntimeError(f"Siril's sequence frame {i + 1} differs from frame{i:04d}.fits\n{log}")
    out = []
    for i in range(len(rejections)):
        with fits.open(workdir / f"result{i}.fit") as hdul:
            if hdul[0].header.get("BITPIX") != -32:
                raise RuntimeError(f"Siril wrote BITPIX {hdul[0].header.get('BITPIX')}, not float32")
            out.append(np.asarray(hdul[0].data, dtype=np.float32))
    return out
