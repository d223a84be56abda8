"""``ImageSource.read_into``/``stored_pixels``/``decode_into`` and ``physical_into``: the decode
straight into a caller's float32 buffer is the same, bit for bit, as an eager astropy read.

Every file is written for real into ``tmp_path`` (the stored values exactly, by ``write_raw``);
the output buffers are views inside larger arrays, as the combine tiles use them.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from ccdask.io import image_source
from ccdask.io._decode import physical, physical_into
from tests.io.test_read import CASES, ODD_SLICES, RNG, assert_bitwise, reference, write_raw


def _into_view(src, rows, cols, shape):
    """Read ``(rows, cols)`` into the middle frame of a larger 3-D buffer, columns offset by 3."""
    big = np.full((3, shape[0] + 2, shape[1] + 5), -7.0, np.float32)
    out = big[1, 1 : 1 + shape[0], 3 : 3 + shape[1]]
    src.read_into(rows, cols, out)
    assert (big[0] == -7).all() and (big[2] == -7).all()  # nothing written outside the view
    assert (big[1, 0] == -7).all() and (big[1, :, :3] == -7).all()
    return np.ascontiguousarray(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_read_into_bit_identical_to_astropy(tmp_path, case):
    raw, cards = CASES[case]
    path = write_raw(tmp_path / f"{case}.fits", raw, **cards)
    expected = reference(path)
    src = image_source(path)
    assert src.stored_pixels() is not None
    for rows, cols in [*ODD_SLICES, (slice(5, 6), slice(0, 37)), (slice(2, 39), slice(1, 36))]:
        want = expected[rows, cols]
        assert_bitwise(_into_view(src, rows, cols, want.shape), want)


@pytest.mark.parametrize(
    "cards", [{"BLANK": -999}, {"BLANK": -999, "BSCALE": 0.5, "BZERO": 100.0}, {"BLANK": -999, "BZERO": 32768}]
)
def test_read_into_blank_becomes_nan(tmp_path, cards):
    raw = RNG.integers(-2000, 2000, (30, 40), dtype=np.int16)
    raw[::7, ::5] = -999
    path = write_raw(tmp_path / "blank.fits", raw, **cards)
    expected = reference(path, blank_mask=raw == -999)
    got = _into_view(image_source(path), slice(3, 29), slice(1, 40), (26, 39))
    assert_bitwise(got, expected[3:29, 1:40])
    assert np.isnan(got).sum() == (raw[3:29, 1:40] == -999).sum()


def test_decode_into_from_the_stored_map(tmp_path):
    raw, cards = CASES["uint16_bzero"]
    path = write_raw(tmp_path / "u16.fits", raw, **cards)
    src = image_source(path)
    stored = src.stored_pixels()
    assert stored is not None and stored.dtype == np.dtype(">i2") and not stored.flags.writeable
    out = np.empty((4, 37), np.float32)
    src.decode_into(stored[10:14], out)
    assert_bitwise(out, reference(path)[10:14])


def test_compressed_files_fall_back_to_read(tmp_path):
    data = RNG.integers(0, 60000, (45, 50)).astype(np.uint16)
    fz = tmp_path / "tiles.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, tile_shape=(8, 50))]).writeto(fz)
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(plain)
    gz = tmp_path / "plain.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for path, hdu in ((fz, 1), (gz, 0)):
        src = image_source(path)
        assert src.kind in ("fpack", "gzip") and src.stored_pixels() is None
        got = _into_view(src, slice(7, 40), slice(2, 49), (33, 47))
        assert_bitwise(got, reference(path, hdu)[7:40, 2:49])


@pytest.mark.parametrize("case", sorted(CASES))
def test_physical_into_equals_physical(case):
    raw, cards = CASES[case]
    stored = raw.astype(raw.dtype.newbyteorder(">"))
    bitpix = {"uint8": 8, "int16": 16, "int32": 32, "int64": 64, "float32": -32, "float64": -64}[raw.dtype.name]
    args = (bitpix, cards.get("BSCALE", 1.0), cards.get("BZERO", 0.0), None)
    out = np.empty((raw.shape[1], raw.shape[0]), np.float32).T  # a non-contiguous output
    physical_into(stored, out, *args)
    assert_bitwise(np.ascontiguousarray(out), physical(stored, *args))


def test_physical_into_checks_the_output():
    stored = np.zeros((3, 4), ">i2")
    with pytest.raises(ValueError, match="float32 of shape"):
        physical_into(stored, np.empty((3, 4), np.float64), 16, 1.0, 32768.0, None)
    with pytest.raises(ValueError, match="float32 of shape"):
        physical_into(stored, np.empty((4, 3), np.float32), 16, 1.0, 32768.0, None)
