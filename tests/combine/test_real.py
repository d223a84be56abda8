"""combine on the 11 real WHT/ISIS biases: equal to ccdproc.combine, and the CLI works on them.

The frames (gzip, pixels in extension 1, uint16 with BZERO) are in ../shared/data/real; the tests
skip, saying where they looked, when that folder is absent.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits

from ccdask.cli._combine import run
from ccdask.combine import combine

pytestmark = [pytest.mark.real, pytest.mark.slow]

BIASES = [f"r{n}.fit.gz" for n in range(2700982, 2701003, 2)]


@pytest.fixture(scope="module")
def bias_paths():
    from tests.helpers import real_dir

    folder = real_dir("wht_isis_red")
    paths = [folder / name for name in BIASES]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"ISIS biases missing from {folder}: {missing}")
    return paths


def test_equal_to_ccdproc_combine(bias_paths):
    ccdproc = pytest.importorskip("ccdproc")
    from astropy.nddata import CCDData

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccds = [CCDData.read(p, hdu=1, unit="adu") for p in bias_paths]
        # ccdproc.combine's sigma clipping: one pass, center ma.mean, spread ma.std (3, 3),
        # then nanmean of the survivors and nanstd / sqrt(n) as uncertainty
        ref = ccdproc.combine(ccds, method="average", sigma_clip=True)
        comb = ccdproc.Combiner(ccds)
        comb.sigma_clipping(low_thresh=3, high_thresh=3, func=np.ma.mean, dev_func=np.ma.std)
    res = combine(
        bias_paths, hdu=1, maxiters=1, center="mean", spread="std", variance="scatter", name="bias-isis"
    ).compute()
    assert res.data.shape == (4200, 966)
    np.testing.assert_array_equal(res.data, ref.data.astype(np.float32))
    np.testing.assert_array_equal(res.count, (~comb.data_arr.mask).sum(axis=0))
    assert (res.count < 11).sum() > 100  # clipping really happened (703 pixels)
    np.testing.assert_allclose(np.sqrt(res.variance), ref.uncertainty.array, rtol=1e-6)
    assert not ref.mask.any() and (res.count > 0).all()


def test_cli_on_real_biases(bias_paths, tmp_path, capsys):
    import argparse

    from ccdask.cli._combine import register

    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "bias.fits"
    args = parser.parse_args(["combine", *map(str, bias_paths), "-o", str(out)])
    assert run(args) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT"]
        data = hdul[0].data
        assert data.shape == (4200, 966) and np.isfinite(data).all()
        assert 100 < np.median(data) < 5000  # a bias level in ADU
        assert hdul[0].header["NCOMBINE"] == 11
        assert hdul[0].header["IMCMB001"] == "r2700982.fit.gz"
        count = hdul["COUNT"].data
        assert count.min() >= 1 and count.max() == 11 and count.mean() > 10


def test_plain_copies_through_the_pread_tiles(bias_paths, tmp_path):
    """The same instrument files gunzipped byte for byte (a real header, pixels in extension 1,
    uint16 with BZERO): plain files go through the ``pread`` tile tasks, and give the numbers of
    astropy's own read of the frames combined eagerly, and of the gzip files."""
    import gzip

    from ccdask.combine import CombineConfig, combine_block

    plain = []
    for p in bias_paths:
        out = tmp_path / p.name.removesuffix(".gz")
        out.write_bytes(gzip.decompress(p.read_bytes()))
        plain.append(out)
    eager = np.stack([fits.getdata(p, 1).astype(np.float32) for p in plain])
    for kind in (dict(clip="sigclip"), dict(clip="sigma")):
        got = combine(plain, hdu=1, **kind).compute()
        want = combine_block(eager, CombineConfig(**kind))
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(got.count, want.count)
        assert (got.count < len(plain)).sum() > 100  # rejection happened
        from_gzip = combine(bias_paths, hdu=1, **kind).compute()
        np.testing.assert_array_equal(got.data, from_gzip.data)
