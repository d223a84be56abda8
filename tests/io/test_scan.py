"""Header scanning: ``ccdask.io.scan_file``, ``HduInfo`` and HDU selection.

Every file is written for real (astropy, or bytes for odd cases) into ``tmp_path``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.errors import CcdaskError, FitsReadError
from ccdask.io import HduInfo, image_source, scan_file, select_hdu

RNG = np.random.default_rng(20240611)


def uint16_frame(shape=(40, 60)) -> np.ndarray:
    return RNG.integers(0, 65536, size=shape, dtype=np.uint16)


def write_mef(path: Path, n_chips: int = 3, shape=(40, 60), table: bool = False) -> list:
    """Empty primary + ``n_chips`` uint16 image extensions (+ an optional table)."""
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "TEST 1m"
    primary.header["GAIN"] = (1.0, "primary gain")
    primary.header["OBJECT"] = "field"
    primary.header["HISTORY"] = "primary history"
    hdus, arrays = [primary], []
    for k in range(1, n_chips + 1):
        data = uint16_frame(shape)
        ext = fits.ImageHDU(data, name=f"CCD{k}")
        ext.header["EXTVER"] = k
        ext.header["GAIN"] = (1.5 + k, "chip gain")
        ext.header["CCDNAME"] = f"chip{k}"
        ext.header["HISTORY"] = f"chip {k} history"
        hdus.append(ext)
        arrays.append(data)
    if table:
        hdus.append(fits.BinTableHDU.from_columns([fits.Column("a", "J", array=np.arange(5))]))
    fits.HDUList(hdus).writeto(path)
    return arrays


def test_plain_single_hdu_fields(tmp_path):
    data = uint16_frame()
    path = tmp_path / "one.fits"
    hdu = fits.PrimaryHDU(data)
    hdu.header["EXPTIME"] = 30.0
    hdu.writeto(path)

    (info,) = scan_file(path)
    st = os.stat(path)
    assert isinstance(info, HduInfo)
    assert info.path == os.path.abspath(path) and os.path.isabs(info.path)
    assert (info.index, info.extname, info.extver) == (0, None, None)
    assert info.shape == (40, 60)
    assert (info.bitpix, info.bzero, info.bscale, info.blank) == (16, 32768.0, 1.0, None)
    assert info.kind == "plain"
    assert (info.size, info.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert info.label == f"{info.path}[0]"
    assert info.header["EXPTIME"] == 30.0
    assert info.header["NAXIS1"] == 60 and info.header["BITPIX"] == 16
    assert "SIMPLE" not in info.header and "EXTEND" not in info.header
    # data_offset really points at the stored pixels
    raw = np.fromfile(path, dtype=">i2", count=data.size, offset=info.data_offset)
    np.testing.assert_array_equal((raw.astype(np.int32) + 32768).reshape(data.shape), data)
    with pytest.raises(AttributeError):
        info.index = 3  # frozen


def test_mef_merged_headers_extension_wins(tmp_path):
    path = tmp_path / "mef.fits"
    write_mef(path, table=True)
    infos = scan_file(path)
    assert [i.index for i in infos] == [1, 2, 3]  # empty primary and table skipped
    assert [(i.extname, i.extver) for i in infos] == [("CCD1", 1), ("CCD2", 2), ("CCD3", 3)]
    for k, info in enumerate(infos, start=1):
        hdr = info.header
        assert hdr["TELESCOP"] == "TEST 1m"  # inherited from the primary
        assert hdr["GAIN"] == 1.5 + k  # the extension wins
        assert hdr.comments["GAIN"] == "chip gain"
        assert list(hdr.keys()).count("GAIN") == 1
        assert hdr["EXTNAME"] == f"CCD{k}" and hdr["CCDNAME"] == f"chip{k}"
        for key in ("XTENSION", "SIMPLE", "PCOUNT", "GCOUNT", "EXTEND"):
            assert key not in hdr, key
        assert (hdr["BITPIX"], hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"]) == (16, 2, 60, 40)
        assert hdr["BZERO"] == 32768
        history = [str(h) for h in hdr["HISTORY"]]
        assert history == ["primary history", f"chip {k} history"]
        assert info.kind == "plain" and info.shape == (40, 60)
    infos[0].header["TELESCOP"] = "changed"  # headers are independent objects
    assert infos[1].header["TELESCOP"] == "TEST 1m"


def test_primary_scaling_cards_do_not_leak_into_extensions(tmp_path):
    path = tmp_path / "mixed.fits"
    prim = fits.PrimaryHDU(RNG.integers(0, 60000, (8, 9), dtype=np.uint16))  # BZERO 32768
    ext = fits.ImageHDU(RNG.normal(size=(5, 6)).astype(np.float32), name="SCI")
    fits.HDUList([prim, ext]).writeto(path)
    first, second = scan_file(path)
    assert first.index == 0 and first.bzero == 32768.0
    assert second.index == 1 and second.bitpix == -32 and second.bzero == 0.0
    assert "BZERO" not in second.header and second.header["BITPIX"] == -32


def test_fpack_logical_header(tmp_path):
    path = tmp_path / "tiles.fits.fz"
    prim = fits.PrimaryHDU()
    prim.header["ZD"] = (12.5, "zenith distance, not a compression card")
    comp = fits.CompImageHDU(uint16_frame((30, 50)), compression_type="RICE_1", name="CCD1")
    fits.HDUList([prim, comp]).writeto(path)
    (info,) = scan_file(path)
    assert info.kind == "fpack" and info.data_offset is None
    assert (info.index, info.extname, info.shape) == (1, "CCD1", (30, 50))
    assert (info.bitpix, info.bzero, info.bscale) == (16, 32768.0, 1.0)
    hdr = info.header
    assert hdr["ZD"] == 12.5
    assert (hdr["BITPIX"], hdr["NAXIS1"], hdr["NAXIS2"]) == (16, 50, 30)
    for key in (
        "ZIMAGE",
        "ZBITPIX",
        "ZNAXIS1",
        "ZCMPTYPE",
        "ZTILE1",
        "TFORM1",
        "TTYPE1",
        "TFIELDS",
        "XTENSION",
        "PCOUNT",
    ):
        assert key not in hdr, key


def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path):
    plain = tmp_path / "src.fits"
    fits.PrimaryHDU(uint16_frame()).writeto(plain)
    disguised = tmp_path / "really_gzip.fits"
    disguised.write_bytes(gzip.compress(plain.read_bytes()))
    named = tmp_path / "not_really.fits.gz"
    named.write_bytes(plain.read_bytes())

    (info,) = scan_file(disguised)
    assert info.kind == "gzip" and info.shape == (40, 60)
    assert info.size == disguised.stat().st_size
    (info,) = scan_file(named)
    assert info.kind == "plain"


def test_skips_empty_tables_and_non_2d_images(tmp_path):
    path = tmp_path / "odd.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.zeros((0, 5), dtype=np.int16), name="EMPTY"),
            fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))], name="TAB"),
            fits.ImageHDU(np.zeros((2, 3, 4), dtype=np.float32), name="CUBE"),
            fits.ImageHDU(np.ones((3, 4), dtype=np.float32), name="GOOD"),
        ]
    ).writeto(path)
    (info,) = scan_file(path)
    assert (info.index, info.extname) == (4, "GOOD")
    with pytest.raises(FitsReadError, match=r"NAXIS = 3") as err:
        image_source(path, hdu="CUBE")
    assert str(path) in str(err.value)
    with pytest.raises(FitsReadError, match=r"\[3\].*NAXIS = 3"):
        image_source(path, hdu=3)
    with pytest.raises(FitsReadError, match="BINTABLE"):
        image_source(path, hdu=2)


def test_only_a_cube_says_naxis(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), dtype=np.int16)).writeto(path)
    with pytest.raises(FitsReadError, match=r"no 2-D image.*NAXIS = 3") as err:
        scan_file(path)
    assert str(path) in str(err.value)


def test_tolerates_missing_final_padding_and_trailing_zeros(tmp_path):
    plain = tmp_path / "a.fits"
    fits.PrimaryHDU(RNG.integers(0, 100, (7, 11), dtype=np.int16)).writeto(plain)
    body = plain.read_bytes()
    unpadded = tmp_path / "unpadded.fits"
    unpadded.write_bytes(body[: 2880 + 7 * 11 * 2])
    trailing = tmp_path / "trailing.fits"
    trailing.write_bytes(body + b"\0" * 2880)
    for p in (unpadded, trailing):
        (info,) = scan_file(p)
        assert info.shape == (7, 11)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(uint16_frame((64, 64)))]).writeto(good)
    body = good.read_bytes()
    files = {
        "missing": tmp_path / "does_not_exist.fits",
        "empty": tmp_path / "empty.fits",
        "random": tmp_path / "random.fits",
        "text": tmp_path / "notes.fits",
        "truncated": tmp_path / "half.fits",
        "truncated_header": tmp_path / "cut_header.fits",
        "truncated_gzip": tmp_path / "half.fits.gz",
        "gzip_not_fits": tmp_path / "words.fits.gz",
        "table_only": tmp_path / "table.fits",
        "directory": tmp_path / "adir.fits",
    }
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    files["text"].write_text("This is a log file, not FITS.\n" * 100)
    files["truncated"].write_bytes(body[: len(body) // 2])
    files["truncated_header"].write_bytes(body[:1000])
    files["truncated_gzip"].write_bytes(gzip.compress(body)[: len(gzip.compress(body)) // 2])
    files["gzip_not_fits"].write_bytes(gzip.compress(b"hello world " * 500))
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("x", "D", array=np.arange(4.0))])]
    ).writeto(files["table_only"])
    files["directory"].mkdir()
    return files


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "random",
        "text",
        "truncated",
        "truncated_header",
        "truncated_gzip",
        "gzip_not_fits",
        "table_only",
        "directory",
    ],
)
def test_bad_files_raise_fits_read_error_naming_the_file(tmp_path, case):
    path = _bad_files(tmp_path)[case]
    with pytest.raises(FitsReadError) as err:
        scan_file(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, CcdaskError) and isinstance(err.value, OSError)


def test_truncated_message_names_hdu_and_sizes(tmp_path):
    path = tmp_path / "cut.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(uint16_frame((64, 64)))]).writeto(path)
    body = path.read_bytes()
    path.write_bytes(body[: len(body) - 4000])
    with pytest.raises(FitsReadError, match=r"cut\.fits\[1\]: truncated.*8192 data bytes"):
        scan_file(path)


def test_scan_reads_headers_only(tmp_path):
    """Scanning a plain file seeks past the pixels: bytes read stay far below the file size."""
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("/proc/self/io not found (needed to count bytes read)")
    paths = []
    for k in range(4):
        p = tmp_path / f"big{k}.fits"
        fits.HDUList(
            [
                fits.PrimaryHDU(),
                fits.ImageHDU(np.zeros((1024, 1024), np.int16)),
                fits.ImageHDU(np.zeros((1024, 1024), np.int16)),
            ]
        ).writeto(p)
        paths.append(p)

    def rchar() -> int:
        for line in io_stats.read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise AssertionError("no rchar in /proc/self/io")

    before = rchar()
    for p in paths:
        assert len(scan_file(p)) == 2
    read = rchar() - before
    total = sum(p.stat().st_size for p in paths)
    assert read < total / 50, (read, total)


def test_select_hdu_by_index_name_and_version(tmp_path):
    path = tmp_path / "sci.fits"
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        ext = fits.ImageHDU(np.full((4, 5), ver, dtype=np.float32), name="SCI")
        ext.header["EXTVER"] = ver
        hdus.append(ext)
    hdus.append(fits.ImageHDU(np.zeros((4, 5), dtype=np.float32), name="VAR"))
    fits.HDUList(hdus).writeto(path)
    infos = scan_file(path)
    where = str(path.resolve())
    assert select_hdu(infos, 2, where).index == 2
    assert select_hdu(infos, "var", where).index == 3  # case-insensitive
    assert select_hdu(infos, ("SCI", 2), where).index == 2
    with pytest.raises(FitsReadError, match=r"2 image HDUs share that name"):
        select_hdu(infos, "SCI", where)
    with pytest.raises(FitsReadError, match=r"no image HDU with that name.*'SCI', 'VAR'"):
        select_hdu(infos, "DQ", where)
    with pytest.raises(FitsReadError, match=r"3 image HDUs.*hdu="):
        select_hdu(infos, None, where)
    with pytest.raises(FitsReadError, match=r"\[7\]: no such HDU"):
        select_hdu(infos, 7, where)
    with pytest.raises(FitsReadError, match=r"holds no image data"):
        image_source(path, hdu=0)
