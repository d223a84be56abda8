"""The kernel's two input forms and two survivor passes give the same numbers, bit for bit.

* :class:`StoredInts` (16-bit stored integers decoded inside the kernel's fill) against the same
  block decoded first by ``physical_into`` (the float32 path), for every rejection the kernel runs,
  with per-frame BSCALE/BZERO/BLANK, thresholds, scale, zero and weights;
* the per-pixel survivor pass (pixels whose survivors are all their values take the fill's sums)
  against the whole-strip pass, which ``return_mask=True`` forces;
* files written by astropy with BLANK and scaling, combined through the tile path (``pread`` +
  in-kernel decode), against an eager astropy read combined by ``combine_block``.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask.combine import CombineConfig, combine, combine_block
from ccdask.combine._kernels import StoredInts

KINDS = [
    dict(clip="none"),
    dict(clip="none", method="median"),
    dict(clip="minmax", min_clip=-50.0, max_clip=3000.0),
    dict(clip="sigma"),
    dict(clip="sigma", center="mean", spread="std"),
    dict(clip="sigma", method="median", maxiters=2),
    dict(clip="sigclip"),
    dict(clip="sigclip", mclip=False, nkeep=-3),
    dict(clip="avsigclip"),
    dict(clip="ccdclip", rdnoise=4.0, gain=1.5),
    dict(clip="crreject", rdnoise=4.0, gain=1.5),
    dict(clip="pclip"),
    dict(clip="extrema", nlow=1, nhigh=2),
    dict(clip="sigclip", method="sum"),
]
IDS = [",".join(f"{k}={v}" for k, v in kind.items()) for kind in KINDS]


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{(~same).sum()} of {a.size} differ"


def stored_stack(seed, n, ny, nx):
    """Stored int16 values (bias-like, ties, cosmic rays, BLANKs) with each frame's scaling."""
    rng = np.random.default_rng(seed)
    raw = np.rint(rng.normal(200.0, 6.0, (n, ny, nx)))
    raw[rng.random(raw.shape) < 0.02] += 2500.0
    raw[:, 1, :] = 200.0  # a row of exact ties
    raw = raw.astype(np.int16)
    blank = np.full(n, 1 << 20, np.int64)
    blank[1] = -777
    raw[1, ::3, ::4] = -777
    raw[1:, 2, 5] = -777 if n > 1 else raw[1:, 2, 5]  # frame 1's BLANK: only there, elsewhere a value
    bscale = np.ones(n)
    bscale[2] = 1.25
    bzero = np.full(n, 32768.0)
    bzero[3] = -3.5
    return StoredInts(np.ascontiguousarray(raw.astype(">i2").view(np.uint16)), bscale, bzero, blank)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
@pytest.mark.parametrize("shape", [(11, 7, 300), (4, 3, 129), (24, 5, 131)], ids=["11x7x300", "4x3x129", "24x5x131"])
def test_stored_block_equals_decoded_block(kind, shape):
    st = stored_stack(7, *shape)
    floats = st.decode()
    assert np.isnan(floats).any()  # the BLANKs
    cfg = CombineConfig(**kind)
    n = shape[0]
    for extra in (dict(), dict(scale=np.linspace(0.9, 1.1, n), zero=np.linspace(-2.0, 2.0, n))):
        a = combine_block(st, cfg, **extra)
        b = combine_block(floats, cfg, **extra)
        assert_same(a.data, b.data)
        assert_same(a.count, b.count)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_per_pixel_and_whole_strip_survivors_agree(kind):
    """``return_mask`` needs every flag, so it runs the whole-strip pass; without it most pixels
    take the fill's sums. Few rejections (bias-like) and many (a noisy stack) both."""
    cfg = CombineConfig(**kind)
    for seed, spread in ((3, 6.0), (4, 400.0)):
        floats = stored_stack(seed, 13, 6, 260).decode()
        floats[5] += np.random.default_rng(seed).normal(0.0, spread, floats.shape[1:]).astype(np.float32)
        weights = None if kind.get("method") == "median" else np.linspace(0.5, 2.0, 13)
        for w in (None, weights):
            a = combine_block(floats, cfg, weights=w)
            b = combine_block(floats, cfg, weights=w, return_mask=True)
            assert_same(a.data, b.data)
            assert_same(a.count, b.count)
            assert_same(b.count, (~b.mask).sum(axis=0).astype(np.int16))


def test_files_with_blank_and_scaling_through_the_tile_path(tmp_path):
    """Real files (astropy writes the stored values and the cards), read by ``pread`` in bands and
    decoded in the kernel, against astropy's own scaled read combined eagerly."""
    rng = np.random.default_rng(11)
    paths, physical = [], []
    for i in range(9):
        stored = np.rint(rng.normal(300.0, 8.0, (37, 53))).astype(np.int16)
        stored[rng.random(stored.shape) < 0.03] = 4000
        hdu = fits.PrimaryHDU(stored)
        hdu.header["BSCALE"] = 1.0 if i % 3 else 0.5
        hdu.header["BZERO"] = 32768.0 if i % 2 else 10.0
        if i == 4:
            stored[::5, ::6] = -1
            hdu.data = stored
            hdu.header["BLANK"] = -1
        path = tmp_path / f"f{i}.fits"
        hdu.writeto(path)
        paths.append(path)
        with fits.open(path, memmap=False) as hdul:  # astropy's scaled read (float32 for int16)
            phys = np.asarray(hdul[0].data, dtype=np.float32)
        if i == 4:
            phys[stored == -1] = np.nan
        physical.append(phys)
    eager = np.stack(physical)
    for kind in (dict(clip="sigclip"), dict(clip="sigma"), dict(clip="extrema", nlow=1, nhigh=1)):
        got = combine(paths, **kind).compute(scheduler="sync")
        want = combine_block(eager, CombineConfig(**kind))
        assert_same(got.data, want.data)
        assert_same(got.count, want.count)
