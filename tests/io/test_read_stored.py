"""``ImageSource.read_stored_into``: the stored bytes of a region of a plain file read with
``pread`` (no memory map), the same as the file's bytes at those places; clear errors naming the
file for truncated, changed and compressed files.

Files are written for real into ``tmp_path`` by ``write_raw`` (stored values exactly) or astropy.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import FitsReadError, SectionError
from ccdask.io import image_source
from ccdask.io._decode import RAW_DTYPES
from tests.io.test_read import CASES, write_raw

REGIONS = [
    (slice(0, 39), slice(0, 37)),  # whole image: one run of bytes
    (slice(5, 6), slice(0, 37)),  # one whole row
    (slice(2, 30), slice(1, 36)),  # row by row
    (slice(38, 39), slice(36, 37)),  # the last pixel
]


@pytest.mark.parametrize("case", sorted(CASES))
def test_read_stored_into_is_the_files_bytes(tmp_path, case):
    raw, cards = CASES[case]
    path = write_raw(tmp_path / f"{case}.fits", raw, **cards)
    src = image_source(path)
    dtype = RAW_DTYPES[src.bitpix]
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        want_all = np.asarray(hdul[0].data).astype(dtype)  # stored values in the file's byte order
    ny, nx = src.shape
    for rows, cols in REGIONS:
        rows = slice(rows.start, min(rows.stop, ny))
        cols = slice(cols.start, min(cols.stop, nx))
        want = want_all[rows, cols]
        out = np.full(want.shape, 0x5A, dtype=np.dtype(f"u{dtype.itemsize}"))
        src.read_stored_into(rows, cols, out)
        assert out.tobytes() == want.tobytes(), (case, rows, cols)


def test_read_stored_into_leaves_nothing_mapped(tmp_path):
    path = write_raw(tmp_path / "u16.fits", *CASES["uint16_bzero"][:1], **CASES["uint16_bzero"][1])
    src = image_source(path)
    out = np.empty(src.shape, np.uint16)
    src.read_stored_into(slice(0, src.shape[0]), slice(0, src.shape[1]), out)
    with open("/proc/self/maps") as maps:
        assert str(path) not in maps.read()


def test_truncated_file_names_the_file(tmp_path):
    data = np.arange(64 * 90, dtype=np.int16).reshape(64, 90)
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(data).writeto(path)
    src = image_source(path)
    size = os.path.getsize(path)
    os.truncate(path, src.data_offset + 10 * 90 * 2 + 7)  # inside row 10
    st = os.stat(path)
    src = dataclasses.replace(src, size=st.st_size, mtime_ns=st.st_mtime_ns)  # as scanned now
    out = np.empty((30, 90), np.uint16)
    with pytest.raises(FitsReadError, match=r"cut\.fits\[0\].*ends inside the pixel data"):
        src.read_stored_into(slice(0, 30), slice(0, 90), out)
    assert size > os.path.getsize(path)


def test_changed_file_is_refused(tmp_path):
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.int16)).writeto(path)
    src = image_source(path)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 2880)
    with pytest.raises(FitsReadError, match=r"f\.fits\[0\].*changed since it was scanned"):
        src.read_stored_into(slice(0, 8), slice(0, 8), np.empty((8, 8), np.uint16))


def test_compressed_and_bad_arguments_are_refused(tmp_path):
    path = tmp_path / "c.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((8, 8), np.int16))]).writeto(path)
    src = image_source(path)
    with pytest.raises(FitsReadError, match="plain"):
        src.read_stored_into(slice(0, 8), slice(0, 8), np.empty((8, 8), np.uint16))
    plain = tmp_path / "p.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.int16)).writeto(plain)
    psrc = image_source(plain)
    with pytest.raises(SectionError):
        psrc.read_stored_into(slice(0, 8, 2), slice(0, 8), np.empty((4, 8), np.uint16))
    with pytest.raises(SectionError):
        psrc.read_stored_into(slice(0, 8), slice(0, 8), np.empty((7, 8), np.uint16))
    with pytest.raises(ValueError, match="2-byte"):
        psrc.read_stored_into(slice(0, 8), slice(0, 8), np.empty((8, 8), np.float32))
