"""Shared helpers and fixtures of the reliability tests (``test_reliability_*.py``).

Fixtures defined here are imported by name into the test modules, so the session-scoped ones
(the small simulated night and its clean reference reduction) are built once per run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.night._reduce import reduce
from ccdask.simulate._night import simulate_night

# The night every reliability test starts from: 2 chips x 2 amplifiers of 192 x 160 pixels,
# 3 biases, 2 darks, 2 flats and 1 science frame in each of g and r (11 files).
NIGHT = {
    "chips": 2,
    "amps": 2,
    "size": "small",
    "nbias": 3,
    "ndark": 2,
    "nflat": 2,
    "filters": ("g", "r"),
    "nscience": 1,
    "seed": 7,
}

# Header cards that legitimately differ between two runs: astropy stamps the time into the
# comments of CHECKSUM/DATASUM (the values of DATASUM are compared through the data).
VOLATILE = {"CHECKSUM", "DATASUM"}


def no_compute(*args, **kwargs):
    """A dask scheduler that fails the test if anything is computed."""
    raise AssertionError("the pipeline computed before validating its plan")


def make_night(root: Path, **changes):
    return simulate_night(root, **{**NIGHT, **changes})


def copy_raw(night, dest: Path) -> Path:
    """A private copy of the night's raw folder (tests edit their copy, never the shared one)."""
    shutil.copytree(night.raw_dir, dest)
    return dest


@pytest.fixture(scope="session")
def night(tmp_path_factory):
    """The shared small night (read-only by convention: copy it before editing)."""
    return make_night(tmp_path_factory.mktemp("rel-night"))


@pytest.fixture(scope="session")
def reference(night, tmp_path_factory):
    """A clean reduction of ``night`` on the threaded scheduler: what every other run must equal."""
    out = tmp_path_factory.mktemp("rel-reference")
    result = reduce(night.raw_dir, out, client="threads")
    return out, result


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (relative path -> digest), and the mode bits."""
    digests = {}
    for p in sorted(Path(root).rglob("*")):
        st = os.lstat(p)
        rel = str(p.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            digests[rel] = f"{h.hexdigest()} {stat.S_IMODE(st.st_mode):o} {st.st_mtime_ns}"
        else:
            digests[rel] = f"{stat.S_IFMT(st.st_mode):o} {stat.S_IMODE(st.st_mode):o}"
    return digests


def snapshot(root: Path, exclude: tuple[Path, ...] = ()) -> set[str]:
    """Every path under ``root`` (files, folders, links), minus the ``exclude`` subtrees."""
    ex = [str(Path(e)) for e in exclude]
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not any(p == e or p.startswith(e + os.sep) for e in ex):
                found.add(p)
    return found


def output_files(out: Path) -> list[str]:
    """The FITS products of a reduction, relative to ``out`` (reduced frames and masters)."""
    return sorted(str(p.relative_to(out)) for sub in ("reduced", "masters") for p in (out / sub).glob("*.fits"))


def assert_same_outputs(a: Path, b: Path, *, headers: bool = True) -> int:
    """Every reduced frame and master FITS file of ``a`` and ``b`` holds bitwise-equal arrays
    (SCI/VAR/DQ, master data/COUNT/VAR), with equal dtypes; with ``headers``, equal header cards
    too (but the time stamps astropy writes into CHECKSUM/DATASUM comments). Returns the number
    of arrays compared."""
    names = output_files(a)
    assert names, f"{a}: no outputs"
    assert names == output_files(b)
    compared = 0
    for name in names:
        with fits.open(a / name, checksum=True) as ha, fits.open(b / name, checksum=True) as hb:
            assert [(h.name, h.ver) for h in ha] == [(h.name, h.ver) for h in hb], name
            for xa, xb in zip(ha, hb, strict=True):
                where = f"{name}[{xa.name},{xa.ver}]"
                if headers:
                    ca = [(c.keyword, c.value, c.comment) for c in xa.header.cards if c.keyword not in VOLATILE]
                    cb = [(c.keyword, c.value, c.comment) for c in xb.header.cards if c.keyword not in VOLATILE]
                    assert ca == cb, where
                if xa.data is None:
                    assert xb.data is None, where
                    continue
                assert xa.data.dtype == xb.data.dtype, where
                assert np.array_equal(xa.data, xb.data, equal_nan=True), where
                compared += 1
    return compared


def assert_complete_fits(path: Path) -> None:
    """``path`` is a whole FITS file: every HDU's CHECKSUM/DATASUM verifies and data read back."""
    with fits.open(path, checksum=True) as h:
        assert len(h) > 1, path
        for hdu in h:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header, path
            if hdu.data is not None:
                np.asarray(hdu.data).sum()


def write_float_copy(src: Path, dst: Path, edit=None) -> Path:
    """Rewrite a raw MEF file with float32 pixels (BITPIX -32); ``edit(index, array)`` may change
    each chip's pixels in place."""
    with fits.open(src) as h:
        hdus = [fits.PrimaryHDU(header=h[0].header)]
        for k, ext in enumerate(h[1:]):
            data = ext.data.astype(np.float32)
            if edit is not None:
                edit(k, data)
            header = ext.header.copy()
            for key in ("BZERO", "BSCALE", "BLANK"):
                header.remove(key, ignore_missing=True)
            hdus.append(fits.ImageHDU(data=data, header=header))
        fits.HDUList(hdus).writeto(dst)
    return dst
