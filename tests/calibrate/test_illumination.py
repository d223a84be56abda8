"""Illumination correction of flats (flat.illumination): the 2-D Legendre fit alone, and end to end
on a simulated night plus twilight flats carrying a known smooth illumination G(x, y)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate._illumination import (
    Legendre2D,
    chip_coords,
    fit_legendre2d,
    model_image,
    terms,
)
from ccdask.night._reduce import reduce
from ccdask.sections import Section
from ccdask.simulate._night import simulate_night


def test_fit_recovers_a_legendre_surface_despite_noise_nans_and_outliers():
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:120, 0:300].astype(float)
    true = Legendre2D(2, (1.0, 0.03, -0.02, 0.01, 0.015, -0.012), (0.0, 299.0), (0.0, 119.0))
    v = true(x, y) + rng.normal(0, 0.003, x.shape)
    out = rng.random(x.shape) < 0.02
    v[out] += rng.uniform(0.05, 0.5, out.sum())  # stars: one-sided
    v[rng.random(x.shape) < 0.01] = np.nan
    fit = fit_legendre2d(x, y, v, 2, sigma=3.0, maxiters=5)
    assert len(fit.coeffs) == len(terms(2)) == 6
    assert np.allclose(fit.coeffs, true.coeffs, atol=3e-4)
    assert np.max(np.abs(fit(x, y) - true(x, y))) < 1e-3
    assert fit.nused < np.isfinite(v).sum() - 0.9 * out.sum()  # the outliers were clipped
    # without clipping the outliers pull the fit off
    bad = fit_legendre2d(x, y, v, 2, maxiters=0)
    assert np.max(np.abs(bad(x, y) - true(x, y))) > 2e-3


def test_model_image_is_lazy_chunk_independent_and_follows_detsec():
    model = Legendre2D(2, (1.0, 0.05, 0.0, 0.02, 0.01, 0.0), (0.0, 100.0), (0.0, 50.0))
    flipped = chip_coords((50, 40), Section.parse("[100:61,1:50]"))
    cols = np.arange(40)
    assert flipped.x(cols)[0] == 99.5 and flipped.x(cols)[-1] == 60.5
    a = model_image(model, (50, 40), flipped, chunks=(50, 40)).compute()
    b = model_image(model, (50, 40), flipped, chunks=(7, 9)).compute()
    np.testing.assert_array_equal(a, b)
    yy, xx = np.meshgrid(flipped.y(np.arange(50)), flipped.x(cols), indexing="ij")
    np.testing.assert_allclose(a, model(xx, yy), rtol=1e-6)


def _gradient(truth, chip, shape):
    """G(x, y) on a chip's trimmed pixels, in focal-plane coordinates (DETSEC)."""
    det = Section.parse(truth.meta["chips"][chip]["detsec"])
    c = chip_coords(shape, det)
    fy, fx = np.meshgrid(c.y(np.arange(shape[0])), c.x(np.arange(shape[1])), indexing="ij")
    X, Y = (fx - 160.0) / 160.0, (fy - 96.0) / 96.0
    return 1 + 0.05 * X - 0.03 * Y + 0.04 * X * Y - 0.03 * X * X


def _write_twilight(night, truth):
    """Twilight copies of the simulated g flats: their signal (above the per-row overscan level)
    times G, written as raw uint16 (BZERO 32768) with IMAGETYP = 'SKYFLAT'."""
    shape = tuple(truth.shape)
    for k, path in enumerate(night.files["flat"]):
        if "_g_" not in path.name:
            continue
        with fits.open(path) as h:
            prim = h[0].header.copy()
            prim["IMAGETYP"] = "SKYFLAT"
            hdus = [fits.PrimaryHDU(header=prim)]
            for ext in h[1:]:
                chip = ext.header["CCDNAME"]
                g = _gradient(truth, chip, shape)
                raw = ext.data.astype(np.float64)
                new = raw.copy()
                for amp in truth.meta["chips"][chip]["amps"].values():
                    ds = Section.parse(amp["datasec"]).slices
                    bias = np.median(raw[Section.parse(amp["biassec"]).slices], axis=1)[:, None]
                    c0, c1 = amp["columns"]
                    new[ds] = bias + (raw[ds] - bias) * g[:, c0:c1]
                hdr = ext.header.copy()
                for key in ("BZERO", "BSCALE", "BITPIX"):
                    hdr.remove(key, ignore_missing=True)
                if "IMAGETYP" in hdr:
                    hdr["IMAGETYP"] = "SKYFLAT"
                hdus.append(fits.ImageHDU(np.clip(np.round(new), 0, 65535).astype(np.uint16), header=hdr))
            fits.HDUList(hdus).writeto(night.raw_dir / f"twilight_g_{k:03d}.fits")


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    n = simulate_night(
        tmp_path_factory.mktemp("illum"),
        chips=2,
        amps=2,
        size="small",
        nbias=4,
        ndark=0,
        nflat=4,
        filters=("g",),
        nscience=1,
        seed=21,
    )
    _write_twilight(n, n.truth())
    return n


def _ratio_blocks(out, truth, chips, with_g):
    """Medians over 16x16 blocks of master / (truth flat [× G]), good pixels, renormalised."""
    blocks = {}
    with fits.open(out / "masters" / "flat_g.fits") as h:
        for chip in chips:
            t = truth.array(chip, "flat_g").astype(np.float64)
            if with_g:
                t = t * _gradient(truth, chip, t.shape)
            r = h[chip].data / t
            r[truth.array(chip, "bad_pixels")] = np.nan
            ny, nx = r.shape
            blocks[chip] = np.nanmedian(
                r[: ny // 16 * 16, : nx // 16 * 16].reshape(ny // 16, 16, nx // 16, 16), axis=(1, 3)
            )
        ncomb = h[chips[0]].header["NCOMBINE"]
    norm = np.median(np.concatenate([b.ravel() for b in blocks.values()]))
    return {c: b / norm for c, b in blocks.items()}, ncomb


def test_illumination_gives_dome_structure_times_twilight_shape(night, tmp_path):
    truth = night.truth()
    out = tmp_path / "on"
    res = reduce(night.raw_dir, out, client="threads", config={"flat": {"illumination": True}})
    blocks, ncomb = _ratio_blocks(out, truth, night.chips, with_g=True)
    dev = max(np.max(np.abs(b - 1)) for b in blocks.values())
    assert dev < 0.004, dev
    assert ncomb == 4  # the dome master's frames
    stages = res.stages
    assert "flat-g-twilight" in stages and "flat-g-illumination" in stages
    with fits.open(out / "masters" / "flat_g.fits") as h:
        hist = "\n".join(h[night.chips[0]].header["HISTORY"])
        assert "illumination_fit" in hist
        good = ~truth.array(night.chips[0], "bad_pixels")
        # the pixel-to-pixel structure is the dome's: photon-limited residuals, not G's
        rel = h[night.chips[0]].data / (
            truth.array(night.chips[0], "flat_g") * _gradient(truth, night.chips[0], truth.shape)
        )
        assert np.std(rel[good] / np.median(rel[good])) < 3 * 2.0 / np.sqrt(4 * 15000)
    # rerun: masters come from the cache, same flat
    again = reduce(night.raw_dir, out, client="threads", config={"flat": {"illumination": True}})
    assert again.stages["flat-g"]["built"] == 0 and again.stages["flat-g-twilight"]["built"] == 0
    # the order is part of the flat's key: another order gives another key
    man = json.loads((out / "manifest.json").read_text())
    key2 = [m["cache_key"] for m in man["masters"] if m["kind"] == "flat"]
    out3 = tmp_path / "order1"
    reduce(
        night.raw_dir,
        out3,
        client="threads",
        cache=out / "cache.zarr",
        config={"flat": {"illumination": True, "illumination_order": 1}},
    )
    man3 = json.loads((out3 / "manifest.json").read_text())
    assert not set(key2) & {m["cache_key"] for m in man3["masters"] if m["kind"] == "flat"}


def test_without_illumination_all_flats_are_stacked_as_before(night, tmp_path):
    truth = night.truth()
    out = tmp_path / "off"
    res = reduce(night.raw_dir, out, client="threads")
    assert "flat-g-twilight" not in res.stages
    blocks, ncomb = _ratio_blocks(out, truth, night.chips, with_g=True)
    assert ncomb == 8  # dome and twilight flats together, as before the option existed
    assert max(np.max(np.abs(b - 1)) for b in blocks.values()) > 0.02  # does not follow G
