"""``ccdask combine`` imports only what it needs: not xarray, pandas, scipy's sparse/fftpack or
distributed (dask.array would import the first ones, ``dask.compute`` the last), and it leaves
them importable for the rest of a process that runs the command in process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

UNUSED = ("xarray", "pandas", "scipy.sparse", "scipy.fftpack", "distributed")


def write(folder, n=5):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"b{i}.fits"
        fits.PrimaryHDU(rng.normal(1000, 5, (12, 9)).astype(np.uint16)).writeto(path)
        paths.append(str(path))
    return paths


def test_command_does_not_import_unused_packages(tmp_path):
    paths = write(tmp_path)
    out = tmp_path / "m.fits"
    code = (
        "import sys; from ccdask.cli import main; "
        f"rc = main(['combine', *{paths!r}, '-o', {str(out)!r}, '--reject', 'sigclip']); "
        f"print(rc, [m for m in {UNUSED!r} if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    data = fits.getdata(out)
    stack = np.stack([fits.getdata(p).astype(np.float32) for p in paths])
    from ccdask.combine import CombineConfig, combine_block

    np.testing.assert_array_equal(data, combine_block(stack, CombineConfig(clip="sigclip")).data)


@pytest.mark.skipif(importlib.util.find_spec("xarray") is None, reason="xarray is not installed")
def test_hidden_integrations_are_importable_afterwards():
    code = (
        "import sys; import ccdask.cli._combine; "
        "print([m for m in ('xarray', 'scipy.sparse', 'scipy.fftpack') if m in sys.modules]); "
        "import xarray, scipy.sparse, scipy.fftpack; print(xarray.DataArray.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["[]", "DataArray"], proc.stdout + proc.stderr
