"""Unit tests of the night's building blocks: masters (pooled and focal-plane medians), products
(file names, chip headers, CCDKEY checks), QA (statistics, binning, focal-plane mosaics, PNGs)
and the manifest's JSON, each against an independent numpy/astropy computation."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from ccdask import dq as DQ
from ccdask.night._manifest import _json_default
from ccdask.night._masters import focal_plane_median, pooled_median, scratch_stack
from ccdask.night._plan import safe_filter_name
from ccdask.night._products import chip_header, has_key, output_name
from ccdask.night._qa import bin_image, chip_stats, focal_plane, save_png, stats_table
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.sections import Section
from tests.helpers import no_compute

RNG = np.random.default_rng(17)


# -- masters ---------------------------------------------------------------------------------------


def test_pooled_median_is_the_median_of_every_finite_sample():
    samples = [RNG.normal(10, 2, (30, 40)), RNG.normal(12, 2, 77), np.array([np.nan, np.inf, 3.0])]
    values = np.concatenate([s.ravel() for s in samples])
    assert pooled_median(samples) == float(np.median(values[np.isfinite(values)]))
    assert np.isnan(pooled_median([np.full(4, np.nan)]))


def test_focal_plane_median_is_lazy_and_pools_the_chips_on_a_fixed_grid():
    chips = [RNG.normal(100 + 10 * i, 5, (600, 700)).astype(np.float32) for i in range(3)]
    chips[1][:5] = np.nan
    with no_compute():
        lazy = focal_plane_median([da.from_array(c, chunks=(123, 301)) for c in chips])
    got = float(lazy.compute())
    pooled = np.concatenate([c.ravel() for c in chips])
    # a sample grid, not every pixel: close to the full median, not necessarily equal
    assert abs(got - np.nanmedian(pooled)) < 0.2
    # the same grid whatever the chunks
    again = focal_plane_median([da.from_array(c, chunks=(600, 50)) for c in chips]).compute()
    assert float(again) == got


def test_scratch_stack_is_lazy_and_reads_every_frame_tile_by_tile(tmp_path):
    import zarr

    frames = [RNG.normal(50 * (i + 1), 3, (37, 29)).astype(np.float32) for i in range(4)]
    paths = [str(tmp_path / f"{i}.zarr") for i in range(4)]
    divisors = [1.0, 2.5, 0.7, 3.0]
    # built before any store exists: building opens nothing
    with no_compute():
        plain = scratch_stack(paths, (37, 29), (10, 29))
        divided = scratch_stack(paths, (37, 29), (8, 13), divisors=divisors)
        squared = scratch_stack(paths, (37, 29), (37, 29), divisors=divisors, squared=True)
    assert plain.chunks == ((4,), (10, 10, 10, 7), (29,))
    assert len(dict(plain.__dask_graph__())) == 4  # one task per tile, not one per frame and tile
    for path, f in zip(paths, frames, strict=True):
        z = zarr.create_array(store=path, shape=f.shape, chunks=(16, 16), dtype="float32", compressors=None)
        z[...] = f
    stack = np.stack(frames)
    d = np.array(divisors, np.float32)[:, None, None]
    np.testing.assert_array_equal(plain.compute(), stack)
    np.testing.assert_array_equal(divided.compute(), stack / d)  # float32 division, as before stacking
    np.testing.assert_array_equal(squared.compute(), stack / (d * d))


# -- products --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filt", "name"),
    [("g", "g"), ("SDSS g'", "SDSS_g_"), (None, "NONE"), ("  ", "NONE"), ("../etc", "_etc"), ("r+i", "r+i")],
)
def test_master_file_names_are_file_safe(filt, name):
    assert safe_filter_name(filt) == name
    assert "/" not in safe_filter_name(filt)


def test_output_name_comes_from_the_raw_name_only():
    assert output_name("science_r_001") == "science_r_001.fits"


def test_chip_header_drops_raw_geometry_and_shifts_the_wcs_to_the_trimmed_chip():
    layout = ChipLayout(
        "c",
        (40, 60),
        (
            Amplifier("A", Section.parse("[11:30,3:40]"), Section.parse("[1:20,1:38]"), Section.parse("[1:8,3:40]")),
            Amplifier("B", Section.parse("[31:50,3:40]"), Section.parse("[21:40,1:38]"), Section.parse("[53:60,3:40]")),
        ),
    )
    merged = fits.Header(
        [
            ("OBJECT", "M31"),
            ("CRPIX1", 100.0),
            ("CRPIX2", 50.0),
            ("DATASEC", "[11:50,3:40]"),
            ("BIASSEC", "[1:8,3:40]"),
            ("EXPTIME", 30.0),
        ]
    )
    primary = fits.Header([("EXPTIME", 30.0)])
    out = chip_header(merged, primary, layout)
    assert out["CRPIX1"] == 100.0 - 10 and out["CRPIX2"] == 50.0 - 2  # trimmed origin (11, 3)
    assert "DATASEC" not in out and "BIASSEC" not in out
    assert out["OBJECT"] == "M31" and "EXPTIME" not in out  # kept once, in the primary header


def test_has_key_reads_the_primary_ccdkey(tmp_path):
    path = tmp_path / "x.fits"
    assert not has_key(path, "abc")
    fits.PrimaryHDU(header=fits.Header([("CCDKEY", "abc")])).writeto(path)
    assert has_key(path, "abc") and not has_key(path, "abd")
    path.write_bytes(b"not a FITS file")
    assert not has_key(path, "abc")


# -- QA ----------------------------------------------------------------------------------------------


def test_chip_stats_against_numpy_and_astropy():
    sci = RNG.normal(500, 7, (80, 90)).astype(np.float32)
    var = np.full(sci.shape, 49.0, np.float32)
    dqa = np.zeros(sci.shape, DQ.DQ_DTYPE)
    dqa[3, 4] = DQ.COSMIC
    dqa[5, 6:9] = DQ.SATURATED
    dqa[7, 7] = DQ.BAD | DQ.COSMIC
    sci[10, 10] = np.nan
    st = chip_stats(sci, var, dqa)
    good = (dqa == 0) & np.isfinite(sci)
    assert st["sky"] == pytest.approx(float(np.median(sci[good].astype(np.float64))), rel=1e-12)
    assert st["noise"] == pytest.approx(float(mad_std(sci[good].astype(np.float64))), rel=1e-9)
    assert st["expected_noise"] == pytest.approx(7.0)
    assert (st["cosmic_pixels"], st["saturated_pixels"], st["bad_pixels"]) == (2, 3, 1)
    assert st["rejected_fraction"] == pytest.approx(5 / sci.size)


@pytest.mark.parametrize("factor", [1, 2, 3, 7])
def test_bin_image_means_blocks_and_keeps_partial_edges(factor):
    image = RNG.normal(0, 1, (20, 31))
    image[0, 0] = np.nan
    got = bin_image(image, factor)
    ny, nx = -(-20 // factor), -(-31 // factor)
    assert got.shape == (ny, nx) and got.dtype == np.float32
    for j, i in [(0, 0), (ny - 1, nx - 1), (ny // 2, nx // 3)]:
        block = image[j * factor : (j + 1) * factor, i * factor : (i + 1) * factor]
        np.testing.assert_allclose(got[j, i], np.nanmean(block), rtol=1e-6)


def test_focal_plane_places_chips_by_detsec_with_flips():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = -np.arange(12, dtype=np.float32).reshape(3, 4)
    canvas = focal_plane({"A": a, "B": b}, {"A": Section.parse("[1:4,1:3]"), "B": Section.parse("[8:5,1:3]")}, 1)
    assert canvas.shape == (3, 8)
    np.testing.assert_array_equal(canvas[:, :4], a)
    np.testing.assert_array_equal(canvas[:, 4:], b[:, ::-1])  # DETSEC runs right to left


def test_focal_plane_places_binned_chips_by_their_unbinned_detsec():
    a = np.ones((3, 4), np.float32)
    b = np.full((3, 4), 2.0, np.float32)
    # 2x2 binning: each chip's DETSEC spans 8 x 6 unbinned pixels
    canvas = focal_plane({"A": a, "B": b}, {"A": Section.parse("[1:8,1:6]"), "B": Section.parse("[9:16,1:6]")}, 1)
    assert canvas.shape == (3, 8)
    np.testing.assert_array_equal(canvas[:, :4], a)
    np.testing.assert_array_equal(canvas[:, 4:], b)


def test_save_png_writes_a_readable_image_atomically(tmp_path):
    import matplotlib.image as mpimg

    image = RNG.normal(0, 1, (50, 70))
    image[5, 5] = np.nan
    path = save_png(tmp_path / "qa" / "x.png", image, "title")
    assert mpimg.imread(path).ndim == 3
    assert [p.name for p in (tmp_path / "qa").iterdir()] == ["x.png"]  # no temporary left


def test_stats_table_columns_follow_the_rows():
    rows = [{"file": "a.fits", "chip": "c1", "sky": 1.0}, {"file": "b.fits", "chip": "c2", "sky": 2.0}]
    table = stats_table(rows)
    assert table.colnames == ["file", "chip", "sky"] and list(table["sky"]) == [1.0, 2.0]
    assert len(stats_table([])) == 0


# -- manifest ----------------------------------------------------------------------------------------


def test_manifest_json_turns_numpy_numbers_into_json_numbers():
    doc = {"n": np.int64(3), "x": np.float32(0.5), "path": __import__("pathlib").Path("/a/b")}
    back = json.loads(json.dumps(doc, default=_json_default))
    assert back == {"n": 3, "x": 0.5, "path": "/a/b"}
    assert isinstance(back["n"], int)
