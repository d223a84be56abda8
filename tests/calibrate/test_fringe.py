"""Fringes: injected by the simulator with a known pattern and amplitude per exposure, the fringe
frame stacked from the night's reduced science frames (FITS on disk), scaled and subtracted."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask import reduce
from ccdask.calibrate._fringe import fit_fringe_np, source_mask_np, subtract_fringe, subtract_fringe_np
from ccdask.errors import ConfigError
from ccdask.night._fringe import fringe_frame
from ccdask.simulate import simulate_night
from tests.helpers import no_compute

AMPLITUDE = 40.0  # e-, the sky's photon noise is 25-45 e-
NIGHT = {"chips": 1, "nbias": 3, "ndark": 2, "nflat": 12, "filters": ("i",), "nscience": 5, "seed": 6}


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("fringe")
    night = simulate_night(root / "night", fringe={"i": AMPLITUDE}, **NIGHT)
    result = reduce(night.raw_dir, root / "out", client="threads")
    frames, names = [], []
    for path in sorted(result.outputs):
        with fits.open(path) as hdul:
            frames.append((hdul["SCI"].data.astype(np.float32), hdul["VAR"].data.astype(np.float32), hdul["DQ"].data))
        names.append(path.rsplit("/", 1)[-1].removesuffix(".fits"))
    truth = night.truth()
    return truth, names, frames, fringe_frame(frames)


def test_truth_records_pattern_and_amplitudes(reduced):
    truth, names, _, _ = reduced
    pattern = truth.array("CCD1", "fringe_i")
    assert abs(float(np.std(pattern)) - 1.0) < 0.2
    amps = [truth.frame(n)["fringe_amplitude"] for n in names]
    assert all(0.6 * AMPLITUDE <= a <= 1.4 * AMPLITUDE for a in amps) and np.ptp(amps) > 10


def test_amplitudes_recovered_within_their_errors(reduced):
    truth, names, frames, fringe = reduced
    pattern = truth.array("CCD1", "fringe_i").astype(np.float64)
    ok = np.isfinite(fringe.data)
    # the fringe frame is the pattern times the frames' mean amplitude: c, by least squares on the truth
    c = float(np.sum(fringe.data[ok] * pattern[ok]) / np.sum(pattern[ok] ** 2))
    amps = np.array([truth.frame(n)["fringe_amplitude"] for n in names])
    fits_ = [fit_fringe_np(sci, var, dq, fringe, index=k) for k, (sci, var, dq) in enumerate(frames)]
    got = np.array([f.scale for f in fits_]) * c
    err = np.array([f.scale_err for f in fits_]) * c
    assert np.all(np.abs(got - amps) < 3 * err)
    assert np.all(err < 0.02 * amps)
    # the stacked frames' relative amplitudes, which the second pass divides them by
    np.testing.assert_allclose(fringe.norms, amps / amps.mean(), rtol=0.05)


def test_corrected_frames_at_the_photon_limit(reduced):
    truth, names, frames, fringe = reduced
    pattern = truth.array("CCD1", "fringe_i").astype(np.float64)
    everywhere = np.isfinite(fringe.data) & (fringe.count == len(frames))
    for k, ((sci, var, dq), name) in enumerate(zip(frames, names, strict=True)):
        signal = truth.signal("CCD1", name)  # sky and stars, no fringes
        use = everywhere & ~source_mask_np(sci, dq)
        fit = fit_fringe_np(sci, var, dq, fringe, index=k)
        out, out_var = subtract_fringe_np(sci, var, fringe, fit)
        before = (sci[use] - signal[use]) / np.sqrt(var[use])
        after = (out[use] - signal[use]) / np.sqrt(out_var[use])
        assert np.std(before) > 1.2  # the fringes stand out of the noise
        # corrected: the residual is the propagated noise (photons, read noise, the fringe frame's)
        assert 0.93 < np.std(after) < 1.07
        assert abs(float(np.mean(after))) < 0.05
        # and no pattern is left: its coefficient is below 1 % of the injected amplitude
        left = float(np.sum((out[use] - signal[use]) * pattern[use]) / np.sum(pattern[use] ** 2))
        assert abs(left) < 0.01 * truth.frame(name)["fringe_amplitude"] + 3 * fit.scale_err * AMPLITUDE


@pytest.mark.parametrize("chunks", [(7, 13), (64, 160), (50, 31)])
def test_dask_subtraction_equals_numpy_and_is_lazy(reduced, chunks):
    _, _, frames, fringe = reduced
    sci, var, dq = frames[1]
    fit = fit_fringe_np(sci, var, dq, fringe, index=1)
    want_sci, want_var = subtract_fringe_np(sci, var, fringe, fit)
    with no_compute():
        lazy_sci, lazy_var = subtract_fringe(
            da.from_array(sci, chunks=chunks), da.from_array(var, chunks=chunks), fringe, fit
        )
    np.testing.assert_array_equal(lazy_sci.compute(), want_sci)
    np.testing.assert_array_equal(lazy_var.compute(), want_var)


def test_bad_input(reduced, tmp_path):
    _, _, frames, fringe = reduced
    with pytest.raises(ConfigError, match="at least 2"):
        fringe_frame(frames[:1])
    with pytest.raises(ConfigError, match="fringe must be a dict"):
        simulate_night(tmp_path / "n", filters=("r",), fringe={"i": 40.0})
    flat = np.full_like(frames[0][0], 1000.0)
    with pytest.raises(ConfigError, match="no stronger than its own noise"):
        fit_fringe_np(
            flat, np.ones_like(flat), None, fringe.__class__(np.zeros_like(flat), np.ones_like(flat), fringe.count, 5)
        )
