"""Tests of the synthetic night generator, checked against its truth with plain astropy reads."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import ConfigError
from ccdask.sections import parse_section
from ccdask.simulate._night import SIZES, SimulatedNight, Truth, simulate_night


@pytest.fixture(scope="module")
def night(sim_night) -> SimulatedNight:
    """The default night: 4 chips, 2 amplifiers, small, filters g and r."""
    return sim_night(seed=11)


@pytest.fixture(scope="module")
def truth(night) -> Truth:
    with night.truth() as t:
        yield t


def _amp_keys(namps: int, amp: str) -> tuple[str, str, str, str, str]:
    s = amp if namps == 2 else ""
    sat = f"SATURAT{amp}" if namps == 2 else "SATURATE"
    return f"DATASEC{s}", f"BIASSEC{s}", f"GAIN{s}", f"RDNOISE{s}", sat


def _read(path, chip):
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), hdul[chip].header.copy(), hdul[chip].data.astype(np.float64)


def _electrons(path, chip, truth, *, pattern=True, dark=False):
    """Overscan-corrected (row median), optionally bias-pattern and dark subtracted, × gain."""
    primary, header, raw = _read(path, chip)
    out = np.empty(truth.shape)
    for amp in truth.meta["amp_names"]:
        dkey, bkey, gkey, _, _ = _amp_keys(truth.meta["amps"], amp)
        data = parse_section(header[dkey], raw.shape)
        over = np.median(raw[parse_section(header[bkey], raw.shape).slices], axis=1)
        c0, c1 = truth.amp(chip, amp)["columns"]
        adu = raw[data.slices] - over[:, None]
        if pattern:
            adu -= truth.array(chip, "bias_pattern")[:, c0:c1]
        out[:, c0:c1] = adu * header[gkey]
    if dark:
        out -= truth.array(chip, "dark_rate") * primary["EXPTIME"]
    return out


def _hashes(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# layout and keywords


def test_files_and_primary_keywords(night, truth):
    assert night.raw_dir == night.root / "raw"
    assert night.chips == ("CCD1", "CCD2", "CCD3", "CCD4")
    assert [p.name for p in night.files["bias"]] == [f"bias_{i:03d}.fits" for i in range(5)]
    assert len(night.files["dark"]) == 3
    assert [p.name for p in night.flats_by_filter["g"]] == [f"flat_g_{i:03d}.fits" for i in range(3)]
    assert [p.name for p in night.science_by_filter["r"]] == ["science_r_000.fits", "science_r_001.fits"]
    assert len(night.files["flat"]) == 6 and len(night.files["science"]) == 4
    assert sorted(night.raw_dir.iterdir()) == sorted(night.all_files)
    dates = []
    for kind, paths in night.files.items():
        for p in paths:
            h = fits.getheader(p, 0)
            assert h["IMAGETYP"] == {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "OBJECT"}[kind]
            assert h["INSTRUME"] == "SIMCAM" and h["TELESCOP"] == "SIM 1m"
            assert h["NCCDS"] == 4 and h["NAMPS"] == 2 and h["DETSIZE"] == "[1:320,1:384]"
            assert "OBJECT" in h and "DATE-OBS" in h
            assert ("FILTER" in h) == (kind in ("flat", "science"))
            exptime = {"bias": 0.0, "dark": 300.0}.get(kind)
            if exptime is not None:
                assert h["EXPTIME"] == exptime
            assert truth.frame(p.name)["exptime"] == h["EXPTIME"]
            dates.append((truth.meta["frames"].index(truth.frame(p.stem)), h["DATE-OBS"]))
    assert [d for _, d in sorted(dates)] == sorted(d for _, d in dates)  # increasing
    assert [fits.getheader(p)["EXPTIME"] for p in night.science_by_filter["g"]] == [60.0, 120.0]
    assert all(2 <= fits.getheader(p)["EXPTIME"] <= 8 for p in night.files["flat"])


def _check_chip_layout(path, truth):
    ny, nx = truth.shape
    namps = truth.meta["amps"]
    tiles = []
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert len(hdul) == 1 + len(truth.chips)
        assert hdul[0].data is None
        for k, chip in enumerate(truth.chips, start=1):
            h = hdul[k].header
            assert h["EXTNAME"] == chip and h["CCDNAME"] == chip
            assert h["BITPIX"] == 16 and h["BZERO"] == 32768 and h["BSCALE"] == 1
            assert hdul[k].data.dtype == np.dtype(">i2")
            shape = hdul[k].data.shape
            assert shape == (ny, nx + namps * truth.meta["overscan"])
            trim = parse_section(h["TRIMSEC"], shape)
            assert trim.shape == (ny, nx)
            covered = np.zeros(shape[1], dtype=int)
            data_cols = np.zeros(shape[1], dtype=bool)
            for amp in truth.meta["amp_names"]:
                dkey, bkey, gkey, rkey, skey = _amp_keys(namps, amp)
                data = parse_section(h[dkey], shape)
                bias = parse_section(h[bkey], shape)
                assert data.shape == (ny, nx // namps)
                assert bias.shape == (ny, truth.meta["overscan"])
                covered[data.slices[1]] += 1
                covered[bias.slices[1]] += 1
                data_cols[data.slices[1]] = True
                a = truth.amp(chip, amp)
                assert (h[gkey], h[rkey], h[skey]) == (a["gain"], a["rdnoise"], a["saturate"])
                assert 1.2 <= a["gain"] <= 2.5 and 3 <= a["rdnoise"] <= 8
                assert 60000 <= a["saturate"] <= 65000 and 1000 <= a["bias_level"] <= 2000
                assert (h[dkey], h[bkey]) == (a["datasec"], a["biassec"])
            assert np.all(covered == 1)  # data + overscan tile the columns exactly once
            assert np.array_equal(np.flatnonzero(data_cols), np.arange(shape[1])[trim.slices[1]])
            assert h["DETSIZE"] == truth.meta["detsize"]
            det = parse_section(h["DETSEC"], None)
            assert det.shape == (ny, nx) and det.flipped == (False, False)
            assert h["DETSEC"] == truth.meta["chips"][chip]["detsec"]
            tiles.append(det)
    fy, fx = parse_section(truth.meta["detsize"], None).shape
    plane = np.zeros((fy, fx), dtype=int)
    for det in tiles:
        det = det.validate((fy, fx))
        plane[det.slices] += 1
    assert plane.max() == 1  # no overlap
    return plane


def test_chip_layout_two_amps(night, truth):
    for p in night.all_files:
        plane = _check_chip_layout(p, truth)
        assert plane.min() == 1  # 4 chips tile the 2 x 2 focal plane with no gap


def test_chip_layout_one_amp_three_chips(tmp_path):
    n = simulate_night(tmp_path, chips=3, amps=1, nbias=1, ndark=0, nflat=1, nscience=1, filters=("i",), seed=5)
    t = n.truth()
    assert n.amps == 1 and t.meta["grid"] == [2, 2]
    h = fits.getheader(n.files["bias"][0], "CCD1")
    assert h["DATASEC"] == "[1:160,1:192]" and h["BIASSEC"] == "[161:176,1:192]"
    assert h["TRIMSEC"] == "[1:160,1:192]"
    assert "GAINA" not in h and "DATASECA" not in h
    for p in n.all_files:
        plane = _check_chip_layout(p, t)
        assert plane.sum() == 3 * 192 * 160
    assert n.files["dark"] == [] and [p.name for p in n.files["flat"]] == ["flat_i_000.fits"]
    t.close()


def test_sizes_and_medium_geometry(tmp_path):
    assert SIZES == {"small": (192, 160, 16), "medium": (1024, 1024, 32), "large": (4096, 2048, 32)}
    n = simulate_night(tmp_path, size="medium", chips=1, nbias=1, ndark=0, nflat=0, nscience=0, filters=("r",))
    with fits.open(n.files["bias"][0]) as hdul:
        h = hdul["CCD1"].header
        assert hdul["CCD1"].data.shape == (1024, 1024 + 2 * 32)
        assert h["BIASSECA"] == "[1:32,1:1024]" and h["BIASSECB"] == "[1057:1088,1:1024]"
        assert h["TRIMSEC"] == "[33:1056,1:1024]" and h["DETSEC"] == "[1:1024,1:1024]"
    assert n.shape == (1024, 1024) and n.size == "medium"


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    kw = dict(chips=2, nbias=1, ndark=1, nflat=1, nscience=1, filters=("g",), seed=7)
    a = _hashes(simulate_night(tmp_path / "a", **kw).root)
    b = _hashes(simulate_night(tmp_path / "b", **kw).root)
    assert a == b
    assert set(a) == {
        "truth.json",
        "truth.npz",
        "raw/bias_000.fits",
        "raw/dark_000.fits",
        "raw/flat_g_000.fits",
        "raw/science_g_000.fits",
    }
    c = _hashes(simulate_night(tmp_path / "c", **{**kw, "seed": 8}).root)
    assert set(c) == set(a)
    assert all(c[k] != a[k] for k in a)


def test_streams_are_stable_when_counts_change(tmp_path):
    """Chip constants and the static truth do not depend on how many frames or chips."""
    a = simulate_night(tmp_path / "a", chips=2, nbias=1, ndark=0, nflat=0, nscience=0, filters=("r",), seed=3).truth()
    b = simulate_night(tmp_path / "b", chips=3, nbias=2, ndark=1, nflat=0, nscience=0, filters=("r",), seed=3).truth()
    for chip in a.chips:
        assert a.meta["chips"][chip]["amps"] == b.meta["chips"][chip]["amps"]
        for name in ("bias_pattern", "dark_rate", "hot_pixels"):
            assert np.array_equal(a.array(chip, name), b.array(chip, name))
    assert np.array_equal(a.array("CCD1", "bias_000/row_bias"), b.array("CCD1", "bias_000/row_bias"))
    a.close()
    b.close()


# ---------------------------------------------------------------------------------------------
# against the truth


def _bias_noise(truth, chip, amp, nframes=1):
    """Expected rms (ADU) of data − overscan row median − pattern, for a mean of n frames."""
    rn = truth.amp(chip, amp)["rdnoise_adu"]
    var = rn**2 + 1 / 12 + (math.pi / 2) * rn**2 / truth.meta["overscan"]
    return math.sqrt(var / nframes)


def test_bias_frame_is_pattern_plus_read_noise(night, truth):
    path = night.files["bias"][2]
    for chip in truth.chips:
        resid = _electrons(path, chip, truth)  # in e-; compare per amplifier in ADU
        rb = truth.array(chip, f"{path.stem}/row_bias")
        _, header, raw = _read(path, chip)
        for a, amp in enumerate(truth.meta["amp_names"]):
            info = truth.amp(chip, amp)
            c0, c1 = info["columns"]
            r = resid[:, c0:c1] / info["gain"]
            sigma = _bias_noise(truth, chip, amp)
            assert abs(r.mean()) < 5 * sigma / math.sqrt(truth.shape[0])
            assert 0.9 * sigma < r.std() < 1.1 * sigma
            # the overscan follows the frame's row drift
            over = raw[parse_section(header[_amp_keys(2, amp)[1]], raw.shape).slices]
            assert np.abs(over.mean(axis=1) - rb[a]).max() < 5 * info["rdnoise_adu"] / 4
            assert np.ptp(rb[a]) > 1.0  # there is a drift to remove


def test_mean_of_biases_recovers_pattern(night, truth):
    nb = len(night.files["bias"])
    for chip in truth.chips:
        mean = sum(_electrons(p, chip, truth, pattern=False) for p in night.files["bias"]) / nb
        pattern = truth.array(chip, "bias_pattern")
        for amp in truth.meta["amp_names"]:
            info = truth.amp(chip, amp)
            c0, c1 = info["columns"]
            resid = mean[:, c0:c1] / info["gain"] - pattern[:, c0:c1]
            sigma = _bias_noise(truth, chip, amp, nb)
            assert resid.std() < 1.1 * sigma
            # the column structure (readout-edge ramp, column pattern) is recovered
            prof = resid.mean(axis=0)
            assert np.abs(prof).max() < 5 * sigma / math.sqrt(truth.shape[0]) + 0.15
            assert np.ptp(pattern[:, c0:c1].mean(axis=0)) > 2.0


def test_dark_rate_of_hot_pixels(night, truth):
    darks = night.files["dark"]
    for chip in truth.chips:
        t = fits.getheader(darks[0])["EXPTIME"]
        rate = sum(_electrons(p, chip, truth) for p in darks) / (len(darks) * t)
        cr = np.zeros(truth.shape, dtype=bool)
        for p in darks:
            cr |= truth.array(chip, f"{p.stem}/cosmic_rays")
        hot = truth.array(chip, "hot_pixels") & ~cr
        true = truth.array(chip, "dark_rate")
        assert 0.0004 < truth.array(chip, "hot_pixels").mean() < 0.002
        assert hot.sum() > 10 and true[hot].min() >= 0.5 and true[hot].max() <= 5.0
        assert 0.002 <= truth.meta["chips"][chip]["dark_base"] <= 0.01
        ratio = rate[hot] / true[hot]
        assert abs(np.median(ratio) - 1) < 0.05
        rn = max(truth.amp(chip, a)["rdnoise"] for a in truth.meta["amp_names"])
        sigma = np.sqrt(true[hot] * t + 1.2 * rn**2) / (t * math.sqrt(len(darks)))
        assert np.mean(np.abs(rate[hot] - true[hot]) < 5 * sigma) > 0.98
        # away from hot pixels and cosmic rays, the mean dark current matches too
        cold = ~truth.array(chip, "hot_pixels") & ~cr
        assert abs(rate[cold].mean() - true[cold].mean()) < 0.003


def test_truth_flat_is_normalised_over_the_focal_plane(truth):
    for f in truth.meta["filters"]:
        allpix = np.concatenate([truth.array(c, f"flat_{f}").ravel() for c in truth.chips])
        assert abs(np.median(allpix) - 1) < 1e-6
    g, r = truth.array("CCD2", "flat_g"), truth.array("CCD2", "flat_r")
    assert not np.allclose(g, r)  # dust differs per filter
    for chip in truth.chips:
        flat = truth.array(chip, "flat_g")
        cols = truth.array(chip, "dead_columns")
        assert 1 <= cols.size <= 3
        assert np.all(flat[:, cols] <= 0.05 * 1.15 * np.median(flat))
        assert truth.array(chip, "bad_pixels")[:, cols].all()


def test_flat_chip_ratio_follows_sensitivity(night, truth):
    for path in night.flats_by_filter["r"][:2]:
        rec = truth.frame(path.name)
        meds = {}
        for chip in truth.chips:
            e = _electrons(path, chip, truth, dark=True)
            flat = truth.array(chip, "flat_r")
            # the frame is the flat-lamp level times the normalised response, plus noise
            good = ~truth.array(chip, f"{path.stem}/cosmic_rays") & (flat > 0.5)
            rel = e[good] / (rec["flat_level"] * flat[good])
            assert abs(rel.mean() - 1) < 0.003
            assert rel.std() < 1.3 * math.sqrt(1 / rec["flat_level"] + 0.0004**2)
            meds[chip] = (np.median(e), np.median(flat))
        for chip in truth.chips[1:]:
            measured = meds[chip][0] / meds["CCD1"][0]
            expected = meds[chip][1] / meds["CCD1"][1]
            assert measured == pytest.approx(expected, rel=0.003)
            sens = truth.meta["chips"][chip]["sensitivity"] / truth.meta["chips"]["CCD1"]["sensitivity"]
            assert measured == pytest.approx(sens, rel=0.03)


def test_cosmic_rays_are_high(night, truth):
    total = 0
    for path in night.files["science"]:
        rec = truth.frame(path.name)
        for chip in truth.chips:
            cr = truth.array(chip, f"{path.stem}/cosmic_rays")
            sat = truth.array(chip, f"{path.stem}/saturated")
            flat = truth.array(chip, f"flat_{rec['filter']}")
            bg = rec["sky"] * flat + truth.array(chip, "dark_rate") * rec["exptime"]
            e = _electrons(path, chip, truth) - bg
            sel = cr & ~sat & (flat > 0.5)
            sigma = np.sqrt(bg + 64.0)
            total += sel.sum()
            if sel.any():
                assert np.mean(e[sel] > 5 * sigma[sel]) > 0.95
            assert abs(np.median((e / sigma)[~cr & ~sat & (flat > 0.5)])) < 0.5
    assert total > 50
    # rate: ~1-5 events per 10^4 px; each event is 1-15 px
    npix = len(truth.chips) * truth.shape[0] * truth.shape[1] * len(night.files["science"])
    assert 1e-4 < total / npix < 5e-3


def test_saturated_pixels_sit_at_saturate(night, truth):
    nsat = 0
    for path in night.files["science"] + night.files["flat"]:
        for chip in truth.chips:
            _, header, raw = _read(path, chip)
            sat = truth.array(chip, f"{path.stem}/saturated")
            data = raw[parse_section(header["TRIMSEC"], raw.shape).slices]
            level = np.empty(truth.shape)
            for amp in truth.meta["amp_names"]:
                c0, c1 = truth.amp(chip, amp)["columns"]
                level[:, c0:c1] = header[_amp_keys(2, amp)[4]]
            assert np.array_equal(data[sat], level[sat])
            assert np.all(data[~sat] < level[~sat])
            nsat += sat.sum()
    assert nsat > 20
    # a handful of stars saturate: each saturated core is a few to a few tens of pixels
    assert any(truth.frame(p.name)["chips"]["CCD1"]["saturated_pixels"] > 0 for p in night.files["science"])


def test_star_flux_is_conserved(night, truth):
    path = night.science_by_filter["g"][0]
    rec = truth.frame(path.name)
    stars = truth.stars()
    flux = stars["rate_g"] * rec["exptime"] * rec["transparency"]
    checked = 0
    for k, chip in enumerate(truth.chips):
        oy, ox = truth.meta["chips"][chip]["origin"]
        e = _electrons(path, chip, truth, dark=True)
        flat = truth.array(chip, "flat_g")
        e /= np.where(flat > 0.5, flat, np.nan)
        e -= rec["sky"]
        sat = truth.array(chip, f"{path.stem}/saturated")
        cr = truth.array(chip, f"{path.stem}/cosmic_rays")
        for i in np.flatnonzero((stars["chip"] == k) & (flux > 2e4)):
            y, x = round(float(stars["y"][i] - oy)), round(float(stars["x"][i] - ox))
            box = (slice(y - 7, y + 8), slice(x - 7, x + 8))
            if (
                y < 7
                or x < 7
                or y > truth.shape[0] - 8
                or x > truth.shape[1] - 8
                or sat[box].any()
                or cr[box].any()
                or np.isnan(e[box]).any()
            ):
                continue
            near = np.hypot(stars["y"] - stars["y"][i], stars["x"] - stars["x"][i]) < 20
            if near.sum() > 1:
                continue
            # noise: star and background Poisson, read noise, the overscan row medians
            bg = rec["sky"] + truth.array(chip, "dark_rate")[box].mean() * rec["exptime"]
            npx, rn2 = e[box].size, 1.1 * 8.0**2
            var = flux[i] + npx * (bg + rn2) + npx * 15 * (math.pi / 2) * rn2 / 16
            assert abs(e[box].sum() - flux[i]) < 5 * math.sqrt(var) + 0.01 * flux[i]
            checked += 1
    assert checked >= 3


# ---------------------------------------------------------------------------------------------
# truth API and arguments


def test_truth_api(night, truth):
    again = SimulatedNight.load(night.root)
    assert again == night
    assert truth.shape == (192, 160) and truth.chips == night.chips
    assert truth.meta["seed"] == 11 and truth.meta["size"] == "small"
    mask = truth.array("CCD3", "science_r_001/cosmic_rays")
    assert mask.dtype == bool and mask.shape == truth.shape
    assert truth.array("CCD3", "science_r_001/sky").shape == ()
    assert truth.array("CCD3", "dark_001/row_bias").shape == (2, 192)
    keys = set(truth.keys())
    assert {"CCD1/flat_g", "CCD1/bias_000/row_bias", "CCD2/dark_000/cosmic_rays"} <= keys
    assert len(truth.meta["stars"]) == truth.meta["n_stars"] == truth.stars()["x"].size
    with pytest.raises(ConfigError, match="no truth array"):
        truth.array("CCD1", "nonsense")
    with pytest.raises(ConfigError):
        truth.frame("bias_099")
    with pytest.raises(ConfigError):
        truth.amp("CCD1", "C")
    meta = json.loads(night.truth_path.read_text())
    assert [r["file"] for r in meta["frames"]] == [p.relative_to(night.root).as_posix() for p in night.all_files]


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("mine")
    (tmp_path / "raw" / ".keep").write_text("")
    kw = dict(chips=1, nbias=2, ndark=0, nflat=0, nscience=0)
    with pytest.raises(ConfigError, match="not empty"):
        simulate_night(tmp_path, **kw)
    n = simulate_night(tmp_path, overwrite=True, **kw)
    with pytest.raises(ConfigError, match="overwrite=True"):
        simulate_night(tmp_path, **kw)
    assert len(n.files["bias"]) == 2
    n = simulate_night(tmp_path, overwrite=True, **{**kw, "nbias": 1})
    names = sorted(p.name for p in n.raw_dir.iterdir())
    assert names == [".keep", "bias_000.fits", "notes.txt"]  # stale frames go, others stay
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chips": 0},
        {"chips": 2.0},
        {"chips": True},
        {"amps": 3},
        {"size": "huge"},
        {"nbias": -1},
        {"filters": "gr"},
        {"filters": ()},
        {"filters": ("g", "g")},
        {"filters": ("g_1",)},
        {"seed": -1},
        {"dark_exptime": 0},
        {"dark_exptime": float("nan")},
        {"science_exptime": ()},
        {"science_exptime": (60.0, -1.0)},
        {"overwrite": "yes"},
    ],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        simulate_night(tmp_path, **kwargs)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
