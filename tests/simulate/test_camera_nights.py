"""Whole simulated nights written with real cameras' published headers, reduced by ``ccdask reduce``.

``simulate_night(camera=...)`` writes every frame (biases, darks, flats per filter, science)
with the published header cards of ``tests/data/headers/<camera>/`` (provenance in
PROVENANCE.md) and lays the model's pixels out in raw coordinates as the camera's documentation
describes them: the amplifier layouts below are written here by hand from those descriptions
(the same documents ``tests/profiles/test_real_cameras.py`` cites), never from ccdask's
resolver. ccdask then finds the camera's profile and layout in the headers on its own, and the
reduced science frames must equal the simulator's truth (sky + stars, flat-fielded away, in
electrons) to within the noise, the masters the truth bias structure, dark current and flat.

Cameras: DECam (one fpack CCD, two amplifiers side by side, serial and parallel overscans,
CCDSECA/B placement, published read noise), Subaru HSC (four channels with their overscans
between channels 1|2 and 3|4, parallel overscan rows above, no read noise in the header: the
night measures it in the biases' overscans) and ESO EFOSC2 (one port, a parallel overscan
only, binned 2 x 2, ESO HIERARCH keywords; reduced through the command line with the default
configuration). A small hand-made camera adds what the real ones lack: an amplifier read
backwards.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask import dq as DQ
from ccdask import reduce
from ccdask.catalog import Catalog
from ccdask.cli._main import EXIT_OK, main
from ccdask.errors import ConfigError
from ccdask.simulate import CameraAmp, CameraHeaders, SimulatedNight, read_header_file, simulate_night

HEADERS = Path(__file__).resolve().parents[1] / "data" / "headers"
# cards astropy writes for the data it is given (and fpack's): not expected as published
STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|CHECKSUM|DATASUM|"
    r"TFIELDS|TTYPE\d+|TFORM\d+|Z[A-Z]+\d*)$"
)
FAST = {"output": {"qa": False}, "cosmics": {"method": "none"}}

pytestmark = pytest.mark.slow


# -- the cameras, as their documentation describes them -------------------------------------------
# DECam (DECam Data Handbook, "raw data"): each CCD extension is 2160 x 4146; amplifier B reads
# the left half, A the right half. Columns: B prescan 1-6, B overscan 7-56, B data 57-1080 |
# A data 1081-2104, A overscan 2105-2154, A prescan 2155-2160. Rows 1-50 are the post-scan
# (parallel overscan) rows, the data rows 51-4146. The CCD image is 2048 x 4096: B's data on the
# left, A's on the right, as read (no flips). Gains, read noises and saturation per amplifier in
# GAINA/B, RDNOISEA/B, SATURATA/B. Image types as DECam writes them in OBSTYPE.


def decam() -> CameraHeaders:
    amps = [
        CameraAmp(
            25,
            "A",
            data="[1081:2104,51:4146]",
            chip="[1025:2048,1:4096]",
            gain="GAINA",
            serial="[2105:2154,51:4146]",
            parallel="[1081:2104,1:50]",
            prescan="[2155:2160,51:4146]",
            rdnoise="RDNOISEA",
            saturate="SATURATA",
        ),
        CameraAmp(
            25,
            "B",
            data="[57:1080,51:4146]",
            chip="[1:1024,1:4096]",
            gain="GAINB",
            serial="[7:56,51:4146]",
            parallel="[57:1080,1:50]",
            prescan="[1:6,51:4146]",
            rdnoise="RDNOISEB",
            saturate="SATURATB",
        ),
    ]
    return CameraHeaders.from_file(
        HEADERS / "decam" / "dec050441_S1_ccd25.hdr",
        amps,
        name="DECam",
        imagetyp={"bias": "zero", "dark": "dark", "flat": "dome flat", "science": "object"},
        filters={"g": "g DECam SDSS c0001 4720.0 1520.0"},
    )


# HSC (camera description lsst/obs_subaru hsc/camera/0_37.fits, commit d4a8abe0868151b5): a
# 2144 x 4241 raw CCD read by four channels of 536 columns each; channel k's data are 512 x 4176
# at raw columns 9-520, 553-1064, 1081-1592, 1625-2136 (rows 50-4225), its 16 serial-overscan
# columns 521-536, 537-552, 1593-1608, 1609-1624 (channels 1|2 and 3|4 have their overscans
# between them), its parallel overscan rows 4226-4241; its outer 8 columns and rows 1-49 are
# prescan. The CCD image puts channel k at columns 512(k-1)+1 ... 512k, unflipped. Gains in
# T_GAINn; no read noise is published. Image types in DATA-TYP.

_HSC_DATA = [(9, 520), (553, 1064), (1081, 1592), (1625, 2136)]
_HSC_OVER = [(521, 536), (537, 552), (1593, 1608), (1609, 1624)]
_HSC_PRE = [((1, 8), (9, 536)), ((1065, 1072), (537, 1064)), ((1073, 1080), (1081, 1608)), ((2137, 2144), (1609, 2136))]


def hsc() -> CameraHeaders:
    amps = []
    for k, ((d0, d1), (o0, o1), ((p0, p1), (q0, q1))) in enumerate(zip(_HSC_DATA, _HSC_OVER, _HSC_PRE, strict=True)):
        amps.append(
            CameraAmp(
                0,
                str(k + 1),
                data=f"[{d0}:{d1},50:4225]",
                chip=f"[{512 * k + 1}:{512 * (k + 1)},1:4176]",
                gain=f"T_GAIN{k + 1}",
                serial=f"[{o0}:{o1},50:4225]",
                parallel=f"[{d0}:{d1},4226:4241]",
                prescan=(f"[{p0}:{p1},1:4241]", f"[{q0}:{q1},1:49]"),
            )
        )
    return CameraHeaders.from_file(
        HEADERS / "hsc" / "HSCA04090107.hdr",
        amps,
        name="HSC",
        imagetyp={"bias": "BIAS", "dark": "DARK", "flat": "DOMEFLAT", "science": "OBJECT"},
        filters={"r": "HSC-r"},
    )


# EFOSC2 (ESO raw format: the image in detector orientation, each port's prescan next to it, the
# overscan after the data; EFOSC2's port is at the bottom right): binned 2 x 2, the 1030 x 1030
# frame holds 1024 x 1024 data pixels at columns 1-1024, rows 1-1024, a 6-column prescan at
# columns 1025-1030 and a 6-row overscan at rows 1025-1030 (no overscan columns). Gain in
# ESO DET OUT1 CONAD, read noise in ESO DET OUT1 RON; image type in ESO DPR TYPE.


def efosc2() -> CameraHeaders:
    amps = [
        CameraAmp(
            0,
            "L",
            data="[1:1024,1:1024]",
            chip="[1:1024,1:1024]",
            gain="ESO DET OUT1 CONAD",
            parallel="[1:1024,1025:1030]",
            prescan="[1025:1030,1:1024]",
            rdnoise="ESO DET OUT1 RON",
        )
    ]
    return CameraHeaders.from_file(
        HEADERS / "efosc2" / "EFOSC.2022-01-28T00-08-16.282.hdr",
        amps,
        name="EFOSC2",
        imagetyp={"bias": "BIAS", "dark": "DARK", "flat": "FLAT,SKY", "science": "OBJECT"},
        filters={"g": "g#782"},
        cards={"science": {"ESO DPR CATG": "SCIENCE"}},
    )


# The cards each frame sets (besides a HISTORY line), by what the cameras' profiles read.
FRAME_CARDS = {
    "DECam": {"OBSTYPE", "EXPTIME", "DARKTIME", "FILTER", "DATE-OBS", "MJD-OBS", "OBJECT"},
    "HSC": {"DATA-TYP", "EXPTIME", "FILTER01", "DATE-OBS", "OBJECT"},
    "EFOSC2": {
        "ESO DPR TYPE",
        "ESO DPR CATG",
        "EXPTIME",
        "ESO INS FILT1 NAME",
        "DATE-OBS",
        "MJD-OBS",
        "DATE",
        "OBJECT",
    },
}
IMAGETYP_CARD = {"DECam": "OBSTYPE", "HSC": "DATA-TYP", "EFOSC2": "ESO DPR TYPE"}


# -- the nights -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decam_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("decam")
    night = simulate_night(
        root / "night", camera=decam(), nbias=3, ndark=2, nflat=3, filters=("g",), nscience=1, science_exptime=300.0
    )
    result = reduce(night.raw_dir, root / "out", client="threads", config=FAST)
    return night, root / "out", result


@pytest.fixture(scope="module")
def hsc_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("hsc")
    night = simulate_night(
        root / "night",
        camera=hsc(),
        nbias=3,
        ndark=0,
        nflat=3,
        filters=("r",),
        nscience=1,
        seed=4,
        science_exptime=300.0,
    )
    result = reduce(night.raw_dir, root / "out", client="threads", config=FAST)
    return night, root / "out", result


@pytest.fixture(scope="module")
def efosc2_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("efosc2")
    night = simulate_night(
        root / "night",
        camera=efosc2(),
        nbias=5,
        ndark=2,
        nflat=3,
        filters=("g", "r"),
        nscience=2,
        seed=5,
        science_exptime=(300.0, 120.0),
    )
    out = root / "out"
    assert main(["reduce", str(night.raw_dir), "--out", str(out), "--workers", "1"]) == EXIT_OK
    return night, out, None


NIGHTS = ["decam_night", "hsc_night", "efosc2_night"]


# -- helpers --------------------------------------------------------------------------------------


def robust_std(x: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def amp_blocks(truth, chip):
    """(name, constants, assembled-chip block) of each amplifier of the truth."""
    for name, info in truth.meta["chips"][chip]["amps"].items():
        yield name, info, (slice(*info["rows"]), slice(*info["columns"]))


def gain_map(truth, chip) -> np.ndarray:
    g = np.empty(truth.shape)
    for _, info, block in amp_blocks(truth, chip):
        g[block] = info["gain"]
    return g


def flat_filter_file(out: Path, value: str) -> Path:
    """The master flat of a filter whose header value is ``value`` (named by ccdask from it)."""
    hits = [p for p in (out / "masters").glob("flat_*.fits") if fits.getheader(p, 1).get("FILTER") == value]
    assert len(hits) == 1, sorted(p.name for p in (out / "masters").iterdir())
    return hits[0]


# -- the frames carry the published cards ---------------------------------------------------------


@pytest.mark.parametrize("fixture", NIGHTS)
def test_frames_keep_the_published_cards(fixture, request):
    night, _, _ = request.getfixturevalue(fixture)
    truth = night.truth()
    camera = truth.meta["camera"]
    published = read_header_file(camera["source"])
    kept = sorted(published)
    set_here = FRAME_CARDS[night.camera]
    for path in night.all_files:
        rec = truth.frame(path.name)
        with fits.open(path) as hdul:
            assert len(hdul) == len(kept) == len(camera["hdus"])
            for pos, k in enumerate(kept):
                head = hdul[pos].header
                compressed = published[k].get("ZIMAGE", False) is True
                assert isinstance(hdul[pos], fits.CompImageHDU) == compressed
                # every published card that is not structural nor a frame card, with its value
                for card in published[k].cards:
                    key = card.keyword
                    if key in set_here or key in ("COMMENT", "HISTORY", "") or STRUCTURAL.match(key):
                        continue
                    assert key in head, (path.name, k, key)
                    assert head[key] == card.value, (path.name, k, key, head[key], card.value)
                ax = "ZNAXIS" if compressed else "NAXIS"
                if published[k].get(ax, 0):
                    assert (head["NAXIS2"], head["NAXIS1"]) == (published[k][f"{ax}2"], published[k][f"{ax}1"])
            merged = fits.Header(hdul[0].header)
            merged.update(hdul[-1].header)
            assert merged[IMAGETYP_CARD[night.camera]] == camera["imagetyp"][rec["kind"]]
            assert merged["EXPTIME"] == rec["exptime"] and merged["DATE-OBS"] == rec["date_obs"]
            assert merged["OBJECT"] == rec["object"]
    # ccdask finds the camera's own profile and reads every frame as the kind it was written as
    cat = Catalog.scan(night.raw_dir)
    assert not cat.problems
    profile = {"DECam": "decam", "HSC": "subaru_hsc", "EFOSC2": "eso_efosc2"}[night.camera]
    assert len(cat.entries) == len(night.all_files) * len(night.chips)
    for e in cat.entries:
        assert e.profile == profile and e.chip in night.chips
        assert e.imagetyp == truth.frame(Path(e.path).name)["kind"], (e.path, e.imagetyp)


# -- the reduced science frames equal the truth ---------------------------------------------------


@pytest.mark.parametrize("fixture", NIGHTS)
def test_science_equals_sky_and_stars_within_the_noise(fixture, request):
    night, out, _ = request.getfixturevalue(fixture)
    truth = night.truth()
    for path in night.files["science"]:
        rec = truth.frame(path.name)
        sky = rec["sky"]
        with fits.open(out / "reduced" / path.name) as h:
            scis = {
                x.header["CCDNAME"]: (x.data, h["VAR", x.ver].data, h["DQ", x.ver].data) for x in h if x.name == "SCI"
            }
        assert sorted(scis) == sorted(night.chips)
        for chip, (sci, var, dq) in scis.items():
            assert sci.shape == truth.shape
            signal = truth.signal(chip, path.name)
            bad = (
                truth.array(chip, "bad_pixels")
                | truth.array(chip, f"{path.stem}/cosmic_rays")
                | truth.array(chip, f"{path.stem}/saturated")
            )
            use = (dq == 0) & ~bad
            assert use.mean() > 0.95
            z = np.where(use, (sci - signal) / np.sqrt(np.where(use, var, 1.0)), np.nan)
            for name, info, block in amp_blocks(truth, chip):
                zz = z[block][use[block]]
                d = (sci - signal)[block][use[block]]
                # each amplifier's level is known to about one raw ADU (its overscan is a median
                # of integer values per line) and the flat's normalisation to a few 0.1 %
                assert abs(np.median(d)) < info["gain"] + 0.003 * sky, (path.name, chip, name, np.median(d))
                assert 0.95 < robust_std(zz) < 1.08, (path.name, chip, name, robust_std(zz))
                assert np.mean(np.abs(zz) > 6) < 1e-4  # nothing misplaced (stars, hot pixels)
            # the stars where they were injected, with their flux (gain, placement, orientation)
            star = use & (signal - sky > 20 * math.sqrt(sky))
            assert star.sum() > 500
            assert abs(np.median(z[star])) < 0.1 and robust_std(z[star]) < 1.12
            flux = (sci - sky)[star].sum() / (signal - sky)[star].sum()
            assert flux == pytest.approx(1.0, abs=0.005)


# -- the masters equal the truth ------------------------------------------------------------------


@pytest.mark.parametrize("fixture", NIGHTS)
def test_masters_equal_the_truth(fixture, request):
    night, out, _ = request.getfixturevalue(fixture)
    truth = night.truth()
    nbias = len(night.files["bias"])
    with fits.open(out / "masters" / "bias.fits") as hb:
        for chip in night.chips:
            resid = hb[chip].data - truth.array(chip, "bias_pattern") * gain_map(truth, chip)
            for name, info, block in amp_blocks(truth, chip):
                r = resid[block]
                # the level is the overscans' (to about one ADU); what remains is the structure
                assert abs(np.median(r)) < info["gain"], (chip, name, np.median(r))
                per_frame = math.sqrt(info["rdnoise"] ** 2 + info["gain"] ** 2 / 12)  # integer ADU
                assert np.std(r - np.median(r)) < 1.5 * per_frame / math.sqrt(nbias), (chip, name)
    for filt in truth.meta["filters"]:
        levels = [truth.frame(p.name)["flat_level"] for p in night.flats_by_filter[filt]]
        with fits.open(flat_filter_file(out, truth.meta["camera"]["filters"][filt])) as hf:
            for chip in night.chips:
                flat = truth.array(chip, f"flat_{filt}")
                good = ~truth.array(chip, "bad_pixels")
                ratio = hf[chip].data / flat
                photon = math.sqrt(sum(1 / (v * float(np.median(flat))) for v in levels)) / len(levels)
                for name, _info, block in amp_blocks(truth, chip):
                    rel = ratio[block][good[block]]
                    # one normalisation for the chip: an amplifier's wrong gain would show as a step
                    assert abs(np.median(rel) - 1) < 0.003, (filt, chip, name, np.median(rel))
                    assert np.std(rel) < 1.3 * photon, (filt, chip, name, np.std(rel), photon)
    if night.files["dark"]:
        with fits.open(out / "masters" / "dark.fits") as hd:
            for chip in night.chips:
                hot = truth.array(chip, "hot_pixels")
                for p in night.files["dark"]:
                    hot &= ~truth.array(chip, f"{p.stem}/cosmic_rays")
                ratio = hd[chip].data[hot] / truth.array(chip, "dark_rate")[hot]
                assert hot.sum() > 100 and abs(np.median(ratio) - 1) < 0.05
    else:
        assert not (out / "masters" / "dark.fits").exists()


# -- read noise: from the header, or measured in the biases' overscans ----------------------------


@pytest.mark.parametrize("fixture", NIGHTS)
def test_read_noise_from_header_or_measured(fixture, request):
    night, out, _ = request.getfixturevalue(fixture)
    truth = night.truth()
    manifest = json.loads((out / "manifest.json").read_text())
    sources = {info["rdnoise_source"] for c in night.chips for _, info, _ in amp_blocks(truth, c)}
    if night.camera != "HSC":  # DECam and EFOSC2 publish theirs: nothing measured
        assert sources == {"header"} and manifest["read_noise"] == {}
        return
    assert sources == {"simulated"}
    for chip in night.chips:
        measured = manifest["read_noise"][chip]
        assert measured["source"] == "bias overscans" and measured["frames"] == len(night.files["bias"])
        assert sorted(measured["amplifiers"]) == sorted(truth.meta["chips"][chip]["amps"])
        for name, info, _ in amp_blocks(truth, chip):
            # the overscan's noise in e-: the read noise and the rounding to integer ADU
            expected = math.sqrt(info["rdnoise"] ** 2 + info["gain"] ** 2 / 12)
            assert measured["amplifiers"][name] == pytest.approx(expected, rel=0.025), (chip, name)


def test_efosc2_night_through_the_command_line_has_default_products(efosc2_night):
    night, out, _ = efosc2_night
    truth = night.truth()
    assert (out / "qa" / "stats.ecsv").exists()
    for path in night.files["science"]:
        with fits.open(out / "reduced" / path.name) as h:
            dq = h["DQ", 1].data
        cr = truth.array(night.chips[0], f"{path.stem}/cosmic_rays")
        if cr.sum() > 20:  # cosmic rays found by the default cleaning
            assert np.mean((dq[cr] & DQ.COSMIC) > 0) > 0.5


# -- a hand-made camera: an amplifier read backwards -----------------------------------------------
# 100 x 64 raw: A prescan columns 1-2, A data 3-42, A overscan 43-50 | B overscan 51-58, B data
# 59-98, B prescan 99-100; data rows 1-56, rows 57-64 unused. B is read right to left: its raw
# column 59 is the chip's column 80. The header says so in the IRAF way (CCDSECB backwards).


def toy_camera(**kwargs) -> CameraHeaders:
    primary = fits.Header()
    primary["INSTRUME"] = "TOYCAM"
    primary["IMAGETYP"] = "object"
    primary["EXPTIME"] = 1.0
    primary["FILTER"] = "V"
    primary["DATE-OBS"] = "2020-01-01T00:00:00"
    primary["OBJECT"] = "nothing"
    ext = fits.Header()
    ext["XTENSION"] = "IMAGE"
    ext["BITPIX"] = 16
    ext["NAXIS"] = 2
    ext["NAXIS1"] = 100
    ext["NAXIS2"] = 64
    ext["BZERO"] = 32768
    ext["EXTNAME"] = "TOY1"
    for key, value in {
        "DATASECA": "[3:42,1:56]",
        "BIASSECA": "[43:50,1:56]",
        "CCDSECA": "[1:40,1:56]",
        "DATASECB": "[59:98,1:56]",
        "BIASSECB": "[51:58,1:56]",
        "CCDSECB": "[80:41,1:56]",
        "GAINA": 1.7,
        "GAINB": 2.3,
        "RDNOISEA": 4.0,
        "RDNOISEB": 5.0,
    }.items():
        ext[key] = value
    amps = kwargs.pop(
        "amps",
        [
            CameraAmp(
                1,
                "A",
                "[3:42,1:56]",
                "[1:40,1:56]",
                "GAINA",
                serial="[43:50,1:56]",
                prescan="[1:2,1:56]",
                rdnoise="RDNOISEA",
            ),
            CameraAmp(
                1,
                "B",
                "[59:98,1:56]",
                "[41:80,1:56]",
                "GAINB",
                serial="[51:58,1:56]",
                prescan="[99:100,1:56]",
                flip_x=True,
                rdnoise="RDNOISEB",
            ),
        ],
    )
    return CameraHeaders({0: primary, 1: ext}, amps, name="TOY", **kwargs)


def test_toy_camera_lays_out_the_flipped_amplifier_and_reduces(tmp_path):
    night = simulate_night(
        tmp_path / "night", camera=toy_camera(), nbias=5, ndark=0, nflat=3, filters=("V",), nscience=1, seed=9
    )
    truth = night.truth()
    assert night.chips == ("TOY1",) and night.shape == (56, 80) and night.camera == "TOY"
    chip = "TOY1"
    # the simulator's raw layout, checked without ccdask: a flat frame's data, bias-subtracted
    # with the truth, is the truth flat × lamp level, amplifier B's columns running backwards
    path = night.flats_by_filter["V"][0]
    rec = truth.frame(path.name)
    raw = fits.getdata(path, 1).astype(np.float64)
    rb = truth.array(chip, f"{path.stem}/row_bias")
    pattern = truth.array(chip, "bias_pattern")
    expect = truth.array(chip, "flat_V") * rec["flat_level"] + truth.array(chip, "dark_rate") * rec["exptime"]
    a = (raw[:56, 2:42] - rb[0, :56, None] - pattern[:, :40]) * 1.7
    b = (raw[:56, 58:98][:, ::-1] - rb[1, :56, None] - pattern[:, 40:]) * 2.3
    got = np.hstack([a, b])
    ok = ~truth.array(chip, f"{path.stem}/cosmic_rays")
    z = (got - expect)[ok] / np.sqrt(expect[ok] + 30.0)
    assert abs(np.median(z)) < 0.1 and 0.85 < robust_std(z) < 1.2
    # overscans follow the row bias; prescans too; the unused rows hold the mean bias level
    for k, cols in ((0, slice(42, 50)), (1, slice(50, 58)), (0, slice(0, 2)), (1, slice(98, 100))):
        amp = truth.amp(chip, "AB"[k])
        assert (
            np.abs(raw[:56, cols].mean(axis=1) - rb[k, :56]).max()
            < 5 * amp["rdnoise_adu"] / math.sqrt(cols.stop - cols.start) + 0.5
        )
    levels = [truth.amp(chip, n)["bias_level"] for n in "AB"]
    assert np.all(raw[56:] == round(sum(levels) / 2))
    # ccdask reads the backwards CCDSECB and gives the assembled chip the simulator meant
    out = tmp_path / "out"
    reduce(night.raw_dir, out, client="threads", config=FAST)
    sci_path = night.files["science"][0]
    with fits.open(out / "reduced" / sci_path.name) as h:
        sci, var, dq = h["SCI", 1].data, h["VAR", 1].data, h["DQ", 1].data
    signal = truth.signal(chip, sci_path.name)
    use = (dq == 0) & ~truth.array(chip, "bad_pixels") & ~truth.array(chip, f"{sci_path.stem}/cosmic_rays")
    z = (sci - signal)[use] / np.sqrt(var[use])
    assert abs(np.median(z)) < 0.15 and 0.85 < robust_std(z) < 1.15
    assert np.mean(np.abs(z) > 6) < 1e-3  # the stars of amplifier B where they fell
    with fits.open(out / "masters" / "flat_V.fits") as hf:
        dead = truth.array(chip, "dead_columns")
        assert np.all(np.median(hf[chip].data[:, dead], axis=0) < 0.1)  # dead columns where they are
        ratio = hf[chip].data / truth.array(chip, "flat_V")
        for block in (np.s_[:, :40], np.s_[:, 40:]):  # both amplifiers' gains: no step
            assert np.median(ratio[block]) == pytest.approx(1.0, abs=0.003)


def test_signal_of_a_default_night_is_sky_plus_the_listed_stars(sim_night):
    night = sim_night(chips=2, nbias=1, ndark=0, nflat=1, filters=("r",), nscience=1, seed=21)
    truth = night.truth()
    rec = truth.frame(night.files["science"][0].name)
    checked = 0
    for chip in night.chips:
        signal = truth.signal(chip, rec["name"])
        assert signal.shape == truth.shape and signal.min() >= rec["sky"]
        # far from the chip's edges every listed star's flux is on the chip, where it was put
        inner = [s for s in truth.meta["stars"] if s["chip"] == chip]
        inner = [s for s in inner if 12 < s["y"] < truth.shape[0] - 13 and 12 < s["x"] < truth.shape[1] - 13]
        assert inner
        for s in inner[:8]:
            y, x = round(s["y"]), round(s["x"])
            box = signal[y - 8 : y + 9, x - 8 : x + 9] - rec["sky"]
            near = [
                o for o in truth.meta["stars"] if abs(o["y_fp"] - s["y_fp"]) < 12 and abs(o["x_fp"] - s["x_fp"]) < 12
            ]
            if len(near) == 1:
                flux = s["rate"]["r"] * rec["exptime"] * rec["transparency"]
                assert box.sum() == pytest.approx(flux, rel=1e-4)
                checked += 1
    assert checked >= 2
    with pytest.raises(ConfigError, match="only science frames"):
        truth.signal(night.chips[0], night.files["bias"][0].name)


def test_same_seed_same_bytes(tmp_path):
    kw = dict(camera=toy_camera(), nbias=1, ndark=1, nflat=1, filters=("V",), nscience=1, seed=2)
    a = simulate_night(tmp_path / "a", **kw)
    b = simulate_night(tmp_path / "b", **kw)
    for p in [*a.all_files, a.truth_path, a.root / "truth.npz"]:
        q = b.root / p.relative_to(a.root)
        assert p.read_bytes() == q.read_bytes(), p.name
    assert SimulatedNight.load(a.root) == a


def _amp(**changes):
    base = dict(hdu=1, name="A", data="[3:42,1:56]", chip="[1:40,1:56]", gain="GAINA", serial="[43:50,1:56]")
    return CameraAmp(**{**base, **changes})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"amps": [_amp(), _amp(name="B", data="[40:79,1:56]", chip="[41:80,1:56]", serial=None)]},
            "two amplifier regions",
        ),
        ({"amps": [_amp()]}, None),  # one amplifier covering part of what the header says is fine for the simulator
        ({"amps": [_amp(chip="[1:41,1:56]")]}, "differ in size"),
        ({"amps": [_amp(), _amp(name="B", data="[59:98,1:56]", chip="[42:81,1:56]", serial=None)]}, "do not tile"),
        ({"amps": [_amp(data="[3:42,1:70]", chip="[1:40,1:70]")]}, "outside"),
        ({"amps": [_amp(data="[42:3,1:56]")]}, "run forward"),
        ({"amps": [_amp(hdu=2)]}, "HDU 2"),
        ({"amps": [_amp(gain="NOGAIN")]}, "no NOGAIN"),
        ({"imagetyp": {"science": "pointing"}}, "image type 'other'"),
    ],
)
def test_bad_cameras_are_config_errors(tmp_path, kwargs, match):
    camera = toy_camera(**kwargs)
    if match is None:
        night = simulate_night(tmp_path, camera=camera, nbias=1, ndark=0, nflat=0, nscience=0)
        assert night.truth().meta["chips"]["TOY1"]["amps"]["A"]["columns"] == [0, 40]
        return
    with pytest.raises(ConfigError, match=match):
        simulate_night(tmp_path, camera=camera, nbias=1, ndark=0, nflat=1, nscience=1, filters=("V",))


def test_camera_arguments(tmp_path):
    with pytest.raises(ConfigError, match="amps and size come from the camera"):
        simulate_night(tmp_path, camera=toy_camera(), amps=2)
    with pytest.raises(ConfigError, match="amps and size come from the camera"):
        simulate_night(tmp_path, camera=toy_camera(), size="small")
    with pytest.raises(ConfigError, match="CameraHeaders"):
        simulate_night(tmp_path, camera=str(HEADERS / "decam" / "dec050441_S1_ccd25.hdr"))
    with pytest.raises(ConfigError, match="has 1 chip"):
        simulate_night(tmp_path, camera=toy_camera(), chips=2)
    with pytest.raises(ConfigError, match="kinds are"):
        toy_camera(imagetyp={"arc": "ARC"})
