"""Reliability on bad input: junk files, unsatisfiable plans, non-finite pixels, blank flats,
duplicate files, and the exit codes of the command line.

What a user must see: unreadable files are catalogue problems (named, skipped with a
CcdaskWarning, listed in manifest.json); a plan that cannot be satisfied fails before anything
is computed or written, naming the file, keyword, filter or chip; non-finite pixels are flagged
(DQ bit 8) and no SCI pixel is non-finite without that flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask import dq as DQ
from ccdask.catalog import Catalog
from ccdask.cli._main import EXIT_FAILURE, EXIT_INPUT, EXIT_USAGE, main
from ccdask.config import load_config
from ccdask.errors import CcdaskWarning, FitsReadError, PlanError
from ccdask.night._plan import make_plan
from ccdask.night._reduce import reduce

from .support import (
    assert_same_outputs,
    copy_raw,
    no_compute,
    write_float_copy,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------ the corpus
def _edit(src: Path, dst: Path, fn) -> Path:
    with fits.open(src) as h:
        fn(h)
        h.writeto(dst)
    return dst


def _set(hdu: int, **cards):
    def fn(h):
        for k, v in cards.items():
            h[hdu].header[k] = v

    return fn


def make_corpus(folder: Path, good: Path) -> dict[str, str]:
    """Junk files in ``folder`` (made from the good raw file ``good``): name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = good.read_bytes()
    expect = {}
    (folder / "random.fits").write_bytes(np.random.default_rng(1).bytes(10_000))
    expect["random.fits"] = "not a FITS file"
    (folder / "truncated.fits").write_bytes(raw[: len(raw) - 5000])
    expect["truncated.fits"] = "truncated file"
    (folder / "header_cut.fits").write_bytes(raw[:1000])
    expect["header_cut.fits"] = "truncated file"
    (folder / "empty.fits").write_bytes(b"")
    expect["empty.fits"] = "empty"
    (folder / "notes.fits").write_text("observing log, not FITS\n" * 200)
    expect["notes.fits"] = "not a FITS file"
    fits.PrimaryHDU(header=fits.getheader(good)).writeto(folder / "header_only.fits")
    expect["header_only.fits"] = "no 2-D image HDU"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(4.0))])]
    ).writeto(folder / "table.fits")
    expect["table.fits"] = "BINTABLE extension, not an image"
    fits.PrimaryHDU(np.zeros((3, 8, 8), np.float32)).writeto(folder / "cube.fits")
    expect["cube.fits"] = "NAXIS = 3"
    # sections: malformed, outside the image, zero-based; every chip of the file is broken
    for name, card, value, why in (
        ("bad_section.fits", "DATASECA", "[1:abc,1:10]", "cannot read the x range"),
        ("outside_section.fits", "DATASECB", "[97:9999,1:192]", "outside the image"),
        ("zero_section.fits", "BIASSECA", "[0:16,1:192]", "start at 1"),
    ):
        _edit(good, folder / name, lambda h, card=card, value=value: [x.header.__setitem__(card, value) for x in h[1:]])
        expect[name] = why
    # entries that are not readable regular files
    os.symlink(folder / "does-not-exist.fits", folder / "dangling.fits")
    expect["dangling.fits"] = "cannot open"
    os.mkfifo(folder / "pipe.fits")
    expect["pipe.fits"] = "not a regular file"
    return expect


def _scan_with_timeout(path: Path, fifo: Path, seconds: float = 60.0) -> Catalog:
    """Catalog.scan in a thread: a reader blocked on a FIFO is released and reported."""
    box: dict = {}

    def run():
        try:
            with pytest.warns(CcdaskWarning) as record:
                box["cat"] = Catalog.scan(path)
            box["warnings"] = [str(w.message) for w in record]
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # release the blocked open()
        os.close(fd)
        t.join(10)
        pytest.fail(f"Catalog.scan blocked on the FIFO {fifo}")
    if "error" in box:
        raise box["error"]
    return box


def test_junk_files_are_named_problems_and_skipped(night, tmp_path):
    junk = tmp_path / "junk"
    expect = make_corpus(junk, night.files["science"][0])
    box = _scan_with_timeout(junk, junk / "pipe.fits")
    cat = box["cat"]
    assert len(cat) == 0
    reasons = {Path(p.path).name: p.reason for p in cat.problems}
    assert sorted(reasons) == sorted(expect)
    for name, why in expect.items():
        assert why in reasons[name], (name, reasons[name])
    # the warning says how many and names them
    assert any(f"skipped {len(cat.problems)} unusable input(s)" in w for w in box["warnings"])
    with pytest.raises(FitsReadError, match="problem"):
        Catalog.scan(sorted(junk.glob("[a-o]*.fits")), strict=True)


def test_junk_named_on_the_command_line_is_a_problem(night, tmp_path):
    """Paths given one by one (not a folder): a dangling link, a FIFO, a missing file."""
    junk = tmp_path / "junk"
    make_corpus(junk, night.files["science"][0])
    paths = [junk / "dangling.fits", junk / "pipe.fits", tmp_path / "missing.fits", junk / "empty.fits"]
    box = _scan_with_timeout(paths, junk / "pipe.fits")
    reasons = {Path(p.path).name: p.reason for p in box["cat"].problems}
    assert set(reasons) == {"dangling.fits", "pipe.fits", "missing.fits", "empty.fits"}
    assert "not a regular file" in reasons["pipe.fits"]


@pytest.mark.skipif(not IS_ROOT, reason="exercised below as a non-root user")
def test_unreadable_file_as_root_is_still_read(night, tmp_path):
    """Root ignores permission bits (chmod 000 still reads), so an unreadable file cannot be
    made with chmod here: the dangling link and the FIFO of the corpus stand for it."""
    p = tmp_path / "locked.fits"
    p.write_bytes(night.files["bias"][0].read_bytes())
    p.chmod(0)
    assert os.access(p, os.R_OK)  # root: permissions are not enforced
    assert len(Catalog.scan([p])) == 2


@pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions (chmod 000 does not stop reads)")
def test_unreadable_file_is_a_problem(night, tmp_path):
    p = tmp_path / "locked.fits"
    p.write_bytes(night.files["bias"][0].read_bytes())
    p.chmod(0)
    with pytest.warns(CcdaskWarning, match="locked.fits"):
        cat = Catalog.scan([p])
    assert len(cat) == 0 and "cannot open" in cat.problems[0].reason


@pytest.mark.slow
def test_junk_in_a_night_is_skipped_and_listed_in_the_manifest(night, reference, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    expect = make_corpus(raw / "junk", night.files["science"][0])
    (raw / "junk" / "pipe.fits").unlink()  # a FIFO is covered above; keep this run simple
    del expect["pipe.fits"]
    with pytest.warns(CcdaskWarning, match="unusable input"):
        result = reduce(raw, tmp_path / "out", client="threads")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    listed = {Path(p["path"]).name: p["reason"] for p in man["problems"]}
    assert sorted(listed) == sorted(expect)
    assert all(Path(p).parent.name == "reduced" for p in result.outputs)
    # the junk changed nothing: same pixels as the clean night
    assert_same_outputs(reference[0], tmp_path / "out", headers=False)


# ------------------------------------------------------------------------------ the plan
def _drop(card):
    def fn(h):
        for x in h:
            x.header.remove(card, ignore_missing=True)

    return fn


PLAN_CASES = {
    "dark without EXPTIME": (
        "dark",
        0,
        _drop("EXPTIME"),
        r"{name}\[1\]: exposure time missing in this dark frame.*EXPTIME",
    ),
    "flat without EXPTIME": (
        "flat",
        0,
        _drop("EXPTIME"),
        r"{name}\[1\]: exposure time missing in this flat frame.*EXPTIME",
    ),
    "science without EXPTIME": ("science", 0, _drop("EXPTIME"), r"{name}\[1\]: exposure time missing.*EXPTIME"),
    "dark with EXPTIME < 0": ("dark", 0, _set(0, EXPTIME=-5.0), r"{name}\[1\]: exposure time invalid \(-5.0\)"),
    "science without FILTER": (
        "science",
        0,
        _drop("FILTER"),
        r"no flat for filter None on chip CCD1, needed by .*{name}\[1\].*FILTER",
    ),
    "science in a filter without flats": (
        "science",
        0,
        _set(0, FILTER="z"),
        r"no flat for filter 'z' on chip CCD1.*{name}",
    ),
    "bias of another shape": (
        "bias",
        1,
        lambda h: [setattr(x, "data", np.vstack([x.data, x.data[:8]])) for x in h[1:]],
        r"chip CCD1: frames disagree in shape \(most are 192x192\): .*{name}\[1\] 200x192",
    ),
}


@pytest.mark.parametrize("case", PLAN_CASES)
def test_unsatisfiable_plan_fails_before_computing(night, tmp_path, case):
    kind, index, edit, pattern = PLAN_CASES[case]
    raw = copy_raw(night, tmp_path / "raw")
    victim = raw / night.files[kind][index].name
    _edit(victim, victim.with_suffix(".tmp"), edit)
    victim.with_suffix(".tmp").replace(victim)
    with pytest.raises(PlanError, match=pattern.format(name=victim.name)):
        reduce(raw, tmp_path / "out", client=no_compute)
    assert not (tmp_path / "out").exists()  # nothing written either


def test_missing_masters_name_the_chip(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    for p in raw.glob("bias_*.fits"):
        p.unlink()
    with pytest.raises(PlanError, match=r"no bias frames for chip CCD1.*bias.enabled"):
        reduce(raw, tmp_path / "out", client=no_compute)
    for p in raw.glob("dark_*.fits"):
        p.unlink()
    with pytest.raises(PlanError, match="no dark frames found"):
        reduce(
            raw, tmp_path / "out", client=no_compute, config={"bias": {"enabled": False}, "dark": {"required": True}}
        )


def test_nothing_usable_is_a_plan_error_naming_a_problem(night, tmp_path):
    junk = tmp_path / "junk"
    (junk).mkdir()
    (junk / "a.fits").write_bytes(b"")
    with (
        pytest.warns(CcdaskWarning),
        pytest.raises(PlanError, match=r"no usable raw frames \(1 skipped: .*a.fits: the file is empty"),
    ):
        reduce(junk, tmp_path / "out", client=no_compute)


def test_frame_without_type_is_named_in_the_plan_notes(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    victim = raw / night.files["science"][0].name
    with fits.open(victim, mode="update") as h:
        del h[0].header["IMAGETYP"]
    plan = make_plan(Catalog.scan(raw), load_config(None))
    assert victim.name not in [Path(e.path).name for e in plan.exposures]
    note = " ".join(plan.notes)
    assert victim.name in note and "IMAGETYP" in note


def test_filters_that_would_share_a_master_file_are_a_plan_error(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    for kind in ("flats_by_filter", "science_by_filter"):
        for filt, new in (("g", "g/1"), ("r", "g_1")):
            for p in getattr(night, kind)[filt]:
                with fits.open(raw / p.name, mode="update") as h:
                    h[0].header["FILTER"] = new
    with pytest.raises(PlanError, match=r"'g/1' and 'g_1'.*flat_g_1.fits"):
        reduce(raw, tmp_path / "out", client=no_compute)


# ------------------------------------------------------------------------------ pixels
def _nan_blocks(k, a):
    a[10:30, 20:40] = np.nan  # data of amplifier A
    a[50:60, 100:120] = np.inf  # data of amplifier B
    a[70:72, 30:40] = -np.inf
    a[100, :] = np.nan  # a whole row, overscan included
    a[120:125, 180:190] = np.nan  # overscan of amplifier B only


@pytest.mark.slow
def test_non_finite_pixels_are_flagged_nodata(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    write_float_copy(night.files["science"][0], raw / "science_nan.fits", _nan_blocks)
    # a bias with a NaN block and a flat with an inf block: stacks ignore them
    write_float_copy(
        night.files["bias"][0], raw / "bias_nan.fits", lambda k, a: a.__setitem__((slice(5, 15), slice(20, 30)), np.nan)
    )
    flat = night.flats_by_filter["g"][0]
    write_float_copy(flat, raw / "flat_g_inf.fits", lambda k, a: a.__setitem__((slice(5, 15), slice(20, 30)), np.inf))
    (raw / flat.name).unlink()
    result = reduce(raw, tmp_path / "out", client="threads")
    assert len(result.outputs) == 3
    for path in map(Path, result.outputs):
        with fits.open(path) as h:
            for k in (1, 2):
                s, v, d = h["SCI", k].data, h["VAR", k].data, h["DQ", k].data
                nodata = (d & DQ.NODATA) != 0
                assert not np.any(~np.isfinite(s) & ~nodata), f"{path.name}[{k}]: non-finite SCI without DQ 8"
                assert not np.any(~np.isfinite(v) & ~nodata), f"{path.name}[{k}]: non-finite VAR without DQ 8"
                if path.name == "science_nan.fits":
                    # raw rows/columns -> trimmed: data columns 16..175 of the raw frame
                    for rows, cols in (
                        (slice(10, 30), slice(4, 24)),
                        (slice(50, 60), slice(84, 104)),
                        (slice(70, 72), slice(14, 24)),
                        (slice(100, 101), slice(None)),
                    ):
                        assert np.all(nodata[rows, cols]), (path.name, k, rows, cols)
                    assert nodata.sum() < 0.05 * nodata.size
    for master in (tmp_path / "out" / "masters").glob("*.fits"):
        with fits.open(master) as h:
            for ext in h[1:]:
                assert np.all(np.isfinite(ext.data)), f"{master.name}[{ext.name}]"


def _blank(path: Path, *, overscan: bool) -> None:
    """No light: the data area at 0 ADU (below the bias level, so negative once the overscan is
    subtracted); with ``overscan`` the overscan too (all zeros)."""
    with fits.open(path, mode="update") as h:
        for x in h[1:]:
            a = x.data.copy()
            if overscan:
                a[:] = 0
            else:
                a[:, 16:176] = 0  # the data columns of both amplifiers
            x.data = a


@pytest.mark.parametrize("overscan", [False, True], ids=["negative", "all-zero"])
def test_flats_without_light_are_a_named_error(night, tmp_path, overscan):
    """Normalising a flat by a level <= 0 would turn it into a plausible-looking flat (a
    negative one becomes positive): when no flat of a filter has light, the night fails
    naming the filter and the files, before any science frame is written."""
    raw = copy_raw(night, tmp_path / "raw")
    for p in night.flats_by_filter["g"]:
        _blank(raw / p.name, overscan=overscan)
    with pytest.raises(PlanError, match=r"no usable flat for filter 'g'.*flat_g_000.fits.*flat_g_001.fits"):
        reduce(raw, tmp_path / "out", client="threads")
    assert not list((tmp_path / "out" / "reduced").glob("*.fits"))


@pytest.mark.slow
def test_one_flat_without_light_is_left_out_with_a_warning(night, tmp_path):
    raw = copy_raw(night, tmp_path / "raw")
    victim = raw / night.flats_by_filter["r"][0].name
    _blank(victim, overscan=False)
    with pytest.warns(CcdaskWarning, match=rf"1 of 2 exposure\(s\) left out of the flat for filter 'r'.*{victim.name}"):
        result = reduce(
            raw, tmp_path / "out", client="threads", config={"cosmics": {"method": "none"}, "output": {"qa": False}}
        )
    with fits.open(result.masters["flat_r"]) as h:
        for chip in night.chips:
            assert h[chip].header["NCOMBINE"] == 1
            assert h[f"{chip}_COUNT"].data.max() == 1  # only the good flat
            assert 0.5 < np.nanmedian(h[chip].data) < 1.5
    for path in result.outputs:
        with fits.open(path) as h:
            for k in (1, 2):
                assert np.count_nonzero(h["DQ", k].data) < 0.1 * h["DQ", k].data.size


# ------------------------------------------------------------------------------ duplicates
def test_duplicate_file_under_another_name_is_used_once(night, tmp_path):
    """The same exposure copied under a second name would be stacked twice into the master.
    The catalogue finds identical files (same headers, size and content) and keeps the first
    (in path order), reporting the other as a problem."""
    raw = copy_raw(night, tmp_path / "raw")
    bias = raw / night.files["bias"][0].name
    (raw / "zz_copy_of_bias.fits").write_bytes(bias.read_bytes())
    os.link(raw / night.files["dark"][1].name, raw / "zz_hardlink_of_dark.fits")
    with pytest.warns(CcdaskWarning, match="duplicate"):
        cat = Catalog.scan(raw)
    reasons = {Path(p.path).name: p.reason for p in cat.problems}
    assert set(reasons) == {"zz_copy_of_bias.fits", "zz_hardlink_of_dark.fits"}
    assert bias.name in reasons["zz_copy_of_bias.fits"] and "duplicate" in reasons["zz_copy_of_bias.fits"]
    assert len(cat.select(imagetyp="bias").paths) == len(night.files["bias"])
    assert len(cat.select(imagetyp="dark").paths) == len(night.files["dark"])


def test_same_headers_but_different_pixels_are_not_duplicates(night, tmp_path):
    """Minimal headers can repeat exactly (a camera writing no DATE-OBS): the pixels decide."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        fits.PrimaryHDU(
            rng.integers(0, 1000, (32, 40)).astype(np.int16),
            header=fits.Header([("IMAGETYP", "bias"), ("EXPTIME", 0.0)]),
        ).writeto(raw / f"b{i}.fits")
    cat = Catalog.scan(raw)
    assert not cat.problems and len(cat) == 3


# ------------------------------------------------------------------------------ command line
def test_cli_exit_codes(night, tmp_path, capsys):
    raw = copy_raw(night, tmp_path / "raw")
    # usage errors: argparse exits with 2
    for argv in (["reduce", str(raw)], ["reduce", str(raw), "--out", "x", "--workers", "two"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE
    capsys.readouterr()
    # bad input / plan errors: 3, with the file named, before any cluster starts
    for p in raw.glob("flat_r_*.fits"):
        p.unlink()
    assert main(["reduce", str(raw), "--out", str(tmp_path / "out")]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "error: no flat for filter 'r' on chip CCD1" in err
    assert not (tmp_path / "out").exists()
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[bias]\nenabled = 'maybe'\n")
    assert main(["reduce", str(raw), "--out", str(tmp_path / "out"), "--config", str(bad_cfg)]) == EXIT_INPUT
    assert "bad.toml" in capsys.readouterr().err
    assert main(["catalog", str(tmp_path / "missing.fits"), "--strict"]) == EXIT_INPUT
    assert "missing.fits" in capsys.readouterr().err


def test_cli_runtime_failure_is_exit_1(night, tmp_path, capsys):
    """An output folder that cannot be made (a file is in the way): exit 1 with the reason,
    found before a cluster is started. (Exit 0 is checked by the killed-run test's rerun.)"""
    out = tmp_path / "out"
    out.write_text("a file where the output folder must go")
    assert main(["reduce", str(night.raw_dir), "--out", str(out), "--workers", "1"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "ccdask reduce: failed:" in err and str(out) in err


@pytest.mark.slow
def test_console_script_exit_codes(night, tmp_path):
    exe = Path(sys.executable).with_name("ccdask")
    assert exe.exists(), f"console script not installed beside {sys.executable}"
    raw = copy_raw(night, tmp_path / "raw")
    junk = raw / "junk.fits"
    junk.write_bytes(b"SIMPLE  = nonsense")
    for p in raw.glob("bias_*.fits"):
        p.unlink()
    proc = subprocess.run(
        [str(exe), "reduce", str(raw), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_INPUT, proc.stderr
    assert "no bias frames for chip CCD1" in proc.stderr
    assert "junk.fits" in proc.stderr  # the skipped file is named (warning)
    proc = subprocess.run(
        [str(exe), "reduce", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_USAGE and "usage:" in proc.stderr
