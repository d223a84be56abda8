"""The frame catalogue on real frames, on written FITS files and on junk."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ccdask.catalog import Catalog
from ccdask.cli import main
from ccdask.errors import CcdaskWarning, FitsReadError

ISIS_BIAS = [f"r27{n:05d}.fit.gz" for n in range(982, 1003, 2)]
ISIS_ARCS = [
    "r2701247.fit.gz",
    "r2701248.fit.gz",
    "r2701249.fit.gz",
    "r2701259.fit.gz",
    "r2701261.fit.gz",
    "r2701262.fit.gz",
]
ISIS_SCIENCE = ["r2701242.fit.gz", "r2701244.fit.gz", "r2701253.fit.gz", "r2701255.fit.gz", "r2701257.fit.gz"]


def test_isis_night_classification(isis_dir):
    cat = Catalog.scan(isis_dir)
    assert not cat.problems
    by_name = {e.path.rsplit("/", 1)[1]: e for e in cat}
    assert len(by_name) == 22 and len(cat) == 22  # one chip per file, in extension 1
    assert sorted(n for n, e in by_name.items() if e.imagetyp == "bias") == ISIS_BIAS
    assert sorted(n for n, e in by_name.items() if e.label == "arc") == ISIS_ARCS
    assert sorted(n for n, e in by_name.items() if e.imagetyp == "science") == ISIS_SCIENCE
    for e in cat:
        assert e.hdu == 1 and e.chip == "REDPLUS" and e.shape == (4200, 966)
        assert e.dtype == "uint16" and e.kind == "gzip" and e.profile == "wht_isis_red"
        assert e.filter == "GG495."
    sci = sorted(e.exptime for e in cat if e.imagetyp == "science")
    assert sci == [100.01, 100.01, 100.01, 1800.01, 1800.01]
    assert {e.exptime for e in cat if e.label == "arc"} == {4.01}


def test_kast_quirks(kast_dir):
    cat = Catalog.scan(kast_dir)
    assert not cat.problems
    kinds = {e.path.rsplit("/", 1)[1]: (e.imagetyp, e.label) for e in cat}
    assert kinds == {
        "b1.fits.gz": ("other", "arc"),
        "b11.fits.gz": ("flat", "dome flat"),
        "b12.fits.gz": ("flat", "dome flat"),
        "b13.fits.gz": ("flat", "dome flat"),
        "b21.fits.gz": ("bias", "bias"),
        "b22.fits.gz": ("bias", "bias"),
        "b23.fits.gz": ("bias", "bias"),
        "b24.fits.gz": ("science", "science"),
        "b27.fits.gz": ("science", "science"),
    }
    assert all(e.layout.namps == 2 and e.hdu == 0 for e in cat)


def test_saao_frame_with_generic_profile(saao_dir):
    (e,) = Catalog.scan(saao_dir)
    assert (e.imagetyp, e.exptime, e.kind, e.profile, e.dtype) == ("science", 150.04, "plain", "generic", "uint16")
    assert e.layout.trimmed_shape == (520, 512)


def test_catalog_command_on_isis(isis_dir, capsys):
    assert main(["catalog", str(isis_dir)]) == 0
    out = capsys.readouterr().out
    assert "22 file(s)" in out and "problems: 0" in out
    assert "11 bias" in out and "5 science" in out and "6 other" in out
    assert main(["catalog", "--long", str(isis_dir / ISIS_BIAS[0])]) == 0
    assert "parallel overscan" in capsys.readouterr().out


def _mef(path, chips=2, imagetyp="FLAT", filt="g", exptime=3.0, shape=(20, 30)):
    prim = fits.PrimaryHDU()
    prim.header.update(IMAGETYP=imagetyp, FILTER=filt, EXPTIME=exptime, INSTRUME="TESTCAM")
    hdus = [prim]
    for i in range(chips):
        h = fits.ImageHDU(np.full(shape, 1000 + i, dtype=np.uint16), name=f"CCD{i + 1}")
        h.header.update(
            DATASEC=f"[1:{shape[1] - 4},1:{shape[0]}]",
            BIASSEC=f"[{shape[1] - 3}:{shape[1]},1:{shape[0]}]",
            GAIN=1.5,
            RDNOISE=4.0,
        )
        hdus.append(h)
    fits.HDUList(hdus).writeto(path)


def test_mef_rows_select_and_group(tmp_path):
    _mef(tmp_path / "flat1.fits", filt="g")
    _mef(tmp_path / "flat2.fits", filt="r")
    _mef(tmp_path / "obj.fits", imagetyp="object", filt="r", exptime=60.0)
    cat = Catalog.scan(tmp_path)
    assert len(cat) == 6 and cat.chips == ["CCD1", "CCD2"]
    assert len(cat.select(imagetyp="flat", filter="r")) == 2
    assert len(cat.select(chip="CCD2", imagetyp={"flat", "science"})) == 3
    groups = cat.group_by("imagetyp", "filter")
    assert set(groups) == {("flat", "g"), ("flat", "r"), ("science", "r")}
    t = cat.table
    assert len(t) == 6 and set(t["chip"]) == {"CCD1", "CCD2"}
    # the extension header wins over the primary; primary keywords are inherited
    e = cat.select(chip="CCD2", imagetyp="science").entries[0]
    assert e.exptime == 60.0 and e.layout.amplifiers[0].gain == 1.5 and e.hdu == 2


def _junk(tmp_path):
    (tmp_path / "random.fits").write_bytes(np.random.default_rng(1).bytes(5000))
    (tmp_path / "empty.fits").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a fits file")
    good = tmp_path / "good.fits"
    fits.PrimaryHDU(np.zeros((40, 50), np.float32)).writeto(good)
    raw = good.read_bytes()
    (tmp_path / "truncated.fits").write_bytes(raw[: len(raw) // 2])
    with gzip.open(tmp_path / "cut.fits.gz", "wb") as f:
        f.write(raw)
    gz = (tmp_path / "cut.fits.gz").read_bytes()
    (tmp_path / "cut.fits.gz").write_bytes(gz[: len(gz) // 2])
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(3.0))])]
    ).writeto(tmp_path / "table.fits")
    bad_sec = tmp_path / "badsec.fits"
    hdu = fits.PrimaryHDU(np.zeros((10, 10), np.uint16))
    hdu.header["BIASSEC"] = "[9:20,1:10]"
    hdu.writeto(bad_sec)
    return good


def test_problems_are_listed_skipped_and_warned(tmp_path):
    good = _junk(tmp_path)
    paths = sorted(tmp_path.iterdir())
    with pytest.warns(CcdaskWarning, match="skipped 7 unusable"):
        cat = Catalog.scan(paths)
    assert cat.paths == [str(good)]
    reasons = {p.path.rsplit("/", 1)[1]: p.reason for p in cat.problems}
    assert set(reasons) == {
        "random.fits",
        "empty.fits",
        "notes.txt",
        "truncated.fits",
        "cut.fits.gz",
        "table.fits",
        "badsec.fits",
    }
    assert "BIASSEC" in reasons["badsec.fits"]
    assert "trunc" in reasons["truncated.fits"].lower()
    with pytest.raises(FitsReadError, match="problem"):
        Catalog.scan(paths, strict=True)


def test_catalog_command_reports_problems(tmp_path, capsys):
    _junk(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["catalog", *map(str, sorted(tmp_path.iterdir()))]) == 0
    out = capsys.readouterr().out
    assert "problems: 7" in out and "empty.fits" in out
    assert main(["catalog", "--strict", *map(str, sorted(tmp_path.iterdir()))]) == 3
