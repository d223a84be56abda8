"""Trim/assemble, gain, variance, bias, dark and flat: lazy, chunk-independent, equal to eager
references (ccdproc's ``trim_image``/``subtract_bias``/``subtract_dark``/``flat_correct`` with
their uncertainty propagation, numpy formulas) and to the truth of a simulated night.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from ccdask.calibrate import (
    OverscanConfig,
    apply_gain,
    assemble,
    divide_flat,
    initial_variance,
    read_noise_from_overscan,
    subtract_bias,
    subtract_dark,
    subtract_overscan,
    trim,
)
from ccdask.errors import ConfigError, PlanError, ProfileError, ShapeMismatchError
from ccdask.frame import Master
from ccdask.io import open_frame
from ccdask.profiles import load_profile
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.sections import Section
from tests.helpers import no_compute

ccdproc = pytest.importorskip("ccdproc")
from astropy.nddata import CCDData, StdDevUncertainty  # noqa: E402

AWKWARD = [(7, 13), (100, 37)]


def _amp(name, datasec, ccdsec, biassec=None, **kw):
    return Amplifier(
        name, Section.parse(datasec), Section.parse(ccdsec), None if biassec is None else Section.parse(biassec), **kw
    )


def _write(tmp_path, data, name="raw.fits"):
    path = tmp_path / name
    fits.PrimaryHDU(np.asarray(data)).writeto(path)
    return path


def _gain_map(layout, values):
    out = np.empty(layout.trimmed_shape)
    for amp in layout.amplifiers:
        out[amp.ccdsec.slices] = values[amp.name]
    return out


# -- trim and assemble ----------------------------------------------------------------------------


def _quad_layout(ny=9, nx=11, nover=3):
    """Four amplifiers read from the corners: raw [ov | L | R | ov], three of them flipped."""
    lx0, rx0 = nover + 1, nover + nx + 1
    amps = (
        _amp("LL", f"[{lx0}:{lx0 + nx - 1},1:{ny}]", f"[1:{nx},1:{ny}]", f"[1:{nover},1:{ny}]", gain=1.5, rdnoise=3.0),
        _amp(
            "LR",
            f"[{rx0 + nx - 1}:{rx0},1:{ny}]",
            f"[{nx + 1}:{2 * nx},1:{ny}]",
            f"[{rx0 + nx}:{rx0 + nx + nover - 1},1:{ny}]",
            gain=2.0,
            rdnoise=4.0,
        ),
        _amp(
            "UL",
            f"[{lx0}:{lx0 + nx - 1},{2 * ny}:{ny + 1}]",
            f"[1:{nx},{ny + 1}:{2 * ny}]",
            f"[1:{nover},{ny + 1}:{2 * ny}]",
            gain=2.5,
            rdnoise=5.0,
        ),
        _amp(
            "UR",
            f"[{rx0 + nx - 1}:{rx0},{2 * ny}:{ny + 1}]",
            f"[{nx + 1}:{2 * nx},{ny + 1}:{2 * ny}]",
            f"[{rx0 + nx}:{rx0 + nx + nover - 1},{ny + 1}:{2 * ny}]",
            gain=3.0,
            rdnoise=6.0,
        ),
    )
    return ChipLayout("QUAD", (2 * ny, 2 * nx + 2 * nover), amps)


@pytest.mark.parametrize("chunks", [(7, 13), (100, 37), (4, 5)])
def test_assemble_flipped_quad_any_dtype(chunks):
    layout = _quad_layout()
    rng = np.random.default_rng(0)
    raw = rng.normal(size=layout.raw_shape).astype(np.float32)
    masks = {"float32": raw, "bool": raw > 0.5, "uint16": rng.integers(0, 2**16, layout.raw_shape, dtype=np.uint16)}
    for kind, arr in masks.items():
        lazy = da.from_array(arr, chunks=chunks)
        with no_compute():
            out = assemble(lazy, layout)
        assert out.dtype == arr.dtype and out.shape == layout.trimmed_shape, kind
        expect = np.empty(layout.trimmed_shape, dtype=arr.dtype)
        # by hand: LL as is; LR mirrored left-right; UL upside down; UR rotated by 180 degrees
        ny, nx = 9, 11
        expect[:ny, :nx] = arr[:ny, 3 : 3 + nx]
        expect[:ny, nx:] = arr[:ny, 3 + nx : 3 + 2 * nx][:, ::-1]
        expect[ny:, :nx] = arr[ny:, 3 : 3 + nx][::-1, :]
        expect[ny:, nx:] = arr[ny:, 3 + nx : 3 + 2 * nx][::-1, ::-1]
        np.testing.assert_array_equal(out.compute(), expect, err_msg=kind)


def test_assemble_pinwheel_without_straight_cut():
    """Five amplifiers in a pinwheel: no guillotine cut exists; the fallback must place them."""
    k = 3
    rects = {"A": (0, 1, 0, 2), "B": (0, 2, 2, 3), "C": (2, 3, 1, 3), "D": (1, 3, 0, 1), "E": (1, 2, 1, 2)}
    amps = []
    for name, (y0, y1, x0, x1) in rects.items():
        cc = f"[{x0 * k + 1}:{x1 * k},{y0 * k + 1}:{y1 * k}]"
        # raw: the chip shifted right by 2 columns, amplifier B stored upside down
        xs = f"{x0 * k + 3}:{x1 * k + 2}"
        ys = f"{y1 * k}:{y0 * k + 1}" if name == "B" else f"{y0 * k + 1}:{y1 * k}"
        amps.append(_amp(name, f"[{xs},{ys}]", cc))
    layout = ChipLayout("PIN", (3 * k, 3 * k + 2), tuple(amps))
    raw = np.arange(np.prod(layout.raw_shape), dtype=np.float32).reshape(layout.raw_shape)
    out = assemble(da.from_array(raw, chunks=(4, 5)), layout).compute()
    expect = np.empty(layout.trimmed_shape, dtype=np.float32)
    for amp in amps:
        expect[amp.ccdsec.slices] = raw[amp.datasec.slices]
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(out[3:6, 6:9], raw[0:3, 8:11][::-1])  # B: rows 6..1 read down


def test_assemble_errors():
    layout = _quad_layout()
    with pytest.raises(ShapeMismatchError, match="chip QUAD"):
        assemble(da.zeros((5, 5)), layout)
    # same area as the 2x3 chip (so ChipLayout accepts it) but overlapping, with a hole
    overlapping = ChipLayout(
        "OVL",
        (2, 5),
        (
            _amp("A", "[1:2,1:2]", "[1:2,1:2]"),
            _amp("B", "[4:5,1:1]", "[2:3,1:1]"),
        ),
    )
    with pytest.raises(ProfileError, match="chip OVL: the ccdsecs of amplifiers A and B overlap"):
        assemble(da.zeros((2, 5)), overlapping)


def test_trim_matches_ccdproc_on_real_frames(saao_dir, isis_dir):
    saao = saao_dir / "a8280271.fits"
    header = fits.getheader(saao)
    layout = load_profile("generic").chip_layout(header, (520, 536), chip="STE3")
    got = trim(open_frame(saao, chunks=(100, 37)), layout).compute()
    ref = ccdproc.trim_image(
        CCDData(fits.getdata(saao).astype(np.float32), unit="adu"), fits_section=header["TRIMSEC"]
    ).data
    np.testing.assert_array_equal(got, ref)
    isis = isis_dir / "r2701242.fit.gz"
    header = fits.getheader(isis, 1)
    layout = load_profile("wht_isis_red").chip_layout(header, (4200, 966), chip="REDPLUS")
    got = trim(open_frame(isis, hdu=1, chunks=(1000, 400)), layout).compute()
    ref = ccdproc.trim_image(
        CCDData(fits.getdata(isis, 1).astype(np.float32), unit="adu"), fits_section=header["TRIMSEC"]
    ).data
    np.testing.assert_array_equal(got, ref)


# -- gain and variance ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", AWKWARD)
def test_gain_and_variance_per_amplifier(chunks):
    layout = _quad_layout()
    rng = np.random.default_rng(3)
    adu = rng.normal(50, 40, size=layout.trimmed_shape).astype(np.float32)
    lazy = da.from_array(adu, chunks=chunks)
    gains = {a.name: a.gain for a in layout.amplifiers}
    rns = {a.name: a.rdnoise for a in layout.amplifiers}
    with no_compute():
        e = apply_gain(lazy, layout)
        var = initial_variance(e, layout)
        lazy_rn = {"UL": da.from_array(np.array([3.0, 7.0]), chunks=1).sum()}  # 10 e-, lazily
        var_override = initial_variance(e, layout, read_noise=lazy_rn)
        e2 = apply_gain(lazy, layout, gain={"LR": 1.25})
    expect_e = adu.astype(np.float64) * _gain_map(layout, gains)
    got_e = e.compute()
    assert got_e.dtype == np.float32
    np.testing.assert_allclose(got_e, expect_e, rtol=1e-7)
    expect_var = _gain_map(layout, rns) ** 2 + np.maximum(got_e.astype(np.float64), 0)
    np.testing.assert_allclose(var.compute(), expect_var, rtol=2.5e-7)  # float32: 2 roundings
    rns["UL"] = 10.0
    expect_var = _gain_map(layout, rns) ** 2 + np.maximum(got_e.astype(np.float64), 0)
    np.testing.assert_allclose(var_override.compute(), expect_var, rtol=2.5e-7)
    gains["LR"] = 1.25
    np.testing.assert_allclose(e2.compute(), adu * _gain_map(layout, gains), rtol=1e-7)


def test_gain_and_variance_errors():
    layout = _quad_layout()
    trimmed = da.zeros(layout.trimmed_shape, chunks=5)
    for bad in (float("nan"), 0.0, -1.0, float("inf"), "2"):
        with pytest.raises(ConfigError, match="chip QUAD, amplifier UR: gain"):
            apply_gain(trimmed, layout, gain={"UR": bad})
    with pytest.raises(ConfigError, match=r"unknown amplifier\(s\) \['Q'\]"):
        apply_gain(trimmed, layout, gain={"Q": 2.0})
    with pytest.raises(ShapeMismatchError, match="chip QUAD"):
        apply_gain(da.zeros(layout.raw_shape), layout)
    with pytest.raises(ConfigError, match="chip QUAD, amplifier LL: read noise -1"):
        initial_variance(trimmed, layout, read_noise={"LL": -1})
    with pytest.raises(ConfigError, match="0-d"):
        initial_variance(trimmed, layout, read_noise={"LL": da.ones(3)})


def test_kast_needs_a_read_noise_and_measures_it(kast_dir):
    path = kast_dir / "b21.fits.gz"  # a bias
    layout = load_profile("shane_kast_blue").chip_layout(fits.getheader(path), (350, 2112), chip="blue")
    raw = open_frame(path, chunks=(100, 37))
    cfg = OverscanConfig(skip_start=2)
    e = apply_gain(assemble(subtract_overscan(raw, layout, cfg), layout), layout)
    with pytest.raises(ConfigError, match="chip blue, amplifier A: no read noise known"):
        initial_variance(e, layout)
    with no_compute():
        rn = read_noise_from_overscan(raw, layout, cfg)
        var = initial_variance(e, layout, read_noise=rn)
    rn_a, rn_b, v, sci = dask.compute(rn["A"], rn["B"], var, e)
    data = fits.getdata(path).astype(np.float64)
    for value, cols in ((rn_a, slice(2051, 2080)), (rn_b, slice(2083, 2112))):
        over = data[:, cols]
        resid = over - np.median(over, axis=1, keepdims=True)
        mad = np.median(np.abs(resid - np.median(resid)))
        assert value == pytest.approx(1.482602218505602 * mad * 1.0, rel=1e-12)  # GAIN = 1
    expect = np.where(np.arange(2048) < 1024, rn_a, rn_b) ** 2 + np.maximum(sci, 0)
    np.testing.assert_allclose(v, expect, rtol=1e-6)
    # a bias frame's scatter agrees with the read noise measured in the overscan (within 10%)
    assert np.std(sci[:, 100:900] - np.median(sci[:, 100:900], axis=0)) == pytest.approx(rn_a, rel=0.1)


# -- masters against ccdproc ----------------------------------------------------------------------


def _kast_electrons(kast_dir, name, chunks):
    path = kast_dir / f"{name}.fits.gz"
    header = fits.getheader(path)
    layout = load_profile("shane_kast_blue").chip_layout(header, (350, 2112), chip="blue")
    raw = open_frame(path, chunks=chunks)
    cfg = OverscanConfig(skip_start=2, model="legendre", order=2)
    e = apply_gain(assemble(subtract_overscan(raw, layout, cfg), layout), layout)
    var = initial_variance(e, layout, read_noise={"A": 3.8, "B": 3.9})
    return e, var, header["EXPTIME"]


def _master(kind, data, variance, chunks, **kw):
    lazy = da.from_array(np.asarray(data, dtype=np.float32), chunks=chunks)
    lv = None if variance is None else da.from_array(np.asarray(variance, np.float32), chunks=chunks)
    return Master(kind, "blue", lazy, lv, None, ncombine=3, **kw)


def _ccd(data, var, unit, exptime=None):
    meta = {} if exptime is None else {"EXPTIME": exptime}
    return CCDData(
        np.asarray(data, dtype=np.float64),
        unit=unit,
        meta=meta,
        uncertainty=StdDevUncertainty(np.sqrt(np.asarray(var, dtype=np.float64))),
    )


@pytest.fixture(scope="module")
def kast_masters(request):
    from tests.helpers import real_dir

    kast_dir = real_dir("shane_kast_blue")
    biases = [_kast_electrons(kast_dir, f"b2{i}", None)[0] for i in (1, 2, 3)]
    stack = np.stack(dask.compute(*biases)).astype(np.float64)
    bias = stack.mean(axis=0)
    bias_var = stack.var(axis=0, ddof=1).mean() / 3 * np.ones_like(bias)
    flats = []
    for i in (1, 2, 3):
        e, _, _ = _kast_electrons(kast_dir, f"b1{i}", None)
        flats.append(e.compute().astype(np.float64) - bias)
    flat = np.mean(flats, axis=0)
    flat = (flat / np.median(flat)).astype(np.float32).astype(np.float64)  # as the master holds it
    flat_var = (np.std(flats, axis=0, ddof=1) / np.median(np.mean(flats, axis=0))) ** 2 / 3
    rng = np.random.default_rng(4)
    dark_rate = rng.gamma(2.0, 0.002, size=bias.shape)  # e-/s
    dark_var = (0.001 * np.ones_like(bias)) ** 2
    return kast_dir, bias, bias_var, flat, flat_var, dark_rate, dark_var


@pytest.mark.parametrize("chunks", [(100, 37), (64, 129)])
def test_masters_match_ccdproc_on_kast(kast_masters, chunks):
    kast_dir, bias, bias_var, flat, flat_var, dark_rate, dark_var = kast_masters
    sci, var, exptime = _kast_electrons(kast_dir, "b27", chunks)
    mchunks = (175, 1024)  # masters chunked differently from the frame
    bias_m = _master("bias", bias, bias_var, mchunks)
    rate_m = _master("dark", dark_rate, dark_var, mchunks)
    dark_at_300 = _master("dark", dark_rate * 300, dark_var * 300**2, mchunks, exptime=300.0)
    flat_m = _master("flat", flat, flat_var, mchunks, filter="open")
    min_value = float(np.quantile(flat, 0.02))
    with no_compute():
        s1, v1 = subtract_bias(sci, var, bias_m)
        s2, v2 = subtract_dark(s1, v1, rate_m, exptime)
        s2b, v2b = subtract_dark(s1, v1, dark_at_300, exptime)
        s3, v3, low = divide_flat(s2, v2, flat_m, min_value=min_value)
    e, ve, *got = dask.compute(sci, var, s1, v1, s2, v2, s2b, v2b, s3, v3, low)
    for arr in got[:-1]:
        assert arr.dtype == np.float32
    g_s1, g_v1, g_s2, g_v2, g_s2b, g_v2b, g_s3, g_v3, g_low = got

    ccd = _ccd(e, ve, "electron", exptime)
    ref1 = ccdproc.subtract_bias(ccd, _ccd(bias, bias_var, "electron", 0.0))
    np.testing.assert_allclose(g_s1, ref1.data, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(g_v1, ref1.uncertainty.array**2, rtol=1e-5)
    # the dark as a rate: ccdproc's scaling with a 1-second "exposure" of the master
    ref_in = _ccd(g_s1, g_v1, "electron", exptime)
    ref2 = ccdproc.subtract_dark(
        ref_in, _ccd(dark_rate, dark_var, "electron", 1.0), exposure_time="EXPTIME", exposure_unit=u.s, scale=True
    )
    np.testing.assert_allclose(g_s2, ref2.data, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(g_v2, ref2.uncertainty.array**2, rtol=1e-5)
    ref2b = ccdproc.subtract_dark(
        ref_in,
        _ccd(dark_rate * 300, dark_var * 300**2, "electron", 300.0),
        exposure_time="EXPTIME",
        exposure_unit=u.s,
        scale=True,
    )
    np.testing.assert_allclose(g_s2b, ref2b.data, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(g_v2b, ref2b.uncertainty.array**2, rtol=1e-5)
    ref3 = ccdproc.flat_correct(
        _ccd(g_s2, g_v2, "electron"), _ccd(flat, flat_var, u.dimensionless_unscaled), min_value=min_value, norm_value=1
    )
    np.testing.assert_allclose(g_s3, ref3.data, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(g_v3, ref3.uncertainty.array**2, rtol=1e-5)
    np.testing.assert_array_equal(g_low, flat < min_value)
    assert 0 < g_low.sum() < g_low.size
    # and the direct formulas
    s, v = g_s2.astype(np.float64), g_v2.astype(np.float64)
    f = np.maximum(flat, min_value)
    np.testing.assert_allclose(g_s3, s / f, rtol=1e-6)
    np.testing.assert_allclose(g_v3, v / f**2 + s**2 * flat_var / f**4, rtol=1e-6)
    np.testing.assert_allclose(g_v2, g_v1 + exptime**2 * dark_var, rtol=1e-6)


@pytest.mark.parametrize("chunks", AWKWARD)
def test_master_steps_are_chunk_independent(chunks):
    """Frame and masters chunked differently; results equal the numpy formulas (SCI bit for bit)."""
    rng = np.random.default_rng(9)
    shape = (61, 53)
    s, v, b, vb, d, vd = (rng.uniform(1, 100, shape).astype(np.float32) for _ in range(6))
    f = rng.uniform(0.2, 1.5, shape).astype(np.float32)
    vf = rng.uniform(0, 1e-3, shape).astype(np.float32)

    def lazy(x, c):
        return da.from_array(x, chunks=c)

    other = (chunks[1], chunks[0])
    bias = Master("bias", "c", lazy(b, other), lazy(vb, (30, 30)), None, 5)
    dark = Master("dark", "c", lazy(d, other), lazy(vd, other), None, 5)
    flat = Master("flat", "c", lazy(f, (20, 53)), lazy(vf, other), None, 5, filter="g")
    with no_compute():
        s1, v1 = subtract_bias(lazy(s, chunks), lazy(v, other), bias)
        s2, v2 = subtract_dark(s1, v1, dark, 30.0)
        s3, v3, low = divide_flat(s2, v2, flat, min_value=0.5)
    g_s3, g_v3, g_low = dask.compute(s3, v3, low)
    e_s2 = (s - b) - d * np.float32(30.0)
    e_v2 = (v + vb) + vd * np.float32(900.0)
    ff = np.where(f < 0.5, 0.5, f.astype(np.float64))
    np.testing.assert_array_equal(g_s3, (e_s2 / ff).astype(np.float32))
    e_v3 = e_v2 / ff**2 + e_s2.astype(np.float64) ** 2 * vf / ff**4
    np.testing.assert_allclose(g_v3, e_v3, rtol=1e-6)
    np.testing.assert_array_equal(g_low, f < 0.5)


def test_master_steps_without_variance_and_errors():
    sci = da.from_array(np.full((6, 8), 10.0, dtype=np.float32), chunks=(4, 5))
    flat = Master("flat", "c1", da.from_array(np.array([[0.5, 2.0] * 4] * 6)), None, None, 1)
    s, v, low = divide_flat(sci, None, flat)
    assert v is None and not low.compute().any()
    np.testing.assert_allclose(s.compute(), 10.0 / flat.data.compute())
    s, v = subtract_bias(sci, sci, Master("bias", "c1", sci * 0 + 1, None, None, 1))
    np.testing.assert_array_equal(s.compute(), 9.0)
    np.testing.assert_array_equal(v.compute(), 10.0)
    rate = Master("dark", "c1", sci * 0 + 0.5, None, None, 1)
    assert subtract_dark(sci, None, rate, 4.0).var is None
    np.testing.assert_array_equal(subtract_dark(sci, None, rate, 4.0).sci.compute(), 8.0)
    with pytest.raises(PlanError, match="chip c1: the dark needs the frame's exposure time"):
        subtract_dark(sci, None, rate, None)
    bad = Master("dark", "c1", sci, None, None, 1, exptime=0.0)
    with pytest.raises(PlanError, match=r"exposure time 0\.0 is invalid"):
        subtract_dark(sci, None, bad, 10.0)
    small = Master("bias", "c2", da.zeros((5, 8)), None, None, 1)
    with pytest.raises(ShapeMismatchError, match=r"chip c2: bias master of shape \(5, 8\)"):
        subtract_bias(sci, None, small)
    with pytest.raises(TypeError, match="Master"):
        subtract_bias(sci, None, sci)


# -- simulated night: truth recovery --------------------------------------------------------------


@pytest.fixture(scope="module")
def night(sim_night):
    from ccdask.catalog import Catalog

    sim = sim_night(chips=1, amps=2, nbias=4, ndark=1, nflat=1, nscience=0, filters=("r",), seed=11)
    entries = {e.path.rsplit("/", 1)[-1].removesuffix(".fits"): e for e in Catalog.scan(sim.all_files).entries}
    return sim.truth(), entries


def _electrons(entry, chunks=(50, 37)):
    raw = open_frame(entry.path, entry.hdu, chunks=chunks)
    cfg = OverscanConfig(model="spline", knots=6)
    e = apply_gain(assemble(subtract_overscan(raw, entry.layout, cfg), entry.layout), entry.layout)
    return e, initial_variance(e, entry.layout)


def test_simulated_gain_recovers_electrons_and_variance_fits_scatter(night):
    truth, entries = night
    biases = [entries[f"bias_00{i}"] for i in range(4)]
    layout = biases[0].layout
    stack = np.stack(dask.compute(*[_electrons(b)[0] for b in biases]))
    rn = _gain_map(layout, {a.name: a.rdnoise for a in layout.amplifiers})
    bias = Master(
        "bias",
        layout.name,
        da.from_array(stack.mean(axis=0), chunks=(64, 64)),
        da.from_array((rn**2 / len(biases)).astype(np.float32), chunks=(64, 64)),
        None,
        len(biases),
    )
    gains = _gain_map(layout, {a.name: truth.amp(layout.name, a.name)["gain"] for a in layout.amplifiers})
    # the bias master holds the truth bias pattern, in electrons
    pattern_e = truth.array(layout.name, "bias_pattern") * gains
    assert np.std(stack.mean(axis=0) - pattern_e) < 1.1 * np.sqrt(np.mean(rn**2) / 4)

    flat = entries["flat_r_000"]
    rec = truth.frame("flat_r_000")
    expected = (
        truth.array(layout.name, "flat_r") * rec["flat_level"] + truth.array(layout.name, "dark_rate") * rec["exptime"]
    )
    e, var = _electrons(flat)
    with no_compute():
        sci, var = subtract_bias(e, var, bias)
    sci, var = dask.compute(sci, var)
    good = ~truth.array(layout.name, "bad_pixels")
    for amp in layout.amplifiers:
        sl = amp.ccdsec.slices
        ratio = np.median(sci[sl][good[sl]] / expected[sl][good[sl]])
        assert ratio == pytest.approx(1.0, abs=2e-3), amp.name  # gain (1.36 vs 2.35) recovered
    chi2 = ((sci - expected) ** 2 / var)[good]
    chi2 = chi2[np.isfinite(chi2)]
    assert np.median(chi2) == pytest.approx(0.455, abs=0.025)  # median of chi-square(1)
    clipped = chi2[chi2 < 25]  # drop cosmic rays
    assert np.mean(clipped) == pytest.approx(1.0, abs=0.06)
