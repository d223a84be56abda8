"""Dark correction modes end to end: ``scale`` (one rate master) and ``nearest`` (the master of
the closest exposure time, within a tolerance), on simulated darks of two exposure times."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import PlanError
from ccdask.night._reduce import reduce
from ccdask.simulate._night import simulate_night


@pytest.fixture(scope="module")
def two_dark_night(tmp_path_factory):
    """One night, plus the darks of the same camera (same seed) taken at 60 s instead of 300 s."""
    root = tmp_path_factory.mktemp("darks")
    kw = dict(
        chips=1,
        amps=2,
        size="small",
        nbias=4,
        ndark=3,
        nflat=2,
        filters=("g",),
        nscience=1,
        seed=21,
        science_exptime=(60.0,),
    )
    night = simulate_night(root / "a", dark_exptime=300.0, **kw)
    other = simulate_night(root / "b", dark_exptime=60.0, **kw)
    for p in other.files["dark"]:
        shutil.copy(p, night.raw_dir / p.name.replace("dark_", "dark60_"))
    return night


def _sci(out, night):
    with fits.open(out / "reduced" / night.files["science"][0].name) as h:
        return h["SCI", 1].data.copy(), h["DQ", 1].data.copy()


def test_nearest_mode_uses_the_closest_exposure_time(two_dark_night, tmp_path):
    night = two_dark_night
    cfg = {"dark": {"mode": "nearest", "tolerance": 1.0}, "cosmics": {"method": "none"}}
    result = reduce(night.raw_dir, tmp_path / "nearest", client="threads", config=cfg)
    assert sorted(p.rsplit("/", 1)[1] for p in result.masters.values() if "dark" in p) == [
        "dark_300s.fits",
        "dark_60s.fits",
    ]
    truth = night.truth()
    hot = truth.array("CCD1", "hot_pixels")
    for name, t in (("dark_60s.fits", 60.0), ("dark_300s.fits", 300.0)):
        with fits.open(tmp_path / "nearest" / "masters" / name) as h:
            assert h["CCD1"].header["NCOMBINE"] == 3
            ratio = h["CCD1"].data[hot] / truth.array("CCD1", "dark_rate")[hot]
            assert abs(np.median(ratio) - 1) < 0.06, (name, t)
    # the science frame (60 s) was corrected with the 60 s master: its HISTORY names it
    with fits.open(tmp_path / "nearest" / "reduced" / night.files["science"][0].name) as h:
        hist = "\n".join(h["SCI", 1].header["HISTORY"])
        assert "dark: dark CCD1 (3 frames) x 60 s" in hist
        keys = "\n".join(h[0].header["HISTORY"])
    with fits.open(tmp_path / "nearest" / "masters" / "dark_60s.fits") as h:
        assert h["CCD1"].header["CACHEKEY"] in keys
    # the dark current of hot pixels is removed as well as with the scaled rate master (they
    # stay flagged bad, DQ bit 1, from the dark master; nothing else may be set)
    scaled = reduce(night.raw_dir, tmp_path / "scale", client="threads", config={"cosmics": {"method": "none"}})
    assert scaled.masters["dark"].endswith("dark.fits")
    a, dqa = _sci(tmp_path / "nearest", night)
    b, dqb = _sci(tmp_path / "scale", night)
    good = ((dqa & ~1) == 0) & ((dqb & ~1) == 0) & hot
    assert np.all(dqa[hot] & 1) and good.sum() > 10
    sky = truth.frame(night.files["science"][0].stem)["sky"]
    assert abs(np.median(a[good]) - sky) < 0.1 * sky and abs(np.median(b[good]) - sky) < 0.1 * sky


def test_nearest_mode_without_a_close_dark_is_a_plan_error(two_dark_night, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(two_dark_night.raw_dir, raw)
    for p in raw.glob("dark60_*.fits"):
        p.unlink()

    def no_compute(*a, **k):
        raise AssertionError("computed before the plan was validated")

    with pytest.raises(PlanError, match=r"no dark within 1 s of its exposure time 60 s.*300"):
        reduce(raw, tmp_path / "out", client=no_compute, config={"dark": {"mode": "nearest", "tolerance": 1.0}})
