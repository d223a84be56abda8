"""Real cameras: raw files built from published raw headers, reduced by ccdask, checked to float32.

For each camera the test writes raw FITS files whose headers are the real cards of
``tests/data/headers/<camera>/`` (every published extension; provenance in PROVENANCE.md),
with synthetic pixels: an integer ramp plus a bright corner spot defined on the *assembled*
chip (or CCD, or detector), written into the raw frame through a layout written out here by
hand from the instrument's published description (the raw-format documents and camera
descriptions cited above each layout), plus a known overscan level per amplifier in its
serial (and parallel) overscan and a junk value everywhere else (prescans, gaps). Each chip is
then found by ``Catalog.scan`` (the camera's profile detected from the header) and calibrated
by ``process_entry``; its SCI plane must equal the signal in electrons, ``ramp x gain`` with the
gain the header publishes, to float32 precision. Raw values are integers, so nothing is lost
to the integer raw formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import CosmicConfig, ProcessConfig, process_entry
from ccdask.catalog import Catalog

HEADERS = Path(__file__).resolve().parents[1] / "data" / "headers"
JUNK = 12345
CONFIG = ProcessConfig(read_noise="overscan", cosmics=CosmicConfig(method="none"))
STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|CHECKSUM|DATASUM|"
    r"TFIELDS|TTYPE\d+|TFORM\d+|Z[A-Z]+\d*)$"
)


def read_headers(path: Path) -> dict[int, fits.Header]:
    """The cards of every HDU of a ``.hdr`` file (``# --- HDU n ---`` separators)."""
    hdus: dict[int, list[str]] = {}
    current = None
    for line in path.read_text(encoding="ascii").splitlines():
        m = re.match(r"# --- HDU (\d+) ---", line)
        if m:
            current = hdus.setdefault(int(m.group(1)), [])
        else:
            assert current is not None
            current.append(line.ljust(80))
    return {k: fits.Header.fromstring("".join(v)) for k, v in hdus.items()}


def image_cards(h: fits.Header) -> fits.Header:
    """The published cards minus the structural ones (astropy writes those for the data)."""
    out = fits.Header()
    for card in h.cards:
        if not STRUCTURAL.match(card.keyword):
            out.append(card)
    return out


def raw_geometry(h: fits.Header) -> tuple[tuple[int, int], np.dtype, bool]:
    """(ny, nx), numpy dtype and whether the HDU was published tile-compressed."""
    compressed = h.get("ZIMAGE", False) is True
    nx, ny = (h["ZNAXIS1"], h["ZNAXIS2"]) if compressed else (h["NAXIS1"], h["NAXIS2"])
    bitpix = h["ZBITPIX"] if compressed else h["BITPIX"]
    bzero = h.get("BZERO", 0)
    dtype = {
        8: np.uint8,
        16: np.uint16 if bzero == 32768 else np.int16,
        32: np.int32,
        -32: np.float32,
        -64: np.float64,
    }[bitpix]
    return (ny, nx), np.dtype(dtype), compressed


def signal(shape: tuple[int, int], offset: int = 0) -> np.ndarray:
    """An asymmetric integer signal in ADU: a ramp in x and y and a bright spot in one corner."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    s = 100 + offset + x // 3 + 2 * (y // 5)
    s[: max(2, ny // 50), nx - max(2, nx // 40) :] += 3000  # bottom right, a few pixels
    return s.astype(np.int64)


@dataclass(frozen=True)
class Amp:
    """One amplifier as the instrument description gives it (0-based numpy slices)."""

    hdu: int
    data: tuple[slice, slice]  # its data pixels in the raw frame
    serial: tuple[slice, slice] | None  # serial overscan (columns beside the data)
    parallel: tuple[slice, slice] | None  # parallel overscan (rows above/below the data)
    target: tuple[slice, slice]  # where the data go in the assembled canvas
    flip: tuple[bool, bool] = (False, False)  # (y, x): raw read backwards relative to the canvas
    canvas: str = "chip"


def S(y0, y1, x0, x1):
    """The (rows, columns) block [y0, y1) x [x0, x1)."""
    return (slice(y0, y1), slice(x0, x1))


def write_and_reduce(
    tmp_path: Path,
    headers: dict[int, fits.Header],
    amps: list[Amp],
    canvases: dict[str, np.ndarray],
    gain_key,
    name: str,
    profile: str,
    level0: int = 1000,
):
    """Write the raw file, reduce every chip, and compare each SCI plane with the truth."""
    gains, levels = {}, {}
    raw_by_hdu = {}
    for k, h in headers.items():
        if k == 0 and h.get("NAXIS", 0) == 0:
            continue
        shape, dtype, _ = raw_geometry(h)
        raw_by_hdu[k] = np.full(shape, JUNK, dtype=np.int64)
    for i, a in enumerate(amps):
        level = level0 + 37 * i
        levels[i] = level
        gains[i] = float(gain_key(headers, a, i))
        piece = canvases[a.canvas][a.target]
        if a.flip[0]:
            piece = piece[::-1]
        if a.flip[1]:
            piece = piece[:, ::-1]
        raw = raw_by_hdu[a.hdu]
        raw[a.data] = level + piece
        for region in (a.serial, a.parallel):
            if region is not None:
                raw[region] = level
    hdus = []
    for k in sorted(headers):
        h = headers[k]
        cards = image_cards(h)
        if k == 0:
            data = raw_by_hdu.get(0)
            hdus.append(fits.PrimaryHDU(None if data is None else data.astype(raw_geometry(h)[1]), header=cards))
            continue
        _, dtype, compressed = raw_geometry(h)
        data = raw_by_hdu[k].astype(dtype)
        if compressed:
            hdus.append(fits.CompImageHDU(data, header=cards, compression_type="RICE_1", tile_shape=(1, data.shape[1])))
        else:
            hdus.append(fits.ImageHDU(data, header=cards))
    path = tmp_path / f"{name}.fits"
    fits.HDUList(hdus).writeto(path)

    # the published HDU k is the written file's HDU position[k] (a subset of extensions may be kept)
    position = {k: i for i, k in enumerate(sorted(headers))}
    published = {i: k for k, i in position.items()}
    cat = Catalog.scan([path])
    assert not cat.problems, cat.problems
    assert {published[e.hdu] for e in cat.entries} == set(raw_by_hdu)
    results = {}
    for e in cat.entries:
        assert e.profile == profile, (e.hdu, e.profile)
        sci = process_entry(e, config=CONFIG, role="science").sci.compute(scheduler="threads")
        k = published[e.hdu]
        mine = [(i, a) for i, a in enumerate(amps) if a.hdu == k]
        canvas = mine[0][1].canvas
        rows = [a.target[0] for _, a in mine]
        cols = [a.target[1] for _, a in mine]
        y0, x0 = min(r.start for r in rows), min(c.start for c in cols)
        y1, x1 = max(r.stop for r in rows), max(c.stop for c in cols)
        expected = np.full((y1 - y0, x1 - x0), np.nan, dtype=np.float32)
        for i, a in mine:
            t = (
                slice(a.target[0].start - y0, a.target[0].stop - y0),
                slice(a.target[1].start - x0, a.target[1].stop - x0),
            )
            expected[t] = np.float32(canvases[canvas][a.target]) * np.float32(gains[i])
        assert sci.shape == expected.shape, (e.hdu, sci.shape, expected.shape)
        np.testing.assert_allclose(sci, expected, rtol=2e-7, atol=0, err_msg=f"{name} HDU {k}")
        results[k] = (e, sci)
    return results


def header_gain(*keys):
    """The gain of amplifier i, read from the published header with astropy (not ccdask)."""

    def get(headers, a, i):
        h = headers[a.hdu]
        for key in keys:
            k = key.format(i=i)
            if k in h:
                return h[k]
        return headers[0][keys[-1]]

    return get


# -- DECam ----------------------------------------------------------------------------------------
# NOAO/DECam raw format (DECam Data Handbook, "raw data"): each CCD extension is 2160 x 4146;
# amplifier B reads the left half, A the right half. Columns: B prescan 1-6, B overscan 7-56,
# B data 57-1080 | A data 1081-2104, A overscan 2105-2154, A prescan 2155-2160. Rows 1-50 are
# the post-scan (parallel overscan) rows, the data rows 51-4146. The CCD image is 2048 x 4096:
# B's data on the left, A's on the right, as read (no flips).


def test_decam(tmp_path):
    h = read_headers(HEADERS / "decam" / "dec050441_S1_ccd25.hdr")
    amps = [
        Amp(25, S(50, 4146, 1080, 2104), S(50, 4146, 2104, 2154), S(0, 50, 1080, 2104), S(0, 4096, 1024, 2048)),
        Amp(25, S(50, 4146, 56, 1080), S(50, 4146, 6, 56), S(0, 50, 56, 1080), S(0, 4096, 0, 1024)),
    ]
    res = write_and_reduce(
        tmp_path,
        h,
        amps,
        {"chip": signal((4096, 2048))},
        lambda hd, a, i: hd[25]["GAINA" if i == 0 else "GAINB"],
        "decam",
        "decam",
    )
    e, _ = res[25]
    assert e.chip == "S1" and e.layout.amplifiers[0].parallel_biassec is not None


# -- GMOS -----------------------------------------------------------------------------------------
# Gemini GMOS raw format: one extension per amplifier, each with 32 overscan columns, the
# amplifiers' data side by side across the detector. Hamamatsu (GMOS-S since 2014, GMOS-N since
# 2017): 12 amplifiers, 4 per CCD, 512 unbinned columns each, in detector order; odd extensions
# have their overscan to the right of the data, even ones to the left. e2v DD (GMOS-N until
# 2017): 6 amplifiers, 2 per CCD, 1024 unbinned columns each; the extensions come right, left
# (CCD 1), right, left (CCD 2), left, right (CCD 3), and the left amplifiers have their overscan
# to the right of the data. DATASEC/BIASSEC count binned pixels; the canvas is the binned
# detector (gaps between the CCDs are not part of DETSEC, nor of the canvas).


def _gmos_amps(h, width, blocks, overscan_right, over=32):
    amps = []
    for k, block in enumerate(blocks, start=1):
        ny = h[k]["NAXIS2"]
        target = S(0, ny, block * width, (block + 1) * width)
        if k in overscan_right:
            amps.append(Amp(k, S(0, ny, 0, width), S(0, ny, width, width + over), None, target, canvas="detector"))
        else:
            amps.append(Amp(k, S(0, ny, over, width + over), S(0, ny, 0, over), None, target, canvas="detector"))
    return amps


@pytest.mark.parametrize(
    ("fname", "width", "ny", "blocks", "overscan_right"),
    [
        ("N20150216S0129_GMOSN_e2vDD_2x2.hdr", 512, 2304, [1, 0, 3, 2, 4, 5], {2, 4, 5}),
        ("S20181016S0184_GMOSS_Hamamatsu_2x2.hdr", 256, 2112, list(range(12)), {1, 3, 5, 7, 9, 11}),
        ("N20220314S0229_GMOSN_Hamamatsu_4x4_bias.hdr", 128, 1056, list(range(12)), {1, 3, 5, 7, 9, 11}),
    ],
)
def test_gmos(tmp_path, fname, width, ny, blocks, overscan_right):
    h = read_headers(HEADERS / "gmos" / fname)
    amps = _gmos_amps(h, width, blocks, overscan_right)
    detector = signal((ny, len(blocks) * width))
    res = write_and_reduce(
        tmp_path, h, amps, {"detector": detector}, lambda hd, a, i: hd[a.hdu]["GAIN"], fname.split("_")[0], "gmos"
    )
    # each amplifier is a one-amplifier chip named by AMPNAME; its DETSEC is its unbinned block
    for k, (e, _) in res.items():
        assert e.chip == h[k]["AMPNAME"]
        binx = int(h[k]["CCDSUM"].split()[0])
        assert e.layout.detsec.x.start == blocks[k - 1] * width * binx + 1


# -- CFHT MegaCam ---------------------------------------------------------------------------------
# CFHT MegaCam raw format (MegaPrime/MegaCam "detector" page): each CCD is 2112 x 4644 with two
# amplifiers side by side: A = overscan columns 1-32 then data 33-1056, B = data 1057-2080 then
# overscan 2081-2112; data rows 1-4612 (rows 4613-4644 are overscan rows, the serial overscan
# columns span all 4644 rows). The CCD image is A's data then B's, 2048 x 4612, not flipped.


def test_cfht_megacam(tmp_path):
    h = read_headers(HEADERS / "megacam" / "2463796o_subset.hdr")
    amps, canvases = [], {}
    for k in (1, 19, 37, 39):
        name = f"ccd{k}"
        canvases[name] = signal((4612, 2048), offset=k)
        amps += [
            Amp(k, S(0, 4612, 32, 1056), S(0, 4644, 0, 32), None, S(0, 4612, 0, 1024), canvas=name),
            Amp(k, S(0, 4612, 1056, 2080), S(0, 4644, 2080, 2112), None, S(0, 4612, 1024, 2048), canvas=name),
        ]
    res = write_and_reduce(
        tmp_path,
        h,
        amps,
        canvases,
        lambda hd, a, i: hd[a.hdu]["GAINA" if i % 2 == 0 else "GAINB"],
        "2463796o",
        "cfht_megacam",
    )
    assert [res[k][0].chip for k in (1, 19, 37, 39)] == ["ccd00", "ccd18", "ccd36", "ccd38"]
    # the focal-plane DETSEC is kept as published: ccd00 lies flipped in the mosaic
    assert res[1][0].layout.detsec.flipped == (True, True)


# -- Subaru HSC and Suprime-Cam -------------------------------------------------------------------
# HSC, from the camera description lsst/obs_subaru hsc/camera/0_37.fits (commit d4a8abe0868151b5):
# a 2144 x 4241 raw CCD read by four channels; channel k's data are 512 x 4176 at raw columns
# 9-520, 553-1064, 1081-1592, 1625-2136 (rows 50-4225); its 16 serial-overscan columns are
# 521-536, 537-552, 1593-1608, 1609-1624 (so channels 1|2 and 3|4 have their overscans between
# them); the parallel overscan rows are 4226-4241; rows 1-49 and the outer columns are
# prescan. The CCD image puts channel k at columns 512(k-1)+1 ... 512k, unflipped.


def test_subaru_hsc(tmp_path):
    h = read_headers(HEADERS / "hsc" / "HSCA04090107.hdr")
    data_cols = [(8, 520), (552, 1064), (1080, 1592), (1624, 2136)]
    over_cols = [(520, 536), (536, 552), (1592, 1608), (1608, 1624)]
    amps = [
        Amp(0, S(49, 4225, *d), S(49, 4225, *o), S(4225, 4241, *d), S(0, 4176, 512 * k, 512 * (k + 1)))
        for k, (d, o) in enumerate(zip(data_cols, over_cols, strict=True))
    ]
    write_and_reduce(
        tmp_path,
        h,
        amps,
        {"chip": signal((4176, 2048))},
        lambda hd, a, i: hd[0][f"T_GAIN{i + 1}"],
        "HSCA04090107",
        "subaru_hsc",
    )


# Suprime-Cam, from the Subaru FITS keyword definitions (S_EFMNnm/S_EFMXnm: first/last pixel
# of channel n's effective area along axis m; S_OSMNnm/S_OSMXnm: its overscan): channel data at
# columns 9-520, 617-1128, 1145-1656, 1753-2264, rows 49-4225; serial overscan columns 521-568,
# 569-616, 1657-1704, 1705-1752 (between channels 1|2 and 3|4); parallel overscan rows 1-48.


@pytest.mark.filterwarnings("ignore:Invalid .BLANK. keyword:astropy.io.fits.verify.VerifyWarning")
def test_subaru_suprimecam(tmp_path):
    # the published header has BLANK with BITPIX = -32: astropy says it does not apply, rightly
    h = read_headers(HEADERS / "suprimecam" / "SUPA01118766.hdr")
    data_cols = [(8, 520), (616, 1128), (1144, 1656), (1752, 2264)]
    over_cols = [(520, 568), (568, 616), (1656, 1704), (1704, 1752)]
    amps = [
        Amp(0, S(48, 4225, *d), S(48, 4225, *o), S(0, 48, *d), S(0, 4177, 512 * k, 512 * (k + 1)))
        for k, (d, o) in enumerate(zip(data_cols, over_cols, strict=True))
    ]
    write_and_reduce(
        tmp_path,
        h,
        amps,
        {"chip": signal((4177, 2048))},
        lambda hd, a, i: hd[0][f"S_GAIN{i + 1}"],
        "SUPA01118766",
        "subaru_suprimecam",
    )


# -- Rubin/LSST -----------------------------------------------------------------------------------
# Rubin raw format (camera FITS header specification, LCA-10140; segment geometry in lsst/obs_lsst
# policy/cameraHeader.yaml): each of the 16 segments is a 576 x 2048 extension in readout order.
# ITL: prescan columns 1-3, data 4-512 (509 columns) x rows 1-2000, serial overscan 513-576,
# parallel overscan rows 2001-2048. e2v: prescan 1-10, data 11-522 (512) x rows 1-2002, serial
# overscan 523-576, parallel overscan rows 2003-2048. Segments 10...17 form the bottom row of the
# CCD from left to right, each read towards the left (x reversed); segments 00...07 form the top
# row from left to right, read downwards (y reversed), ITL ones also towards the left.


@pytest.mark.parametrize(
    ("fname", "profile", "width", "height", "pre", "top_flip_x"),
    [
        ("latiss_3018092000065-det000_ITL.hdr", "lsst_itl", 509, 2000, 3, True),
        ("ts8_201807241028453-RTM-010-S11-det067_E2V.hdr", "lsst_e2v", 512, 2002, 10, False),
    ],
)
def test_rubin_segments_assemble_the_ccd(tmp_path, fname, profile, width, height, pre, top_flip_x):
    h = read_headers(HEADERS / "lsst" / fname)
    amps = []
    for k in range(1, 17):
        segment = h[k]["EXTNAME"]
        row, col = int(segment[-2]), int(segment[-1])  # Segment<row><col>
        y0 = 0 if row == 1 else height
        flip = (False, True) if row == 1 else (True, top_flip_x)
        amps.append(
            Amp(
                k,
                S(0, height, pre, pre + width),
                S(0, height, pre + width, 576),
                S(height, 2048, pre, pre + width),
                S(y0, y0 + height, col * width, (col + 1) * width),
                flip=flip,
                canvas="ccd",
            )
        )
    ccd = signal((2 * height, 8 * width))
    res = write_and_reduce(
        tmp_path,
        h,
        amps,
        {"ccd": ccd},
        lambda hd, a, i: hd[a.hdu].get("CCDGAIN", hd[0].get("CCDGAIN", 1.0)),
        fname.split("_")[1],
        profile,
    )
    # the 16 one-amplifier chips put together by their (forward) DETSECs give the CCD
    assembled = np.zeros(ccd.shape, dtype=np.float32)
    for e, sci in res.values():
        d = e.layout.detsec
        assert not any(d.flipped)
        assembled[d.slices] = sci
    np.testing.assert_array_equal(assembled, ccd.astype(np.float32))
    assert res[1][0].chip.endswith("_Segment10")


# -- ESO: NTT/EFOSC2 ------------------------------------------------------------------------------
# EFOSC2 (ESO raw format: the image in detector orientation, each port's prescan next to it, the
# overscan after the data; EFOSC2's port is at the bottom right, X = 2048, Y = 1): binned 2x2, the
# 1030 x 1030 frame holds 1024 x 1024 data pixels at columns 1-1024, rows 1-1024, a 6-column
# prescan at columns 1025-1030 and a 6-row overscan at rows 1025-1030 (no overscan columns). The
# sky flat published with the header shows it: its columns 1025-1030 and rows 1025-1030 stay at the
# bias level while the data are at 39000 ADU.


@pytest.mark.parametrize("fname", ["EFOSC.2022-01-28T00-08-16.282.hdr", "EFOSC.2022-01-26T19-02-38.210.hdr"])
def test_eso_efosc2(tmp_path, fname):
    h = read_headers(HEADERS / "efosc2" / fname)
    amps = [Amp(0, S(0, 1024, 0, 1024), None, S(1024, 1030, 0, 1024), S(0, 1024, 0, 1024))]
    res = write_and_reduce(
        tmp_path,
        h,
        amps,
        {"chip": signal((1024, 1024))},
        lambda hd, a, i: hd[0]["HIERARCH ESO DET OUT1 CONAD"],
        fname[:-4],
        "eso_efosc2",
    )
    e, _ = res[0]
    assert e.chip == "ccd40" and e.layout.amplifiers[0].overscan_axis == "parallel"
    assert e.imagetyp == ("flat" if "00-08-16" in fname else "bias")
