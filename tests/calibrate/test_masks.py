"""Masks and the DQ plane against eager whole-frame references and the simulator's truth."""

from __future__ import annotations

import ccdproc
import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from ccdask import dq as dqbits
from ccdask.calibrate._masks import (
    MAD_TO_SIGMA,
    MaskConfig,
    bad_pixel_mask,
    build_dq,
    grow_mask,
    hot_pixels,
    interpolate_bad,
    low_pixels,
    nonfinite_mask,
    parse_bits,
    saturation_mask,
    user_mask,
)
from ccdask.catalog import Catalog
from ccdask.errors import ConfigError, FitsReadError, ShapeMismatchError
from ccdask.io import open_frame
from ccdask.sections import Section
from tests.helpers import no_compute


@pytest.fixture(scope="module")
def night(sim_night):
    """One chip, two amplifiers: darks, flats and a science frame with saturated stars."""
    return sim_night(
        chips=1,
        amps=2,
        size="small",
        nbias=0,
        ndark=3,
        nflat=2,
        filters=("r",),
        nscience=1,
        seed=21,
        science_exptime=120.0,
    )


def _electrons(night, path, chip="CCD1"):
    """Eager reference calibration of one raw chip with the truth: bias off, gain on (e-)."""
    tr = night.truth()
    name = path.stem
    with fits.open(path) as hdul:
        raw = hdul[chip].data.astype(np.float64)
    rb = tr.array(chip, f"{name}/row_bias")
    pattern = tr.array(chip, "bias_pattern")
    out = np.empty(tr.shape)
    for a, amp in enumerate(tr.meta["chips"][chip]["amps"].values()):
        c0, c1 = amp["columns"]
        adu = raw[Section.parse(amp["datasec"]).slices] - rb[a][:, None] - pattern[:, c0:c1]
        out[:, c0:c1] = adu * amp["gain"]
    return out, tr.frame(name)["exptime"]


def _dark_rate(night):
    rates = []
    for p in night.files["dark"]:
        e, t = _electrons(night, p)
        rates.append(e / t)
    return np.median(rates, axis=0).astype(np.float32)  # the median rejects cosmic rays


def _flat(night):
    tr = night.truth()
    frames = []
    for p in night.files["flat"]:
        e, t = _electrons(night, p)
        e -= tr.array("CCD1", "dark_rate") * t
        frames.append(e / np.median(e))
    return np.mean(frames, axis=0).astype(np.float32)


# ------------------------------------------------------------------------------------ hot pixels


def test_hot_pixels_equal_numpy_reference_and_recover_truth(night):
    rate = _dark_rate(night)
    x = da.from_array(rate, chunks=(50, 37))
    with no_compute():
        hot = hot_pixels(x, nsigma=5.0)
        hot_floor = hot_pixels(x, nsigma=5.0, min_rate=0.2)
    got, got_floor = dask.compute(hot, hot_floor)

    v = rate.astype(np.float64)
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    np.testing.assert_array_equal(got, rate > med + 5.0 * MAD_TO_SIGMA * mad)
    np.testing.assert_array_equal(got_floor, rate > max(med + 5.0 * MAD_TO_SIGMA * mad, 0.2))

    truth = night.truth().array("CCD1", "hot_pixels")
    assert truth.sum() > 10
    assert got[truth].all()  # every hot pixel found
    assert (got & ~truth).sum() <= 3  # a handful of glow/noise pixels
    np.testing.assert_array_equal(got_floor, truth)  # with a floor: exactly the truth


def test_hot_pixels_independent_of_chunks_and_ignore_nonfinite():
    rng = np.random.default_rng(3)
    rate = rng.normal(0.01, 0.001, (120, 90)).astype(np.float32)
    rate[5, 5] = 1.0
    rate[7, 80] = np.nan
    a = hot_pixels(da.from_array(rate, chunks=(120, 90))).compute()
    b = hot_pixels(da.from_array(rate, chunks=(17, 23))).compute()
    np.testing.assert_array_equal(a, b)
    assert a[5, 5] and not a[7, 80]
    with pytest.raises(ConfigError):
        hot_pixels(da.from_array(rate), nsigma=0)


# ----------------------------------------------------------------------------- dead/low pixels


def _low_reference(flat, window, threshold, fraction, kind):
    filled = np.where(np.isfinite(flat), flat, 0).astype(np.float32)
    if kind == "box":
        local = ndimage.median_filter(filled, size=window, mode="reflect")
    else:
        local = ndimage.median_filter(filled, size=(1, window), mode="reflect")
        local = ndimage.median_filter(local, size=(window, 1), mode="reflect")
    low = ~((local > 0) & (flat >= threshold * local))
    cols = low.sum(axis=0) / flat.shape[0] >= fraction
    return low | cols[None, :]


@pytest.mark.parametrize(
    ("window", "chunks", "kind"),
    [(15, (37, 29), "separable"), (15, (37, 29), "box"), (31, (13, 50), "separable"), (5, (7, 160), "box")],
)
def test_low_pixels_equal_whole_frame_scipy(night, window, chunks, kind):
    flat = _flat(night)
    flat[100:104, 40:43] *= 0.5  # a low patch
    flat[60, 70] = np.nan
    with no_compute():
        low = low_pixels(
            da.from_array(flat, chunks=chunks), window=window, threshold=0.8, column_fraction=0.5, median=kind
        )
    np.testing.assert_array_equal(low.compute(), _low_reference(flat, window, 0.8, 0.5, kind))


@pytest.mark.parametrize("kind", ["separable", "box"])
def test_low_pixels_recover_dead_columns(night, kind):
    flat = _flat(night)
    tr = night.truth()
    dead = tr.array("CCD1", "dead_columns")
    low = low_pixels(da.from_array(flat, chunks=(64, 40)), median=kind).compute()
    expected = np.zeros(flat.shape, bool)
    expected[:, dead] = True
    np.testing.assert_array_equal(low, expected)  # dust donuts, vignetting, PRNU: not low


def test_low_pixels_column_rule():
    rng = np.random.default_rng(5)
    flat = rng.normal(1.0, 0.01, (100, 60)).astype(np.float32)
    flat[:60, 10] = 0.3  # 60 % of the column: the whole column is flagged
    flat[:30, 20] = 0.3  # 30 %: only those pixels
    low = low_pixels(da.from_array(flat, chunks=(33, 25)), column_fraction=0.5).compute()
    assert low[:, 10].all()
    assert low[:30, 20].all() and not low[30:, 20].any()
    assert low.sum() == 100 + 30
    with pytest.raises(ConfigError):
        low_pixels(da.from_array(flat), window=4)
    with pytest.raises(ConfigError):
        low_pixels(da.from_array(flat), median="mean")


# ---------------------------------------------------------------------------------- user masks


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32])
def test_user_mask_from_fits_matches_ccdproc(tmp_path, dtype):
    rng = np.random.default_rng(7)
    flags = rng.choice([0, 0, 0, 1, 2, 4, 5, 8, 12, 64], size=(70, 90)).astype(dtype)
    path = tmp_path / "mask.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flags, name="DQ")]).writeto(path)
    with no_compute():
        any_bad = user_mask(path, chunks=(30, 40))
        some = user_mask(path, "1,4", hdu="DQ", chunks=(30, 40))
        as_int = user_mask(path, 1 | 4)
    np.testing.assert_array_equal(any_bad.compute(), ccdproc.bitfield_to_boolean_mask(flags))
    expected = ccdproc.bitfield_to_boolean_mask(flags, ignore_bits="~1,4")
    np.testing.assert_array_equal(some.compute(), expected)
    np.testing.assert_array_equal(as_int.compute(), expected)
    assert any_bad.dtype == bool


def test_user_mask_arrays_and_errors(tmp_path):
    flags = np.array([[0, 1, 2], [4, 3, 0]], dtype=np.uint16)
    np.testing.assert_array_equal(user_mask(flags, [2]).compute(), (flags & 2) != 0)
    np.testing.assert_array_equal(user_mask(flags.astype(bool)).compute(), flags != 0)
    np.testing.assert_array_equal(user_mask(flags.astype(np.float32), "2+4").compute(), (flags & 6) != 0)
    assert parse_bits("0x4, 1") == 5 and parse_bits(None) is None
    with pytest.raises(ConfigError):
        parse_bits("one")
    with pytest.raises(ConfigError):
        parse_bits([0])
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(flags), fits.ImageHDU(flags, name="DQ")]).writeto(path)
    with pytest.raises(FitsReadError, match="HDU"):
        user_mask(path)  # two image HDUs, none named
    with pytest.raises(FitsReadError, match=r"two.fits\['NOPE'\]: no image HDU with that name"):
        user_mask(path, hdu="NOPE")
    with pytest.raises(FitsReadError):
        user_mask(tmp_path / "missing.fits")


# ---------------------------------------------------------------------------------- saturation


def test_saturation_mask_per_amplifier_matches_truth(night):
    path = night.files["science"][0]
    entry = Catalog.scan([path], strict=True).entries[0]
    layout = entry.layout
    raw = open_frame(path, hdu=entry.hdu, chunks=(50, 61))
    with no_compute():
        sat0 = saturation_mask(raw, layout)
        sat2 = saturation_mask(raw, layout, grow=2)
    got0, got2 = dask.compute(sat0, sat2)

    truth = night.truth().array("CCD1", f"{path.stem}/saturated")
    assert truth.sum() > 0
    np.testing.assert_array_equal(got0, truth)
    np.testing.assert_array_equal(got2, ndimage.binary_dilation(truth, np.ones((5, 5), bool)))

    # independent reference: raw ADU >= each amplifier's SATURATE, cut by its DATASEC
    with fits.open(path) as hdul:
        data = hdul["CCD1"].data.astype(np.float64)
        header = hdul["CCD1"].header
    parts = []
    for amp in "AB":
        sec = Section.parse(header[f"DATASEC{amp}"]).slices
        parts.append(data[sec] >= header[f"SATURAT{amp}"])
    np.testing.assert_array_equal(got0, np.concatenate(parts, axis=1))


def test_saturation_mask_uses_each_amplifier_level(night):
    path = night.files["science"][0]
    entry = Catalog.scan([path], strict=True).entries[0]
    layout = entry.layout
    levels = [a.saturate for a in layout.amplifiers]
    raw = np.full(layout.raw_shape, min(levels) - 1, dtype=np.float32)
    # one pixel between the two levels in each amplifier's data: only the lower amp flags it
    mid = (levels[0] + levels[1]) / 2
    for amp in layout.amplifiers:
        ys, xs = amp.datasec.slices
        raw[ys.start + 3, xs.start + 3] = mid
    got = saturation_mask(da.from_array(raw, chunks=(64, 64)), layout).compute()
    low_amp = int(np.argmin(levels))
    assert got.sum() == 1
    nx = layout.trimmed_shape[1]
    assert levels[0] != levels[1]
    assert got[:, : nx // 2].any() == (low_amp == 0)
    with pytest.raises(ShapeMismatchError):
        saturation_mask(da.zeros((10, 10)), layout)


def test_grow_mask_chunk_independent():
    rng = np.random.default_rng(1)
    m = rng.random((90, 70)) > 0.995
    m[0, 0] = m[89, 69] = True
    ref = ndimage.binary_dilation(m, np.ones((7, 7), bool))
    for chunks in [(90, 70), (11, 13), (3, 70)]:
        np.testing.assert_array_equal(grow_mask(da.from_array(m, chunks=chunks), 3).compute(), ref)
    np.testing.assert_array_equal(grow_mask(da.from_array(m), 0).compute(), m)


# ------------------------------------------------------------------------------------- DQ plane


def test_build_dq_bits_and_nonfinite():
    rng = np.random.default_rng(2)
    masks = {k: rng.random((40, 50)) > 0.7 for k in ("bad", "saturated", "cosmic", "interpolated")}
    sci = rng.normal(size=(40, 50)).astype(np.float32)
    sci[3, 4] = np.nan
    sci[5, 6] = np.inf
    with no_compute():
        nodata = nonfinite_mask(da.from_array(sci, chunks=(13, 17)))
        dq = build_dq(**{k: da.from_array(v, chunks=(13, 17)) for k, v in masks.items()}, nodata=nodata)
        base = build_dq(cosmic=da.from_array(masks["cosmic"]), base=da.full((40, 50), 32, dtype=np.uint16))
    got = dq.compute()
    assert got.dtype == np.uint16
    expected = (
        masks["bad"] * dqbits.BAD
        | masks["saturated"] * dqbits.SATURATED
        | masks["cosmic"] * dqbits.COSMIC
        | ~np.isfinite(sci) * dqbits.NODATA
        | masks["interpolated"] * dqbits.INTERPOLATED
    ).astype(np.uint16)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(base.compute(), 32 | masks["cosmic"] * dqbits.COSMIC)
    with pytest.raises(ConfigError):
        build_dq()
    with pytest.raises(ShapeMismatchError):
        build_dq(bad=da.zeros((3, 3), bool), cosmic=da.zeros((3, 4), bool))


# -------------------------------------------------------------------------------- interpolation


def _interp_reference(sci, mask, size):
    out = sci.copy()
    done = np.zeros(sci.shape, bool)
    h = size // 2
    ny, nx = sci.shape
    good = ~mask & np.isfinite(sci)
    for y, x in zip(*np.nonzero(mask), strict=True):
        ys, xs = slice(max(0, y - h), min(ny, y + h + 1)), slice(max(0, x - h), min(nx, x + h + 1))
        vals = sci[ys, xs][good[ys, xs]]
        if vals.size:
            out[y, x] = np.median(vals.astype(np.float64))
            done[y, x] = True
    return out, done


@pytest.mark.parametrize("size", [3, 5])
def test_interpolate_bad_equals_whole_frame_reference(size):
    rng = np.random.default_rng(9)
    sci = rng.normal(100, 5, (80, 70)).astype(np.float32)
    mask = rng.random((80, 70)) > 0.97
    mask[30:39, 30:39] = True  # a big block: its centre has no good neighbour
    mask[0, :] = True  # an edge row
    mask[:, 69] = True  # an edge column
    sci[50, 20] = np.nan  # not a good neighbour
    mask[50, 21] = True
    with no_compute():
        out, done = interpolate_bad(
            da.from_array(sci, chunks=(17, 23)), da.from_array(mask, chunks=(40, 35)), size=size
        )
    got, got_done = dask.compute(out, done)
    ref, ref_done = _interp_reference(sci, mask, size)
    np.testing.assert_array_equal(got_done, ref_done)
    np.testing.assert_array_equal(got, ref)
    assert not got_done[34, 34] and got[34, 34] == sci[34, 34]  # stays, not interpolated
    assert got.dtype == np.float32
    dq = build_dq(bad=da.from_array(mask), interpolated=done).compute()
    assert dq[34, 34] == dqbits.BAD and dq[30, 30] == dqbits.BAD | dqbits.INTERPOLATED


# --------------------------------------------------------------------------------------- config


def test_mask_config_and_bad_pixel_mask(night, tmp_path):
    with pytest.raises(ConfigError):
        MaskConfig(low_window=4)
    with pytest.raises(ConfigError):
        MaskConfig(hot_nsigma=-1.0)
    with pytest.raises(ConfigError):
        MaskConfig.from_dict({"low_treshold": 0.5})
    cfg = MaskConfig.from_dict({"hot_min_rate": 0.2, "user_mask": str(tmp_path / "m.fits"), "user_mask_bits": 2})
    assert MaskConfig.from_dict(cfg.to_dict()) == cfg
    rate = _dark_rate(night)
    flat = _flat(night)
    user = np.zeros(rate.shape, np.uint8)
    user[10, 10] = 2
    user[11, 11] = 1  # bit 1 is not selected
    fits.PrimaryHDU(user).writeto(tmp_path / "m.fits")
    with no_compute():
        bad = bad_pixel_mask(dark_rate=da.from_array(rate, chunks=64), flat=da.from_array(flat, chunks=64), config=cfg)
    tr = night.truth()
    expected = tr.array("CCD1", "bad_pixels").copy()
    expected[10, 10] = True
    np.testing.assert_array_equal(bad.compute(), expected)
    assert bad_pixel_mask(config=MaskConfig()) is None
    with pytest.raises(ShapeMismatchError):
        bad_pixel_mask(dark_rate=da.zeros((5, 5)), config=cfg)


@pytest.mark.parametrize("kind", ["plain", "gzip", "fpack"])
def test_user_mask_keeps_high_bits_of_every_storage(tmp_path, kind):
    """Bit masks are read as exact integers (bits above 2**24 survive, which float32 would round
    away), whether the file is plain, gzip-wrapped or tile-compressed."""
    rng = np.random.default_rng(5)
    flags = rng.choice([0, 1, 1 << 20, (1 << 30) | 1, (1 << 31) + 4], size=(40, 50)).astype(np.uint32)
    if kind == "fpack":
        path = tmp_path / "mask.fits.fz"
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(flags.astype(np.int32), name="DQ")]).writeto(path)
        flags = flags.astype(np.int32).astype(np.int64)
    else:
        path = tmp_path / ("mask.fits.gz" if kind == "gzip" else "mask.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flags, name="DQ")]).writeto(path)
    high = user_mask(path, 1 << 30, hdu="DQ", chunks=(16, 21)).compute()
    np.testing.assert_array_equal(high, (flags & (1 << 30)) != 0)
    assert high.any()
    np.testing.assert_array_equal(user_mask(path, 4).compute(), (flags & 4) != 0)
