"""CCDData interoperability: frames out, CCDData in."""

from __future__ import annotations

import dask
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty

from ccdask.calibrate._process import process
from ccdask.config import ReduceConfig
from ccdask.io._ccddata import from_ccddata
from ccdask.profiles import load_profile


def test_from_ccddata_uncertainty_kinds_and_mask():
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    for unc, expected in (
        (StdDevUncertainty(np.full((3, 4), 2.0)), 4.0),
        (VarianceUncertainty(np.full((3, 4), 5.0)), 5.0),
        (InverseVariance(np.full((3, 4), 0.5)), 2.0),
    ):
        d, v = from_ccddata(CCDData(data, unit="adu", uncertainty=unc, mask=mask))
        d, v = dask.compute(d, v)
        assert d.dtype == np.float32 and np.isnan(d[1, 2]) and np.isnan(v[1, 2])
        assert np.all(v[~mask] == expected) and np.array_equal(d[~mask], data[~mask].astype(np.float32))
    d, v = from_ccddata(CCDData(data, unit="adu"))
    assert v is None


def test_process_accepts_ccddata_and_returns_ccddata(saao_dir):
    path = saao_dir / "a8280271.fits"
    header = fits.getheader(path)
    layout = load_profile("generic").chip_layout(header, (520, 536), chip="STE3")
    ccd = CCDData.read(path, unit="adu")
    cfg = ReduceConfig.from_dict({"cosmics": {"method": "none"}})
    from ccdask.io import open_frame

    a = process(ccd, None, cfg, layout=layout, header=header, exptime=150.04)
    b = process(open_frame(path), None, cfg, layout=layout, header=header, exptime=150.04)
    out = a.to_ccddata()
    assert out.unit == u.electron and out.shape == (520, 512)
    sci_b, var_b, dq_b = dask.compute(b.sci, b.var, b.dq)
    assert np.array_equal(out.data, sci_b)
    assert isinstance(out.uncertainty, VarianceUncertainty)
    assert np.array_equal(out.uncertainty.array, var_b)
    assert np.array_equal(out.mask, dq_b != 0) and np.array_equal(out.flags, dq_b)
    assert any("overscan" in h for h in out.meta["HISTORY"])
    # independent reference: SAAO overscan [4:13] median per row, trim [17:528], gain 1.9
    raw = fits.getdata(path).astype(np.float32)
    level = np.median(raw[:, 3:13].astype(np.float64), axis=1).astype(np.float32)
    ref = (raw[:, 16:528] - level[:, None]) * np.float32(1.9)
    np.testing.assert_allclose(out.data, ref, rtol=1e-6, atol=1e-3)
