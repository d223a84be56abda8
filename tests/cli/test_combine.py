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


def write_reduced_frames(folder, n=6, ny=24, nx=18, chips=("CCD1", "CCD2"), seed=4):
    """ccdask-reduced files (SCI/VAR/DQ per chip, EXTVER = chip number) and their planes."""
    rng = np.random.default_rng(seed)
    var = rng.uniform(80.0, 120.0, (n, ny, nx)).astype(np.float32)
    sci = (2000.0 + rng.normal(0.0, 1.0, var.shape) * np.sqrt(var)).astype(np.float32)
    dq = np.zeros(var.shape, np.uint16)
    hit = rng.random(var.shape) < 0.05
    sci[hit] += 3000.0
    dq[hit] = 4
    sci[:, 5, 6] = 60000.0
    dq[:, 5, 6] = 2
    dq[:, 7, 8] = 1
    paths = []
    for i in range(n):
        hdus = [fits.PrimaryHDU()]
        hdus[0].header["INSTRUME"] = "TESTCAM"
        for c, name in enumerate(chips, start=1):
            for ext, plane in (("SCI", sci[i] + 100 * c), ("VAR", var[i]), ("DQ", dq[i])):
                hdu = fits.ImageHDU(plane, name=ext)
                hdu.header["EXTVER"] = c
                hdu.header["CCDNAME"] = name
                hdus.append(hdu)
        path = folder / f"red{i:02d}.fits"
        fits.HDUList(hdus).writeto(path)
        paths.append(path)
    return paths, sci, var, dq


def test_reduced_inputs_write_var_dq_and_the_optional_planes(tmp_path):
    paths, sci, _var, dq = write_reduced_frames(tmp_path)
    out = tmp_path / "stack.fits"
    argv = [*paths, "-o", out, "--clip", "varclip", "--nrej", "--sigma", "--rejmask", "--memory-per-task", "1"]
    assert run(parse(argv)) == 0
    with fits.open(out) as hdul:
        hdul.verify("exception")
        names = [h.name for h in hdul]
        per_chip = ["", "_COUNT", "_VAR", "_DQ", "_NREJ", "_SIGMA", "_REJMASK"]
        assert names == ["PRIMARY"] + [f"{c}{s}" for c in ("CCD1", "CCD2") for s in per_chip]
        for c, chip in enumerate(("CCD1", "CCD2"), start=1):
            expect = combine(
                paths,
                hdu=("SCI", c),
                variance="VAR",
                dq="DQ",
                clip="varclip",
                nrej_plane=True,
                sigma_plane=True,
                rejmask_cube=True,
            ).compute()
            np.testing.assert_array_equal(hdul[chip].data, expect.data)
            for attr, suffix in (("count", "COUNT"), ("variance", "VAR"), ("dq", "DQ"), ("nrej", "NREJ")):
                np.testing.assert_array_equal(hdul[f"{chip}_{suffix}"].data, getattr(expect, attr))
            np.testing.assert_array_equal(hdul[f"{chip}_SIGMA"].data, expect.sigma)
            np.testing.assert_array_equal(hdul[f"{chip}_REJMASK"].data, expect.rejmask)
            assert hdul[f"{chip}_REJMASK"].data.shape == (6, 24, 18)
            assert hdul[f"{chip}_DQ"].data.dtype.kind == "u" and hdul[f"{chip}_DQ"].data[5, 6] == 2
            assert hdul[f"{chip}_DQ"].data[7, 8] == 8 and hdul[f"{chip}_COUNT"].data[7, 8] == 0
            assert hdul[chip].header["CMBCLIP"] == "varclip" and hdul[chip].header["CMBVAR"] == "planes"
            assert hdul[chip].header["CMBDQBAD"] == 47
        assert hdul[0].header["NCOMBINE"] == 6 and hdul[0].header["INSTRUME"] == "TESTCAM"
    # --dq-mask chooses the bad bits; --no-planes combines SCI alone
    out2 = tmp_path / "nocosmic.fits"
    assert run(parse([*paths, "-o", out2, "--clip", "none", "--dq-mask", "1|2"])) == 0
    with fits.open(out2) as hdul:
        use = (dq & 3) == 0
        use[:, 5, 6] = True  # saturated everywhere: kept
        with np.errstate(invalid="ignore"):
            expect = np.where(use, sci + 100, 0).sum(axis=0, dtype=np.float64) / use.sum(axis=0)
        np.testing.assert_allclose(hdul["CCD1"].data, expect.astype(np.float32), rtol=2e-7, equal_nan=True)
    # inverse-variance weights from the VAR planes
    out4 = tmp_path / "ivar.fits"
    assert run(parse([*paths, "-o", out4, "--clip", "none", "--weights", "ivar"])) == 0
    expect = combine(paths, hdu=("SCI", 2), variance="VAR", dq="DQ", clip="none", weights="ivar").compute()
    with fits.open(out4) as hdul:
        np.testing.assert_array_equal(hdul["CCD2"].data, expect.data)
        np.testing.assert_array_equal(hdul["CCD2_VAR"].data, expect.variance)
        assert hdul["CCD2"].header["CMBWEIGH"] == "ivar"
    # an HDU chosen by index: that image alone, no planes
    out3 = tmp_path / "sci.fits"
    assert run(parse([*paths, "-o", out3, "--clip", "none", "--hdu", "1"])) == 0
    with fits.open(out3) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT"]
        expect = (sci + 100).astype(np.float64).mean(axis=0).astype(np.float32)
        np.testing.assert_allclose(hdul[0].data, expect, rtol=2e-7)


def test_reduced_input_errors_exit_3_and_leave_nothing(tmp_path, capsys):
    paths, *_ = write_reduced_frames(tmp_path, n=3)
    out = tmp_path / "bad.fits"
    assert run(parse([*paths, "-o", out, "--dq-mask", "lots"])) == 3
    assert "dq_bad" in capsys.readouterr().err
    # a DQ plane that is not a bit mask fails while the tiles are computed: nothing partial is left
    with fits.open(paths[1], mode="update") as hdul:
        hdul["DQ", 2].data = np.full(hdul["DQ", 2].data.shape, 0.5, np.float32)
    assert run(parse([*paths, "-o", out])) == 3
    err = capsys.readouterr().err
    assert "red01.fits" in err and "integers" in err
    assert run(parse([*paths[:1], *write_single(tmp_path, frames(5, n=1, ny=24, nx=18)), "-o", out])) == 3
    assert "bias00.fits" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_noise_weights_are_computed_once_and_logged_in_the_header(tmp_path):
    paths = write_single(tmp_path, frames(6, n=4))
    out = tmp_path / "w.fits"
    assert run(parse([*paths, "-o", out, "--weights", "noise", "--statsec", "[2:19,3:28]"])) == 0
    expect = combine(paths, weights="noise", statsec="[2:19,3:28]").compute()
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul[0].data, expect.data)
        got = [hdul[0].header[f"CMBWT{i:03d}"] for i in range(1, 5)]
    np.testing.assert_allclose(got, expect.frame_weights, rtol=1e-12)
    assert np.all(np.asarray(got) > 0)
