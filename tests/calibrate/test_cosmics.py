"""Cosmic rays: chunked LACosmic equals whole-frame astroscrappy; units; truth recovery."""

from __future__ import annotations

import astroscrappy
import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from scipy.special import ndtr

from ccdask import dq as dqbits
from ccdask.calibrate._cosmics import CosmicConfig, clean_frame, detect_cosmics, lacosmic_halo
from ccdask.calibrate._masks import saturation_mask
from ccdask.catalog import Catalog
from ccdask.errors import ConfigError, ShapeMismatchError
from ccdask.frame import Frame
from ccdask.io import open_frame
from ccdask.sections import Section
from ccdask.simulate._night import simulate_night
from tests.helpers import no_compute

READ_NOISE = 5.0
#: LACosmic without the star protection: astroscrappy's own algorithm, which ccdask's windowed
#: iterations must reproduce bit for bit
PLAIN = CosmicConfig(protect=False)


def _scrappy(data, **kw):
    """Whole-frame astroscrappy with ccdask's defaults for everything not given."""
    cfg = CosmicConfig()
    params = dict(
        sigclip=cfg.sigclip,
        sigfrac=cfg.sigfrac,
        objlim=cfg.objlim,
        niter=cfg.niter,
        sepmed=cfg.sepmed,
        cleantype=cfg.cleantype,
        fsmode=cfg.fsmode,
        gain=1.0,
        readnoise=READ_NOISE,
        satlevel=np.inf,
    )
    params.update(kw)
    return astroscrappy.detect_cosmics(data, **params)


# ------------------------------------------------------------------------------ test images


def _calibrated(night, path, chip="CCD1"):
    """Eager reference calibration with the truth: electrons, bias/dark off, flat-fielded.

    Returns the image, its variance (read noise² + signal, through the flat) and the truth.
    """
    tr = night.truth()
    name = path.stem
    fr = tr.frame(name)
    with fits.open(path) as hdul:
        raw = hdul[chip].data.astype(np.float64)
    rb = tr.array(chip, f"{name}/row_bias")
    pattern = tr.array(chip, "bias_pattern")
    e = np.empty(tr.shape)
    for a, amp in enumerate(tr.meta["chips"][chip]["amps"].values()):
        c0, c1 = amp["columns"]
        adu = raw[Section.parse(amp["datasec"]).slices] - rb[a][:, None] - pattern[:, c0:c1]
        e[:, c0:c1] = adu * amp["gain"]
    e -= tr.array(chip, "dark_rate") * fr["exptime"]
    flat = tr.array(chip, f"flat_{fr['filter']}")
    sci = e / flat
    var = (np.maximum(e, 0) + READ_NOISE**2) / flat**2
    return sci.astype(np.float32), var.astype(np.float32), tr


def _injected(seed=42, shape=(512, 512), nstars=150, ncr=400, max_log_flux=5.3):
    """Sky + read noise + isolated Gaussian stars (FWHM 3 px) + 1-3 pixel cosmic-ray hits.

    Returns image (e-), variance (the noise-free model + rn²), the cosmic-ray mask, the charge
    deposited in each pixel and the stars' positions.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    model = np.full(shape, 500.0)
    sy, sx = rng.uniform(10, ny - 10, nstars), rng.uniform(10, nx - 10, nstars)
    flux = 10 ** rng.uniform(3, max_log_flux, nstars)
    sig = 3.0 / 2.3548
    yy, xx = np.arange(ny), np.arange(nx)
    for y0, x0, f in zip(sy, sx, flux, strict=True):
        gy = ndtr((yy + 0.5 - y0) / sig) - ndtr((yy - 0.5 - y0) / sig)
        gx = ndtr((xx + 0.5 - x0) / sig) - ndtr((xx - 0.5 - x0) / sig)
        model += f * np.outer(gy, gx)
    img = rng.poisson(model).astype(float) + rng.normal(0, READ_NOISE, shape)
    charge = np.zeros(shape)
    steps = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    for _ in range(ncr):
        y0, x0 = int(rng.integers(0, ny)), int(rng.integers(0, nx))
        q = 10 ** rng.uniform(2.3, 3.9)
        pix = [(y0, x0)]
        for _ in range(int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))):
            by, bx = pix[int(rng.integers(len(pix)))]
            dy, dx = steps[int(rng.integers(4))]
            pix.append((by + dy, bx + dx))
        for k, (y, x) in enumerate(pix):
            if 0 <= y < ny and 0 <= x < nx:
                charge[y, x] += q if k == 0 else q * rng.uniform(0.2, 0.6)
    img = (img + charge).astype(np.float32)
    var = (model + READ_NOISE**2).astype(np.float32)
    return img, var, charge > 0, charge, np.stack([sy, sx], axis=1)


def _tracks(seed=3, shape=(256, 256), n=120):
    """Dense, thick cosmic-ray tracks: detections spread from iteration to iteration."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    img = rng.poisson(np.full(shape, 300.0)).astype(float) + rng.normal(0, READ_NOISE, shape)
    for _ in range(n):
        y0, x0 = rng.integers(0, ny), rng.integers(0, nx)
        length, angle = rng.integers(10, 60), rng.uniform(0, np.pi)
        t = np.arange(0, length, 0.5)
        ys = np.rint(y0 + t * np.sin(angle)).astype(int)
        xs = np.rint(x0 + t * np.cos(angle)).astype(int)
        w = rng.integers(1, 4)
        for dy in range(w):
            for dx in range(w):
                img[np.clip(ys + dy, 0, ny - 1), np.clip(xs + dx, 0, nx - 1)] += rng.uniform(200, 3000, ys.size)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def small_night(tmp_path_factory):
    return simulate_night(
        tmp_path_factory.mktemp("small"),
        chips=1,
        amps=2,
        size="small",
        nbias=0,
        ndark=0,
        nflat=0,
        filters=("r",),
        nscience=1,
        seed=7,
        science_exptime=120.0,
    )


@pytest.fixture(scope="module")
def medium_night(tmp_path_factory):
    return simulate_night(
        tmp_path_factory.mktemp("medium"),
        chips=1,
        amps=2,
        size="medium",
        nbias=0,
        ndark=0,
        nflat=0,
        filters=("r",),
        nscience=1,
        seed=5,
        science_exptime=120.0,
    )


# ----------------------------------------------------------------------- chunked == whole frame


def test_halo_bound():
    four = dict(niter=4, protect=False)
    assert lacosmic_halo(CosmicConfig(**four)) == 41  # 9, 19, 29, 39 (+2 for the cleaning)
    assert lacosmic_halo(CosmicConfig(niter=1, protect=False)) == 11
    assert lacosmic_halo(CosmicConfig(sepmed=False, **four)) == 34
    assert lacosmic_halo(CosmicConfig(fsmode="convolve", **four)) == 56
    assert lacosmic_halo(CosmicConfig(fsmode="convolve", psfsize=11, **four)) == 64
    # the star protection reads veto_radius(8) + 1 = 13 more per iteration: 21, 44, 67, 90
    assert lacosmic_halo(CosmicConfig(niter=4)) == 92
    assert lacosmic_halo() == 46  # the defaults: two iterations, protected
    assert lacosmic_halo(PLAIN) == 21


def test_lacosmic_chunked_equals_whole_frame_on_simulated_frame(small_night):
    path = small_night.files["science"][0]
    sci, var, tr = _calibrated(small_night, path)
    mask = tr.array("CCD1", "bad_pixels") | tr.array("CCD1", f"{path.stem}/saturated")
    ref_mask, ref_clean = _scrappy(sci, inmask=mask, invar=var)
    with no_compute():
        cr, cleaned = detect_cosmics(
            da.from_array(sci, chunks=(64, 50)),
            da.from_array(var, chunks=(50, 64)),
            read_noise=READ_NOISE,
            mask=da.from_array(mask, chunks=30),
            config=PLAIN,
        )
    got_mask, got_clean = dask.compute(cr, cleaned)
    assert ref_mask.sum() > 10
    np.testing.assert_array_equal(got_mask, ref_mask)  # everywhere, edges included
    np.testing.assert_array_equal(got_clean, ref_clean)
    assert got_clean.dtype == np.float32 and got_mask.dtype == bool


def test_lacosmic_halo_needed_on_dense_tracks():
    img = _tracks()
    ref_mask, ref_clean = _scrappy(img)
    x = da.from_array(img, chunks=(41, 37))
    cr, cleaned = dask.compute(*detect_cosmics(x, read_noise=READ_NOISE, config=PLAIN))
    np.testing.assert_array_equal(cr, ref_mask)
    np.testing.assert_array_equal(cleaned, ref_clean)
    # a halo of one iteration's reach is not enough: detections propagate between iterations
    short = CosmicConfig(halo=8, protect=False)
    cr8, clean8 = dask.compute(*detect_cosmics(x, read_noise=READ_NOISE, config=short))
    assert (cr8 != ref_mask).sum() > 0 and (clean8 != ref_clean).sum() > 0


def test_lacosmic_other_parameters_chunked_equal():
    img, var, *_ = _injected(seed=4, shape=(200, 180), nstars=40, ncr=600)
    cfg = CosmicConfig(sepmed=False, fsmode="convolve", cleantype="idw", niter=3, objlim=3.0, protect=False)
    ref_mask, ref_clean = _scrappy(
        img, invar=var, sepmed=False, fsmode="convolve", cleantype="idw", niter=3, objlim=3.0
    )
    cr, cleaned = dask.compute(
        *detect_cosmics(
            da.from_array(img, chunks=(70, 61)), da.from_array(var, chunks=(70, 61)), read_noise=READ_NOISE, config=cfg
        )
    )
    np.testing.assert_array_equal(cr, ref_mask)
    np.testing.assert_array_equal(cleaned, ref_clean)
    # use_variance=False: astroscrappy's own noise model from the data
    ref_mask2, _ = _scrappy(img)
    cr2 = detect_cosmics(
        da.from_array(img, chunks=(70, 61)),
        da.from_array(var, chunks=(70, 61)),
        read_noise=READ_NOISE,
        config=CosmicConfig(use_variance=False, protect=False),
    )[0].compute()
    np.testing.assert_array_equal(cr2, ref_mask2)


# ------------------------------------------------------------------------------------- units


def test_units_adu_and_electrons_agree():
    img = _injected(seed=8, shape=(160, 150), nstars=20, ncr=60)[0]
    # a saturated star: held at 60000 e-, i.e. 40000 ADU at a gain of 1.5
    y0, x0 = 80, 75
    yy, xx = np.mgrid[0:160, 0:150]
    star = 2.0e6 / (2 * np.pi * 1.3**2) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.3**2))
    gain, sat_e = 1.5, 60000.0
    electrons = np.minimum(img + star, sat_e).astype(np.float32)
    adu = (electrons / np.float32(gain)).astype(np.float32)
    electrons = adu * gain  # astroscrappy's own product
    sat_adu = sat_e / gain
    x_adu = da.from_array(adu, chunks=(60, 55))
    x_e = da.from_array(electrons, chunks=(60, 55))
    m_adu, c_adu = dask.compute(*detect_cosmics(x_adu, gain=gain, read_noise=READ_NOISE, saturation=sat_adu))
    m_e, c_e = dask.compute(*detect_cosmics(x_e, gain=1.0, read_noise=READ_NOISE, saturation=sat_e))
    ref_mask, _ = _scrappy(electrons, satlevel=sat_e)
    np.testing.assert_array_equal(m_adu, m_e)
    np.testing.assert_array_equal(m_e, ref_mask)
    np.testing.assert_allclose(c_adu * gain, c_e, rtol=1e-6)  # cleaned in input units
    assert not m_e[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4].any()  # saturated core masked
    # the same level in the wrong units (ADU for data in electrons) misses the saturated star
    m_wrong = detect_cosmics(x_e, gain=1.0, read_noise=READ_NOISE, saturation=sat_e * gain)[0]
    assert m_wrong.compute()[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4].any()


# ---------------------------------------------------------------------------- truth recovery


def _star_core_flagged(mask, stars, avoid):
    yi, xi = np.rint(stars[:, 0]).astype(int), np.rint(stars[:, 1]).astype(int)
    keep = np.array([not avoid[y - 4 : y + 5, x - 4 : x + 5].any() for y, x in zip(yi, xi, strict=True)])
    flagged = np.array([mask[y - 1 : y + 2, x - 1 : x + 2].any() for y, x in zip(yi[keep], xi[keep], strict=True)])
    return flagged, keep


def test_lacosmic_recovers_injected_cosmic_rays():
    img, var, truth, charge, stars = _injected()
    cr = detect_cosmics(da.from_array(img, chunks=(128, 128)), da.from_array(var, chunks=128), read_noise=READ_NOISE)[
        0
    ].compute()
    bright = truth & (charge > 10 * np.sqrt(var))
    completeness = (cr & bright).sum() / bright.sum()
    overall = (cr & truth).sum() / truth.sum()
    false_rate = (cr & ~truth).sum() / (~truth).sum()
    cores, _ = _star_core_flagged(cr, stars, truth)
    print(
        f"injected: completeness {completeness:.3f} (>10 sigma), {overall:.3f} all, "
        f"false-flag rate {false_rate:.2e}, star cores flagged {cores.sum()}/{cores.size}"
    )
    assert completeness >= 0.95
    assert overall >= 0.90
    assert false_rate <= 1e-3
    assert cores.size > 100 and not cores.any()


def test_lacosmic_recovers_simulated_cosmic_rays(medium_night):
    path = medium_night.files["science"][0]
    sci, var, tr = _calibrated(medium_night, path)
    entry = Catalog.scan([path], strict=True).entries[0]
    sat = saturation_mask(open_frame(path, hdu=entry.hdu), entry.layout)
    bad = tr.array("CCD1", "bad_pixels")
    truth = tr.array("CCD1", f"{path.stem}/cosmic_rays")
    with no_compute():
        cr, _ = detect_cosmics(
            da.from_array(sci, chunks=512),
            da.from_array(var, chunks=512),
            read_noise=READ_NOISE,
            saturation=sat,
            mask=da.from_array(bad, chunks=512),
        )
    cr, sat = dask.compute(cr, sat)
    np.testing.assert_array_equal(sat, tr.array("CCD1", f"{path.stem}/saturated"))
    edge = np.ones(sci.shape, bool)
    edge[8:-8, 8:-8] = False  # astroscrappy's own border (filters copy edges)
    near_sat = ndimage.binary_dilation(sat, np.ones((21, 21), bool))
    usable = truth & ~bad & ~edge & ~near_sat
    completeness = (cr & usable).sum() / usable.sum()
    clean_sky = ~truth & ~edge & ~near_sat & ~bad
    false_rate = (cr & clean_sky).sum() / clean_sky.sum()
    st = tr.stars()
    on_chip = st["chip"] == 0
    stars = np.stack([st["y"][on_chip], st["x"][on_chip]], axis=1)
    inside = ((stars >= 12) & (stars < np.array(sci.shape) - 12)).all(axis=1)
    cores, _ = _star_core_flagged(cr, stars[inside], truth | near_sat | bad)
    print(
        f"simulated: {usable.sum()} CR pixels, completeness {completeness:.3f}, false-flag "
        f"rate {false_rate:.2e}, star cores flagged {cores.sum()}/{cores.size}"
    )
    assert usable.sum() > 500
    assert completeness >= 0.90
    assert false_rate <= 1e-3
    assert cores.sum() <= 0.02 * cores.size


# ------------------------------------------------------------------------------ median method


def _median_reference(sci, var, size, threshold, mask=None):
    local = ndimage.median_filter(sci, size=size, mode="reflect")
    excess = sci.astype(np.float64) - local
    cr = (excess > 0) & (excess > threshold * np.sqrt(var.astype(np.float64)))
    if mask is not None:
        cr &= ~mask
    return cr, np.where(cr, local, sci)


@pytest.mark.parametrize(("size", "chunks"), [(5, (37, 29)), (9, (6, 100))])
def test_median_method_equals_whole_frame_scipy(size, chunks):
    img, var, *_ = _injected(seed=11, shape=(150, 130), nstars=15, ncr=80)
    mask = np.zeros(img.shape, bool)
    mask[20:30, 40] = True
    cfg = CosmicConfig(method="median", size=size, threshold=6.0)
    with no_compute():
        cr, cleaned = detect_cosmics(
            da.from_array(img, chunks=chunks),
            da.from_array(var, chunks=chunks),
            read_noise=READ_NOISE,
            mask=da.from_array(mask),
            config=cfg,
        )
    ref_mask, ref_clean = _median_reference(img, var, size, 6.0, mask)
    got_mask, got_clean = dask.compute(cr, cleaned)
    np.testing.assert_array_equal(got_mask, ref_mask)
    np.testing.assert_array_equal(got_clean, ref_clean)
    # without a variance plane: the noise model max(signal, 0) + rn² (data in electrons)
    model_var = (np.maximum(img.astype(np.float64), 0) + READ_NOISE**2).astype(np.float32)
    got2 = detect_cosmics(da.from_array(img, chunks=chunks), read_noise=READ_NOISE, config=cfg)[0].compute()
    np.testing.assert_array_equal(got2, _median_reference(img, model_var, size, 6.0)[0])


def test_median_method_recovers_injected_cosmic_rays():
    img, var, truth, charge, stars = _injected()
    cfg = CosmicConfig(method="median", size=5, threshold=5.0)
    cr = detect_cosmics(
        da.from_array(img, chunks=128), da.from_array(var, chunks=128), read_noise=READ_NOISE, config=cfg
    )[0].compute()
    bright = truth & (charge > 10 * np.sqrt(var))
    completeness = (cr & bright).sum() / bright.sum()
    # the median method knows nothing about PSFs: star cores are flagged, so the false-flag
    # rate is measured on the sky, away from the stars
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    near_star = np.zeros(img.shape, bool)
    for y, x in stars:
        near_star |= (yy - y) ** 2 + (xx - x) ** 2 < 8**2
    sky = ~truth & ~near_star
    false_rate = (cr & sky).sum() / sky.sum()
    print(f"median: completeness {completeness:.3f}, false-flag rate on sky {false_rate:.2e}")
    assert completeness >= 0.95
    assert false_rate <= 1e-3


# ------------------------------------------------------------------------------ frames, config


def test_clean_frame_sets_dq_and_history():
    img, var, truth, _, _ = _injected(seed=13, shape=(120, 110), nstars=10, ncr=40)
    hit = np.argwhere(truth)[0]
    dq = np.zeros(img.shape, np.uint16)
    dq[tuple(hit)] = dqbits.BAD  # a known bad pixel is never a CR
    frame = Frame(
        sci=da.from_array(img, chunks=60),
        var=da.from_array(var, chunks=60),
        dq=da.from_array(dq, chunks=60),
        chip="CCD1",
        header=fits.Header(),
    )
    with no_compute():
        out = clean_frame(frame, PLAIN, read_noise=READ_NOISE)
        kept = clean_frame(frame, CosmicConfig(clean=False), read_noise=READ_NOISE)
        same = clean_frame(frame, CosmicConfig(method="none"))
    got_dq, got_sci = dask.compute(out.dq, out.sci)
    ref_mask, ref_clean = _scrappy(img, invar=var, inmask=dq != 0)
    np.testing.assert_array_equal((got_dq & dqbits.COSMIC) != 0, ref_mask)
    np.testing.assert_array_equal(got_sci, ref_clean)
    assert got_dq[tuple(hit)] == dqbits.BAD
    assert out.history[-1].startswith("cosmics: lacosmic") and "halo=21" in out.history[-1]
    np.testing.assert_array_equal(kept.sci.compute(), img)
    assert same is frame


def test_config_and_errors():
    with pytest.raises(ConfigError):
        CosmicConfig(method="laplace")
    with pytest.raises(ConfigError):
        CosmicConfig(size=4)
    with pytest.raises(ConfigError):
        CosmicConfig(niter=0)
    with pytest.raises(ConfigError):
        CosmicConfig.from_dict({"sigma_clip": 4})
    cfg = CosmicConfig.from_dict({"method": "median", "threshold": 6.0})
    assert CosmicConfig.from_dict(cfg.to_dict()) == cfg
    x = da.zeros((50, 40), dtype=np.float32, chunks=20)
    with pytest.raises(ShapeMismatchError):
        detect_cosmics(x, da.zeros((50, 41)), read_noise=5.0)
    with pytest.raises(ConfigError):
        detect_cosmics(x, gain=0.0, read_noise=5.0)
    cr, cleaned = detect_cosmics(x, read_noise=5.0, config=CosmicConfig(method="none"))
    assert not cr.compute().any() and cleaned is x
