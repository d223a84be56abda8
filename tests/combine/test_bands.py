"""File tiles combined band by band (decoded straight into one buffer) and IRAF's sigclip on a
whole strip at once: the same numbers as an eager read and an eager per-pixel reference.

Frames are written for real by astropy: uint16 (BZERO), int16 with BSCALE/BZERO, float32 with
NaN, fpack and gzip (which read whole tiles, not bands). Bands and tiles are made awkward by a
small ``BAND_BYTES`` and tile shape (odd rows per band, short last bands and tiles).
"""

from __future__ import annotations

import gzip
import importlib
import math

import numpy as np
import pytest
from astropy.io import fits

from ccdask.combine import CombineConfig, combine, combine_block

_stack = importlib.import_module("ccdask.combine._stack")

#: Frames per stack: enough for IRAF's sigclip (sample sigma, outlier included) to clip.
N = 15


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{(~same).sum()} of {a.size} differ"


def stack(seed, n, ny, nx, kind):
    """Raw frames: ``int`` bias-like integers with ties and cosmic rays, or ``float`` with NaN."""
    rng = np.random.default_rng(seed)
    a = rng.normal(1000.0, 4.0, (n, ny, nx))
    hits = rng.random(a.shape) < 0.03
    a[hits] += 3000.0
    if kind == "float":
        a = a.astype(np.float32)
        a[rng.random(a.shape) < 0.1] = np.nan
        a[:, 2, 3] = np.nan  # a pixel with no value
        a[1:, 4, 5] = np.nan  # a pixel with one value
        return a
    return np.rint(a)


def write(folder, frames, storage):
    """One file per frame, stored as ``storage``; returns the paths and the physical float32 stack."""
    paths, physical = [], []
    for i, frame in enumerate(frames):
        path = folder / f"f{i:02d}.fits"
        if storage == "uint16":
            hdu = fits.PrimaryHDU(frame.astype(np.uint16))
        elif storage == "int16_scaled":
            hdu = fits.PrimaryHDU((frame - 1000).astype(np.int16))
            hdu.header["BSCALE"] = 0.5
            hdu.header["BZERO"] = 999.25
        else:
            hdu = fits.PrimaryHDU(frame.astype(np.float32))
        if storage == "fpack":
            path = folder / f"f{i:02d}.fits.fz"
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(frame.astype(np.uint16), tile_shape=(4, 17))]).writeto(
                path
            )
        elif storage == "gzip":
            plain = folder / f"p{i:02d}.fits"
            fits.PrimaryHDU(frame.astype(np.uint16)).writeto(plain)
            path = folder / f"f{i:02d}.fits.gz"
            path.write_bytes(gzip.compress(plain.read_bytes()))
            plain.unlink()
        else:
            hdu.writeto(path)
        paths.append(path)
        physical.append(fits.getdata(path, 1 if storage == "fpack" else 0).astype(np.float32))
    return paths, np.stack(physical)


def iraf_sigclip_reference(values, lsigma, hsigma, mclip, nkeep):
    """IRAF imcombine ``reject=sigclip`` (the rules in ``_iraf_sigclip_bounds``) of one pixel, in
    plain Python floats: the mean and count of the survivors (NaN, 0 when none)."""
    v = sorted(float(x) for x in values if math.isfinite(x))
    nf = len(v)
    nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
    a, b = 0, nf
    if nf > max(2, nk):
        first = True
        while True:
            m = b - a
            if mclip:
                h = m // 2
                c = v[a + h] if m % 2 else 0.5 * (v[a + h] + v[a + h - 1])
            else:
                tot = 0.0
                for x in v[a:b]:
                    tot += x
                c = (tot - v[a] - v[b - 1]) / (m - 2) if first else tot / m
            first = False
            ss = 0.0
            for x in v[a:b]:
                ss += (x - c) * (x - c)
            sd = math.sqrt(ss / (m - 1))
            lo, hi = -lsigma * sd, hsigma * sd
            na, nb = a, b
            while na < b and not (v[na] - c >= lo):
                na += 1
            while nb > na and not (v[nb - 1] - c <= hi):
                nb -= 1
            if nb - na < nk:
                while nb - na < nk:
                    rl = c - v[na - 1] if na > a else math.inf
                    rh = v[nb] - c if nb < b else math.inf
                    if rl <= rh:
                        na -= 1
                    if rh <= rl:
                        nb += 1
                a, b = na, nb
                break
            if nb - na == m:
                break
            a, b = na, nb
            if b - a <= max(2, nk):
                break
    kept = v[a:b]
    if not kept:
        return math.nan, 0
    tot = 0.0
    for x in kept:
        tot += x
    return tot / len(kept), len(kept)


@pytest.fixture(params=[(8, 29), (8, 13)], ids=["whole-rows", "row-and-column-tiles"])
def small_bands(monkeypatch, request):
    """Tiles of 8 rows (23 = 8 + 8 + 7), whole rows or 13 columns wide (29 = 13 + 13 + 3), each
    combined in bands of 3 rows (3 + 3 + 2, 3 + 3 + 1): short last bands and tiles."""
    ty, tx = request.param
    monkeypatch.setattr(_stack, "BAND_BYTES", 3 * 4 * N * tx)
    monkeypatch.setattr(_stack, "tile_shape", lambda *args, **kwargs: (ty, tx))
    assert _stack.band_rows(N, tx) == 3


@pytest.mark.parametrize("storage", ["uint16", "int16_scaled", "float32"])
@pytest.mark.parametrize(
    "mclip, sigma, nkeep",
    [(True, (3.0, 3.0), 1), (False, (3.0, 3.0), 1), (True, (1.0, 1.5), -2), (False, (0.8, 0.8), 3)],
)
def test_sigclip_on_files_equals_the_eager_reference(tmp_path, small_bands, storage, mclip, sigma, nkeep):
    raw = stack(3, N, 23, 29, "float" if storage == "float32" else "int")
    paths, phys = write(tmp_path, raw, storage)
    opts = dict(clip="sigclip", mclip=mclip, sigma_lower=sigma[0], sigma_upper=sigma[1], nkeep=nkeep)
    res = combine(paths, **opts).compute()
    want = np.empty((23, 29), np.float32)
    count = np.empty((23, 29), np.int16)
    for y in range(23):
        for x in range(29):
            m, c = iraf_sigclip_reference(phys[:, y, x], sigma[0], sigma[1], mclip, nkeep)
            want[y, x], count[y, x] = m, c
    assert_same(res.data, want)
    np.testing.assert_array_equal(res.count, count)
    assert (count < N).any() and len(np.unique(count)) > 1  # clipping, differently per pixel


@pytest.mark.parametrize("clip", ["none", "sigma", "sigclip", "extrema", "ccdclip", "crreject", "pclip", "avsigclip"])
def test_bands_equal_the_whole_block_for_every_kind(tmp_path, small_bands, clip):
    raw = stack(5, N, 23, 29, "float")
    paths, phys = write(tmp_path, raw, "float32")
    opts = dict(clip=clip, rdnoise=3.0, gain=1.5)
    res = combine(paths, **opts).compute()
    whole = combine_block(phys, CombineConfig(**opts))
    assert_same(res.data, whole.data)
    np.testing.assert_array_equal(res.count, whole.count)


@pytest.mark.parametrize("storage", ["fpack", "gzip"])
def test_compressed_files_read_whole_tiles_and_agree(tmp_path, small_bands, storage):
    raw = stack(8, N, 23, 29, "int")
    paths, phys = write(tmp_path, raw, storage)
    (tmp_path / "plain").mkdir()
    plain, _ = write(tmp_path / "plain", raw, "uint16")
    got = combine(paths, clip="sigclip").compute()
    ref = combine(plain, clip="sigclip").compute()
    assert_same(got.data, ref.data)
    np.testing.assert_array_equal(got.count, ref.count)
    assert_same(got.data, combine_block(phys, CombineConfig(clip="sigclip")).data)


def test_band_path_variance_and_scaling(tmp_path, small_bands):
    raw = stack(9, N, 23, 29, "int")
    paths, phys = write(tmp_path, raw, "uint16")
    scale = np.linspace(0.9, 1.1, N)
    res = combine(paths, clip="sigclip", scale=scale, variance=True).compute()
    whole = combine_block(phys, CombineConfig(clip="sigclip"), scale=scale, return_variance=True)
    assert_same(res.data, whole.data)
    assert_same(res.variance, whole.variance)


def test_files_with_blank_and_per_frame_scaling(tmp_path):
    """Frames written by astropy with their own BSCALE/BZERO and one with BLANK, read band by band
    with ``pread``: the same numbers as astropy's own scaled read combined eagerly."""
    rng = np.random.default_rng(11)
    paths, physical = [], []
    for i in range(9):
        stored = np.rint(rng.normal(300.0, 8.0, (37, 53))).astype(np.int16)
        stored[rng.random(stored.shape) < 0.03] = 4000
        if i == 4:
            stored[::5, ::6] = -1
        hdu = fits.PrimaryHDU(stored)
        hdu.header["BSCALE"] = 1.0 if i % 3 else 0.5
        hdu.header["BZERO"] = 32768.0 if i % 2 else 10.0
        if i == 4:
            hdu.header["BLANK"] = -1
        path = tmp_path / f"f{i}.fits"
        hdu.writeto(path)
        paths.append(path)
        with fits.open(path, memmap=False) as hdul:  # astropy scales int16 to float32
            phys = np.asarray(hdul[0].data, dtype=np.float32)
        if i == 4:
            assert np.isnan(phys[::5, ::6]).all()  # astropy's BLANK handling, the reference
        physical.append(phys)
    eager = np.stack(physical)
    for kind in (dict(clip="sigclip"), dict(clip="sigma"), dict(clip="extrema", nlow=1, nhigh=1)):
        got = combine(paths, **kind).compute(scheduler="sync")
        want = combine_block(eager, CombineConfig(**kind))
        assert_same(got.data, want.data)
        assert_same(got.count, want.count)
