"""Lazy readers: ``ImageSource``, ``open_frame``, ``open_stack``, ``open_chips``.

Every file is written for real into ``tmp_path``; results are compared bit for bit with an eager
astropy read of the same file, cast to float32.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import stat
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from dask.callbacks import Callback

from ccdask.errors import ConfigError, FitsReadError, ShapeMismatchError
from ccdask.io import (
    ImageSource,
    default_chunks,
    image_source,
    open_chips,
    open_frame,
    open_stack,
    scan_file,
)
from tests.helpers import no_compute

RNG = np.random.default_rng(7)
from tests.helpers import REAL  # noqa: E402

BITPIX = {"uint8": 8, "int16": 16, "int32": 32, "int64": 64, "float32": -32, "float64": -64}

# Odd regions for ImageSource.read: steps, flips, single rows, edges.
ODD_SLICES = [
    (slice(None), slice(None)),
    (slice(3, 17), slice(5, 6)),
    (slice(None, None, -1), slice(None)),
    (slice(20, 2, -3), slice(None, None, 2)),
    (slice(-5, None), slice(-7, -1)),
    (slice(0, 1), slice(30, 0, -1)),
]


def write_raw(path: Path, raw: np.ndarray, **cards) -> Path:
    """A single-HDU FITS file holding ``raw`` exactly as stored values, plus header ``cards``."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = BITPIX[raw.dtype.name]
    header["NAXIS"] = 2
    header["NAXIS1"] = raw.shape[1]
    header["NAXIS2"] = raw.shape[0]
    for key, value in cards.items():
        header[key] = value
    body = header.tostring().encode() + raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(body + b"\0" * (-len(body) % 2880))
    return path


def reference(path: Path, hdu: int = 0, blank_mask: np.ndarray | None = None) -> np.ndarray:
    """Eager astropy read cast to float32 (BLANK pixels set to NaN where given)."""
    ref = fits.getdata(path, hdu).astype(np.float32)
    if blank_mask is not None:
        ref[blank_mask] = np.nan
    return ref


def assert_bitwise(actual: np.ndarray, expected: np.ndarray) -> None:
    assert type(actual) is np.ndarray and actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def readonly(*paths: Path) -> None:
    for p in paths:
        os.chmod(p, stat.S_IRUSR | stat.S_IRGRP)


def check_all_ways(path: Path, hdu=None, expected: np.ndarray | None = None) -> None:
    """open_frame on default and awkward chunks, and ImageSource.read on odd slices."""
    readonly(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for chunks in (None, (7, 13)):
        frame = open_frame(path, hdu=hdu, chunks=chunks)
        assert frame.dtype == np.float32 and frame.shape == expected.shape
        assert_bitwise(frame.compute(), expected)
    src = image_source(path, hdu)
    for rows, cols in ODD_SLICES:
        assert_bitwise(src.read(rows, cols), expected[rows, cols])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # inputs untouched


def _cases():
    ints16 = RNG.integers(-32768, 32768, (41, 37), dtype=np.int16)
    ints32 = RNG.integers(-(2**31), 2**31, (41, 37), dtype=np.int64).astype(np.int32)
    ints64 = RNG.integers(-(2**62), 2**62, (41, 37), dtype=np.int64) * 2 + 1
    bytes8 = RNG.integers(0, 256, (41, 37), dtype=np.uint8)
    floats = (RNG.normal(1000, 300, (41, 37))).astype(np.float32)
    floats[3, 4] = np.nan
    return {
        "int16": (ints16, {}),
        "uint16_bzero": (ints16, {"BZERO": 32768}),
        "int32": (ints32, {}),
        "uint32_bzero": (ints32, {"BZERO": 2**31}),
        "int64": (ints64, {}),
        "uint64_bzero": (ints64, {"BZERO": 2**63}),
        "uint8": (bytes8, {}),
        "int8_bzero": (bytes8, {"BZERO": -128}),
        "float32": (floats, {}),
        "float64": (floats.astype(np.float64) * np.pi, {}),
        "int16_bscale_bzero": (ints16, {"BSCALE": 0.37, "BZERO": 1234.567}),
        "int16_bscale_only": (ints16, {"BSCALE": 3}),
        "uint8_bscale_bzero": (bytes8, {"BSCALE": 1.7, "BZERO": -0.1}),
        "int32_bscale_bzero": (ints32, {"BSCALE": 1e-3, "BZERO": 0.5}),
        "float32_bscale_bzero": (floats, {"BSCALE": 2.5, "BZERO": -1.25}),
        "float64_bscale_bzero": (floats.astype(np.float64), {"BSCALE": 0.1, "BZERO": 7.0}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_values_bit_identical_to_astropy(tmp_path, case):
    raw, cards = CASES[case]
    path = write_raw(tmp_path / f"{case}.fits", raw, **cards)
    check_all_ways(path, expected=reference(path))


def test_astropy_written_uint16(tmp_path):
    """astropy itself stores uint16 as int16 + BZERO = 32768."""
    data = RNG.integers(0, 65536, (50, 70), dtype=np.uint16)
    path = tmp_path / "u16.fits"
    fits.PrimaryHDU(data).writeto(path)
    assert fits.getheader(path)["BZERO"] == 32768
    check_all_ways(path, expected=data.astype(np.float32))


@pytest.mark.parametrize(
    "cards",
    [
        {"BLANK": -999},
        {"BLANK": -999, "BSCALE": 0.5, "BZERO": 100.0},
        {"BLANK": -999, "BZERO": 32768},
    ],
)
def test_blank_becomes_nan(tmp_path, cards):
    raw = RNG.integers(-2000, 2000, (30, 40), dtype=np.int16)
    raw[::7, ::5] = -999
    path = write_raw(tmp_path / "blank.fits", raw, **cards)
    expected = reference(path, blank_mask=raw == -999)
    assert np.isnan(expected).sum() == (raw == -999).sum()
    check_all_ways(path, expected=expected)


def test_gzip_matches_astropy(tmp_path):
    plain = tmp_path / "plain.fits"
    data = RNG.integers(0, 65536, (64, 48), dtype=np.uint16)
    fits.PrimaryHDU(data).writeto(plain)
    gz = tmp_path / "frame.fits.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(plain.read_bytes())
    assert image_source(gz).kind == "gzip"
    check_all_ways(gz, expected=reference(gz))


class CountTasks(Callback):
    """Counts executed tasks by key prefix (dask's own callback mechanism)."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def _pretask(self, key, dsk, state):
        self.keys.append(key)

    def count(self, prefix: str) -> int:
        return sum(1 for k in self.keys if (k[0] if isinstance(k, tuple) else k).startswith(prefix))


def test_gzip_file_decompressed_once_per_graph(tmp_path):
    plain = tmp_path / "mef.fits"
    chips = [RNG.integers(0, 65536, (30, 20), dtype=np.uint16) for _ in range(3)]
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(c, name=f"CCD{k}") for k, c in enumerate(chips, 1)]).writeto(
        plain
    )
    gz = tmp_path / "mef.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))

    arrays = open_chips(gz, chunks=(7, 13))
    twice = open_frame(gz, hdu="CCD2", chunks=(7, 13))  # the same HDU opened again
    with CountTasks() as counter:
        results = dask.compute(*arrays.values(), twice, scheduler="threads")
    assert counter.count("gunzip-mef-") == 1
    for got, want in zip(results, [*chips, chips[1]], strict=True):
        assert_bitwise(got, want.astype(np.float32))
    gunzip_keys = {
        k for a in arrays.values() for k in a.__dask_graph__() if isinstance(k, str) and k.startswith("gunzip-")
    }
    assert len(gunzip_keys) == 1


def test_gzip_chunks_sliced_not_redecompressed(tmp_path):
    plain = tmp_path / "one.fits"
    fits.PrimaryHDU(RNG.normal(size=(40, 30)).astype(np.float32)).writeto(plain)
    gz = tmp_path / "one.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    frame = open_frame(gz, chunks=(7, 13))
    with CountTasks() as counter:
        out = frame.compute(scheduler="sync")
    assert counter.count("gunzip-") == 1 and counter.count("read-one-0-") == 6 * 3
    assert_bitwise(out, reference(gz))


@pytest.mark.parametrize(
    ("dtype", "kwargs"),
    [
        ("uint16", {"compression_type": "RICE_1"}),
        ("int16", {"compression_type": "RICE_1"}),
        ("int32", {"compression_type": "RICE_1"}),
        ("float32", {"compression_type": "GZIP_2", "quantize_level": 0}),  # lossless
        ("float32", {"compression_type": "RICE_1"}),  # quantized: compare with astropy's own read
    ],
)
def test_fpack_matches_astropy(tmp_path, dtype, kwargs):
    if dtype == "float32":
        data = RNG.normal(500, 20, (45, 50)).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        data = RNG.integers(max(info.min, -(2**20)), min(info.max, 2**20), (45, 50)).astype(dtype)
    path = tmp_path / "tiles.fits.fz"
    comp = fits.CompImageHDU(data, name="CCD1", tile_shape=(8, 50), **kwargs)
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    assert image_source(path).kind == "fpack"
    expected = reference(path, 1)
    if kwargs.get("quantize_level") == 0 or dtype != "float32":
        assert_bitwise(expected, data.astype(np.float32))
    check_all_ways(path, expected=expected)


def test_mef_open_chips_and_hdu_selection(tmp_path):
    path = tmp_path / "mosaic.fits"
    chips = [RNG.integers(0, 65536, (24, 32), dtype=np.uint16) for _ in range(3)]
    hdus = [fits.PrimaryHDU()]
    for k, chip in enumerate(chips, 1):
        ext = fits.ImageHDU(chip, name=f"AMP{k}" if k != 3 else None)
        if k == 1:
            ext.header["CCDNAME"] = "blue"
        hdus.append(ext)
    fits.HDUList(hdus).writeto(path)
    arrays = open_chips(path, chunks=(7, 13))
    assert list(arrays) == ["blue", "AMP2", "HDU3"]
    for arr, chip in zip(arrays.values(), chips, strict=True):
        assert_bitwise(arr.compute(), chip.astype(np.float32))
    for hdu in (2, "amp2", ("AMP2", 1)):
        assert_bitwise(open_frame(path, hdu=hdu).compute(), chips[1].astype(np.float32))
    with pytest.raises(FitsReadError, match=r"3 image HDUs.*hdu=") as err:
        open_frame(path)
    assert str(path) in str(err.value)


def test_open_chips_disambiguates_shared_names(tmp_path):
    path = tmp_path / "sci.fits"
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        ext = fits.ImageHDU(np.full((3, 4), ver, dtype=np.int16), name="SCI")
        ext.header["EXTVER"] = ver
        hdus.append(ext)
    fits.HDUList(hdus).writeto(path)
    assert list(open_chips(path)) == ["SCI_1", "SCI_2"]


def test_open_stack_values_and_chunks(tmp_path):
    frames = [RNG.integers(0, 65536, (33, 29), dtype=np.uint16) for _ in range(4)]
    paths = []
    for k, frame in enumerate(frames):
        p = tmp_path / f"f{k}.fits"
        fits.PrimaryHDU(frame).writeto(p)
        paths.append(p)
    gz = tmp_path / "f3.fits.gz"  # mix plain and gzip in one stack
    gz.write_bytes(gzip.compress(paths[3].read_bytes()))
    paths[3] = gz
    stack = open_stack(paths, chunks=(7, 13))
    assert stack.shape == (4, 33, 29) and stack.dtype == np.float32
    assert stack.chunks[0] == (1, 1, 1, 1)
    assert stack.chunks[1:] == ((7, 7, 7, 7, 5), (13, 13, 3))
    assert_bitwise(stack.compute(), np.stack(frames).astype(np.float32))
    default = open_stack(paths)
    assert default.chunks == ((1, 1, 1, 1), (33,), (29,))


def test_open_stack_shape_mismatch_names_the_file(tmp_path):
    a, b = tmp_path / "a.fits", tmp_path / "b_odd.fits"
    fits.PrimaryHDU(np.zeros((10, 12), np.int16)).writeto(a)
    fits.PrimaryHDU(np.zeros((10, 13), np.int16)).writeto(b)
    with pytest.raises(ShapeMismatchError) as err:
        open_stack([a, a, b])
    msg = str(err.value)
    assert "b_odd.fits" in msg and "(10, 13)" in msg and "(10, 12)" in msg
    with pytest.raises(ConfigError):
        open_stack([])


def test_building_is_lazy(tmp_path):
    paths = []
    for k in range(12):
        p = tmp_path / f"frame{k:02d}.fits"
        fits.PrimaryHDU(RNG.integers(0, 65536, (64, 64), dtype=np.uint16)).writeto(p)
        paths.append(p)
    mef = tmp_path / "mef.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.int16)), fits.ImageHDU(np.ones((8, 8), np.int16))]
    ).writeto(mef)
    gz = tmp_path / "mef.fits.gz"
    gz.write_bytes(gzip.compress(mef.read_bytes()))
    with no_compute():
        stack = open_stack(paths, chunks=(16, 64))
        chips = open_chips(gz)
        frame = open_frame(mef, hdu=2, chunks=(3, 5))
        _ = (stack.mean(axis=0) - frame[:1, :1]).sum() + chips["HDU1"].sum()
        with pytest.raises(AssertionError, match="computed"):
            stack.compute()
    assert stack.numblocks == (12, 4, 1)


def test_pixels_not_read_while_building(tmp_path):
    """Building a stack of plain files reads headers only (bytes read << pixel bytes)."""
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("/proc/self/io not found (needed to count bytes read)")
    paths = []
    for k in range(6):
        p = tmp_path / f"big{k}.fits"
        fits.PrimaryHDU(np.zeros((1024, 1024), np.uint16)).writeto(p)
        paths.append(p)

    def rchar() -> int:
        line = next(x for x in io_stats.read_text().splitlines() if x.startswith("rchar:"))
        return int(line.split()[1])

    before = rchar()
    stack = open_stack(paths, chunks=(128, 1024))
    assert rchar() - before < 6 * 2 * 1024 * 1024 / 50
    assert stack.shape == (6, 1024, 1024)


def test_task_names_tokens_and_pickling(tmp_path):
    path = tmp_path / "obj001.fits"
    fits.PrimaryHDU(RNG.normal(size=(20, 30)).astype(np.float32)).writeto(path)
    src = image_source(path)
    assert src.path == os.path.abspath(path) and src.hdu == 0 and src.shape == (20, 30)
    assert src == ImageSource.from_info(scan_file(path)[0])
    assert src.token == image_source(path).token
    arr = src.to_dask(chunks=(7, 13))
    assert arr.name.startswith("read-obj001-0-")
    assert arr.name == src.to_dask(chunks=(7, 13)).name  # deterministic
    assert arr.name != src.to_dask().name  # chunking is part of the name
    assert all(k[0] == arr.name for k in arr.__dask_graph__())
    clone = pickle.loads(pickle.dumps(src))
    assert clone == src and clone.token == src.token
    assert_bitwise(clone.read(slice(2, 9), slice(None, None, -1)), reference(path)[2:9, ::-1])
    os.utime(path, ns=(src.mtime_ns + 10**9, src.mtime_ns + 10**9))
    assert image_source(path).token != src.token
    with pytest.raises(FitsReadError, match=r"obj001\.fits\[0\].*changed since it was scanned"):
        arr.compute(scheduler="sync")


def test_default_chunks_are_whole_rows_of_about_32_mib():
    assert default_chunks((4096, 2048)) == ((4096,), (2048,))
    ny, nx = 10000, 4096
    chunks = default_chunks((ny, nx))
    assert chunks[1] == (nx,) and sum(chunks[0]) == ny
    assert max(chunks[0]) * nx * 4 <= 32 << 20 and len(chunks[0]) == 5
    assert default_chunks((3, 20_000_000))[0] == (1, 1, 1)


def _real(folder: str, name: str) -> Path:
    path = REAL / folder / name
    if not path.exists():
        pytest.skip(f"real frame {path} not found (../shared/data/real is absent)")
    return path


@pytest.mark.real
@pytest.mark.parametrize(
    ("folder", "name", "hdu", "shape"),
    [
        ("wht_isis_red", "r2700982.fit.gz", 1, (4200, 966)),
        ("shane_kast_blue", "b21.fits.gz", 0, (350, 2112)),
        ("saao_1m_ste3", "a8280271.fits", 0, (520, 536)),
    ],
)
def test_real_frames_match_astropy(folder, name, hdu, shape):
    path = _real(folder, name)
    (info,) = scan_file(path)
    assert (info.index, info.shape, info.bitpix, info.bzero) == (hdu, shape, 16, 32768.0)
    assert info.kind == ("gzip" if name.endswith(".gz") else "plain")
    expected = reference(path, hdu)
    frame = open_frame(path, chunks=(1000, 500))
    assert_bitwise(frame.compute(), expected)
    rows, cols = slice(shape[0] - 1, 10, -7), slice(3, shape[1], 5)
    assert_bitwise(image_source(path).read(rows, cols), expected[rows, cols])


@pytest.mark.real
def test_real_stack_of_wht_biases():
    paths = [_real("wht_isis_red", f"r27009{n}.fit.gz") for n in (82, 84, 86)]
    stack = open_stack(paths)
    assert stack.shape == (3, 4200, 966)
    assert stack.chunks[1:] == default_chunks((4200, 966))
    med = da.median(stack[:, 100:200, 100:200], axis=0).compute()
    expected = np.median(np.stack([reference(p, 1)[100:200, 100:200] for p in paths]), axis=0)
    assert_bitwise(med.astype(np.float32), expected.astype(np.float32))


def test_processes_cluster_reads_all_kinds(tmp_path):
    """Sources and graphs survive pickling to worker processes; gzip still decompressed once."""
    distributed = pytest.importorskip("distributed")
    chips = [RNG.integers(0, 65536, (30, 20), dtype=np.uint16) for _ in range(2)]
    plain = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(c) for c in chips]).writeto(plain)
    gz = tmp_path / "mef.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    fz = tmp_path / "mef.fits.fz"
    fits.HDUList([fits.PrimaryHDU()] + [fits.CompImageHDU(c) for c in chips]).writeto(fz)
    stack = open_stack([plain, gz, fz], hdu=2, chunks=(7, 13))
    chips_gz = open_chips(gz, chunks=(16, 20))
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        got_stack, *got_chips = client.compute([stack, *chips_gz.values()], sync=True)
    assert_bitwise(got_stack, np.stack([chips[1]] * 3).astype(np.float32))
    for got, want in zip(got_chips, chips, strict=True):
        assert_bitwise(got, want.astype(np.float32))
