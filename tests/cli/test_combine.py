"""``ccdask combine`` end to end on FITS files written in tmp_path."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from ccdask import __version__
from ccdask.cli._combine import register, run
from ccdask.combine import combine


def parse(argv):
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["combine", *map(str, argv)])


def frames(seed=0, n=6, ny=30, nx=20):
    rng = np.random.default_rng(seed)
    a = rng.normal(1000, 5, (n, ny, nx))
    a[rng.random(a.shape) < 0.03] = 30000
    return a.astype(np.uint16)


def write_single(folder, stack, exptimes=None):
    paths = []
    for i, data in enumerate(stack):
        hdr = fits.Header()
        hdr["OBJECT"] = "bias"
        hdr["EXPTIME"] = 1.0 if exptimes is None else float(exptimes[i])
        path = folder / f"bias{i:02d}.fits"
        fits.PrimaryHDU(data, header=hdr).writeto(path)
        paths.append(path)
    return paths


def write_mef(folder, stack, chips=("CCD1", "CCD2")):
    paths = []
    for i, data in enumerate(stack):
        hdus = [fits.PrimaryHDU()]
        hdus[0].header["INSTRUME"] = "TESTCAM"
        for c, name in enumerate(chips):
            hdu = fits.ImageHDU(data + 100 * c, name=name)
            hdu.header["CCDNAME"] = name
            hdus.append(hdu)
        path = folder / f"mef{i:02d}.fits"
        fits.HDUList(hdus).writeto(path)
        paths.append(path)
    return paths


def test_single_hdu_output_and_provenance(tmp_path, capsys):
    stack = frames()
    paths = write_single(tmp_path, stack)
    out = tmp_path / "master.fits"
    assert run(parse([*paths, "-o", out, "--method", "median", "--maxiters", "3"])) == 0
    assert "wrote" in capsys.readouterr().out
    expect = combine(paths, method="median", maxiters=3).compute()
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT"]
        np.testing.assert_array_equal(hdul[0].data, expect.data)
        assert hdul[0].data.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(hdul["COUNT"].data, expect.count)
        hdr = hdul[0].header
        assert hdr["NCOMBINE"] == 6 and hdr["CMBMETH"] == "median" and hdr["CMBMAXIT"] == 3
        assert hdr["IMCMB001"] == "bias00.fits" and hdr["IMCMB006"] == "bias05.fits"
        assert hdr["CCDASKV"] == __version__ and hdr["OBJECT"] == "bias"
        assert "BZERO" not in hdr
    assert sorted(os.listdir(tmp_path)) == sorted([p.name for p in paths] + ["master.fits"])


def test_mef_inputs_give_one_extension_per_chip(tmp_path):
    stack = frames(1)
    paths = write_mef(tmp_path, stack)
    out = tmp_path / "mef_master.fits"
    assert run(parse([*paths, "-o", out, "--clip", "extrema", "--nlow", "1", "--nhigh", "2"])) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "CCD1", "CCD1_COUNT", "CCD2", "CCD2_COUNT"]
        for c, chip in enumerate(("CCD1", "CCD2")):
            expect = combine(stack.astype(np.float32) + 100 * c, clip="extrema", nlow=1, nhigh=2).compute()
            np.testing.assert_array_equal(hdul[chip].data, expect.data)
            np.testing.assert_array_equal(hdul[f"{chip}_COUNT"].data, expect.count)
            assert hdul[chip].header["NCOMBINE"] == 6
            assert hdul[chip].header["CMBCLIP"] == "extrema"
        assert hdul[0].header["NCOMBINE"] == 6 and hdul[0].header["INSTRUME"] == "TESTCAM"
    # --hdu picks one chip into a single-HDU output
    out2 = tmp_path / "ccd2.fits"
    assert run(parse([*paths, "-o", out2, "--hdu", "CCD2", "--clip", "none"])) == 0
    with fits.open(out2) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT"]
        np.testing.assert_allclose(hdul[0].data, stack.mean(axis=0) + 100, rtol=1e-6)
    out3 = tmp_path / "ccd1.fits"
    assert run(parse([*paths, "-o", out3, "--hdu", "1", "--clip", "none"])) == 0
    with fits.open(out3) as hdul:
        np.testing.assert_allclose(hdul[0].data, stack.mean(axis=0), rtol=1e-6)


def test_refuses_to_overwrite_and_names_bad_files(tmp_path, capsys):
    paths = write_single(tmp_path, frames(2, n=3))
    out = tmp_path / "m.fits"
    out.write_bytes(b"precious")
    assert run(parse([*paths, "-o", out])) == 3
    assert "m.fits" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert run(parse([*paths, "-o", out, "--overwrite", "--scale", "exposure"])) == 0
    with fits.open(out) as hdul:
        assert hdul[0].header["CMBSCALE"] == "exposure"
    capsys.readouterr()
    missing = tmp_path / "nope.fits"
    assert run(parse([*paths, missing, "-o", tmp_path / "x.fits"])) == 3
    assert "nope.fits" in capsys.readouterr().err
    odd = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.zeros((5, 5), np.uint16)).writeto(odd)
    assert run(parse([*paths, odd, "-o", tmp_path / "y.fits"])) == 3
    assert "odd.fits" in capsys.readouterr().err
    assert run(parse([*paths, "-o", tmp_path / "z.fits", "--clip", "minmax"])) == 3
    assert "min_clip" in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists() and not (tmp_path / "y.fits").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_console_script(tmp_path):
    paths = write_single(tmp_path, frames(3, n=4))
    out = tmp_path / "cli.fits"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ccdask.cli import main; sys.exit(main())",
            "combine",
            *map(str, paths),
            "-o",
            str(out),
            "--min-clip",
            "900",
            "--max-clip",
            "1100",
            "--memory-per-task",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with fits.open(out) as hdul:
        assert hdul[0].header["CMBMINCL"] == 900 and hdul[0].header["CMBMAXCL"] == 1100
        assert hdul["COUNT"].data.max() <= 4


def test_help_lists_the_design_options():
    parser = argparse.ArgumentParser(prog="ccdask")
    sub = parser.add_subparsers()
    text = register(sub).format_help()
    for opt in (
        "--output",
        "--method",
        "--clip",
        "--sigma-lower",
        "--sigma-upper",
        "--maxiters",
        "--center",
        "--spread",
        "--nlow",
        "--nhigh",
        "--min-clip",
        "--max-clip",
        "--scale",
        "--hdu",
        "--memory-per-task",
        "--overwrite",
    ):
        assert opt in text
    with pytest.raises(SystemExit):
        parse(["a.fits"])  # -o is required
