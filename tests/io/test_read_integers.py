"""Exact integer reads (bit masks, DQ planes) from every storage, against astropy's data."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import FitsReadError
from ccdask.io import image_source


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.uint32])
@pytest.mark.parametrize("kind", ["plain", "gzip", "fpack"])
def test_read_integers_equals_astropy(tmp_path, dtype, kind):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    values = rng.integers(info.min, info.max, size=(33, 47), endpoint=True, dtype=np.int64).astype(dtype)
    if kind == "fpack":
        path = tmp_path / "m.fits.fz"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(values)]).writeto(path)
    else:
        path = tmp_path / ("m.fits.gz" if kind == "gzip" else "m.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(values)]).writeto(path)
    with fits.open(path) as hdul:
        expected = np.asarray(hdul[1].data)
    source = image_source(path, 1)
    got = source.read_integers(slice(3, 30), slice(None, None, -1))
    assert got.dtype.kind in "iu"
    np.testing.assert_array_equal(got, expected[3:30, ::-1])
    lazy = source.to_dask(chunks=(10, 20), integers=True)
    assert lazy.dtype == got.dtype
    np.testing.assert_array_equal(lazy.compute(), expected)


def test_read_integers_refuses_float_images(tmp_path):
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(path)
    with pytest.raises(FitsReadError, match=r"f.fits\[0\]: not an integer image"):
        image_source(path).read_integers(slice(None), slice(None))
