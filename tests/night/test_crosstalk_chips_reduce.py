"""A night with crosstalk within and between chips, reduced with the coefficients from a file and
from the instrument profile: both equal (bitwise) and equal to the night simulated without
crosstalk to the noise; the coefficients are part of the masters' cache keys."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask import reduce
from ccdask.calibrate._crosstalk import profile_crosstalk
from ccdask.errors import ConfigError, ProfileError
from ccdask.profiles import load_profile
from ccdask.simulate import simulate_night

INTRA = {("A", "B"): 4.0e-4}
INTER = {
    (("CCD1", "A"), ("CCD2", "A")): 3.0e-4,
    (("CCD1", "B"), ("CCD2", "A")): -2.0e-4,
    (("CCD2", "B"), ("CCD1", "A")): 5.0e-4,
}
NIGHT = {"chips": 2, "nbias": 3, "ndark": 2, "nflat": 3, "filters": ("r",), "nscience": 2, "seed": 21}


def _terms() -> str:
    text = "".join(f"[[crosstalk]]\nsource = '{s}'\nvictim = '{v}'\nlinear = {c!r}\n\n" for (s, v), c in INTRA.items())
    return text + "".join(
        f"[[crosstalk]]\nchip = '{vc}'\nsource_chip = '{sc}'\nsource = '{sa}'\nvictim = '{va}'\nlinear = {c!r}\n\n"
        for ((sc, sa), (vc, va)), c in INTER.items()
    )


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtalk-night")
    (root / "tables").mkdir()
    xt = root / "tables" / "xt.toml"
    xt.write_text(_terms())
    prof = root / "tables" / "simcam_xt.toml"  # the coefficients by a path relative to the profile
    prof.write_text(
        "name = 'simcam_xt'\ndescription = 'SIMCAM with crosstalk'\n\n[crosstalk]\napply = true\nfile = 'xt.toml'\n"
    )
    plain = simulate_night(root / "plain", **NIGHT)
    marked = simulate_night(root / "marked", crosstalk=INTRA, crosstalk_chips=INTER, **NIGHT)
    cache = root / "cache.zarr"
    out = {"plain": reduce(plain.raw_dir, root / "out-plain", client="threads")}
    out["profile"] = reduce(
        marked.raw_dir, root / "out-profile", config={"profile": str(prof)}, cache=cache, client="threads"
    )
    out["file"] = reduce(
        marked.raw_dir, root / "out-file", config={"crosstalk": {"file": str(xt)}}, cache=cache, client="threads"
    )
    out["off"] = reduce(
        marked.raw_dir,
        root / "out-off",
        config={"profile": str(prof), "crosstalk": {"profile": False}},
        cache=cache,
        client="threads",
    )
    return out, prof


def _sci(result):
    out = {}
    for path in sorted(result.outputs):
        with fits.open(path) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    out[(path.rsplit("/", 1)[-1], h.header["CCDNAME"])] = (
                        h.data.astype(np.float64),
                        hdul["VAR", h.ver].data.astype(np.float64),
                        hdul["DQ", h.ver].data,
                        h.header,
                    )
    return out


def test_profile_route_equals_file_route_bitwise(nights):
    results, _ = nights
    prof, file = _sci(results["profile"]), _sci(results["file"])
    assert prof.keys() == file.keys() and len(prof) == 4
    for key in prof:
        for a, b in zip(prof[key][:3], file[key][:3], strict=True):
            np.testing.assert_array_equal(a, b)
    # the masters' keys carry the coefficients, not where they came from: the file route found
    # every master the profile route built; with the profile's table turned off, none of them
    for stage in ("bias", "dark", "flat-r"):
        assert results["profile"].stages[stage]["built"] > 0
        assert results["file"].stages[stage]["built"] == 0
        assert results["off"].stages[stage]["built"] > 0


def test_corrected_night_equals_the_night_without_crosstalk(nights):
    results, _ = nights
    plain, corrected, uncorrected = (_sci(results[k]) for k in ("plain", "profile", "off"))
    assert plain.keys() == corrected.keys() == uncorrected.keys()
    for key, (sci, var, dq, _) in plain.items():
        good = (dq == 0) & (corrected[key][2] == 0) & (uncorrected[key][2] == 0)
        noise = float(np.median(np.sqrt(var[good])))
        diff = corrected[key][0][good] - sci[good]
        raw = uncorrected[key][0][good] - sci[good]
        # left: the rounding of the two nights' raw values and of the injected ghosts
        assert abs(float(np.median(diff))) < 0.02 * noise
        assert float(np.std(diff)) < 0.1 * noise
        # uncorrected, the bright stars of the other amplifiers and chips leave ghosts: many
        # pixels off by half the noise or more, against a few once corrected (bright star pixels
        # where the three flats' clipped stack rejected differently, a cosmic-ray hit in one
        # flat: the two nights' master flats differ there by 0.2-1 %, with or without crosstalk)
        off = int((np.abs(diff) > 0.5 * noise).sum())
        assert off <= 5 and int((np.abs(raw) > 0.5 * noise).sum()) > 10 * max(off, 3)
        assert float(np.std(raw)) > 3 * float(np.std(diff))


def test_history_names_the_inter_chip_terms(nights):
    results, _ = nights
    for (_name, chip), (_s, _v, _d, header) in _sci(results["profile"]).items():
        history = "\n".join(str(h) for h in header["HISTORY"])
        assert "crosstalk: xt.toml" in history
        if chip == "CCD1":
            assert "CCD2:B->A 0.0005" in history
    for _s, _v, _d, header in _sci(results["off"]).values():
        assert "crosstalk" not in "\n".join(str(h) for h in header["HISTORY"])


def test_inline_profile_terms_equal_the_file(nights, tmp_path):
    _, prof = nights
    inline = tmp_path / "inline.toml"
    inline.write_text(
        "name = 'inline'\n\n[crosstalk]\napply = true\n\n" + _terms().replace("[[crosstalk]]", "[[crosstalk.terms]]")
    )
    assert profile_crosstalk(load_profile(inline)).to_dict() == profile_crosstalk(load_profile(prof)).to_dict()
    assert load_profile(inline).crosstalk_apply


def test_bad_profile_tables_fail_clearly(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'bad'\n\n[crosstalk]\napply = true\n\n[[crosstalk.terms]]\nsource = 'A'\nvictim = 'B'\n")
    prof = load_profile(bad)  # loads (cataloguing reads every profile); the terms are parsed on use
    with pytest.raises(ProfileError, match=r"bad\.toml.*no 'linear'"):
        profile_crosstalk(prof)
    both = tmp_path / "both.toml"
    both.write_text("name = 'both'\n\n[crosstalk]\nfile = 'x.toml'\nterms = []\n")
    with pytest.raises(ProfileError, match=r"both\.toml.*either file"):
        load_profile(both)
    missing = tmp_path / "missing.toml"
    missing.write_text("name = 'missing'\n\n[crosstalk]\nfile = 'nowhere.toml'\n")
    with pytest.raises(ProfileError, match=r"nowhere\.toml"):
        load_profile(missing)


def test_a_file_naming_a_chip_the_night_lacks_fails_before_any_task(tmp_path):
    night = simulate_night(tmp_path / "n", chips=2, nbias=1, ndark=0, nflat=0, nscience=1, filters=("r",), seed=3)
    xt = tmp_path / "wrong.toml"
    xt.write_text("[[crosstalk]]\nchip = 'CCD2'\nsource_chip = 'CCD5'\nsource = 'A'\nvictim = 'A'\nlinear = 1e-4\n")
    with pytest.raises(ConfigError, match=r"wrong\.toml.*source chip 'CCD5'"):
        reduce(
            night.raw_dir,
            tmp_path / "out",
            config={"crosstalk": {"file": str(xt)}, "flat": {"enabled": False}},
            client="sync",
        )
    assert not (tmp_path / "out" / "reduced").exists() or not list((tmp_path / "out" / "reduced").iterdir())
