"""Instrument profiles: image-type vocabulary and rules, amplifier layouts from headers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import ProfileError, SectionError
from ccdask.profiles import Profile, available_profiles, load_profile
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.profiles._profile import detect_profile
from ccdask.sections import Section


def header(**cards) -> fits.Header:
    h = fits.Header()
    for k, v in cards.items():
        h[k.replace("_", "-") if k == "DATE_OBS" else k] = v
    return h


def test_shipped_profiles_load():
    names = available_profiles()
    assert {"generic", "wht_isis_red", "shane_kast_blue"} <= set(names)
    for name in names:
        assert load_profile(name).name == name


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        ({"IMAGETYP": "zero"}, "bias"),
        ({"IMAGETYP": "BIAS"}, "bias"),
        ({"IMAGETYP": "Dark", "EXPTIME": 300.0}, "dark"),
        ({"OBSTYPE": "DARK", "EXPTIME": 0}, "bias"),
        ({"IMAGETYP": "Dome Flat"}, "flat"),
        ({"IMAGETYP": "domeflat"}, "flat"),
        ({"IMAGETYP": "flatfield"}, "flat"),
        ({"IMAGETYP": "sky_flat"}, "flat"),
        ({"IMAGETYP": "twilight"}, "flat"),
        ({"IMAGETYP": "Light Frame"}, "science"),
        ({"IMAGETYP": "Bias Frame"}, "bias"),
        ({"IMAGETYP": "light"}, "science"),
        ({"IMAGETYP": "OBJECT"}, "science"),
        ({"OBSTYPE": "target"}, "science"),
        ({"IMAGETYP": "focus"}, "other"),
        ({}, "other"),
    ],
)
def test_generic_vocabulary(cards, expected):
    assert load_profile("generic").classify(header(**cards)).imagetyp == expected


def test_generic_two_amplifier_layout():
    h = header(
        DATASECA="[17:96,1:192]",
        DATASECB="[97:176,1:192]",
        BIASSECA="[1:16,1:192]",
        BIASSECB="[177:192,1:192]",
        GAINA=1.5,
        GAINB=2.0,
        RDNOISEA=4.0,
        RDNOISEB=5.0,
        SATURATA=60000.0,
        SATURATB=61000.0,
    )
    lay = load_profile("generic").chip_layout(h, (192, 192), chip="CCD1")
    a, b = lay.amplifiers
    assert lay.trimmed_shape == (192, 160)
    assert (a.gain, b.gain, a.rdnoise, b.rdnoise, a.saturate, b.saturate) == (1.5, 2.0, 4.0, 5.0, 60000.0, 61000.0)
    assert a.overscan_axis == b.overscan_axis == "serial"
    assert a.ccdsec.slices == (slice(0, 192, 1), slice(0, 80, 1))
    assert b.ccdsec.slices == (slice(0, 192, 1), slice(80, 160, 1))


def test_layout_rejects_out_of_bounds_section_naming_file():
    h = header(DATASEC="[1:100,1:50]", BIASSEC="[101:120,1:50]")
    with pytest.raises(ProfileError) as info:
        load_profile("generic").chip_layout(h, (50, 110), chip="X", path="frame.fits", hdu=0)
    assert "frame.fits[0]" in str(info.value) and "BIASSEC" in str(info.value)


def test_layout_must_tile_the_chip():
    d = Section.parse("[1:10,1:10]").validate((10, 30))
    amp1 = Amplifier("A", d, Section.parse("[1:10,1:10]").validate((10, 10)))
    amp2 = Amplifier("B", d, Section.parse("[1:10,1:10]").validate((10, 10)))
    with pytest.raises(ProfileError, match="tile"):
        ChipLayout("C", (10, 30), (amp1, amp2))


def test_ambiguous_overscan_needs_axis():
    with pytest.raises(ProfileError, match="serial or parallel"):
        Amplifier(
            "A",
            Section.parse("[1:10,1:10]").validate((20, 20)),
            Section.parse("[1:10,1:10]").validate((20, 20)),
            biassec=Section.parse("[11:20,11:20]").validate((20, 20)),
        )


def test_profile_schema_errors_name_the_source():
    with pytest.raises(ProfileError, match=r"mine\.toml"):
        Profile.from_dict({"name": "x", "imagetyp": {"flatt": ["f"]}}, source="mine.toml")
    with pytest.raises(ProfileError, match="unknown top-level"):
        Profile.from_dict({"name": "x", "keywrds": {}}, source="mine.toml")
    with pytest.raises(ProfileError):
        load_profile("no_such_camera")


def test_user_profile_from_toml(tmp_path):
    path = tmp_path / "mycam.toml"
    path.write_text(
        'name = "mycam"\n[keywords]\nexptime = "EXPOSURE"\n'
        '[[rules]]\nimagetyp = "flat"\nlabel = "sky flat"\nwhen = { OBJECT = "(?i)twi.*" }\n'
        '[layout]\nsource = "profile"\n[[layout.amplifiers]]\nname = "A"\n'
        'datasec = "[1:8,1:6]"\nbiassec = "[9:10,1:6]"\ngain = 2.5\nrdnoise = "RON"\n'
    )
    prof = load_profile(path)
    h = header(OBJECT="twilight g", IMAGETYP="object", EXPOSURE=3.0, RON=4.2)
    cls = prof.classify(h)
    assert (cls.imagetyp, cls.label, prof.exptime(h)) == ("flat", "sky flat", 3.0)
    lay = prof.chip_layout(h, (6, 10), chip="A")
    assert lay.amplifiers[0].rdnoise == 4.2 and lay.amplifiers[0].gain == 2.5
    # vocabulary inherited from generic
    assert prof.classify(header(IMAGETYP="zero")).imagetyp == "bias"


def test_real_isis_headers(isis_dir):
    h0 = fits.getheader(isis_dir / "r2700982.fit.gz", 0)
    h1 = fits.getheader(isis_dir / "r2700982.fit.gz", 1)
    merged = h0.copy()
    merged.update(h1)
    prof = detect_profile(merged)
    assert prof.name == "wht_isis_red"
    assert prof.classify(merged).imagetyp == "bias"
    lay = prof.chip_layout(merged, (4200, 966), chip="REDPLUS")
    (amp,) = lay.amplifiers
    assert amp.overscan_axis == "parallel" and amp.gain == 0.98 and amp.rdnoise == 4.0
    assert lay.trimmed_shape == (4096, 966)
    arc = fits.getheader(isis_dir / "r2701247.fit.gz", 0)
    assert prof.classify(arc).label == "arc"
    sci = fits.getheader(isis_dir / "r2701242.fit.gz", 0)
    assert prof.classify(sci).imagetyp == "science"


def test_real_kast_headers(kast_dir):
    bias = fits.getheader(kast_dir / "b21.fits.gz")
    prof = detect_profile(bias)
    assert prof.name == "shane_kast_blue"
    assert prof.classify(bias).imagetyp == "bias"
    assert prof.classify(fits.getheader(kast_dir / "b11.fits.gz")).imagetyp == "flat"
    assert prof.classify(fits.getheader(kast_dir / "b1.fits.gz")).label == "arc"
    assert prof.classify(fits.getheader(kast_dir / "b27.fits.gz")).imagetyp == "science"
    lay = prof.chip_layout(bias, (350, 2112), chip="KAST")
    assert [a.overscan_axis for a in lay.amplifiers] == ["serial", "serial"]
    assert lay.trimmed_shape == (350, 2048)
    # the two overscans and the data cover the whole raw frame exactly once
    cover = np.zeros((350, 2112), int)
    for a in lay.amplifiers:
        cover[a.datasec.slices] += 1
        cover[a.biassec.slices] += 1
    assert cover.min() == 1 and cover.max() == 1


def test_real_saao_header_with_generic(saao_dir):
    h = fits.getheader(saao_dir / "a8280271.fits")
    prof = detect_profile(h)
    assert prof.name == "generic"
    lay = prof.chip_layout(h, (520, 536), chip="STE3")
    (amp,) = lay.amplifiers
    assert str(amp.datasec) == "[17:528,1:520]" and str(amp.biassec) == "[4:13,1:520]"
    assert amp.overscan_axis == "serial" and amp.gain == 1.9 and amp.rdnoise == 5.0


def test_section_error_is_value_error():
    assert issubclass(SectionError, ValueError)
