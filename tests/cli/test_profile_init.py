"""``ccdask profile init FILE``: a starting profile that loads and gives FILE the layout it has now.

Run through the real command line on the real Kast frames, on generic two-amplifier files and on
files written from the published DECam and Rubin ITL headers; each written profile is loaded with
``load_profile(path)`` and catalogued against the detected one (same chips, same ``ChipLayout``).
"""

from __future__ import annotations

import tomllib

import pytest

from ccdask.catalog import Catalog
from ccdask.cli._main import EXIT_INPUT, EXIT_OK, main
from ccdask.profiles import load_profile
from tests.cli.test_inspect import BETWEEN, FLIPPED, header_text_value, two_amp_file, write_from_headers
from tests.helpers import real_dir
from tests.profiles.test_real_cameras import HEADERS


def init(capsys, *args) -> tuple[int, str, str]:
    rc = main(["profile", "init", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def same_catalogue(raw, profile_path) -> Catalog:
    """The file catalogued with the written profile equals the catalogue with detection."""
    detected = Catalog.scan([raw])
    mine = Catalog.scan([raw], profile=load_profile(profile_path))
    assert not mine.problems and not detected.problems
    assert [(e.hdu, e.chip) for e in mine] == [(e.hdu, e.chip) for e in detected]
    for m, d in zip(mine, detected, strict=True):
        assert m.layout == d.layout, (m.hdu, m.layout, d.layout)
        assert m.exptime == d.exptime and m.filter == d.filter
    return mine


def test_kast_round_trip(tmp_path, capsys):
    raw = real_dir("shane_kast_blue") / "b1.fits.gz"
    out = tmp_path / "kast.toml"
    rc, text, err = init(capsys, raw, "-o", out, "--name", "my_kast")
    assert (rc, err) == (EXIT_OK, "")
    assert f"wrote {out}: profile 'my_kast'" in text
    mine = same_catalogue(raw, out)
    doc = tomllib.loads(out.read_text())
    assert doc["name"] == "my_kast" and doc["detect"] == {"VERSION": "kastb"}
    assert load_profile(out).matches(mine.entries[0].header)
    assert doc["layout"]["source"] == "profile"
    amps = doc["layout"]["amplifiers"]
    assert [a["datasec"] for a in amps] == ["[1:1024,1:350]", "[1025:2048,1:350]"]
    assert [a["gain"] for a in amps] == ["GAIN", "GAIN"]  # a keyword, as the shipped profile says
    assert all("rdnoise" not in a for a in amps)  # Kast has none: left out, with a comment
    assert "# rdnoise: unknown" in out.read_text()
    assert doc["keywords"]["imagetyp"] == ["OBSTYPE"] and doc["imagetyp"]["science"] == ["OBJECT"]
    # the shipped profile's rules came along: the arcs, flats and biases classify as before
    for name in ("b1.fits.gz", "b11.fits.gz", "b21.fits.gz"):
        f = real_dir("shane_kast_blue") / name
        (a,), (b,) = Catalog.scan([f]).entries, Catalog.scan([f], profile=out).entries
        assert (a.imagetyp, a.label) == (b.imagetyp, b.label)


@pytest.mark.parametrize("cards", [BETWEEN, FLIPPED], ids=["overscans-between", "ccdsec-flipped"])
def test_generic_two_amplifier_round_trip(cards, tmp_path, capsys):
    raw = two_amp_file(tmp_path / "two.fits", **cards)
    out = tmp_path / "two.toml"
    rc, _, err = init(capsys, raw, "-o", out)
    assert (rc, err) == (EXIT_OK, "")
    same_catalogue(raw, out)
    amps = tomllib.loads(out.read_text())["layout"]["amplifiers"]
    assert [a["name"] for a in amps] == ["A", "B"]
    if cards is FLIPPED:
        assert amps[1]["datasec"] == "[68:37,1:40]" and amps[1]["ccdsec"] == "[1:32,1:40]"
        assert [a["gain"] for a in amps] == ["GAIN", "GAIN"]
    else:
        assert [a["gain"] for a in amps] == ["GAINA", "GAINB"]
        assert [a["rdnoise"] for a in amps] == ["RDNOISEA", "RDNOISEB"]
        assert [a["saturate"] for a in amps] == ["SATURATA", "SATURATB"]
        assert amps[1]["ccdsec"] == "[33:64,1:40]"


def test_decam_round_trip(tmp_path, capsys):
    hdr = HEADERS / "decam" / "dec050441_S1_ccd25.hdr"
    raw = tmp_path / "decam.fits"
    write_from_headers(hdr, raw, {25})
    out = tmp_path / "decam.toml"
    rc, _, err = init(capsys, raw, "-o", out)
    assert (rc, err) == (EXIT_OK, "")
    mine = same_catalogue(raw, out)
    text = out.read_text()
    doc = tomllib.loads(text)
    assert doc["name"] == "decam" and doc["detect"] == {"INSTRUME": "DECam"}  # not the CCD's DETECTOR
    assert load_profile(out).matches(mine.entries[0].header)
    assert doc["keywords"]["chip"] == ["DETPOS"]
    a, b = doc["layout"]["amplifiers"]
    for amp, s in ((a, "A"), (b, "B")):
        assert amp["parallel_biassec"] == header_text_value(hdr, f"POSTSEC{s}", 25)
        assert amp["biassec"] == header_text_value(hdr, f"BIASSEC{s}", 25)
        assert amp["ccdsec"] == header_text_value(hdr, f"CCDSEC{s}", 25)
        assert (amp["gain"], amp["rdnoise"], amp["saturate"]) == (f"GAIN{s}", f"RDNOISE{s}", f"SATURAT{s}")
    # each entry says where it came from
    value = header_text_value(hdr, "POSTSECA", 25)
    assert any(line.startswith("parallel_biassec") and f"# POSTSECA = '{value}'" in line for line in text.splitlines())


def test_detsec_placed_chips_leave_the_layout_to_the_header(tmp_path, capsys):
    """Rubin ITL segments are placed by DETSEC (rule 2), which turns their DETSEC forward: an
    explicit list cannot, so the written profile reads the header with lsst_itl's families."""
    raw = tmp_path / "itl.fits"
    write_from_headers(HEADERS / "lsst" / "latiss_3018092000065-det000_ITL.hdr", raw, {1, 2})
    out = tmp_path / "itl.toml"
    rc, text, err = init(capsys, raw, "-o", out)
    assert (rc, err) == (EXIT_OK, "")
    assert "layout left to the header" in text
    doc = tomllib.loads(out.read_text())
    assert doc["layout"]["source"] == "header" and "amplifiers" not in doc["layout"]
    assert doc["layout"]["keywords"]["biassec"] == ["BIASSEC{a}", "[513:576,1:2000]"]
    assert "# [[layout.amplifiers]]" in out.read_text()
    same_catalogue(raw, out)


def test_never_overwrites_unless_asked(tmp_path, capsys):
    raw = two_amp_file(tmp_path / "two.fits", **BETWEEN)
    out = tmp_path / "mine.toml"
    out.write_text("# my own profile, hand-written\n")
    rc, text, err = init(capsys, raw, "-o", out)
    assert rc == EXIT_INPUT and text == ""
    assert err.strip() == f"ccdask profile: error: {out}: exists; pass --overwrite to replace it"
    assert out.read_text() == "# my own profile, hand-written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.toml", "two.fits"]  # no temporary left
    rc, _, _ = init(capsys, raw, "-o", out, "--overwrite")
    assert rc == EXIT_OK
    same_catalogue(raw, out)
    # a name load_profile would not read as a path is refused before anything is written
    rc, _, err = init(capsys, raw, "-o", tmp_path / "mine.txt")
    assert rc == EXIT_INPUT and ".toml" in err and not (tmp_path / "mine.txt").exists()


def test_a_file_ccdask_cannot_read(tmp_path, capsys):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not FITS at all" * 200)
    rc, text, err = init(capsys, junk, "-o", tmp_path / "p.toml")
    assert rc == EXIT_INPUT and text == ""
    (line,) = err.splitlines()
    assert str(junk) in line and not (tmp_path / "p.toml").exists()
