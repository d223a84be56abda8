"""``ccdask inspect FILE...``: per chip the profile and why, the layout and where each fact came from.

The command is run for real (``ccdask.cli.main``) on a file of each real folder beside the
repository, on files astropy writes from the published raw headers of ``tests/data/headers``
(DECam, CFHT MegaCam, a Rubin ITL CCD), and on small generic files written here. What it prints
is checked against the layout the catalogue builds, and the keywords it names against the header
values read here (astropy for the real files, the raw header text for the published headers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.catalog import Catalog
from ccdask.cli._main import EXIT_INPUT, EXIT_OK, main
from ccdask.profiles._profile import available_profiles, detect_profile, detect_profile_explained, load_profile
from tests.helpers import REAL, real_dir
from tests.profiles.test_real_cameras import HEADERS, image_cards, raw_geometry, read_headers

FACT = re.compile(r"^ *(?P<label>[a-z][a-z ]*?) {2,}(?P<value>\S.*?)(?: +<- (?P<origin>.*))?$")
KNOWN_REAL = ["saao_1m_ste3", "shane_kast_blue", "wht_isis_red"]
PRESENT_REAL = sorted(p.name for p in REAL.iterdir() if p.is_dir()) if REAL.is_dir() else []


# -- helpers ---------------------------------------------------------------------------------------


def inspect(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def inspect_ok(capsys, *args: str) -> str:
    """The standard output of a run that must succeed, with nothing on stderr."""
    rc, out, err = inspect(capsys, *args)
    assert (rc, err) == (EXIT_OK, ""), err
    return out


def parse(out: str) -> list[dict]:
    """The chip blocks of the text output: title, chip facts and per amplifier facts, each fact
    ``label -> (value, origin)``."""
    chips = []
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        if not lines[0].startswith("== "):
            continue
        chip: dict = {"title": lines[0], "facts": {}, "amps": {}}
        current = chip["facts"]
        for line in lines[1:]:
            amp = re.match(r"^  amplifier (.+)$", line)
            if amp:
                current = chip["amps"].setdefault(amp.group(1), {})
                continue
            m = FACT.match(line)
            assert m, f"not a fact line: {line!r}"
            current[m["label"]] = (m["value"], m["origin"])
        chips.append(chip)
    return chips


def merged_header(path: Path, hdu: int) -> fits.Header:
    """The primary header's cards overridden by the extension's, read by astropy."""
    with fits.open(path) as hdul:
        merged = hdul[0].header.copy()
        if hdu:
            merged.update(hdul[hdu].header)
    return merged


def header_text_value(hdr_file: Path, keyword: str, hdu: int) -> str:
    """A keyword's value as the raw header text of HDU ``hdu`` writes it (quotes stripped)."""
    text = hdr_file.read_text()
    part = text.split(f"# --- HDU {hdu} ---")[1].split("# --- HDU")[0]
    m = re.search(rf"^{re.escape(keyword):<8}= +('(?P<s>[^']*)'|(?P<n>[^ /\n]+))", part, re.M)
    assert m, f"{keyword} not in HDU {hdu} of {hdr_file.name}"
    return (m["s"] if m["s"] is not None else m["n"]).strip()


def write_from_headers(hdr_file: Path, out: Path, keep: set[int]) -> dict[int, int]:
    """A raw file with the published cards of HDU 0 and the HDUs in ``keep`` (pixels: a ramp);
    returns published HDU -> written HDU."""
    headers = read_headers(hdr_file)
    hdus, position = [], {}
    for k in sorted(headers):
        if k and k not in keep:
            continue
        cards = image_cards(headers[k])
        position[k] = len(hdus)
        if k == 0 and headers[k].get("NAXIS", 0) == 0:
            hdus.append(fits.PrimaryHDU(header=cards))
            continue
        shape, dtype, compressed = raw_geometry(headers[k])
        data = (np.add.outer(np.arange(shape[0]) // 64, np.arange(shape[1]) // 64) % 200 + 1000).astype(dtype)
        if k == 0:
            hdus.append(fits.PrimaryHDU(data, header=cards))
        elif compressed:
            hdus.append(fits.CompImageHDU(data, header=cards, compression_type="RICE_1"))
        else:
            hdus.append(fits.ImageHDU(data, header=cards))
    fits.HDUList(hdus).writeto(out)
    return position


def two_amp_file(path: Path, **cards) -> Path:
    """A generic one-HDU file with the given cards and a 40 x 72 ramp."""
    ny, nx = 40, 72
    data = (np.arange(ny * nx).reshape(ny, nx) % 500 + 1000).astype(np.uint16)
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


# The layout: A data | A overscan | B overscan | B data, no CCDSECA/B (placed by packing).
BETWEEN = {
    "IMAGETYP": "zero",
    "EXPTIME": 0.0,
    "DATASECA": "[1:32,1:40]",
    "BIASSECA": "[33:36,1:40]",
    "BIASSECB": "[37:40,1:40]",
    "DATASECB": "[41:72,1:40]",
    "GAINA": 1.5,
    "GAINB": 2.5,
    "RDNOISEA": 3.0,
    "RDNOISEB": 4.0,
    "SATURATA": 60000.0,
    "SATURATB": 61000.0,
    "DETSEC": "[65:128,1:40]",
}
# Overscans outside, amplifier A placed on the right and B read backwards into the left half.
FLIPPED = {
    "IMAGETYP": "object",
    "EXPTIME": 10.0,
    "DATASECA": "[5:36,1:40]",
    "BIASSECA": "[1:4,1:40]",
    "CCDSECA": "[33:64,1:40]",
    "DATASECB": "[37:68,1:40]",
    "BIASSECB": "[69:72,1:40]",
    "CCDSECB": "[32:1,1:40]",
    "GAIN": 1.25,
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The files written here, once for the module: generic two-amplifier files and files
    built from the published DECam, MegaCam and Rubin ITL headers."""
    root = tmp_path_factory.mktemp("inspect")
    files = {
        "between": two_amp_file(root / "between.fits", **BETWEEN),
        "flipped": two_amp_file(root / "flipped.fits", **FLIPPED),
    }
    for name, hdr, keep in (
        ("decam", HEADERS / "decam" / "dec050441_S1_ccd25.hdr", {25}),
        ("megacam", HEADERS / "megacam" / "2463796o_subset.hdr", {1}),
        ("itl", HEADERS / "lsst" / "latiss_3018092000065-det000_ITL.hdr", {1}),
    ):
        files[name] = root / f"{name}.fits"
        write_from_headers(hdr, files[name], keep)
    return files


def check_against_catalog(chips: list[dict], path: Path) -> None:
    """Each printed chip is the catalogue's: name, profile, shapes and every amplifier's
    sections and numbers; each header origin names keywords the header has, with their values."""
    cat = Catalog.scan([path])
    assert len(chips) == len(cat.entries) > 0
    for chip, e in zip(chips, cat.entries, strict=True):
        facts = chip["facts"]
        assert chip["title"].startswith(f"== {path.name} [HDU {e.hdu}")
        assert facts["chip"][0] == e.chip
        assert facts["profile"][0] == e.profile
        assert facts["image type"][0] == f"{e.imagetyp} / {e.label}"
        assert facts["raw shape"][0] == "{}x{}".format(*e.layout.raw_shape)
        assert facts["trimmed shape"][0] == "{}x{}".format(*e.layout.trimmed_shape)
        assert facts["detsec"][0] == (str(e.layout.detsec) if e.layout.detsec else "none")
        assert list(chip["amps"]) == [a.name for a in e.layout.amplifiers]
        for amp in e.layout.amplifiers:
            got = chip["amps"][amp.name]
            serial = amp.biassec if amp.overscan_axis == "serial" else None
            parallel = amp.parallel_biassec or (amp.biassec if amp.overscan_axis == "parallel" else None)
            assert got["data"][0] == str(amp.datasec)
            assert got["serial overscan"][0] == (str(serial) if serial else "none")
            assert got["parallel overscan"][0] == (str(parallel) if parallel else "none")
            assert got["ccdsec"][0] == str(amp.ccdsec)
            flips = [ax for ax, f in zip("yx", amp.datasec.flipped, strict=True) if f]
            assert got["flips"][0] == (", ".join(sorted(flips)) or "none")
            for label, value in (("gain", amp.gain), ("read noise", amp.rdnoise), ("saturation", amp.saturate)):
                text = got[label][0]
                assert (text == "unknown") if value is None else float(text.split()[0]) == value, (label, text)


def check_header_origins(doc: dict, path: Path) -> int:
    """Every keyword a header origin names is in the file's header (astropy) with that value."""
    checked = 0
    for chip in doc["chips"]:
        header = merged_header(path, chip["hdu"])
        facts = [chip["detsec"], chip["binning"]]
        for amp in chip["amplifiers"]:
            facts += [v for v in amp.values() if isinstance(v, dict) and "origin" in v]
        for fact in facts:
            origin = fact["origin"]
            if origin is None or origin["kind"] != "header":
                continue
            for kw in origin["keywords"]:
                want = header[kw["keyword"]]
                assert kw["value"] == (want.strip() if isinstance(want, str) else want), kw
                checked += 1
    return checked


# -- (a) a file of each real folder ------------------------------------------------------------------


@pytest.mark.parametrize("folder", sorted(set(KNOWN_REAL) | set(PRESENT_REAL)))
def test_a_file_of_each_real_folder(folder, capsys):
    path = sorted(p for p in real_dir(folder).iterdir() if ".fit" in p.name)[0]
    rc, out, err = inspect(capsys, path)
    assert (rc, err) == (EXIT_OK, "")
    chips = parse(out)
    check_against_catalog(chips, path)
    out = inspect_ok(capsys, path, "--json")
    assert check_header_origins(json.loads(out), path) > 0


def test_kast_sections_and_keywords(capsys):
    path = real_dir("shane_kast_blue") / "b1.fits.gz"
    header = fits.getheader(path)
    out = inspect_ok(capsys, path)
    (chip,) = parse(out)
    assert chip["facts"]["profile"] == (
        "shane_kast_blue",
        f"detected: VERSION = '{header['VERSION']}' matches 'kast.*'",
    )
    assert chip["facts"]["placement"][0] == "rule 3 packing"
    a, b = chip["amps"]["A"], chip["amps"]["B"]
    # the profile's sections (src/ccdask/profiles/shane_kast_blue.toml), said to come from it
    assert a["data"] == ("[1:1024,1:350]", "profile: [[layout.amplifiers]] datasec = '[1:1024,1:350]'")
    assert b["serial overscan"][0] == "[2081:2112,1:350]" and b["parallel overscan"] == ("none", None)
    assert a["gain"] == (f"{header['GAIN']} e-/ADU", f"GAIN = {header['GAIN']} (the keyword the profile names)")
    assert a["read noise"][0] == "unknown" and a["read noise"][1].startswith("default:")
    # forced: generic sees one amplifier over DATASEC and no overscan
    out = inspect_ok(capsys, path, "--profile", "generic")
    (chip,) = parse(out)
    assert chip["facts"]["profile"][1].startswith("forced by --profile generic")
    assert list(chip["amps"]) == ["A"]
    assert chip["amps"]["A"]["data"] == (header["DATASEC"], f"DATASEC = '{header['DATASEC']}'")
    assert chip["amps"]["A"]["serial overscan"] == ("none", None)


def test_isis_parallel_overscan_and_keywords(capsys):
    path = real_dir("wht_isis_red") / "r2700982.fit.gz"
    header = merged_header(path, 1)
    out = inspect_ok(capsys, path)
    (chip,) = parse(out)
    assert chip["facts"]["profile"][1] == f"detected: INSTRUME = '{header['INSTRUME']}' matches 'ISIS red arm'"
    assert chip["facts"]["chip"] == (header["CCDNAME"], f"CCDNAME = '{header['CCDNAME']}'")
    assert chip["facts"]["binning"] == ("1x1", f"CCDSUM = '{header['CCDSUM']}'")
    lh = chip["amps"]["LH"]
    assert lh["serial overscan"] == ("none", None)
    assert lh["parallel overscan"][0] == "[1:966,4110:4190]"
    assert lh["read noise"][1] == f"READNOIS = {header['READNOIS']} (the keyword the profile names)"


def test_saao_generic_keywords(capsys):
    path = real_dir("saao_1m_ste3") / "a8280271.fits"
    header = fits.getheader(path)
    out = inspect_ok(capsys, path)
    (chip,) = parse(out)
    assert chip["facts"]["profile"] == ("generic", "no profile matched: generic")
    a = chip["amps"]["A"]
    assert a["data"] == ("[17:528,1:520]", f"TRIMSEC = '{header['TRIMSEC'].strip()}'")
    assert a["serial overscan"] == ("[4:13,1:520]", f"BIASSEC = '{header['BIASSEC'].strip()}'")
    assert a["gain"] == ("1.9 e-/ADU", f"GAIN = {header['GAIN']}")
    assert a["read noise"] == ("5 e-", f"RDNOISE = {header['RDNOISE']}")
    assert a["saturation"][1].startswith("default:")


# -- (b) files written from the published headers ----------------------------------------------------


def amp_json(doc: dict, name: str) -> dict:
    (chip,) = doc["chips"]
    return next(a for a in chip["amplifiers"] if a["name"] == name)


def test_decam_parallel_overscan_from_postsec(made, capsys):
    hdr = HEADERS / "decam" / "dec050441_S1_ccd25.hdr"
    rc, out, err = inspect(capsys, made["decam"], "--json")
    assert (rc, err) == (EXIT_OK, "")
    doc = json.loads(out)
    assert doc["chips"][0]["profile"]["conditions"] == [
        {"keyword": "INSTRUME", "pattern": "DECam", "value": header_text_value(hdr, "INSTRUME", 0), "hit": True}
    ]
    assert doc["chips"][0]["placement"]["rule"] == "CCDSEC"
    for name in "AB":
        amp = amp_json(doc, name)
        for fld, key in (
            ("parallel_biassec", f"POSTSEC{name}"),
            ("biassec", f"BIASSEC{name}"),
            ("datasec", f"DATASEC{name}"),
            ("ccdsec", f"CCDSEC{name}"),
        ):
            value = header_text_value(hdr, key, 25)
            assert amp[fld]["origin"]["keywords"] == [{"keyword": key, "value": value}], fld
            assert amp[fld]["value"] == value  # DECam's raw image is in CCD orientation: as given
        for fld, key in (("gain", f"GAIN{name}"), ("rdnoise", f"RDNOISE{name}"), ("saturate", f"SATURAT{name}")):
            value = float(header_text_value(hdr, key, 25))
            assert amp[fld] == {
                "value": value,
                "origin": {
                    "kind": "header",
                    "keywords": [{"keyword": key, "value": value}],
                    "detail": "",
                    "text": f"{key} = {value}",
                },
            }
        assert amp["overscan_axis"]["value"] == "serial" and amp["flips"] == {
            "x": False,
            "y": False,
            "reason": amp["flips"]["reason"],
        }
    # the text says the same
    out = inspect_ok(capsys, made["decam"])
    (chip,) = parse(out)
    value = header_text_value(hdr, "POSTSECA", 25)
    assert chip["amps"]["A"]["parallel overscan"] == (value, f"POSTSECA = '{value}'")


def test_megacam_placement_from_cseca(made, capsys):
    hdr = HEADERS / "megacam" / "2463796o_subset.hdr"
    out = inspect_ok(capsys, made["megacam"], "--json")
    doc = json.loads(out)
    (chip,) = doc["chips"]
    assert chip["profile"]["name"] == "cfht_megacam" and chip["placement"]["rule"] == "CCDSEC"
    assert "CSECA" in chip["placement"]["reason"] and "CSECB" in chip["placement"]["reason"]
    for name in "AB":
        amp = amp_json(doc, name)
        for fld, key in (("ccdsec", f"CSEC{name}"), ("datasec", f"DSEC{name}"), ("biassec", f"BSEC{name}")):
            value = header_text_value(hdr, key, 1)
            assert amp[fld]["origin"]["keywords"] == [{"keyword": key, "value": value}], fld
        # DETSECA/B are found but CSECA/B place the pixels (the profile's comment says why)
        detsec = header_text_value(hdr, f"DETSEC{name}", 1)
        assert amp["detsec"]["value"] == detsec and "not used" in amp["detsec"]["origin"]["detail"]
        assert amp["gain"]["origin"]["keywords"][0]["keyword"] == f"GAIN{name}"
    assert amp_json(doc, "A")["ccdsec"]["value"] == header_text_value(hdr, "CSECA", 1)
    assert chip["detsec"]["value"] == header_text_value(hdr, "DETSEC", 1)  # kept as given (rule 1)


def test_rubin_detsec_flips_the_amplifier(made, capsys):
    hdr = HEADERS / "lsst" / "latiss_3018092000065-det000_ITL.hdr"
    detsec = header_text_value(hdr, "DETSEC", 1)  # '[509:1,1:2000]': read backwards along x
    out = inspect_ok(capsys, made["itl"])
    (chip,) = parse(out)
    assert chip["facts"]["placement"][0] == "rule 2 DETSEC"
    assert chip["facts"]["detsec"] == (
        "[1:509,1:2000]",
        f"DETSEC = '{detsec}' (turned forward: rule DETSEC put the pixels in detector orientation)",
    )
    a = chip["amps"]["A"]
    assert a["flips"] == ("x", "x: DETSEC runs backwards, DATASEC forwards")
    # the overscans are the profile's literals (lsst_itl.toml), the header has no BIASSEC
    assert a["serial overscan"] == ("[513:576,1:2000]", "profile: [layout.keywords] literal [513:576,1:2000]")
    check_against_catalog([chip], made["itl"])


def test_generic_two_amplifier_files(made, capsys):
    out = inspect_ok(capsys, made["between"], made["flipped"])
    between, flipped = parse(out)
    check_against_catalog([between], made["between"])
    check_against_catalog([flipped], made["flipped"])
    assert between["facts"]["placement"][0] == "rule 3 packing"
    assert between["amps"]["B"]["ccdsec"][0] == "[33:64,1:40]"  # the overscans between are packed out
    assert between["amps"]["B"]["gain"] == ("2.5 e-/ADU", "GAINB = 2.5")
    assert between["facts"]["detsec"] == ("[65:128,1:40]", "DETSEC = '[65:128,1:40]'")
    b = flipped["amps"]["B"]
    assert flipped["facts"]["placement"][0] == "rule 1 CCDSEC"
    assert b["data"][0] == "[68:37,1:40]" and b["ccdsec"][0] == "[1:32,1:40]"
    assert b["flips"] == ("x", "x: CCDSECB runs backwards, DATASECB forwards")
    assert flipped["amps"]["A"]["flips"] == ("none", "CCDSECA and DATASECA run the same way")
    assert b["gain"] == ("1.25 e-/ADU", "GAIN = 1.25")  # no GAINB: the chip-wide GAIN
    assert b["read noise"][0] == "unknown" and b["saturation"][1].startswith("default:")


def test_detection_explained_agrees_with_detection():
    """``detect_profile_explained`` picks what ``detect_profile`` (the catalogue's) picks."""
    seen = set()
    for hdr in sorted(HEADERS.glob("*/*.hdr")):
        headers = read_headers(hdr)
        for h in headers.values():
            merged = headers[0].copy()
            merged.update(h)
            prof, detection = detect_profile_explained(merged)
            assert prof is detect_profile(merged)
            assert (detection is None) == (prof.name == "generic")
            seen.add(prof.name)
    assert {"decam", "cfht_megacam", "gmos", "lsst_itl", "lsst_e2v", "subaru_hsc", "eso_efosc2"} <= seen
    miss = load_profile("decam").explain_detection(fits.Header({"INSTRUME": "GMOS-N"}))
    assert (miss.matched, miss.reason) == (False, "INSTRUME = 'GMOS-N' does not match 'DECam'")
    assert load_profile("decam").explain_detection(fits.Header()).reason == "INSTRUME is missing"
    assert "generic" in available_profiles()


# -- (c) problems: one line naming the file (and extension), exit 3 ------------------------------------


def test_not_fits_and_truncated_files(made, tmp_path, capsys):
    junk = tmp_path / "notes.fits"
    junk.write_text("these are my observing notes, not a FITS file\n" * 100)
    rc, out, err = inspect(capsys, junk)
    assert rc == EXIT_INPUT and out.strip() == ""
    (line,) = err.splitlines()
    assert line.startswith(f"ccdask inspect: error: {junk}: ")

    # a two-chip file cut inside its second chip's data: a problem naming HDU 2, never one chip
    whole = tmp_path / "whole.fits"
    data = np.zeros((40, 72), np.int16)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="C1"), fits.ImageHDU(data, name="C2")]).writeto(whole)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size - 2880])
    rc, out, err = inspect(capsys, made["between"], cut)
    assert rc == EXIT_INPUT
    assert [c["title"] for c in parse(out)] == ["== between.fits [HDU 0] chip HDU0 =="]
    (line,) = err.splitlines()
    assert line.startswith(f"ccdask inspect: error: {cut}[2]: ") and "truncated" in line


def test_profile_error_names_the_extension(tmp_path, capsys):
    path = tmp_path / "mef.fits"
    good = fits.ImageHDU(np.zeros((40, 72), np.uint16), name="GOOD")
    bad = fits.ImageHDU(np.zeros((40, 72), np.uint16), name="BAD")
    bad.header["DATASEC"] = "[1:100,1:40]"  # 100 columns of a 72-column image
    fits.HDUList([fits.PrimaryHDU(), good, bad]).writeto(path)
    rc, out, err = inspect(capsys, path)
    assert rc == EXIT_INPUT
    assert [c["facts"]["chip"][0] for c in parse(out)] == ["GOOD"]
    (line,) = err.splitlines()
    assert line.startswith(f"ccdask inspect: error: {path}[2]: ") and "DATASEC" in line and "[1:100,1:40]" in line

    rc, out, err = inspect(capsys, path, "--json")
    doc = json.loads(out)
    assert [c["chip"] for c in doc["chips"]] == ["GOOD"]
    assert [(p["file"], p["hdu"]) for p in doc["problems"]] == [(str(path), 2)]


# -- (d) --png ---------------------------------------------------------------------------------------


def test_png_draws_the_layout_and_nothing_else(made, tmp_path, capsys):
    from matplotlib.image import imread

    folder = tmp_path / "pictures"
    out = folder / "layout.png"
    rc, text, err = inspect(capsys, made["decam"], made["flipped"], "--png", out)
    assert (rc, err) == (EXIT_OK, "")
    assert sorted(p.name for p in folder.iterdir()) == ["layout.png"]
    assert f"layout picture: {out}" in text
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    rgb = image[..., :3]
    orange = (rgb[..., 0] > rgb[..., 1] + 0.08) & (rgb[..., 1] > rgb[..., 2] + 0.08)  # serial overscans
    blue = rgb[..., 2] > rgb[..., 0] + 0.2  # DECam's parallel overscans (POSTSEC)
    assert orange.sum() > 100 and blue.sum() > 100


# -- (e) --json says what the text says ---------------------------------------------------------------


def test_json_matches_the_text(made, capsys):
    files = [made["decam"], made["megacam"], made["between"], made["flipped"], made["itl"]]
    if (REAL / "wht_isis_red").is_dir():
        files.append(REAL / "wht_isis_red" / "r2700982.fit.gz")
    out = inspect_ok(capsys, *files)
    chips = parse(out)
    out = inspect_ok(capsys, *files, "--json")
    doc = json.loads(out)
    assert doc["format"] == "ccdask-inspect/1" and doc["problems"] == [] and doc["png"] is None
    assert len(chips) == len(doc["chips"]) == len(files)

    def text(fact):
        return None if fact["origin"] is None else fact["origin"]["text"]

    for t, j in zip(chips, doc["chips"], strict=True):
        f = t["facts"]
        assert f["file"][0] == j["file"]
        assert f["chip"] == (j["chip"], j["chip_origin"])
        assert f["profile"] == (j["profile"]["name"], j["profile"]["reason"])
        assert f["image type"] == (f"{j['imagetyp']['type']} / {j['imagetyp']['label']}", j["imagetyp"]["reason"])
        assert f["raw shape"][0] == "{}x{}".format(*j["raw_shape"])
        assert f["trimmed shape"][0] == "{}x{}".format(*j["trimmed_shape"])
        assert f["detsec"][0] == (j["detsec"]["value"] or "none")
        if j["detsec"]["origin"]:
            assert f["detsec"][1] == text(j["detsec"])
        assert f["binning"] == (f"{j['binning']['x']}x{j['binning']['y']}", j["binning"]["origin"]["text"])
        assert f["placement"] == (f"rule {j['placement']['number']} {j['placement']['rule']}", j["placement"]["reason"])
        assert f["amplifiers"] == (str(len(j["amplifiers"])), j["amplifiers_from"])
        assert list(t["amps"]) == [a["name"] for a in j["amplifiers"]]
        for a in j["amplifiers"]:
            ta = t["amps"][a["name"]]
            axis = a["overscan_axis"]["value"]
            parallel = (
                a["parallel_biassec"]
                if a["parallel_biassec"]["value"]
                else a["biassec"]
                if axis == "parallel"
                else None
            )
            serial = a["biassec"] if axis == "serial" else None
            assert ta["data"] == (a["datasec"]["value"], text(a["datasec"]))
            assert ta["serial overscan"] == ((serial["value"], text(serial)) if serial else ("none", None))
            assert ta["parallel overscan"] == ((parallel["value"], text(parallel)) if parallel else ("none", None))
            assert ta["ccdsec"] == (a["ccdsec"]["value"], text(a["ccdsec"]))
            flips = ", ".join(ax for ax in "xy" if a["flips"][ax]) or "none"
            assert ta["flips"] == (flips, a["flips"]["reason"])
            for label, key in (("gain", "gain"), ("read noise", "rdnoise"), ("saturation", "saturate")):
                value = ta[label][0]
                want = a[key]["value"]
                assert (value == "unknown") if want is None else float(value.split()[0]) == want
                assert ta[label][1] == text(a[key])


def test_profile_sections_are_named_whole_in_the_reasons(capsys):
    """A section from the profile is named by its entry, not cut at the colon inside it."""
    path = real_dir("wht_isis_red") / "r2700982.fit.gz"
    assert main(["inspect", str(path)]) == EXIT_OK
    (flips,) = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("flips")]
    assert flips.split("<-")[1].strip() == "[[layout.amplifiers]] datasec runs forwards"


def test_a_reader_that_stops_early_is_not_a_failure():
    """``ccdask inspect ... | head``: the closed pipe ends the command quietly with exit 0."""
    import subprocess
    import sys

    files = sorted(str(p) for p in real_dir("shane_kast_blue").glob("*.fits.gz"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccdask.cli._main", "inspect", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"== ")
    proc.stdout.close()
    _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"Broken pipe" not in err
