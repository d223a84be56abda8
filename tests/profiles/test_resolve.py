"""The layout resolver: placement rules, flips, binning, keyword families and contradictions.

Headers here are written by hand from the keyword conventions (IRAF/NOAO DATASEC/BIASSEC/
CCDSEC/DETSEC, IRAF quadformat DSECnn/BSECnn/CSECnn, Subaru T_ ranges, ESO DET OUTi sizes);
expected sections are worked out by hand in the comments. Real headers: test_real_cameras.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import assemble
from ccdask.errors import ProfileError
from ccdask.profiles import Profile, load_profile

GENERIC = load_profile("generic")


def header(**cards) -> fits.Header:
    h = fits.Header()
    for k, v in cards.items():
        h[k.replace("__", " ")] = v
    return h


def secs(layout):
    return {a.name: (str(a.datasec), str(a.ccdsec)) for a in layout.amplifiers}


def test_overscans_between_the_amplifiers_are_packed_out():
    """The issue's layout: A data | A overscan | B overscan | B data, no CCDSECA/B."""
    h = header(
        DATASECA="[1:256,1:512]",
        BIASSECA="[257:280,1:512]",
        BIASSECB="[281:304,1:512]",
        DATASECB="[305:560,1:512]",
        GAINA=1.5,
        GAINB=2.5,
        RDNOISEA=3.0,
        RDNOISEB=4.0,
        SATURATA=60000.0,
        SATURATB=61000.0,
        DETSEC="[513:1024,1:512]",
    )
    lay = GENERIC.chip_layout(h, (512, 560), chip="C1")
    assert lay.trimmed_shape == (512, 512)
    assert secs(lay) == {"A": ("[1:256,1:512]", "[1:256,1:512]"), "B": ("[305:560,1:512]", "[257:512,1:512]")}
    a, b = lay.amplifiers
    assert (a.gain, b.gain, a.rdnoise, b.rdnoise, a.saturate, b.saturate) == (1.5, 2.5, 3.0, 4.0, 60000.0, 61000.0)
    assert str(a.biassec) == "[257:280,1:512]" and a.overscan_axis == b.overscan_axis == "serial"
    assert str(lay.detsec) == "[513:1024,1:512]"
    # a DETSEC of another size contradicts the assembled chip
    h["DETSEC"] = "[513:1000,1:512]"
    with pytest.raises(ProfileError, match=r"night\.fits\[2\]: .*DETSEC='\[513:1000,1:512\]' spans 488 pixels along x"):
        GENERIC.chip_layout(h, (512, 560), chip="C1", path="night.fits", hdu=2)


def test_ccdsec_places_reordered_and_flipped_amplifiers():
    # raw: B's data first, then A's; CCDSEC puts A on the left; B reads right to left
    h = header(
        DATASECA="[101:200,1:50]",
        CCDSECA="[1:100,1:50]",
        BIASSECA="[201:210,1:50]",
        DATASECB="[1:100,1:50]",
        CCDSECB="[200:101,1:50]",
        BIASSECB="[211:220,1:50]",
        CCDSEC="[1:200,1:50]",
    )
    lay = GENERIC.chip_layout(h, (50, 220), chip="C")
    assert secs(lay) == {"A": ("[101:200,1:50]", "[1:100,1:50]"), "B": ("[100:1,1:50]", "[101:200,1:50]")}
    raw = np.arange(50 * 220, dtype=np.float32).reshape(50, 220)
    out = assemble(raw, lay).compute()
    np.testing.assert_array_equal(out[:, :100], raw[:, 100:200])
    np.testing.assert_array_equal(out[:, 100:], raw[:, 99::-1])
    # the old rule (shift by the smallest origin) would have put B on the left, unflipped
    h["CCDSEC"] = "[1:201,1:50]"
    with pytest.raises(ProfileError, match=r"CCDSECs cover \[1:200,1:50\] but the chip's CCDSEC='\[1:201,1:50\]'"):
        GENERIC.chip_layout(h, (50, 220), chip="C")


def test_detsec_relative_to_the_chip_flips_and_orients_the_chip():
    # Rubin-like: two amplifiers stored in readout order, DETSEC says the right one is x-flipped
    h = header(
        DATASECA="[1:40,1:30]",
        DETSECA="[101:140,201:230]",
        BIASSECA="[41:48,1:30]",
        DATASECB="[49:88,1:30]",
        DETSECB="[180:141,230:201]",
        BIASSECB="[89:96,1:30]",
        DETSEC="[101:180,201:230]",
    )
    lay = GENERIC.chip_layout(h, (30, 96), chip="C")
    assert secs(lay) == {"A": ("[1:40,1:30]", "[1:40,1:30]"), "B": ("[88:49,30:1]", "[41:80,1:30]")}
    assert str(lay.detsec) == "[101:180,201:230]"
    # one amplifier per extension: its own DETSEC flips it; the chip is then forward
    one = header(DATASEC="[4:512,1:2000]", DETSEC="[1018:510,1:2000]", BIASSEC="[513:576,1:2000]")
    lay = GENERIC.chip_layout(one, (2048, 576), chip="Segment11")
    (amp,) = lay.amplifiers
    assert (str(amp.datasec), str(amp.ccdsec), str(lay.detsec)) == (
        "[512:4,1:2000]",
        "[1:509,1:2000]",
        "[510:1018,1:2000]",
    )
    h["DETSEC"] = "[101:181,201:230]"
    with pytest.raises(ProfileError, match="DETSECs cover"):
        GENERIC.chip_layout(h, (30, 96), chip="C")


def test_binned_data_with_unbinned_ccdsec_and_detsec():
    # GMOS-like, 2x2: 512 binned columns are 1024 unbinned CCD columns
    h = header(
        DATASECA="[1:512,1:100]",
        BIASSECA="[513:544,1:100]",
        CCDSECA="[1:1024,1:200]",
        DATASECB="[577:1088,1:100]",
        BIASSECB="[545:576,1:100]",
        CCDSECB="[1025:2048,1:200]",
        CCDSUM="2 2",
        DETSEC="[2049:4096,1:200]",
    )
    lay = GENERIC.chip_layout(h, (100, 1088), chip="C")
    assert secs(lay) == {"A": ("[1:512,1:100]", "[1:512,1:100]"), "B": ("[577:1088,1:100]", "[513:1024,1:100]")}
    h["CCDSUM"] = "4 4"
    with pytest.raises(
        ProfileError,
        match=r"CCDSECA='\[1:1024,1:200\]' spans 1024 pixels along x but "
        r"DATASECA='\[1:512,1:100\]' has 512 \(CCDSUM='4 4': 512 x 4 = 2048\)",
    ):
        GENERIC.chip_layout(h, (100, 1088), chip="C")
    # a placement not on a bin boundary
    h["CCDSUM"] = "2 2"
    h["CCDSECB"] = "[1026:2049,1:200]"
    with pytest.raises(ProfileError, match="not a whole number of 2-pixel bins"):
        GENERIC.chip_layout(h, (100, 1088), chip="C")


def test_contradictions_name_file_extension_keywords_and_values():
    h = header(DATASECA="[1:100,1:50]", DATASECB="[101:200,1:50]", DATASEC="[1:150,1:50]")
    with pytest.raises(
        ProfileError,
        match=r"f\.fits\[3\]: the chip's DATASEC='\[1:150,1:50\]' is 50x150 but "
        r"its amplifiers' data sections assemble to 50x200",
    ):
        GENERIC.chip_layout(h, (50, 200), chip="C", path="f.fits", hdu=3)
    partial = header(DATASECA="[1:100,1:50]", DATASECB="[101:200,1:50]", CCDSECA="[1:100,1:50]")
    with pytest.raises(ProfileError, match=r"only some amplifiers are placed \(CCDSEC of A\); B lack"):
        GENERIC.chip_layout(partial, (50, 200), chip="C")
    overlap = header(DATASECA="[1:120,1:50]", DATASECB="[101:200,1:50]")
    with pytest.raises(ProfileError, match="amplifiers A and B overlap in part along x"):
        GENERIC.chip_layout(overlap, (50, 200), chip="C")
    wrong = header(DATASECA="[1:100,1:50]", CCDSECA="[1:90,1:50]", DATASECB="[101:200,1:50]", CCDSECB="[91:190,1:50]")
    with pytest.raises(
        ProfileError,
        match=r"amplifier A: CCDSECA='\[1:90,1:50\]' spans 90 pixels along x but "
        r"DATASECA='\[1:100,1:50\]' has 100",
    ):
        GENERIC.chip_layout(wrong, (50, 200), chip="C")
    holes = header(DATASECA="[1:100,1:50]", CCDSECA="[1:100,1:50]", DATASECB="[101:200,1:50]", CCDSECB="[151:250,1:50]")
    with pytest.raises(ProfileError, match=r"cover 10000 of the 50x250 pixels"):
        GENERIC.chip_layout(holes, (50, 200), chip="C")
    bad_value = header(DATASECA="[1:100,1:50]", DATASECB="[101:200,1:50]", GAINB="high")
    with pytest.raises(ProfileError, match=r"GAINB='high' is not a number"):
        GENERIC.chip_layout(bad_value, (50, 200), chip="C")


def test_trim_sections_crop_the_placement():
    # CCDSECB describes B's whole data section, read flipped; TRIMSECB drops raw columns 101-110,
    # which land on the chip's columns 191-200 (the outer edge)
    h = header(
        DATASECA="[1:100,1:50]",
        CCDSECA="[1:100,1:50]",
        DATASECB="[101:200,1:50]",
        CCDSECB="[200:101,1:50]",
        TRIMSECB="[111:200,1:50]",
    )
    lay = GENERIC.chip_layout(h, (50, 200), chip="C")
    assert secs(lay) == {"A": ("[1:100,1:50]", "[1:100,1:50]"), "B": ("[200:111,1:50]", "[101:190,1:50]")}
    # dropping raw 191-200 instead cuts chip columns 101-110: a hole between A and B
    h["TRIMSECB"] = "[101:190,1:50]"
    with pytest.raises(ProfileError, match=r"cover 9500 of the 50x200 pixels .* TRIMSECB='\[101:190,1:50\]'"):
        GENERIC.chip_layout(h, (50, 200), chip="C")
    # a trim section outside its data section is a contradiction
    h["TRIMSECB"] = "[95:190,1:50]"
    with pytest.raises(ProfileError, match=r"trim section TRIMSECB='\[95:190,1:50\]' is not inside"):
        GENERIC.chip_layout(h, (50, 200), chip="C")


def test_quadformat_family_and_the_suffix_series_with_most_data_sections():
    # IRAF quadformat: DSEC11 (lower left) ... DSEC22 (upper right), bias strips between
    h = header(
        DSEC11="[1:50,1:40]",
        BSEC11="[51:60,1:40]",
        CSEC11="[1:50,1:40]",
        BSEC12="[61:70,1:40]",
        DSEC12="[71:120,1:40]",
        CSEC12="[51:100,1:40]",
        DSEC21="[1:50,41:80]",
        BSEC21="[51:60,41:80]",
        CSEC21="[1:50,41:80]",
        BSEC22="[61:70,41:80]",
        DSEC22="[71:120,41:80]",
        CSEC22="[51:100,41:80]",
        GTGAIN11=3.2,
        GTGAIN12=2.9,
        GTGAIN21=3.1,
        GTGAIN22=2.8,
        GTRON11=4.2,
    )
    lay = GENERIC.chip_layout(h, (80, 120), chip="Q")
    assert [a.name for a in lay.amplifiers] == ["11", "12", "21", "22"]  # not 1..16's "11", "12"
    assert secs(lay)["22"] == ("[71:120,41:80]", "[51:100,41:80]")
    assert [a.gain for a in lay.amplifiers] == [3.2, 2.9, 3.1, 2.8]
    assert lay.amplifiers[0].rdnoise == 4.2 and lay.amplifiers[1].rdnoise is None


def test_subaru_ranges_with_a_parallel_overscan():
    # HSC-like channel layout, smaller: ch1 data 3-12 | ch1 os 13-14 | ch2 os 15-16 | ch2 data 17-26
    h = header(
        T_EFMN11=3,
        T_EFMX11=12,
        T_EFMN12=5,
        T_EFMX12=24,
        T_OSMN11=13,
        T_OSMX11=14,
        T_OSMN12=25,
        T_OSMX12=28,
        T_EFMN21=17,
        T_EFMX21=26,
        T_EFMN22=5,
        T_EFMX22=24,
        T_OSMN21=15,
        T_OSMX21=16,
        T_OSMN22=25,
        T_OSMX22=28,
        T_GAIN1=3.0,
        T_GAIN2=3.5,
    )
    lay = GENERIC.chip_layout(h, (28, 28), chip="H", bitpix=16)
    a, b = lay.amplifiers
    assert secs(lay) == {"1": ("[3:12,5:24]", "[1:10,1:20]"), "2": ("[17:26,5:24]", "[11:20,1:20]")}
    assert (str(a.biassec), str(a.parallel_biassec)) == ("[13:14,5:24]", "[3:12,25:28]")
    assert (str(b.biassec), str(b.parallel_biassec)) == ("[15:16,5:24]", "[17:26,25:28]")
    assert (a.gain, b.gain, a.saturate) == (3.0, 3.5, 65535.0)
    assert lay.describe() == "2 amps, 20x20 from 28x28, serial+parallel overscan"


def test_eso_ports_two_outputs_with_overscans_between():
    # left port at X=1: prescan 4 | data 40 | overscan 6; right port at X=2048: overscan | data | prescan
    cards = {"ESO DET OUTPUTS": 2}
    for i, x in ((1, 1), (2, 2048)):
        cards.update(
            {
                f"ESO DET OUT{i} NX": 40,
                f"ESO DET OUT{i} NY": 30,
                f"ESO DET OUT{i} PRSCX": 4,
                f"ESO DET OUT{i} OVSCX": 6,
                f"ESO DET OUT{i} PRSCY": 0,
                f"ESO DET OUT{i} OVSCY": 2,
                f"ESO DET OUT{i} X": x,
                f"ESO DET OUT{i} Y": 1,
                f"ESO DET OUT{i} CONAD": 1.0 + i,
                f"ESO DET OUT{i} RON": 3.0 + i,
            }
        )
    h = fits.Header()
    for k, v in cards.items():
        h[f"HIERARCH {k}"] = v
    lay = GENERIC.chip_layout(h, (32, 100), chip="E")
    a, b = lay.amplifiers
    assert secs(lay) == {"1": ("[5:44,1:30]", "[1:40,1:30]"), "2": ("[57:96,1:30]", "[41:80,1:30]")}
    assert (str(a.biassec), str(b.biassec)) == ("[45:50,1:30]", "[51:56,1:30]")
    assert (str(a.parallel_biassec), str(b.parallel_biassec)) == ("[5:44,31:32]", "[57:96,31:32]")
    assert (a.gain, b.gain, a.rdnoise, b.rdnoise) == (2.0, 3.0, 4.0, 5.0)
    with pytest.raises(ProfileError, match=r"span 100 pixels along x .* but the image has 101 \(NAXIS1=101\)"):
        GENERIC.chip_layout(h, (32, 101), chip="E")


def test_single_amplifier_forms_keep_their_old_meaning():
    # TRIMSEC wins over DATASEC for a single amplifier; no keyword at all: the whole image
    h = header(DATASEC="[1:100,1:50]", TRIMSEC="[3:98,2:50]", BIASSEC="[101:110,1:50]", GAIN=2.0)
    lay = GENERIC.chip_layout(h, (50, 110), chip="S")
    assert secs(lay) == {"A": ("[3:98,2:50]", "[1:96,1:49]")} and lay.amplifiers[0].gain == 2.0
    # short quadformat/CFHT names need a suffix: unsuffixed they mean other things (Kast's
    # headers carry TSEC, a clock tick in seconds)
    h["TSEC"] = 1432085758
    h["BSEC"] = "not a section"
    assert secs(GENERIC.chip_layout(h, (50, 110), chip="S")) == {"A": ("[3:98,2:50]", "[1:96,1:49]")}
    bare = GENERIC.chip_layout(fits.Header(), (5, 6), chip="S", bitpix=8)
    assert secs(bare) == {"A": ("[1:6,1:5]", "[1:6,1:5]")} and bare.amplifiers[0].saturate == 255.0


def test_profile_families_literals_and_schema_errors(tmp_path):
    doc = {
        "name": "cam",
        "layout": {
            "keywords": {"biassec": ["BIASSEC{a}", "[41:48,1:30]"], "parallel_biassec": ["[1:40,31:36]"], "gain": [1.7]}
        },
        "keywords": {"chip": ["{CCDNAME}_{EXTNAME}", "EXTNAME"]},
    }
    prof = Profile.from_dict(doc, source="cam.toml", base=GENERIC)
    h = header(DATASEC="[1:40,1:30]", CCDNAME="S11", EXTNAME="Segment10")
    (amp,) = prof.chip_layout(h, (36, 48), chip="C").amplifiers
    assert (str(amp.biassec), str(amp.parallel_biassec), amp.gain) == ("[41:48,1:30]", "[1:40,31:36]", 1.7)
    assert prof.lookup(h, "chip") == "S11_Segment10"
    assert prof.lookup(header(EXTNAME="Segment10"), "chip") == "Segment10"
    for bad, message in (
        ({"layout": {"keyword": {}}}, "unknown \\[layout\\] entries"),
        ({"layout": {"keywords": {"datsec": ["X"]}}}, "unknown \\[layout.keywords\\] field"),
        ({"layout": {"keywords": {"gain": ["[1:2,1:2]"]}}}, "only fits a section field"),
        ({"layout": {"keywords": {"biassec": [{"x": "data", "y": "rows"}]}}}, "axis y must be"),
        ({"layout": {"overscan_order": "both"}}, "overscan_order"),
        ({"layout": {"ports": {"nx": "N"}}}, "needs count, ny"),
        (
            {
                "layout": {
                    "source": "profile",
                    "amplifiers": [{"datasec": "[1:2,1:2]"}, {"datasec": "[3:4,1:2]", "ccdsec": "[1:2,1:2]"}],
                }
            },
            "a ccdsec for every amplifier or for none",
        ),
    ):
        with pytest.raises(ProfileError, match=rf"mine\.toml: .*{message}"):
            Profile.from_dict({"name": "x", **bad}, source="mine.toml", base=GENERIC)


def test_shipped_camera_profiles_are_detected_from_their_headers():
    from ccdask.profiles._profile import detect_profile

    cases = {
        "decam": {"INSTRUME": "DECam"},
        "gmos": {"INSTRUME": "GMOS-S"},
        "cfht_megacam": {"INSTRUME": "MegaPrime", "DETECTOR": "MegaCam"},
        "subaru_hsc": {"INSTRUME": "Hyper Suprime-Cam"},
        "subaru_suprimecam": {"INSTRUME": "SuprimeCam"},
        "lsst_itl": {"CCD_MANU": "ITL", "LSST_NUM": "ITL-3800C-098"},
        "lsst_e2v": {"CCD_MANU": "E2V", "LSST_NUM": "E2V-CCD250-179"},
        "eso_efosc2": {"INSTRUME": "EFOSC"},
    }
    for name, cards in cases.items():
        assert detect_profile(header(**cards)).name == name
    assert detect_profile(header(INSTRUME="SIMCAM")).name == "generic"
