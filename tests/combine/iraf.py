"""Run IRAF's ``imcombine`` (Debian's ``irafcl``) on FITS files and read its result.

IRAF is a reference to measure against. Tests that need it call :func:`require_iraf`, which skips
with the reason when ``irafcl`` is not installed, unless ``CCDASK_REQUIRE_IRAF=1`` (set by
``.ci/run`` after it installed IRAF) turns the missing tool into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

__all__ = ["imcombine", "imcombine_planes", "imcombine_rejected", "require_iraf", "write_frames"]


def require_iraf() -> str:
    """The path of ``irafcl``; skip (or fail under ``CCDASK_REQUIRE_IRAF=1``) when it is missing."""
    exe = shutil.which("irafcl")
    if exe is None:
        reason = "IRAF's irafcl is not installed (Debian: apt-get install iraf iraf-noao)"
        if os.environ.get("CCDASK_REQUIRE_IRAF") == "1":
            pytest.fail(f"CCDASK_REQUIRE_IRAF=1 but {reason}")
        pytest.skip(reason)
    return exe


def write_frames(folder: Path, stack: np.ndarray, headers: Sequence[dict[str, Any]] | None = None) -> list[Path]:
    """Write each plane of ``stack`` as ``frame<i>.fits`` (float32, with optional header cards)."""
    paths = []
    for i, plane in enumerate(np.asarray(stack, dtype=np.float32)):
        hdr = fits.Header()
        for key, value in (headers[i] if headers else {}).items():
            hdr[key] = value
        path = folder / f"frame{i:02d}.fits"
        fits.writeto(path, plane, hdr, overwrite=True)
        paths.append(path)
    return paths


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def imcombine_rejected(paths: Sequence[Path], workdir: Path, **params: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """As :func:`imcombine`, also returning IRAF's number-rejected mask (``nrejmasks``) as int."""
    nrej = workdir / "iraf_nrej.pl"
    after = f'imcopy ("{nrej}", "{nrej.with_suffix(".fits")}", verbose=no)'
    data, log = imcombine(paths, workdir, after, nrejmasks=str(nrej), **params)
    with fits.open(nrej.with_suffix(".fits")) as hdul:
        counts = np.asarray(hdul[0].data, dtype=np.int64)
    return data, counts, log


def imcombine_planes(
    paths: Sequence[Path], workdir: Path, **params: Any
) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """As :func:`imcombine`, also returning IRAF's ``sigma`` image, number-rejected mask
    (``nrejmasks``) and per-frame rejection masks (``rejmask``, ``(N, ny, nx)``) as arrays."""
    sig, nrej, rej = workdir / "iraf_sigma.fits", workdir / "iraf_nrej.pl", workdir / "iraf_rej.pl"
    for stale in (sig, rej, rej.with_suffix(".fits")):
        stale.unlink(missing_ok=True)
    after = "".join(f'imcopy ("{pl}", "{pl.with_suffix(".fits")}", verbose=no)\n' for pl in (nrej, rej))
    data, log = imcombine(paths, workdir, after, sigma=str(sig), nrejmasks=str(nrej), rejmask=str(rej), **params)
    planes = {}
    for key, path in (("sigma", sig), ("nrej", nrej.with_suffix(".fits")), ("rejmask", rej.with_suffix(".fits"))):
        with fits.open(path) as hdul:
            planes[key] = np.asarray(hdul[0].data, dtype=np.float64 if key == "sigma" else np.int64)
    return data, planes, log


def imcombine(paths: Sequence[Path], workdir: Path, _after: str = "", **params: Any) -> tuple[np.ndarray, str]:
    """Run ``imcombine`` on ``paths`` in ``workdir`` with ``params``; the result (float64) and the log.

    ``irafcl`` runs non-interactively from a script with ``USER`` and ``HOME`` set (IRAF needs
    both to create its login area). Output pixel type real (float32), as ccdask's.
    """
    exe = require_iraf()
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "iraf_out.fits"
    out.unlink(missing_ok=True)
    for stale in workdir.glob("iraf_nrej.*"):
        stale.unlink()
    listfile = workdir / "iraf_inputs.lst"
    listfile.write_text("".join(f"{p}\n" for p in paths))
    args = {"outtype": "real", "logfile": "STDOUT", **params}
    call = ", ".join(f"{k}={_value(v)}" for k, v in args.items())
    script = workdir / "iraf_combine.cl"
    script.write_text(f'images\nimmatch\nimcombine ("@{listfile}", "{out}", {call})\n{_after}\nlogout\n')
    env = {**os.environ, "USER": os.environ.get("USER", "ccdask"), "HOME": str(workdir)}
    proc = subprocess.run(
        [exe, "-f", str(script)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"imcombine failed (exit {proc.returncode}):\n{log}")
    with fits.open(out) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
    return data, log
