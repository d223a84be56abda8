"""The photon-transfer curve: pairs of simulated flats at known gain, read noise, full well and
nonlinearity, measured from the FITS files on disk by ``ccdask ptc``."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from ccdask.calibrate._linearity import load_linearity
from ccdask.calibrate._ptc import ptc_from_arrays, ptc_from_files
from ccdask.catalog import Catalog
from ccdask.cli._main import main as cli_main
from ccdask.errors import ConfigError
from ccdask.simulate import simulate_night

# 10 levels up to 40000 e-, then steps of 10 % to 160000 e-: past every amplifier's full well
LEVELS = tuple(np.geomspace(300.0, 40000.0, 10)) + tuple(np.geomspace(44000.0, 160000.0, 14))
STEP = (160000.0 / 44000.0) ** (1 / 13)
NIGHT = {"chips": 1, "nbias": 3, "ndark": 0, "nflat": 1, "filters": ("r",), "nscience": 0, "seed": 4}
FULL_WELL = 0.8
BETA = -5.0e-7


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptc")
    linear = simulate_night(root / "linear", full_well=FULL_WELL, ptc_levels=LEVELS, **NIGHT)
    curved = simulate_night(root / "curved", full_well=FULL_WELL, ptc_levels=LEVELS, nonlinearity=BETA, **NIGHT)
    return linear, curved


def _raw(night):
    return [str(p) for p in night.all_files]


def test_gain_read_noise_and_turn_off_against_truth(nights):
    linear, _ = nights
    truth = linear.truth()
    run = ptc_from_files(_raw(linear))
    assert len(run.pairs) == len(LEVELS) and len(run.biases) == 3
    assert any("flat_r_000" in p for p in run.skipped)  # the ordinary flat has no partner
    for r in run.amplifiers:
        amp = truth.amp("CCD1", r.amp)
        # the gain within 3 of its stated errors (of about 0.3 %)
        assert abs(r.gain - amp["gain"]) < 3 * r.gain_err
        assert r.gain_err / r.gain < 0.005
        # the read noise as the frames show it: the amplifier's plus the ADC's rounding (1/12 ADU²)
        want_rn = math.sqrt(amp["rdnoise_adu"] ** 2 + 1 / 12) * amp["gain"]
        assert abs(r.read_noise - want_rn) < 3 * r.read_noise_err
        # the turn-off: the last pair before the variance collapses, within one level step below
        # the full well (ADU above the bias)
        well = truth.meta["bleed"]["full_well_e"]["CCD1"][r.amp] / amp["gain"]
        assert r.turnoff is not None and well / (STEP * 1.05) < r.turnoff < well
        assert r.turnoff_raw == pytest.approx(r.turnoff + amp["bias_level"], abs=15)
        # linear: beta is zero within its error, and the residual below 0.1 %
        assert abs(r.beta) < 3 * r.beta_err
        assert r.linearity_residual < 0.1


def test_nonlinearity_recovered(nights, tmp_path):
    _, curved = nights
    run = ptc_from_files(_raw(curved))
    for r in run.amplifiers:
        assert abs(r.beta - BETA) < 3 * r.beta_err
        assert r.beta_err < 0.02 * abs(BETA)
        assert r.linearity_residual > 0.5  # 1 % low at 20000 ADU
    # the written linearity.file loads and undoes the curve: its series inverts s + beta s²
    from ccdask.calibrate._ptc import write_linearity

    table = load_linearity(write_linearity(tmp_path / "nl.toml", run.amplifiers))
    curves = table.for_chip(Catalog.scan([run.pairs[0][0]]).entries[0].layout)
    s = np.array([1000.0, 20000.0, 40000.0])
    for r in run.amplifiers:
        corrected = curves[r.amp].apply(s + BETA * s**2)
        # left: the error of beta (below 2 %) times beta s², and the series' next term
        np.testing.assert_allclose(corrected, s, rtol=0.03 * abs(BETA) * s.max() + 2e-4)


def test_cli_prints_and_writes_what_the_profile_needs(nights, tmp_path, capsys):
    linear, _ = nights
    png, snippet = tmp_path / "ptc.png", tmp_path / "amps.toml"
    assert cli_main(["ptc", *_raw(linear), "--plot", str(png), "--write", str(snippet)]) == 0
    out = capsys.readouterr().out
    assert f"{len(LEVELS)} pairs of flats, 3 biases" in out
    run = ptc_from_files(_raw(linear))
    for r in run.amplifiers:
        assert any(line.split()[:3] == ["CCD1", r.amp, f"{r.gain:.4f}"] for line in out.splitlines())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the snippet is a profile's layout: a profile made of it gives the measured gains and levels
    profile = tmp_path / "simcam_ptc.toml"
    profile.write_text('name = "simcam_ptc"\n' + snippet.read_text())
    table = tomllib.loads(profile.read_text())
    assert [a["name"] for a in table["layout"]["amplifiers"]] == ["A", "B"]
    layout = Catalog.scan([run.pairs[0][0]], profile=str(profile)).entries[0].layout
    for r, amp in zip(run.amplifiers, layout.amplifiers, strict=True):
        assert amp.gain == pytest.approx(r.gain, rel=1e-4)
        assert amp.rdnoise == pytest.approx(r.read_noise, rel=1e-3)
        assert amp.saturate == math.floor(r.turnoff_raw)


def test_bad_input():
    flat = np.full((20, 20), 1000.0)
    with pytest.raises(ConfigError, match="two biases"):
        ptc_from_arrays([(flat, flat, 1.0)] * 3, [flat])
    with pytest.raises(ConfigError, match="not above the bias"):
        ptc_from_arrays([(flat, flat, 1.0)] * 3, [flat, flat])
