"""Overscan per amplifier: collapse, skips, models, flips, statistics, against eager references.

References: ccdproc's ``subtract_overscan`` on the real SAAO (serial) and ISIS (parallel)
frames, numpy by hand on Kast (two amplifiers), astropy's ``sigma_clipped_stats`` for the
clipped mean, FITPACK's ``LSQUnivariateSpline`` for the spline, and injected truth on
synthetic and simulated frames.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import (
    OverscanConfig,
    assemble,
    overscan_model,
    overscan_stats,
    read_noise_from_overscan,
    subtract_overscan,
)
from ccdask.errors import ConfigError, ProfileError, ShapeMismatchError
from ccdask.io import open_frame
from ccdask.profiles import load_profile
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.sections import Section
from tests.helpers import no_compute

ccdproc = pytest.importorskip("ccdproc")
from astropy.modeling import models  # noqa: E402
from astropy.nddata import CCDData  # noqa: E402

AWKWARD = [(7, 13), (100, 37)]


def _amp(name, datasec, ccdsec, biassec=None, **kw):
    return Amplifier(
        name, Section.parse(datasec), Section.parse(ccdsec), None if biassec is None else Section.parse(biassec), **kw
    )


def _write(tmp_path, data, name="raw.fits"):
    path = tmp_path / name
    fits.PrimaryHDU(np.asarray(data)).writeto(path)
    return path


# -- real frames against ccdproc ------------------------------------------------------------------

SAAO_BIAS = "[4:13,1:520]"
SAAO_TRIM = "[17:528,1:520]"


def _saao(saao_dir, chunks=None):
    path = saao_dir / "a8280271.fits"
    amp = _amp("A", SAAO_TRIM, "[1:512,1:520]", SAAO_BIAS, gain=1.9, rdnoise=5.0)
    layout = ChipLayout("STE3", (520, 536), (amp,))
    return open_frame(path, chunks=chunks), layout, fits.getdata(path).astype(np.float64)


@pytest.mark.parametrize("chunks", AWKWARD)
def test_saao_median_matches_ccdproc(saao_dir, chunks):
    raw, layout, data = _saao(saao_dir, chunks)
    with no_compute():
        out = assemble(subtract_overscan(raw, layout, OverscanConfig(method="median")), layout)
    assert out.dtype == np.float32 and out.shape == (520, 512)
    ref = ccdproc.subtract_overscan(CCDData(data, unit="adu"), fits_section=SAAO_BIAS, overscan_axis=1, median=True)
    ref = ccdproc.trim_image(ref, fits_section=SAAO_TRIM).data
    got = out.compute(scheduler="threads")
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("model", ["polynomial", "legendre"])
@pytest.mark.parametrize("method", ["median", "mean"])
def test_saao_polynomial_matches_ccdproc(saao_dir, model, method):
    raw, layout, data = _saao(saao_dir, (100, 37))
    cfg = OverscanConfig(method=method, model=model, order=3)
    got = assemble(subtract_overscan(raw, layout, cfg), layout).compute()
    ref = ccdproc.subtract_overscan(
        CCDData(data, unit="adu"),
        fits_section=SAAO_BIAS,
        overscan_axis=1,
        median=method == "median",
        model=models.Polynomial1D(3),
    )
    ref = ccdproc.trim_image(ref, fits_section=SAAO_TRIM).data
    # Same least-squares problem solved in float64 by a different basis: the only difference
    # left is the final rounding to float32 (half an ulp, ~3e-8 relative, ~6e-5 ADU here).
    np.testing.assert_allclose(got, ref, rtol=1.2e-7, atol=0)
    # and the model itself, against ccdproc's fitted values (no rounding to float32)
    ml = overscan_model(raw, layout.amplifiers[0], cfg).compute()
    prof = data[:, 3:13]
    prof = np.median(prof, axis=1) if method == "median" else prof.mean(axis=1)
    from astropy.modeling import fitting

    x = np.arange(prof.size)
    fit = fitting.LinearLSQFitter()(models.Polynomial1D(3), x, prof)
    np.testing.assert_allclose(ml, fit(x), rtol=1e-10)


def test_isis_parallel_overscan_matches_ccdproc(isis_dir):
    """ISIS: overscan rows above the data, one value per column; ccdproc's overscan_axis=0."""
    path = isis_dir / "r2701242.fit.gz"
    header = fits.getheader(path, 1)
    layout = load_profile("wht_isis_red").chip_layout(header, (4200, 966), chip="REDPLUS")
    (amp,) = layout.amplifiers
    assert amp.overscan_axis == "parallel"
    raw = open_frame(path, hdu=1, chunks=(1000, 400))
    data = fits.getdata(path, 1).astype(np.float64)
    ccd = CCDData(data, unit="adu")
    for cfg, ccd_kw in [
        (OverscanConfig(method="median"), {"median": True}),
        (OverscanConfig(method="mean", model="legendre", order=2), {"median": False, "model": models.Polynomial1D(2)}),
    ]:
        got = assemble(subtract_overscan(raw, layout, cfg), layout).compute()
        # ccdproc's overscan_axis is the numpy axis collapsed: 0 for overscan rows
        ref = ccdproc.subtract_overscan(ccd, fits_section="[1:966,4110:4190]", overscan_axis=0, **ccd_kw)
        ref = ccdproc.trim_image(ref, fits_section="[1:966,1:4096]").data
        np.testing.assert_allclose(got, ref, rtol=1.2e-7, atol=1e-6)
        model = overscan_model(raw, amp, cfg).compute()
        assert model.shape == (966,)


def test_kast_two_amplifiers_by_hand(kast_dir):
    path = kast_dir / "b27.fits.gz"
    header = fits.getheader(path)
    layout = load_profile("shane_kast_blue").chip_layout(header, (350, 2112), chip="blue")
    raw = open_frame(path, chunks=(100, 37))
    data = fits.getdata(path).astype(np.float64)
    cfg = OverscanConfig(method="mean", skip_start=2, skip_end=1)
    got = subtract_overscan(raw, layout, cfg).compute()
    # by hand: A uses columns 2051-2079 (1-based), B 2083-2111; the rest is left as read
    level_a = data[:, 2050:2079].mean(axis=1)
    level_b = data[:, 2082:2111].mean(axis=1)
    expect = data.copy()
    expect[:, :1024] -= level_a[:, None]
    expect[:, 1024:2048] -= level_b[:, None]
    np.testing.assert_allclose(got, expect.astype(np.float32), rtol=1e-7, atol=1e-4)
    stats = overscan_stats(raw, layout, cfg)
    for name, level in (("A", level_a), ("B", level_b)):
        cols = slice(2050, 2079) if name == "A" else slice(2082, 2111)
        resid = data[:, cols] - level[:, None]
        mad = np.median(np.abs(resid - np.median(resid)))
        lv, nz = dask.compute(*stats[name])
        assert lv == pytest.approx(level.mean(), rel=1e-12)
        assert nz == pytest.approx(1.482602218505602 * mad, rel=1e-12)


# -- synthetic frames with injected truth ---------------------------------------------------------


def _quad(tmp_path, ny=24, nx=20, nover=6, seed=1):
    """A 4-amplifier chip read from its four corners (three amplifiers flipped).

    Raw columns: [overscan L | data L (nx) | data R (nx) | overscan R]; rows: bottom half for
    the lower amplifiers, top half for the upper ones. Each amplifier's rows carry their own
    bias drift in data and overscan; the sky image is known.
    """
    rng = np.random.default_rng(seed)
    sky = rng.uniform(100, 200, size=(2 * ny, 2 * nx)).astype(np.float32)
    raw = np.zeros((2 * ny, 2 * nx + 2 * nover), dtype=np.float32)
    lx0, rx0 = nover + 1, nover + nx + 1
    specs = {
        "LL": (f"[{lx0}:{lx0 + nx - 1},1:{ny}]", f"[1:{nx},1:{ny}]", f"[1:{nover},1:{ny}]"),
        "LR": (
            f"[{rx0 + nx - 1}:{rx0},1:{ny}]",
            f"[{nx + 1}:{2 * nx},1:{ny}]",
            f"[{rx0 + nx}:{rx0 + nx + nover - 1},1:{ny}]",
        ),
        "UL": (
            f"[{lx0}:{lx0 + nx - 1},{2 * ny}:{ny + 1}]",
            f"[1:{nx},{ny + 1}:{2 * ny}]",
            f"[1:{nover},{ny + 1}:{2 * ny}]",
        ),
        "UR": (
            f"[{rx0 + nx - 1}:{rx0},{2 * ny}:{ny + 1}]",
            f"[{nx + 1}:{2 * nx},{ny + 1}:{2 * ny}]",
            f"[{rx0 + nx}:{rx0 + nx + nover - 1},{ny + 1}:{2 * ny}]",
        ),
    }
    amps, drifts = [], {}
    for k, (name, (dsec, csec, bsec)) in enumerate(specs.items()):
        amp = _amp(name, dsec, csec, bsec, gain=1.0 + k, rdnoise=3.0)
        amps.append(amp)
        raw[amp.datasec.slices] = sky[amp.ccdsec.slices]
        drift = 1000.0 + 50 * k + 5 * np.sin(np.arange(2 * ny) / 3.0) + k * np.arange(2 * ny)
        drifts[name] = drift
        rows = amp.datasec.normalized().slices[0]
        for sec in (amp.datasec.normalized(), amp.biassec):
            raw[sec.slices] += drift[rows, None].astype(np.float32)
    layout = ChipLayout("QUAD", raw.shape, tuple(amps))
    return _write(tmp_path, raw), layout, sky, drifts


@pytest.mark.parametrize("chunks", AWKWARD)
def test_flipped_amplifiers_recover_sky(tmp_path, chunks):
    path, layout, sky, drifts = _quad(tmp_path)
    raw = open_frame(path, chunks=chunks)
    with no_compute():
        out = assemble(subtract_overscan(raw, layout), layout)
        ul = overscan_model(raw, layout.amplifiers[2], chip="QUAD")
    np.testing.assert_allclose(out.compute(), sky, atol=2e-4)
    # UL's data section runs downwards: its model is the drift of its rows, top row first
    np.testing.assert_allclose(ul.compute(), drifts["UL"][24:48][::-1], rtol=1e-7)
    ll = overscan_model(raw, layout.amplifiers[0]).compute()
    np.testing.assert_allclose(ll, drifts["LL"][:24], rtol=1e-7)


def test_subtraction_touches_only_data_pixels(tmp_path):
    path, layout, _, _ = _quad(tmp_path)
    raw = open_frame(path, chunks=(10, 11))
    data = fits.getdata(path)
    out = subtract_overscan(raw, layout).compute()
    untouched = np.ones(data.shape, dtype=bool)
    for amp in layout.amplifiers:
        untouched[amp.datasec.slices] = False
    np.testing.assert_array_equal(out[untouched], data[untouched])
    assert not np.allclose(out[~untouched], data[~untouched])
    disabled = subtract_overscan(raw, layout, OverscanConfig(enabled=False))
    assert disabled.dtype == np.float32
    np.testing.assert_array_equal(disabled.compute(), data)


@pytest.mark.parametrize("side", ["left", "right"])
def test_skips_count_away_from_the_data(tmp_path, side):
    """Poison the overscan columns nearest to / farthest from the data; the skips drop them."""
    ny, nx, nover = 30, 12, 8
    rng = np.random.default_rng(5)
    level = 500 + rng.normal(0, 3, size=ny)
    raw = np.empty((ny, nx + nover), dtype=np.float32)
    raw[:] = level[:, None]
    if side == "right":
        data_cols, over_cols = slice(0, nx), slice(nx, nx + nover)
        near, far = [nx, nx + 1], [nx + nover - 1]
        amp = _amp("A", f"[1:{nx},1:{ny}]", f"[1:{nx},1:{ny}]", f"[{nx + 1}:{nx + nover},1:{ny}]")
    else:
        data_cols, over_cols = slice(nover, nover + nx), slice(0, nover)
        near, far = [nover - 1, nover - 2], [0]
        amp = _amp("A", f"[{nover + 1}:{nover + nx},1:{ny}]", f"[1:{nx},1:{ny}]", f"[1:{nover},1:{ny}]")
    assert raw[:, over_cols].shape[1] == nover
    raw[:, near] = 9000.0  # residual charge next to the data
    raw[:, far] = -7000.0  # a bad far column
    layout = ChipLayout("SKIP", raw.shape, (amp,))
    arr = open_frame(_write(tmp_path, raw), chunks=(7, 13))
    cfg = OverscanConfig(method="mean", skip_start=2, skip_end=1)
    out = subtract_overscan(arr, layout, cfg).compute()
    np.testing.assert_allclose(out[:, data_cols], 0, atol=1e-3)
    noisy = subtract_overscan(arr, layout, cfg.replace(skip_end=0)).compute()
    assert np.all(np.abs(noisy[:, data_cols]) > 100)
    with pytest.raises(ConfigError, match=r"chip SKIP, amplifier A.*leaves none"):
        subtract_overscan(arr, layout, OverscanConfig(skip_start=5, skip_end=3))


def test_clipped_mean_matches_astropy(tmp_path):
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(11)
    ny, nover = 40, 25
    raw = rng.normal(800, 4, size=(ny, 10 + nover)).astype(np.float32)
    hits = rng.random((ny, nover)) < 0.08
    raw[:, 10:][hits] += rng.uniform(50, 500, hits.sum())
    amp = _amp("A", f"[1:10,1:{ny}]", f"[1:10,1:{ny}]", f"[11:{10 + nover},1:{ny}]")
    arr = open_frame(_write(tmp_path, raw), chunks=(7, 13))
    for sigma, iters in [(3.0, 5), (2.0, 1), (2.5, 10)]:
        cfg = OverscanConfig(method="clipped_mean", clip_sigma=sigma, clip_iters=iters)
        got = overscan_model(arr, amp, cfg).compute()
        mean, _, _ = sigma_clipped_stats(
            raw[:, 10:].astype(np.float64), sigma=sigma, maxiters=iters, cenfunc="median", stdfunc="std", axis=1
        )
        np.testing.assert_allclose(got, mean, rtol=1e-12)
        if iters == 5:  # converged: the hits (12 to 125 sigma) are gone
            assert np.all(np.abs(got - 800) < 3)
            assert np.any(np.abs(raw[:, 10:].mean(axis=1) - 800) > 10)


def test_spline_matches_fitpack_and_follows_drift(tmp_path):
    from scipy.interpolate import LSQUnivariateSpline

    rng = np.random.default_rng(2)
    ny, nover, knots = 300, 20, 5
    rows = np.arange(ny)
    drift = 1200 + 8 * np.sin(rows / 40.0) + 1e-4 * (rows - 150) ** 2
    raw = (drift[:, None] + rng.normal(0, 5, size=(ny, 16 + nover))).astype(np.float32)
    amp = _amp("A", f"[1:16,1:{ny}]", f"[1:16,1:{ny}]", f"[17:{16 + nover},1:{ny}]")
    layout = ChipLayout("SPL", raw.shape, (amp,))
    arr = open_frame(_write(tmp_path, raw), chunks=(100, 37))
    cfg = OverscanConfig(method="mean", model="spline", knots=knots)
    got = overscan_model(arr, amp, cfg).compute()
    prof = raw[:, 16:].astype(np.float64).mean(axis=1)
    inner = np.linspace(0, ny - 1, knots + 2)[1:-1]
    ref = LSQUnivariateSpline(rows.astype(float), prof, inner, k=3)(rows)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # the smooth model tracks the injected drift far better than the per-row noise (5/sqrt(20))
    assert np.sqrt(np.mean((got - drift) ** 2)) < 0.5
    level, noise = dask.compute(*overscan_stats(arr, layout, cfg)["A"])
    assert level == pytest.approx(got.mean(), rel=1e-12)
    assert noise == pytest.approx(5.0, rel=0.06)


def test_model_extends_to_data_rows_beyond_the_overscan(tmp_path):
    """LFC: DATASEC rows 1-4128 but BIASSEC rows 1-4127; the last data row gets a value."""
    ny = 20
    raw = np.zeros((ny, 14), dtype=np.float32)
    raw[:, :] = (100 + np.arange(ny))[:, None]
    amp = _amp("A", f"[1:10,1:{ny}]", f"[1:10,1:{ny}]", f"[11:14,1:{ny - 1}]")
    arr = open_frame(_write(tmp_path, raw), chunks=(7, 13))
    none = overscan_model(arr, amp).compute()
    np.testing.assert_allclose(none[:-1], 100 + np.arange(ny - 1))
    assert none[-1] == 100 + ny - 2  # nearest overscan row
    linear = overscan_model(arr, amp, OverscanConfig(model="polynomial", order=1)).compute()
    np.testing.assert_allclose(linear, 100 + np.arange(ny), rtol=1e-10)  # extrapolated


def test_errors_name_chip_and_amplifier(tmp_path):
    raw = da.zeros((20, 30), chunks=(7, 13))
    bare = _amp("X", "[1:20,1:20]", "[1:20,1:20]")
    layout = ChipLayout("C7", (20, 30), (bare,))
    with pytest.raises(ConfigError, match="chip C7, amplifier X: no overscan"):
        subtract_overscan(raw, layout)
    with pytest.raises(ConfigError, match="amplifier X: no overscan"):
        overscan_stats(raw, layout)
    # disabled: nothing is needed
    assert subtract_overscan(raw, layout, OverscanConfig(enabled=False)).shape == (20, 30)
    amp = _amp("A", "[1:20,1:20]", "[1:20,1:20]", "[21:30,1:3]", overscan_axis="serial")
    with pytest.raises(ConfigError, match="order 5 needs at least 6 overscan lines"):
        overscan_model(raw, amp, OverscanConfig(model="legendre", order=5))
    with pytest.raises(ConfigError, match="4 interior knots needs at least 8"):
        overscan_model(raw, amp, OverscanConfig(model="spline", knots=4))
    with pytest.raises(ShapeMismatchError, match="C8"):
        subtract_overscan(da.zeros((20, 29)), ChipLayout("C8", (20, 30), (amp,)))
    two = ChipLayout(
        "C9",
        (20, 40),
        (
            _amp("A", "[1:20,1:20]", "[1:20,1:20]", "[31:40,1:20]"),
            _amp("B", "[11:30,1:20]", "[21:40,1:20]", "[31:40,1:20]"),
        ),
    )
    with pytest.raises(ProfileError, match="chip C9: the data sections of amplifiers A and B"):
        subtract_overscan(da.zeros((20, 40)), two)


def test_config_validation():
    assert OverscanConfig.from_dict({"method": "clipped_mean", "knots": 2}).knots == 2
    for bad in (
        {"method": "mode"},
        {"clip_sigma": 0},
        {"clip_iters": 0},
        {"skip_start": -1},
        {"model": "cubic"},
        {"order": -1},
        {"knots": -2},
        {"enabled": "yes"},
    ):
        with pytest.raises(ConfigError):
            OverscanConfig.from_dict(bad)
    cfg = OverscanConfig(model="spline", knots=4, skip_start=6)
    assert OverscanConfig.from_dict(cfg.to_dict()) == cfg
    assert {row[0] for row in OverscanConfig.describe()} >= {"skip_start", "model", "knots"}


# -- simulated night ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    simulate = pytest.importorskip("ccdask.simulate._night")
    from ccdask.catalog import Catalog

    root = tmp_path_factory.mktemp("night")
    sim = simulate.simulate_night(root, chips=1, amps=2, nbias=3, ndark=1, nflat=1, nscience=0, filters=("r",), seed=7)
    cat = Catalog.scan(sim.all_files)
    entries = {e.path.rsplit("/", 1)[-1].removesuffix(".fits"): e for e in cat.entries}
    return sim, sim.truth(), entries


def test_simulated_row_drift_is_removed(night):
    _, truth, entries = night
    cfg = OverscanConfig(model="spline", knots=6)
    for name in ("bias_000", "bias_001", "dark_000"):
        e = entries[name]
        raw = open_frame(e.path, e.hdu, chunks=(50, 37))
        sub = assemble(subtract_overscan(raw, e.layout, cfg), e.layout).compute()
        resid = sub - truth.array(e.chip, "bias_pattern")
        if name.startswith("dark"):
            resid = resid - truth.array(e.chip, "dark_rate") * truth.frame(name)["exptime"] / (
                np.where(
                    np.arange(sub.shape[1]) < sub.shape[1] // 2,
                    e.layout.amplifiers[0].gain,
                    e.layout.amplifiers[1].gain,
                )
            )
        drift = truth.array(e.chip, f"{name}/row_bias")
        for k, amp in enumerate(e.layout.amplifiers):
            cols = amp.ccdsec.slices[1]
            row_level = np.median(resid[:, cols], axis=1)
            rn_adu = truth.amp(e.chip, amp.name)["rdnoise_adu"]
            ncols = resid[:, cols].shape[1]
            # the injected drift spans several ADU; what is left is noise of the row medians
            assert np.ptp(drift[k]) > 2
            assert abs(row_level.mean()) < 3 * 1.25 * rn_adu / np.sqrt(resid[:, cols].size)
            assert np.std(row_level) < 1.6 * 1.25 * rn_adu / np.sqrt(ncols)


def test_simulated_read_noise_from_overscan(night):
    _, truth, entries = night
    cfg = OverscanConfig(model="spline", knots=6)
    ratios = {"A": [], "B": []}
    for name in ("bias_000", "bias_001", "bias_002"):
        e = entries[name]
        raw = open_frame(e.path, e.hdu)
        with no_compute():
            rn = read_noise_from_overscan(raw, e.layout, cfg)
        for amp, value in zip(rn, dask.compute(*rn.values()), strict=True):
            ratios[amp].append(value / truth.amp(e.chip, amp)["rdnoise"])
    for amp, r in ratios.items():
        assert np.all(np.abs(np.array(r) - 1) < 0.07), (amp, r)
        assert abs(np.mean(r) - 1) < 0.04, (amp, r)


def test_a_non_finite_overscan_pixel_does_not_spoil_its_line():
    """One NaN/inf in a row's overscan: that row's level comes from its finite overscan pixels."""
    rng = np.random.default_rng(3)
    raw = rng.normal(1000.0, 3.0, (40, 30)).astype(np.float32)
    raw[5, 25] = np.nan
    raw[9, 27] = np.inf
    h = fits.Header()
    h["DATASEC"] = "[1:24,1:40]"
    h["BIASSEC"] = "[25:30,1:40]"
    layout = load_profile("generic").chip_layout(h, raw.shape, chip="X")
    for method in ("median", "mean"):
        got = subtract_overscan(da.from_array(raw, chunks=(7, 13)), layout, OverscanConfig(method=method)).compute()
        over = np.where(np.isfinite(raw[:, 24:]), raw[:, 24:].astype(np.float64), np.nan)
        level = np.nanmedian(over, axis=1) if method == "median" else np.nanmean(over, axis=1)
        expected = (raw[:, :24] - level[:, None]).astype(np.float32)
        assert np.all(np.isfinite(got[:, :24]))
        np.testing.assert_allclose(got[:, :24], expected, rtol=0, atol=1e-3)


# -- a second, parallel overscan ------------------------------------------------------------------


def _two_overscan_frame(seed=11):
    """A 2-amplifier raw chip, each amplifier with a serial overscan beside it and a parallel
    overscan above it (A's serial overscan spans all rows, B's only the data rows, as DECam's
    and Rubin's do; the serial model is then extended to the parallel overscan's rows by its
    nearest line): raw = truth + a bias drifting with the row + a bias pattern along the
    columns, both present in every pixel the amplifier reads (its overscans included)."""
    rng = np.random.default_rng(seed)
    ny, nx = 50, 2 * (30 + 6)  # 40 data rows + 10 parallel-overscan rows
    raw = np.zeros((ny, nx))
    truth = np.zeros((40, 60))
    truth[:] = 200.0 + 3.0 * np.arange(60)[None, :] + 0.5 * np.arange(40)[:, None]
    truth[30:33, 5:9] += 900.0
    # amplifier A: data x 1-30, serial overscan 31-36; B: serial overscan 37-42, data 43-72
    row_a = 1000 + 7 * np.sin(np.arange(ny) / 6.0)
    row_b = 1200 + 5 * np.cos(np.arange(ny) / 9.0)
    row_b[40:] = row_b[39]  # B's serial overscan covers the data rows only: flat beyond them
    col_a = rng.normal(0, 4, 36)
    col_b = rng.normal(0, 4, 36)
    raw[:, :36] = row_a[:, None] + col_a[None, :]
    raw[:, 36:] = row_b[:, None] + col_b[None, :]
    raw[:40, :30] += truth[:, :30]
    raw[:40, 42:] += truth[:, 30:]
    amp_a = _amp("A", "[1:30,1:40]", "[1:30,1:40]", "[31:36,1:50]", parallel_biassec=Section.parse("[1:30,41:50]"))
    amp_b = _amp("B", "[43:72,1:40]", "[31:60,1:40]", "[37:42,1:40]", parallel_biassec=Section.parse("[43:72,41:50]"))
    return raw, truth, (amp_a, amp_b), (slice(0, 30), slice(42, 72)), (slice(30, 36), slice(36, 42))


def _by_hand(raw, data_cols, over_cols, parallel_first):
    """Eager numpy reference: medians per row of the serial overscan, per column of the
    parallel one, the second measured after subtracting the first."""
    out = raw[:40].copy()
    pieces = []
    for dc, oc in zip(data_cols, over_cols, strict=True):
        if not parallel_first:
            serial = np.median(raw[:, oc], axis=1)  # every raw row
            par = np.median(raw[40:, dc] - serial[40:, None], axis=0)
        else:
            par = np.median(raw[40:, dc], axis=0)
            # the parallel model at the serial overscan's columns: nearest column (model "none")
            edge = par[-1] if oc.start > dc.start else par[0]
            serial = np.median(raw[:, oc] - edge, axis=1)
        pieces.append(raw[:40, dc] - serial[:40, None] - par[None, :])
    out = np.concatenate(pieces, axis=1)
    return out


@pytest.mark.parametrize("chunks", AWKWARD)
def test_parallel_overscan_after_serial_recovers_truth(chunks):
    from ccdask.calibrate._overscan import subtract_overscan_np

    raw, truth, amps, data_cols, over_cols = _two_overscan_frame()
    layout = ChipLayout("P", raw.shape, amps)
    with no_compute():
        lazy = assemble(subtract_overscan(da.from_array(raw, chunks=chunks), layout), layout)
    got = lazy.compute(scheduler="threads")
    eager = assemble(subtract_overscan_np(raw, layout), layout).compute()
    np.testing.assert_array_equal(got, eager)
    np.testing.assert_array_equal(got, _by_hand(raw, data_cols, over_cols, False).astype(np.float32))
    # the column pattern common to data and overscans is gone: the injected signal remains
    np.testing.assert_allclose(got, truth, rtol=0, atol=1e-3)
    # with the serial overscan alone, the column pattern stays in the data
    serial_only = ChipLayout("S", raw.shape, tuple(Amplifier(a.name, a.datasec, a.ccdsec, a.biassec) for a in amps))
    left = assemble(subtract_overscan_np(raw, serial_only), serial_only).compute() - truth
    assert np.ptp(np.median(left, axis=0)) > 5


def test_parallel_first_order_and_its_reference():
    raw, _, amps, data_cols, over_cols = _two_overscan_frame(seed=5)
    amps = tuple(
        Amplifier(
            a.name, a.datasec, a.ccdsec, a.biassec, parallel_biassec=a.parallel_biassec, overscan_order="parallel-first"
        )
        for a in amps
    )
    layout = ChipLayout("Q", raw.shape, amps)
    got = assemble(subtract_overscan(da.from_array(raw, chunks=(9, 11)), layout), layout).compute()
    np.testing.assert_allclose(got, _by_hand(raw, data_cols, over_cols, True), rtol=0, atol=2e-4)


def test_parallel_overscan_with_a_model_and_skips():
    raw, _, amps, _, _ = _two_overscan_frame(seed=2)
    layout = ChipLayout("M", raw.shape, amps)
    cfg = OverscanConfig(model="polynomial", order=1, skip_start=1)
    from ccdask.calibrate._overscan import subtract_overscan_np

    lazy = assemble(subtract_overscan(da.from_array(raw, chunks=(13, 7)), layout, cfg), layout).compute()
    np.testing.assert_array_equal(lazy, assemble(subtract_overscan_np(raw, layout, cfg), layout).compute())
    short = ChipLayout(
        "M",
        raw.shape,
        (
            Amplifier(
                "A", amps[0].datasec, amps[0].ccdsec, amps[0].biassec, parallel_biassec=Section.parse("[1:30,47:50]")
            ),
            amps[1],
        ),
    )
    with pytest.raises(ConfigError, match=r"amplifier A \(parallel overscan\): skipping 5 \+ 0 of the 4"):
        subtract_overscan(da.from_array(raw), short, OverscanConfig(skip_start=5))


def test_parallel_overscan_needs_a_serial_one_and_must_lie_above_or_below():
    d, c = Section.parse("[1:30,1:40]"), Section.parse("[1:30,1:40]")
    with pytest.raises(ProfileError, match="needs a serial overscan"):
        Amplifier("A", d, c, parallel_biassec=Section.parse("[1:30,41:50]"))
    with pytest.raises(ProfileError, match="lies beside the data"):
        Amplifier("A", d, c, Section.parse("[31:36,1:40]"), parallel_biassec=Section.parse("[37:40,1:40]"))
    with pytest.raises(ProfileError, match="overscan_order"):
        Amplifier("A", d, c, Section.parse("[31:36,1:40]"), overscan_order="both")
