"""The night pipeline end to end on a simulated night: layout, numbers against the injected
truth, cache reuse, resume, plan errors before computing, and scheduler independence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask import dq as DQ
from ccdask.errors import PlanError
from ccdask.night._reduce import reduce
from tests.helpers import raising_scheduler


@pytest.fixture(scope="module")
def night(sim_night):
    return sim_night(chips=2, amps=2, size="small", nbias=6, ndark=3, nflat=4, filters=("g", "r"), nscience=1, seed=11)


@pytest.fixture(scope="module")
def reduced(night, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = reduce(night.raw_dir, out, client="threads")
    return out, result


def test_output_layout_and_headers(night, reduced):
    out, _result = reduced
    names = sorted(p.name for p in (out / "reduced").iterdir())
    assert names == sorted(f"{p.name}" for p in night.files["science"])
    assert sorted(p.name for p in (out / "masters").iterdir()) == [
        "bias.fits",
        "dark.fits",
        "flat_g.fits",
        "flat_r.fits",
    ]
    assert not list(out.rglob(".tmp-*"))
    with fits.open(out / "reduced" / names[0], checksum=True) as h:
        assert [(x.name, x.ver) for x in h[1:]] == [
            ("SCI", 1),
            ("VAR", 1),
            ("DQ", 1),
            ("SCI", 2),
            ("VAR", 2),
            ("DQ", 2),
        ]
        assert h["SCI", 2].header["CCDNAME"] == "CCD2"
        assert h["SCI", 1].data.dtype.kind == "f" and h["SCI", 1].data.dtype.itemsize == 4
        assert h["SCI", 1].header["BUNIT"] == "electron"
        assert h[0].header["CCDASKV"] and len(h[0].header["CCDKEY"]) == 24
        hist = "\n".join(h["SCI", 1].header["HISTORY"])
        for step in ("overscan", "trim+gain", "bias", "dark", "flat", "cosmics"):
            assert step in hist
    with fits.open(out / "masters" / "bias.fits") as h:
        assert [x.name for x in h[1:]] == ["CCD1", "CCD1_COUNT", "CCD1_VAR", "CCD2", "CCD2_COUNT", "CCD2_VAR"]
        assert h["CCD1"].header["NCOMBINE"] == 6
        assert h["CCD1_COUNT"].data.max() <= 6
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["inputs"]) == 2 * len(night.all_files)
    assert {m["kind"] for m in man["masters"]} == {"bias", "dark", "flat"}
    assert man["parameters"]["bias"]["combine"]["method"] == "mean"
    assert (out / "qa" / "stats.ecsv").exists() and len(list((out / "qa").glob("*.png"))) == len(names) + 4
    # the cosmic-ray figures per chip-frame: hits as the connected groups of the written DQ bit 4
    from astropy.table import Table
    from scipy import ndimage

    stats = Table.read(out / "qa" / "stats.ecsv")
    assert {"cosmic_hits", "seeing_fwhm", "source_flagged"} <= set(stats.colnames)
    row = stats[(stats["file"] == names[0]) & (stats["chip"] == "CCD1")][0]
    with fits.open(out / "reduced" / names[0]) as h:
        cr = (h["DQ", 1].data & DQ.COSMIC) != 0
    assert row["cosmic_hits"] == ndimage.label(cr, np.ones((3, 3), bool))[1] > 0
    assert np.isnan(row["source_flagged"]) or 0 <= row["source_flagged"] < 0.05


def _amp_gains(truth, chip):
    amps = truth.meta["chips"][chip]["amps"]
    gain = np.empty(truth.shape, np.float64)
    for a in amps.values():
        gain[:, a["columns"][0] : a["columns"][1]] = a["gain"]
    return gain


def test_masters_recover_the_truth(night, reduced):
    out, _ = reduced
    truth = night.truth()
    with (
        fits.open(out / "masters" / "bias.fits") as hb,
        fits.open(out / "masters" / "dark.fits") as hd,
        fits.open(out / "masters" / "flat_g.fits") as hf,
    ):
        levels = {}
        for chip in night.chips:
            gain = _amp_gains(truth, chip)
            pattern_e = truth.array(chip, "bias_pattern") * gain
            resid = hb[chip].data - pattern_e
            # the overscan removes the level: what remains is the pattern, up to a constant per amp
            # (the mean of the pattern itself along each row is not in the overscan)
            rn = max(a["rdnoise"] for a in truth.meta["chips"][chip]["amps"].values())
            assert np.std(resid - np.median(resid)) < 1.5 * rn / np.sqrt(6)
            hot = truth.array(chip, "hot_pixels")
            rate = truth.array(chip, "dark_rate")
            ratio = hd[chip].data[hot] / rate[hot]
            assert abs(np.median(ratio) - 1) < 0.05
            flat_truth = truth.array(chip, "flat_g")
            good = ~truth.array(chip, "bad_pixels")
            rel = hf[chip].data[good] / flat_truth[good]
            assert abs(np.median(rel) - 1) < 0.01
            # photon limit of 4 flats of >= 15000 e- each
            assert np.std(rel) < 2.0 / np.sqrt(4 * 15000) * 3
            levels[chip] = np.median(hf[chip].data[good])
        sens = {c: truth.meta["chips"][c]["sensitivity"] for c in night.chips}
        c1, c2 = night.chips
        assert levels[c1] / levels[c2] == pytest.approx(sens[c1] / sens[c2], rel=0.03)


def test_science_matches_sky_and_variance_is_consistent(night, reduced):
    out, _ = reduced
    truth = night.truth()
    stars = truth.stars()
    chi2 = []
    for path in night.files["science"]:
        name = path.name.removesuffix(".fits")
        info = truth.frame(name)
        with fits.open(out / "reduced" / path.name) as h:
            for k, chip in enumerate(night.chips, start=1):
                sci, var, dqa = h["SCI", k].data, h["VAR", k].data, h["DQ", k].data
                ny, nx = sci.shape
                yy, xx = np.mgrid[:ny, :nx]
                away = np.ones(sci.shape, bool)
                sel = stars["chip"] == k - 1
                for y, x in zip(stars["y"][sel], stars["x"][sel], strict=True):
                    away &= (yy - y) ** 2 + (xx - x) ** 2 > (4 * info["fwhm"]) ** 2
                use = away & (dqa == 0) & ~truth.array(chip, "bad_pixels")
                assert use.sum() > 0.5 * sci.size
                d = sci[use] - info["sky"]
                assert abs(np.median(d)) < 3 * np.sqrt(info["sky"]) / np.sqrt(use.sum()) + 0.01 * info["sky"]
                chi2.append(d**2 / var[use])
                cr = truth.array(chip, f"{name}/cosmic_rays")
                if cr.sum():
                    assert (dqa[cr] & DQ.COSMIC).mean() > 0.5
                sat = truth.array(chip, f"{name}/saturated")
                assert np.all(dqa[sat] & DQ.SATURATED)
                assert np.all(np.isfinite(sci) | (dqa & DQ.NODATA).astype(bool))
    assert np.median(np.concatenate(chi2)) == pytest.approx(0.455, abs=0.06)


def test_rerun_reuses_masters_and_skips_outputs(night, reduced, tmp_path):
    out, first = reduced
    assert any(k.startswith("combine-") for k in first.stages["bias"]["task_groups"])
    again = reduce(night.raw_dir, out, client="threads")
    for stage in ("bias", "dark", "flat-g", "flat-r"):
        assert again.stages[stage]["built"] == 0 and again.stages[stage]["cached"] > 0
    assert not any(k.startswith("combine-") for st in again.stages.values() for k in st.get("task_groups", {}))
    assert sorted(again.skipped) == sorted(first.outputs) and again.outputs == []


def test_resume_after_lost_output(night, reduced, tmp_path):
    out, first = reduced
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    victim = Path(first.outputs[0].replace(str(out), str(copy)))
    reference = victim.read_bytes()
    victim.unlink()
    again = reduce(night.raw_dir, copy, client="threads")
    assert again.outputs == [str(victim)]
    with fits.open(victim) as a, fits.open(out / "reduced" / victim.name) as b:
        for x, y in zip(a[1:], b[1:], strict=True):
            assert np.array_equal(x.data, y.data, equal_nan=True)
    assert len(reference) == victim.stat().st_size


def test_missing_flat_is_a_plan_error_before_computing(night, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(night.raw_dir, raw)
    for p in raw.glob("flat_r_*.fits"):
        p.unlink()
    with pytest.raises(PlanError, match=r"no flat for filter 'r' on chip CCD1"):
        reduce(raw, tmp_path / "out", client=raising_scheduler)
    assert not (tmp_path / "out").exists()


def test_missing_exptime_is_a_plan_error_naming_file_and_keyword(night, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(night.raw_dir, raw)
    victim = raw / night.files["science"][0].name
    with fits.open(victim, mode="update") as h:
        del h[0].header["EXPTIME"]
    with pytest.raises(PlanError, match=rf"{victim.name}.*EXPTIME"):
        reduce(raw, tmp_path / "out", client=raising_scheduler)


def test_overscan_level_and_noise_are_recorded(night, reduced):
    """Each reduced chip records its amplifiers' measured overscan level and noise (raw ADU)."""
    import re

    out, _ = reduced
    truth = night.truth()
    path = night.files["science"][0]
    name = path.name.removesuffix(".fits")
    with fits.open(out / "reduced" / path.name) as h:
        hist = "\n".join(h["SCI", 1].header["HISTORY"])
    rows = truth.array("CCD1", f"{name}/row_bias")  # (amps, rows): the injected level per row
    amps = truth.meta["chips"]["CCD1"]["amps"]
    for k, amp in enumerate(amps):
        m = re.search(rf"overscan {amp}: level ([0-9.]+) ADU, noise ([0-9.]+) ADU", hist)
        assert m, hist
        level, noise = float(m.group(1)), float(m.group(2))
        assert level == pytest.approx(rows[k].mean(), abs=0.5)
        assert noise == pytest.approx(amps[amp]["rdnoise_adu"], rel=0.15)
