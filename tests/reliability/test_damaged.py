"""Damaged inputs: files that end inside an HDU, and exposures missing chips.

A file cut short inside an HDU (inside a header, or before the data its header declares; plain,
gzip-wrapped or fpack) is a catalogue problem naming the file, the HDU (and its EXTNAME) and the
byte where the file ends against the byte where that HDU should end, and none of its HDUs is
used: it is never a shorter exposure. A file that ends exactly at an HDU boundary is a complete
FITS file with fewer HDUs: no problem, but the plan notes the chips it lacks. The command line
shows each warning as one line, without a Python source line.

Where the HDUs should end comes from astropy (``fileinfo()`` of the complete file), not from
ccdask's scanner.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.catalog import Catalog
from ccdask.cli._main import EXIT_INPUT, EXIT_OK, main
from ccdask.config import load_config
from ccdask.errors import CcdaskWarning, FitsReadError, TruncatedFileError
from ccdask.io import scan_file
from ccdask.night._plan import make_plan
from ccdask.night._reduce import reduce

from .support import copy_raw

RNG = np.random.default_rng(11)
SHAPE = (60, 70)  # ny, nx of each chip of the hand-made MEF files


def _mef(path: Path, *, compressed: bool = False, nchips: int = 2) -> Path:
    """A multi-extension file: empty primary, then chips CCD1..CCDn (uint16)."""
    make = fits.CompImageHDU if compressed else fits.ImageHDU
    hdus = [fits.PrimaryHDU()] + [
        make(RNG.integers(0, 60000, SHAPE).astype(np.uint16), name=f"CCD{i}") for i in range(1, nchips + 1)
    ]
    fits.HDUList(hdus).writeto(path)
    return path


def _spans(path: Path) -> list[dict[str, int]]:
    """Per HDU, as astropy sees the complete file: header start, data start, padded data end.

    Compressed HDUs are read as the binary tables they are stored as."""
    with fits.open(path, disable_image_compression=True) as hdul:
        out = []
        for hdu in hdul:
            info = hdu.fileinfo()
            if hdu.header.get("ZIMAGE"):  # table rows, then the heap of compressed tiles
                nbytes = hdu.header["NAXIS1"] * hdu.header["NAXIS2"] + hdu.header["PCOUNT"]
            else:
                nbytes = 0 if hdu.data is None else hdu.data.nbytes
            out.append(
                {
                    "header": info["hdrLoc"],
                    "data": info["datLoc"],
                    "end": info["datLoc"] + info["datSpan"],
                    "nbytes": nbytes,
                }
            )
        return out


def _cut(src: Path, dest: Path, nbytes: int) -> Path:
    """A copy of the first ``nbytes`` bytes of ``src`` (the source is never touched)."""
    dest.write_bytes(src.read_bytes()[:nbytes])
    return dest


def _gunzip_prefix(data: bytes) -> int:
    """How many decompressed bytes a cut gzip stream still holds (one member)."""
    return len(zlib.decompressobj(wbits=31).decompress(data))


def _scan_problem(path: Path):
    """Catalog.scan of one damaged file: no entry, one problem; returns the problem."""
    with pytest.warns(CcdaskWarning, match="skipped 1 unusable input") as record:
        cat = Catalog.scan([path])
    assert len(cat) == 0, "a damaged file must contribute no chip at all"
    (problem,) = cat.problems
    assert problem.path == str(path)
    assert [w.message.problems for w in record if hasattr(w.message, "problems")] == [(problem,)]
    return problem


# ------------------------------------------------------------------------------ the scanner
# name -> (HDU the file ends in, cut offset from the spans, EXTNAME readable?, part)
CUTS = {
    "first bytes of the 2nd header": (2, lambda s: s[2]["header"] + 5, False, "header"),
    "2nd header, before its EXTNAME": (2, lambda s: s[2]["header"] + 300, False, "header"),
    "2nd header, after its EXTNAME": (2, lambda s: s[2]["header"] + 900, True, "header"),
    "2nd header complete, no data": (2, lambda s: s[2]["data"], True, "data"),
    "inside the 2nd chip's data": (2, lambda s: s[2]["data"] + 1234, True, "data"),
    "inside the 1st chip's data": (1, lambda s: s[1]["data"] + 100, True, "data"),
    "last data byte missing": (2, lambda s: s[2]["data"] + s[2]["nbytes"] - 1, True, "data"),
}


@pytest.mark.parametrize("case", list(CUTS))
def test_cut_multi_extension_file_names_hdu_and_offsets(tmp_path, case):
    hdu, where, readable, part = CUTS[case]
    full = _mef(tmp_path / "full.fits")
    spans = _spans(full)
    cut = where(spans)
    path = _cut(full, tmp_path / "cut.fits", cut)
    with pytest.raises(TruncatedFileError) as err:
        scan_file(path)
    e = err.value
    assert isinstance(e, FitsReadError)
    msg = str(e)
    assert msg.startswith(
        f"{path}[{hdu}]: truncated file: the file ends at byte {cut}, inside the {part} of HDU {hdu}"
    ), msg
    assert (e.path, e.hdu, e.ends_at) == (str(path), hdu, cut)
    if readable:
        assert f"(EXTNAME = 'CCD{hdu}')" in msg and e.extname == f"CCD{hdu}"
    else:
        assert "EXTNAME" not in msg and e.extname is None
    if part == "data":
        assert e.should_end == spans[hdu]["end"]
        assert f"declares {spans[hdu]['nbytes']} data bytes" in msg
        assert f"so the HDU should end at byte {spans[hdu]['end']}" in msg
    else:  # the header's END card is missing: at least the block it was cut in is due
        assert e.should_end == spans[hdu]["data"] == spans[hdu]["header"] + 2880
        assert f"should end at byte {e.should_end} or later" in msg

    problem = _scan_problem(path)
    assert problem.hdu == hdu
    assert str(problem).startswith(f"{path}[{hdu}]: truncated file: the file ends at byte {cut}")
    assert "the whole file is skipped" in problem.reason


def test_cut_exactly_at_an_hdu_boundary_is_a_complete_shorter_file(tmp_path):
    full = _mef(tmp_path / "full.fits", nchips=3)
    spans = _spans(full)
    path = _cut(full, tmp_path / "two_of_three.fits", spans[3]["header"])
    assert [(i.index, i.extname) for i in scan_file(path)] == [(1, "CCD1"), (2, "CCD2")]
    cat = Catalog.scan([path])  # no warning (CcdaskWarning is an error in this suite)
    assert cat.problems == () and cat.chips == ["CCD1", "CCD2"]


def test_missing_padding_after_the_last_chip_is_not_a_cut(tmp_path):
    """Only the padding of the last HDU may be missing: every declared byte is there."""
    full = _mef(tmp_path / "full.fits")
    spans = _spans(full)
    path = _cut(full, tmp_path / "unpadded.fits", spans[2]["data"] + spans[2]["nbytes"])
    assert [i.extname for i in scan_file(path)] == ["CCD1", "CCD2"]


def test_cut_fpack_file_is_named_as_a_compressed_hdu(tmp_path):
    full = _mef(tmp_path / "full.fits.fz", compressed=True)
    spans = _spans(full)
    assert spans[2]["nbytes"] > 2000, "the compressed table should hold a heap worth cutting"
    cut = spans[2]["data"] + spans[2]["nbytes"] // 2
    path = _cut(full, tmp_path / "cut.fits.fz", cut)
    with pytest.raises(TruncatedFileError) as err:
        scan_file(path)
    msg = str(err.value)
    assert msg.startswith(
        f"{path}[2]: truncated file: the file ends at byte {cut}, inside the data of HDU 2 (EXTNAME = 'CCD2')"
    ), msg
    assert "tile-compressed image" in msg
    assert f"declares {spans[2]['nbytes']} data bytes" in msg
    assert f"should end at byte {spans[2]['end']}" in msg
    assert _scan_problem(path).hdu == 2
    # the whole file as fpack wrote it still scans (the cut is what fails)
    assert [i.kind for i in scan_file(full)] == ["fpack", "fpack"]


def test_cut_gzip_stream_names_the_hdu_and_decompressed_offsets(tmp_path):
    full = _mef(tmp_path / "full.fits")
    spans = _spans(full)
    packed = gzip.compress(full.read_bytes())
    path = tmp_path / "cut.fits.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])
    ends = _gunzip_prefix(path.read_bytes())
    hdu = next(i for i, s in enumerate(spans) if s["header"] <= ends < s["end"])
    assert hdu in (1, 2)
    with pytest.raises(TruncatedFileError) as err:
        scan_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}[{hdu}]: truncated file: the decompressed gzip stream ends at byte {ends}"), msg
    assert f"should end at byte {spans[hdu]['end']}" in msg
    assert _scan_problem(path).hdu == hdu
    # every FITS byte there, but the gzip trailer (CRC and length) cut: still damaged
    path.write_bytes(packed[:-4])
    with pytest.raises(
        TruncatedFileError,
        match=r"\[2\]: truncated file: .* without its "
        "end-of-stream marker, after its last HDU",
    ):
        scan_file(path)
    # several gzip members and zero padding after them make one whole stream
    body = full.read_bytes()
    path.write_bytes(gzip.compress(body[:10000]) + gzip.compress(body[10000:]) + b"\0" * 64)
    assert [i.extname for i in scan_file(path)] == ["CCD1", "CCD2"]


@pytest.mark.real
def test_cut_copy_of_a_real_plain_frame(saao_dir, tmp_path):
    src = saao_dir / "a8280271.fits"
    local = tmp_path / "a8280271.fits"
    shutil.copyfile(src, local)
    spans = _spans(local)
    (tmp_path / "cut").mkdir()
    cut = spans[0]["end"] - 5000
    path = _cut(local, tmp_path / "cut" / "a8280271.fits", cut)
    problem = _scan_problem(path)
    assert problem.hdu == 0
    assert str(problem).startswith(f"{path}[0]: truncated file: the file ends at byte {cut}, inside the data of HDU 0")
    assert f"should end at byte {spans[0]['end']}" in problem.reason


@pytest.mark.real
def test_cut_copy_of_a_real_gzip_frame(kast_dir, tmp_path):
    src = kast_dir / "b21.fits.gz"
    plain = tmp_path / "b21.fits"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    spans = _spans(plain)
    packed = src.read_bytes()
    path = tmp_path / "b21.fits.gz"
    path.write_bytes(packed[: len(packed) // 2])
    ends = _gunzip_prefix(path.read_bytes())
    assert spans[0]["data"] < ends < spans[0]["end"]
    problem = _scan_problem(path)
    assert problem.hdu == 0
    assert str(problem).startswith(
        f"{path}[0]: truncated file: the decompressed gzip stream ends at byte {ends}, inside the data of HDU 0"
    )
    assert f"should end at byte {spans[0]['end']}" in problem.reason
    assert src.read_bytes() == packed, "the shared raw file must not change"


# ------------------------------------------------------------------------------ a night
def _science_chips(path: Path) -> dict[int, np.ndarray]:
    with fits.open(path) as hdul:
        return {h.ver: h.data.copy() for h in hdul if h.name == "SCI"}


def test_damaged_exposure_is_a_problem_and_not_reduced(night, reference, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    victim = raw / "science_g_000.fits"
    spans = _spans(victim)
    cut = spans[2]["data"] + spans[2]["nbytes"] // 2
    victim.write_bytes(victim.read_bytes()[:cut])
    out = tmp_path / "out"
    with pytest.warns(CcdaskWarning, match=r"science_g_000\.fits\[2\]: truncated file") as record:
        result = reduce(raw, out, client="threads")
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    assert not list(out.rglob("*science_g_000*")), "nothing may be written for a damaged exposure"
    assert [e.name for e in result.plan.exposures] == ["science_r_000"]
    man = json.loads((out / "manifest.json").read_text())
    (problem,) = man["problems"]
    assert (problem["path"], problem["hdu"]) == (str(victim), 2)
    assert f"ends at byte {cut}" in problem["reason"]
    assert f"should end at byte {spans[2]['end']}" in problem["reason"]
    # the rest of the night is exactly what it was
    ref_out, _ = reference
    name = "reduced/science_r_000.fits"
    got, want = _science_chips(out / name), _science_chips(ref_out / name)
    assert got.keys() == want.keys() == {1, 2}
    for ver in want:
        assert np.array_equal(got[ver], want[ver], equal_nan=True)


def test_exposure_missing_a_chip_gets_a_note(night, reference, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    short = raw / "science_g_000.fits"
    with fits.open(night.raw_dir / short.name) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "CCD1", "CCD2"]
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(short, overwrite=True)
    out = tmp_path / "out"
    result = reduce(raw, out, client="threads")  # no warning: nothing is damaged
    assert result.plan.problems == ()
    notes = [n for n in result.plan.notes if str(short) in n]
    assert len(notes) == 1 and "lacks chip(s) CCD2" in notes[0], result.plan.notes
    man = json.loads((out / "manifest.json").read_text())
    assert notes[0] in man["notes"]
    # the chip it has is reduced as in the complete night; the missing one is not invented
    ref_out, _ = reference
    got = _science_chips(out / "reduced" / short.name)
    want = _science_chips(ref_out / "reduced" / short.name)
    assert got.keys() == {1}
    assert np.array_equal(got[1], want[1], equal_nan=True)


def test_boundary_cut_in_a_night_is_a_note_not_a_problem(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    bias = raw / "bias_001.fits"
    bias.write_bytes(bias.read_bytes()[: _spans(bias)[2]["header"]])
    cat = Catalog.scan(raw)  # no warning
    assert cat.problems == ()
    plan = make_plan(cat, load_config())
    (note,) = [n for n in plan.notes if "lacks" in n]
    assert note.startswith(f"{bias} lacks chip(s) CCD2") and "CCD1, CCD2" in note
    assert len(plan.chips["CCD1"].biases) == 3 and len(plan.chips["CCD2"].biases) == 2


# ------------------------------------------------------------------------------ command line
def _lines_naming(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if path.name in line]


def test_cli_shows_a_damaged_file_as_one_clean_line(night, tmp_path, capsys):
    raw = copy_raw(night, tmp_path / "raw")
    victim = raw / "bias_002.fits"
    spans = _spans(victim)
    cut = spans[2]["header"] + 1000  # inside the 2nd chip's header, after its EXTNAME
    victim.write_bytes(victim.read_bytes()[:cut])
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["reduce", str(raw), "--out", str(out), "--workers", "1"]) == EXIT_OK
    err = capsys.readouterr().err
    assert _lines_naming(err, victim) == [
        f"ccdask: warning: {victim}[2]: truncated file: the file ends at byte {cut}, inside the "
        f"header of HDU 2 (EXTNAME = 'CCD2'), which starts at byte {spans[2]['header']} and has "
        f"no END card yet, so the HDU should end at byte {spans[2]['data']} or later; the whole "
        "file is skipped, none of its HDUs is used"
    ], err
    # Python's own format would be "FILE.py:LINE: CcdaskWarning: ..." and the source line,
    # indented, under it
    assert "CcdaskWarning" not in err and "warnings.warn" not in err, err
    lines = err.splitlines()
    after = lines.index(_lines_naming(err, victim)[0]) + 1
    assert after == len(lines) or not lines[after][:1].isspace(), err
    # neither chip of the damaged bias went into the masters
    with fits.open(out / "masters" / "bias.fits") as hdul:
        assert [hdul[c].header["NCOMBINE"] for c in ("CCD1", "CCD2")] == [2, 2]


def test_cli_warning_before_a_plan_error_is_one_clean_line(night, tmp_path):
    """The check made before a cluster starts shows the catalogue's warnings with its error
    (the console script in a process of its own: Python's default warning filters and format)."""
    exe = Path(sys.executable).with_name("ccdask")
    assert exe.exists(), f"console script not installed beside {sys.executable}"
    raw = copy_raw(night, tmp_path / "raw")
    for p in raw.glob("flat_r_*.fits"):
        p.unlink()
    victim = raw / "dark_000.fits"
    start = _spans(victim)[1]["header"]
    cut = start + 200  # the first cards of the 1st chip's header: no EXTNAME yet
    victim.write_bytes(victim.read_bytes()[:cut])
    junk = raw / "notes.fits"
    junk.write_text("not FITS\n")
    proc = subprocess.run(
        [str(exe), "reduce", str(raw), "--out", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert proc.returncode == EXIT_INPUT, proc.stderr
    err = proc.stderr.splitlines()
    assert err[:2] == [
        f"ccdask: warning: {victim}[1]: truncated file: the file ends at byte {cut}, inside the "
        f"header of HDU 1, which starts at byte {start} and has no END card yet, so the HDU "
        f"should end at byte {start + 2880} or later; the whole file is skipped, none of its "
        "HDUs is used",
        f"ccdask: warning: {junk}: not a FITS file (it does not start with 'SIMPLE  =                    T'); skipped",
    ], err
    assert err[2].startswith("ccdask reduce: error: no flat for filter 'r'"), err
    assert len(err) == 3, err
