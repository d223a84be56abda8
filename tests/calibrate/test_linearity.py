"""Nonlinearity: injected by the simulator (s -> s + beta s²), corrected per amplifier after the overscan."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import CosmicConfig, LinearityConfig, ProcessConfig, process, process_in_memory
from ccdask.calibrate._linearity import correct_linearity, correct_linearity_np, load_linearity
from ccdask.calibrate._overscan import subtract_overscan_np
from ccdask.catalog import Catalog
from ccdask.errors import ConfigError
from ccdask.simulate import simulate_night

BETA = -5.0e-7  # 1 % low at 20000 ADU
NIGHT = {"chips": 1, "nbias": 0, "ndark": 0, "nflat": 2, "filters": ("r",), "nscience": 1, "seed": 11}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("linearity")
    return simulate_night(root / "nl", nonlinearity=BETA, **NIGHT), simulate_night(root / "lin", **NIGHT)


def _inverse(m):
    """The exact inverse of m = t + beta t² (the root near t = m)."""
    return (-1.0 + np.sqrt(1.0 + 4.0 * BETA * m)) / (2.0 * BETA)


def _table_file(path):
    grid = np.linspace(-1000.0, 65000.0, 400)
    path.write_text(
        "[[linearity]]\namp = 'A'\nmeasured = "
        + repr([float(x) for x in grid])
        + "\ntrue = "
        + repr([float(y) for y in _inverse(grid)])
        + "\n\n[[linearity]]\namp = 'B'\ncoefficients = "
        # the series of the inverse: t = m - beta m² + 2 beta² m³ - 5 beta³ m⁴
        + repr([-BETA, 2 * BETA**2, -5 * BETA**3])
        + "\n"
    )
    return path


def test_truth_records_the_curve(nights):
    assert nights[0].truth().meta["nonlinearity"]["beta"] == BETA
    assert "nonlinearity" not in nights[1].truth().meta


def test_correction_restores_linearity_to_the_noise(nights, tmp_path):
    nl, lin = nights
    table = load_linearity(_table_file(tmp_path / "nl.toml"))
    path = nl.files["flat"][0]
    layout = Catalog.scan([str(path)]).entries[0].layout
    raw, ref = fits.getdata(path, 1), fits.getdata(lin.files["flat"][0], 1)
    measured = subtract_overscan_np(raw, layout).astype(np.float64)
    truth = subtract_overscan_np(ref, layout).astype(np.float64)
    corrected = correct_linearity_np(measured, layout, table).astype(np.float64)
    for amp in layout.amplifiers:
        sl = amp.datasec.normalized().slices
        signal = float(np.median(truth[sl]))
        before = measured[sl] - truth[sl]
        after = corrected[sl] - truth[sl]
        noise = (amp.rdnoise or 0.0) / amp.gain
        # uncorrected: the curve's deficit beta s² (~100 ADU at ~14000 ADU)
        assert np.median(before) == pytest.approx(BETA * signal**2, rel=0.05)
        # corrected: what is left is the rounding of the raw values (|d| <= 1 ADU) and the read
        # noise added after the curve, scaled by the correction's slope minus one (< 2 %)
        assert abs(float(np.mean(after))) < 0.05
        assert np.abs(after).max() <= 1.0 + 0.03 * 5 * noise


def test_dask_form_and_chain(nights, tmp_path):
    nl, _ = nights
    path = _table_file(tmp_path / "nl.toml")
    table = load_linearity(path)
    raw_path = nl.files["flat"][0]
    layout = Catalog.scan([str(raw_path)]).entries[0].layout
    raw = fits.getdata(raw_path, 1)
    sub = subtract_overscan_np(raw, layout)
    np.testing.assert_array_equal(
        correct_linearity(da.from_array(sub, chunks=(50, 70)), layout, table).compute(),
        correct_linearity_np(sub, layout, table),
    )
    cfg = ProcessConfig(linearity=LinearityConfig(file=str(path)), cosmics=CosmicConfig(method="none"))
    sci, _var, _dq, history = process_in_memory(raw, {}, cfg, layout=layout, exptime=5.0, role="flat")
    plain = process_in_memory(raw, {}, ProcessConfig(), layout=layout, exptime=5.0, role="flat")
    assert any(h.startswith("linearity: nl.toml: A: table of 400 points; B: ") for h in history)
    assert not any(h.startswith("linearity") for h in plain[3])
    assert float(np.nanmedian(sci - plain[0])) > 0  # the deficit is given back
    lazy = process(da.from_array(raw, chunks=(64, 100)), None, cfg, layout=layout, exptime=5.0, role="flat")
    np.testing.assert_array_equal(lazy.sci.compute(), sci)


def test_bad_curves_fail_clearly(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[[linearity]]\namp = 'A'\nmeasured = [0, 10]\ntrue = [0]\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*equally long"):
        load_linearity(p)
    p2 = tmp_path / "both.toml"
    p2.write_text("[[linearity]]\namp = 'A'\n")
    with pytest.raises(ConfigError, match=r"both\.toml.*either coefficients"):
        load_linearity(p2)
    with pytest.raises(ConfigError, match="nonlinearity"):
        simulate_night(tmp_path / "n", chips=1, nonlinearity=0.5)
