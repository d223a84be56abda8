"""ccdask.coadd on a simulated dithered, rotated field of reduced frames with known truth.

References: the injected stars (positions, fluxes), the sky level and noise model, the recorded
cosmic rays and hot columns, and an eager reproject + numpy/astropy computation of the same coadd.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip

from ccdask.coadd import Footprint, coadd, coadd_tile, place_chips, read_chips
from ccdask.errors import WcsError
from ccdask.simulate import simulate_field
from tests.helpers import no_compute

N_EXPOSURES = 6
MEDIAN_CHI2_1DOF = 0.45493642311957  # median of the chi-squared distribution with one degree of freedom


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    return simulate_field(tmp_path_factory.mktemp("field"), n_exposures=N_EXPOSURES, n_stars=40, seed=3)


@pytest.fixture(scope="module")
def result(field):
    return coadd(field.files).compute(scheduler="threads")


def _star_pixels(field, fp):
    x, y = fp.wcs.all_world2pix(field.stars["ra"], field.stars["dec"], 0)
    return x, y


def _far_from_stars(field, fp, radius):
    ny, nx = fp.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    far = np.ones(fp.shape, bool)
    sx, sy = _star_pixels(field, fp)
    for x, y in zip(sx, sy, strict=True):
        far &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    return far


def test_sources_recovered_within_noise(field, result):
    fp = result.footprint
    sx, sy = _star_pixels(field, fp)
    sky = field.sky_rate * 60.0
    r_ap = 3.0 * field.fwhm
    ny, nx = fp.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    checked = 0
    for x, y, rate in zip(sx, sy, field.stars["rate"], strict=True):
        box = (xx - x) ** 2 + (yy - y) ** 2
        ap = box <= r_ap**2
        annulus = (box > (r_ap + 3) ** 2) & (box <= (r_ap + 8) ** 2)
        if not (0 <= x < nx and 0 <= y < ny) or not (result.coverage[ap] >= 2).all():
            continue
        if np.sum(np.hypot(sx - x, sy - y) < r_ap + 12) > 1:  # a neighbour in the aperture or annulus
            continue
        if not np.isfinite(result.sci[ap]).all() or np.isfinite(result.sci[annulus]).sum() < 50:
            continue
        bkg = np.nanmedian(result.sci[annulus])
        flux = float(np.sum(result.sci[ap] - bkg))
        truth = rate * 60.0
        n_cov = float(np.min(result.coverage[ap]))  # the noisiest part of the aperture: conservative
        sigma = math.sqrt((truth + ap.sum() * (sky + field.read_noise**2)) / n_cov)
        assert abs(flux - truth) < 4.0 * sigma + 0.01 * truth, (x, y, flux, truth, sigma)
        if truth > 20000:
            w = np.where(ap, np.clip(result.sci - bkg, 0, None), 0.0)
            cx, cy = float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())
            assert math.hypot(cx - x, cy - y) < 0.1, (cx, cy, x, y)
        checked += 1
    assert checked >= 5  # isolated, covered stars of this seeded field


def test_variance_is_honest(field, result):
    fp = result.footprint
    sky = field.sky_rate * 60.0
    good = _far_from_stars(field, fp, 6 * field.fwhm) & (result.coverage >= 3)
    chi2 = (result.sci[good] - sky) ** 2 / result.var[good]
    assert good.sum() > 5000
    assert abs(np.median(chi2) / MEDIAN_CHI2_1DOF - 1) < 0.05


def _defect_positions(field, fp, which):
    """Footprint pixels of the recorded cosmic rays (``flagged`` True/False) or hot columns."""
    chips = {(c.path.split("/")[-1], c.extver): c for c in read_chips(field.files)}
    pts = []
    if which == "hot":
        for (name, extver), col in field.bad_columns.items():
            c = chips[(name, extver)]
            ys = np.arange(c.shape[0], dtype=float)
            pts.append(np.stack([np.full_like(ys, col), ys]))
    else:
        for cr in field.cosmic_rays:
            if cr["flagged"] == which:
                c = chips[(cr["file"], cr["extver"])]
                pts.append(np.array([[cr["x"]], [cr["y"]]], dtype=float))
                ra, dec = c.wcs.all_pix2world(pts[-1][0], pts[-1][1], 0)
                pts[-1] = np.array(fp.wcs.all_world2pix(ra, dec, 0))
        return np.concatenate(pts, axis=1)
    out = []
    for (name, extver), p in zip(field.bad_columns, pts, strict=True):
        ra, dec = chips[(name, extver)].wcs.all_pix2world(p[0], p[1], 0)
        out.append(np.array(fp.wcs.all_world2pix(ra, dec, 0)))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("which", [True, False, "hot"], ids=["flagged-cr", "unflagged-cr", "hot-column"])
def test_defects_absent_where_other_frames_cover(field, result, which):
    fp = result.footprint
    sky = field.sky_rate * 60.0
    far = _far_from_stars(field, fp, 5 * field.fwhm)
    xs, ys = _defect_positions(field, fp, which)
    ny, nx = fp.shape
    worst = []
    for x, y in zip(xs, ys, strict=True):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                i, j = round(y) + dy, round(x) + dx
                if 0 <= i < ny and 0 <= j < nx and far[i, j] and result.coverage[i, j] >= 3:
                    worst.append(abs(result.sci[i, j] - sky) / math.sqrt(result.var[i, j]))
    assert len(worst) > 20
    assert max(worst) < 5.5
    # the check can fail: without masking and rejection the defects are there
    if which != "hot":
        raw = coadd(field.files, noise_sigma=None, reject_bits=0).compute(scheduler="threads")
        seen = []
        for x, y in zip(xs, ys, strict=True):
            i, j = round(y), round(x)
            if 0 <= i < ny and 0 <= j < nx and far[i, j] and raw.coverage[i, j] >= 2:
                seen.append(abs(raw.sci[i, j] - sky) / math.sqrt(raw.var[i, j]))
        assert max(seen) > 10


def test_bitwise_independent_of_tiling(field, result):
    small = coadd(field.files, memory_per_task="1 MiB")
    assert small.tile[0] < result.footprint.shape[0]
    got = small.compute(scheduler="threads")
    for a, b in ((got.sci, result.sci), (got.var, result.var), (got.coverage, result.coverage)):
        np.testing.assert_array_equal(a, b)
    # any rectangle, straight through the tile function
    lazy = coadd(field.files)
    rows, cols = slice(37, 101), slice(53, 150)
    chips = read_chips(field.files)
    placed = place_chips(chips, lazy.footprint)
    tile = coadd_tile(
        [chips[i] for i, _ in placed],
        [b for _, b in placed],
        lazy.footprint,
        rows,
        cols,
        lazy.config,
        [1.0] * len(placed),
        [60.0] * len(placed),
    )
    np.testing.assert_array_equal(tile.sci, result.sci[rows, cols])
    np.testing.assert_array_equal(tile.var, result.var[rows, cols])
    np.testing.assert_array_equal(tile.coverage, result.coverage[rows, cols])


@pytest.mark.slow
def test_bitwise_independent_of_workers(field, result, tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        out = coadd(field.files, memory_per_task="1 MiB").write(tmp_path / "c.fits", scheduler=client)
    with fits.open(out) as h:
        np.testing.assert_array_equal(h["SCI"].data, result.sci)
        np.testing.assert_array_equal(h["VAR"].data, result.var)
        np.testing.assert_array_equal(h["COVERAGE"].data, result.coverage)
        np.testing.assert_array_equal(h["DQ"].data, result.dq)
        np.testing.assert_array_equal(h["EXPOSURE"].data, result.exposure)


def test_graph_builder_is_lazy(field):
    with no_compute():
        lazy = coadd(field.files, memory_per_task="1 MiB")
    assert lazy.is_lazy and lazy.sci.name.startswith("coadd-sci-")
    assert lazy.sci.shape == lazy.footprint.shape


@pytest.mark.filterwarnings("ignore:Input data contains invalid values")
def test_equals_eager_reproject_and_numpy(field):
    """The same coadd computed eagerly: each whole chip reprojected with reproject_interp onto
    the whole footprint, sigma-clipped with astropy and inverse-variance averaged with numpy."""
    from astropy.wcs.utils import pixel_to_pixel
    from reproject import reproject_interp

    result = coadd(field.files, noise_sigma=None, clip="sigma").compute(scheduler="threads")
    fp = result.footprint
    ny, nx = fp.shape
    sci_l, var_l = [], []
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    for c in read_chips(field.files):
        with fits.open(c.path) as h:
            sci = h["SCI", c.extver].data.astype(np.float64)
            var = h["VAR", c.extver].data.astype(np.float64)
            dqp = h["DQ", c.extver].data.astype(np.int64)
        bad = (dqp & 15) != 0
        sci[bad], var[bad] = 0.0, 0.0
        planes = reproject_interp(
            (np.stack([sci, var, bad.astype(float)]), c.wcs),
            fp.wcs,
            shape_out=(3, ny, nx),
            order="bilinear",
            return_footprint=False,
        )
        X, Y = pixel_to_pixel(fp.wcs, c.wcs, xx, yy)
        fx, fy = X - np.floor(X), Y - np.floor(Y)
        g = (1 - 2 * fx * (1 - fx)) * (1 - 2 * fy * (1 - fy))
        ok = np.isfinite(planes[0]) & (planes[2] == 0)
        sci_l.append(np.where(ok, planes[0], np.nan).astype(np.float32))
        var_l.append(np.where(ok, planes[1] * g, np.nan).astype(np.float32))
    s = np.stack(sci_l)
    v = np.stack(var_l).astype(np.float64)
    clipped = sigma_clip(s, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0, masked=True)
    keep = ~np.ma.getmaskarray(clipped)
    w = np.where(keep, 1.0 / np.where(keep, v, 1.0), 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_sci = (w * np.where(keep, s, 0.0)).sum(axis=0) / sw
        ref_var = 1.0 / sw
    count = keep.sum(axis=0)
    assert (count == result.coverage).mean() > 0.9999
    same = count == result.coverage
    np.testing.assert_allclose(result.sci[same & (count > 0)], ref_sci[same & (count > 0)], rtol=2e-6, atol=1e-3)
    np.testing.assert_allclose(result.var[same & (count > 0)], ref_var[same & (count > 0)], rtol=2e-6)
    assert np.isnan(result.sci[count == 0]).all()


@pytest.mark.parametrize("method", ["exact", "adaptive"])
def test_other_methods_keep_fluxes(field, result, method):
    other = coadd(field.files, method=method).compute(scheduler="threads")
    fp = other.footprint
    sx, sy = _star_pixels(field, fp)
    ny, nx = fp.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ratios = []
    for x, y, rate in zip(sx, sy, field.stars["rate"], strict=True):
        d2 = (xx - x) ** 2 + (yy - y) ** 2
        ap, ann = d2 <= 81, (d2 > 144) & (d2 <= 289)
        if rate * 60 < 30000 or not np.isfinite(other.sci[ap]).all() or np.isfinite(other.sci[ann]).sum() < 50:
            continue
        ratios.append(np.sum(other.sci[ap] - np.nanmedian(other.sci[ann])) / (rate * 60.0))
    assert len(ratios) >= 5
    assert abs(np.median(ratios) - 1) < 0.01


def test_footprint_from_file_and_wcs_from(field, result, tmp_path):
    hdr = result.footprint.header()
    path = tmp_path / "grid.fits"
    fits.PrimaryHDU(np.zeros(result.footprint.shape, np.float32), header=hdr).writeto(path)
    same = coadd(field.files, footprint=path).compute(scheduler="threads")
    np.testing.assert_array_equal(same.sci, result.sci)
    # the projection of a file, sized to cover the chips: one exposure's chip 1 grid
    other = coadd(field.files, wcs_from=field.files[0])
    assert other.footprint.wcs.wcs.ctype[0] == "RA---TAN"
    assert Footprint.from_file(field.files[0]).shape == field.chip_shape


def test_frame_without_wcs_is_named(field, tmp_path):
    broken = tmp_path / "nowcs.fits"
    with fits.open(field.files[0]) as h:
        for key in ("CTYPE1", "CTYPE2"):
            del h["SCI", 2].header[key]
        h.writeto(broken)
    with pytest.raises(WcsError, match=r"nowcs\.fits\[SCI,2\]: no WCS"):
        coadd([field.files[1], broken])
    singular = tmp_path / "singular.fits"
    with fits.open(field.files[0]) as h:
        for key in ("CD1_1", "CD1_2"):
            h["SCI", 1].header[key] = 0.0
        h.writeto(singular)
    with pytest.raises(WcsError, match=r"(?s)singular\.fits\[SCI,1\]: .*singular"):
        coadd([singular])


def test_cli_writes_the_coadd(field, result, tmp_path, capsys):
    from ccdask.cli._main import main

    out = tmp_path / "coadd.fits"
    assert main(["coadd", *map(str, field.files), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with fits.open(out) as h:
        assert [x.name for x in h[1:]] == ["SCI", "VAR", "DQ", "COVERAGE", "EXPOSURE"]
        np.testing.assert_array_equal(h["SCI"].data, result.sci)
        assert h["SCI"].header["CTYPE1"] == "RA---TAN"
        assert h[0].header["NCOMBINE"] == N_EXPOSURES
        np.testing.assert_allclose(h["EXPOSURE"].data.max(), 60.0 * N_EXPOSURES)
    assert main(["coadd", *map(str, field.files), "-o", str(out)]) == 3  # exists, no --overwrite
    broken = tmp_path / "nowcs.fits"
    with fits.open(field.files[0]) as h:
        del h["SCI", 1].header["CTYPE1"], h["SCI", 1].header["CTYPE2"]
        h.writeto(broken)
    assert main(["coadd", str(broken), "-o", str(tmp_path / "x.fits")]) == 3
    assert "nowcs.fits[SCI,1]" in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists()


def test_lower_noise_threshold_none_means_the_upper(field, result):
    """``noise_sigma_lower=None`` in a CoaddConfig clips below with ``noise_sigma`` (the default
    coadd uses 4 on both sides)."""
    from ccdask.coadd import CoaddConfig

    got = coadd(field.files, config=CoaddConfig(noise_sigma=4.0, noise_sigma_lower=None)).compute(scheduler="threads")
    np.testing.assert_array_equal(got.sci, result.sci)
    np.testing.assert_array_equal(got.coverage, result.coverage)
