"""Read noise measured in the biases' overscans when the headers have none (real Kast night)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from ccdask import reduce
from ccdask.errors import PlanError
from ccdask.night._read_noise import overscan_noise


def _reference_noise(overscan: np.ndarray) -> float:
    """astropy: 3-sigma clipped residuals about each row's clipped mean, n/(n-1) corrected."""
    rows = overscan.astype(np.float64)
    clipped = sigma_clip(rows - np.median(rows, axis=1, keepdims=True), sigma=3, maxiters=10, stdfunc="mad_std")
    kept = np.ma.array(rows, mask=clipped.mask)
    resid = kept - kept.mean(axis=1, keepdims=True)
    n = (~resid.mask).sum()
    return float(np.sqrt((resid**2).sum() / (n - rows.shape[0])))


def test_overscan_noise_of_gaussian_integer_noise_is_unbiased():
    rng = np.random.default_rng(3)
    level = rng.normal(1000, 20, size=(4000, 1))  # each line its own level
    data = np.round(level + rng.normal(0, 3.0, size=(4000, 32)))
    # 128 000 pixels: the statistical error of the estimate is about 0.2 %
    assert overscan_noise(data, "serial") == pytest.approx(np.sqrt(3.0**2 + 1 / 12), rel=0.007)
    assert overscan_noise(data.T, "parallel") == pytest.approx(overscan_noise(data, "serial"))


def test_clipping_correction_matches_astropy_clipping_of_a_gaussian():
    from astropy.stats import sigma_clipped_stats

    from ccdask.night._read_noise import clipped_fraction

    x = np.random.default_rng(8).normal(0.0, 1.0, 2_000_000)
    _, _, std = sigma_clipped_stats(x, sigma=3.0, maxiters=None, cenfunc="mean", stdfunc="std")
    assert clipped_fraction(3.0) == pytest.approx(std, rel=0.002)
    assert clipped_fraction(3.0) < 0.99 and clipped_fraction(10.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.real
def test_kast_reduces_with_no_configuration_and_reports_the_read_noise(kast_dir, tmp_path):
    lines: list[str] = []
    result = reduce(kast_dir, tmp_path / "out", client="threads", log=lines.append)
    measured = result.read_noise["HDU0"]
    assert measured["source"] == "bias overscans" and measured["frames"] == 3
    # Kast: GAIN = 1; A's overscan is columns 2049-2080, B's 2081-2112 (header COVER=32)
    for amp, cols in (("A", slice(2048, 2080)), ("B", slice(2080, 2112))):
        ref = np.median([_reference_noise(fits.getdata(kast_dir / f"b2{i}.fits.gz")[:, cols]) for i in (1, 2, 3)])
        assert measured["amplifiers"][amp] == pytest.approx(ref, rel=0.03)  # clipping details differ
    assert any("read noise of HDU0 measured" in line for line in lines)
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert doc["read_noise"]["HDU0"]["amplifiers"] == measured["amplifiers"]
    history = "".join(str(h) for h in fits.getheader(tmp_path / "out" / "reduced" / "b27.fits", 0)["HISTORY"])
    assert "measured in the overscans of 3 bias frame(s)" in history
    # the bias master's variance carries it: (rn^2 per frame) / N at least, in e-^2
    with fits.open(tmp_path / "out" / "masters" / "bias.fits") as h:
        var = h[3].data if h[3].name.endswith("_VAR") else h[2].data
    assert np.nanmedian(var) >= min(measured["amplifiers"].values()) ** 2 / 3 * 0.99


@pytest.mark.real
def test_no_read_noise_and_no_overscan_fails_before_computing(saao_dir, tmp_path):
    # the SAAO frame's header has RDNOISE; without it and without a BIASSEC nothing can measure it
    raw = fits.getdata(saao_dir / "a8280271.fits", header=True)
    header = raw[1]
    for key in ("RDNOISE", "BIASSEC"):
        header.remove(key, ignore_missing=True)
    path = tmp_path / "raw" / "frame.fits"
    path.parent.mkdir()
    fits.writeto(path, raw[0], header)
    with pytest.raises(PlanError, match="no read noise known"):
        reduce([path], tmp_path / "out", client="sync", config={"bias": {"enabled": False}, "flat": {"enabled": False}})


def test_without_biases_each_frame_measures_its_own_overscan(sim_night, tmp_path):
    """No bias frames and no read noise in the headers, but an overscan in every frame: each
    frame's variance takes the read noise measured in its own overscan (as read_noise =
    "overscan" does), instead of failing inside a worker."""
    import shutil

    night = sim_night(chips=1, amps=2, nbias=0, ndark=0, nflat=2, nscience=1, filters=("r",), seed=4)
    raw = tmp_path / "raw"
    shutil.copytree(night.raw_dir, raw)
    for path in raw.glob("*.fits"):
        with fits.open(path, mode="update") as hdul:
            for hdu in hdul:
                for key in ("RDNOISEA", "RDNOISEB", "RDNOISE"):
                    hdu.header.remove(key, ignore_missing=True)
    cfg = {"bias": {"enabled": False}, "cosmics": {"method": "none"}}
    auto = reduce(raw, tmp_path / "auto", config=cfg, client="threads")
    assert auto.read_noise == {}  # nothing to measure in biases
    explicit = reduce(raw, tmp_path / "explicit", config={**cfg, "read_noise": "overscan"}, client="threads")
    (a,), (b,) = auto.outputs, explicit.outputs
    with fits.open(a) as fa, fits.open(b) as fb:
        for name in ("SCI", "VAR"):
            np.testing.assert_array_equal(fa[name].data, fb[name].data)
        history = "".join(str(h) for h in fa["SCI"].header.get("HISTORY", [])) + "".join(
            str(h) for h in fa[0].header.get("HISTORY", [])
        )
    assert "read noise measured in the overscan for A, B" in history
    # and the variance holds the noise measured in the frame's own overscan: with no master,
    # VAR = rn^2 + max(signal, 0), rn = the overscan's robust noise x gain
    from ccdask.calibrate import OverscanConfig, ProcessConfig, process_entry
    from ccdask.calibrate._arith import read_noise_from_overscan_np
    from ccdask.catalog import Catalog

    (entry,) = Catalog.scan([raw / Path(night.files["science"][0]).name]).entries
    frame = process_entry(entry, None, ProcessConfig(read_noise="auto"), role="flat")
    sci, var = frame.sci.compute(), frame.var.compute()
    rn = read_noise_from_overscan_np(entry.source.read(slice(None), slice(None)), entry.layout, OverscanConfig())
    with night.truth() as truth:
        for amp in entry.layout.amplifiers:
            region = amp.ccdsec.slices
            got = np.nanmedian(var[region] - np.maximum(sci[region], 0))
            assert got == pytest.approx(float(rn[amp.name]) ** 2, rel=1e-5), amp.name
            true_rn = truth.amp("CCD1", amp.name)["rdnoise"]
            assert 0.7 * true_rn < float(rn[amp.name]) < 1.1 * true_rn  # a robust (MAD) estimate


def test_a_rerun_takes_the_recorded_read_noise_and_starts_no_cluster(sim_night, tmp_path):
    """Headers without read noise: the first run measures it in the biases (a ``read-noise``
    stage) and records it in the cache; the rerun over the finished night takes it from there,
    so it has nothing to compute and starts no cluster; new biases are measured again."""
    import shutil

    from ccdask.cluster import LazyClient

    night = sim_night(chips=1, amps=2, nbias=3, ndark=0, nflat=2, nscience=1, filters=("r",), seed=6)
    raw = tmp_path / "raw"
    shutil.copytree(night.raw_dir, raw)
    for path in raw.glob("*.fits"):
        with fits.open(path, mode="update") as hdul:
            for hdu in hdul:
                for key in ("RDNOISEA", "RDNOISEB", "RDNOISE"):
                    hdu.header.remove(key, ignore_missing=True)
    cfg = {"cosmics": {"method": "none"}}
    out = tmp_path / "out"
    first = reduce(raw, out, config=cfg, client="threads")
    assert first.stages["read-noise"]["tasks"] > 0 and set(first.read_noise["CCD1"]["amplifiers"]) == {"A", "B"}
    with LazyClient() as lazy:
        again = reduce(raw, out, config=cfg, client=lazy)
        assert not lazy.started
    assert again.cluster_started is False
    assert again.read_noise == first.read_noise  # the measured values, as recorded
    assert "read-noise" not in again.stages or again.stages["read-noise"]["tasks"] == 0
    assert again.outputs == [] and again.skipped == first.outputs  # nothing reduced again
    # the record is keyed by the biases: one bias touched (a new identity), it is measured again
    bias = sorted(raw.glob("bias_*.fits"))[0]
    st = bias.stat()
    os.utime(bias, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = reduce(raw, tmp_path / "out2", config=cfg, client="threads", cache=out / "cache.zarr")
    assert changed.stages["read-noise"]["tasks"] > 0
