"""DQ planes, variance planes, varclip and the optional output planes, on FITS files written by astropy.

References are eager numpy implementations of the definitions (``ref_*`` below, one pixel or one
frame at a time) and values injected by construction (a cosmic ray flagged in DQ, a star
saturated in every frame, a pixel bad everywhere).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask.combine import CombineConfig, combine
from ccdask.combine._planes import combine_planes
from ccdask.dq import BAD, COSMIC, INTERPOLATED, NODATA, SATURATED
from ccdask.errors import ConfigError, FitsReadError, ShapeMismatchError
from tests.helpers import no_compute

N, NY, NX = 7, 13, 17


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    assert same.all(), f"{(~same).sum()} differ"


def reduced_stack(seed=0, n=N, ny=NY, nx=NX):
    """Values (e-), their variance and DQ with flagged cosmic rays, bad pixels, saturation."""
    rng = np.random.default_rng(seed)
    var = rng.uniform(50.0, 150.0, (n, ny, nx)).astype(np.float32)
    sci = (1000.0 + rng.normal(0.0, 1.0, (n, ny, nx)) * np.sqrt(var)).astype(np.float32)
    dq = np.zeros((n, ny, nx), np.uint16)
    hits = rng.random(sci.shape) < 0.05
    sci[hits] += 5000.0
    dq[hits] |= COSMIC
    bad = rng.random(sci.shape) < 0.04
    dq[bad] |= BAD
    sci[bad] = 0.0
    dq[rng.random(sci.shape) < 0.03] |= INTERPOLATED  # not a bad bit by default
    # a cosmic ray flagged in frame 1 at (2, 3); a star saturated in every frame at (4, 5)
    dq[:, 2, 3] = 0
    sci[1, 2, 3] = 9000.0
    dq[1, 2, 3] = COSMIC
    sci[:, 4, 5] = 65000.0 + np.arange(n, dtype=np.float32)
    dq[:, 4, 5] = SATURATED
    # saturated in two frames only at (6, 7): the others are used
    dq[:, 6, 7] = 0
    dq[:2, 6, 7] = SATURATED
    sci[:2, 6, 7] = 65000.0
    # bad in every frame at (8, 9); saturated and bad at (9, 10): nothing usable
    dq[:, 8, 9] = BAD
    dq[:, 9, 10] = SATURATED | BAD
    # a NaN value, not flagged
    sci[3, 10, 11] = np.nan
    return sci, var, dq


def write_reduced(folder, sci, var, dq, chips=2):
    """ccdask-reduced files: per chip SCI, VAR, DQ (EXTVER = chip), chip c offset by 10 c."""
    paths = []
    for i in range(sci.shape[0]):
        hdus = [fits.PrimaryHDU()]
        for c in range(1, chips + 1):
            for name, plane in (("SCI", sci[i] + 10 * (c - 1)), ("VAR", var[i]), ("DQ", dq[i])):
                hdu = fits.ImageHDU(plane, name=name)
                hdu.header["EXTVER"] = c
                hdu.header["CCDNAME"] = f"CCD{c}"
                hdus.append(hdu)
        path = folder / f"red{i:02d}.fits"
        fits.HDUList(hdus).writeto(path)
        paths.append(path)
    return paths


def write_planes(folder, stack, prefix, dtype=np.float32):
    paths = []
    for i, plane in enumerate(stack):
        path = folder / f"{prefix}{i:02d}.fits"
        fits.PrimaryHDU(np.asarray(plane).astype(dtype)).writeto(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# eager references
# ---------------------------------------------------------------------------------------------
def ref_usable(sci, dq, bits):
    """Which values take part: finite and not bad; saturated-only ones where nothing else is."""
    finite = np.isfinite(sci)
    good = finite & ((dq & bits) == 0)
    fallback = np.zeros(sci.shape[1:], bool)
    if bits & SATURATED:
        sat_only = finite & ((dq & SATURATED) != 0) & ((dq & (bits & ~SATURATED)) == 0)
        fallback = ~good.any(axis=0) & sat_only.any(axis=0)
        good = good | (sat_only & fallback)
    return good, fallback


def ref_mean(values, use, weights=None, var=None, scale=None):
    """Weighted mean over ``use`` and its propagated variance sum(w² s² v)/sum(w)² (float64)."""
    n = values.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    s = np.ones(n) if scale is None else np.asarray(scale, float)
    x = values.astype(np.float64) * s[:, None, None]
    wk = np.where(use, w[:, None, None], 0.0)
    sw = wk.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(use, wk * x, 0.0).sum(axis=0) / sw
        v = None
        if var is not None:
            v = np.where(use, wk**2 * s[:, None, None] ** 2 * var, 0.0).sum(axis=0) / sw**2
    return mean, v


def ref_varclip(x, v, lo, hi, maxiters, mclip, nkeep=1):
    """DRAGONS' varclip at one pixel: which values survive (None maxiters: until nothing changes)."""
    keep = np.isfinite(x) & np.isfinite(v)
    sd = np.sqrt(np.where(keep, v, 0.0))
    it = 0
    while keep.any() and (maxiters is None or it < maxiters):
        c = np.median(x[keep]) if (it == 0 or mclip) else np.mean(x[keep])
        trial = keep & (x >= c - lo * sd) & (x <= c + hi * sd)
        if trial.sum() == keep.sum() or trial.sum() < nkeep:
            break
        keep = trial
        it += 1
    return keep


def ref_sigma(values, use, center, weights=None):
    """IRAF's sigma image: sqrt(sum w (x - c)² / sum w * n / (n - 1)) over the survivors."""
    n = values.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    wk = np.where(use, w[:, None, None], 0.0)
    d = values.astype(np.float64) - center.astype(np.float64)
    cnt = use.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(
            np.where(use, wk * d * d, 0.0).sum(axis=0) / wk.sum(axis=0) * np.where(cnt > 1, cnt / (cnt - 1), 1)
        )
    return np.where(cnt > 0, out, np.nan)


# ---------------------------------------------------------------------------------------------
# DQ planes
# ---------------------------------------------------------------------------------------------
def test_reduced_files_sci_var_dq_against_numpy(tmp_path):
    sci, var, dq = reduced_stack()
    paths = write_reduced(tmp_path, sci, var, dq)
    res = combine(paths, hdu=("SCI", 2), variance="VAR", dq="DQ", clip="none").compute()
    use, fallback = ref_usable(sci, dq, CombineConfig().dq_bad)
    mean, v = ref_mean(sci + 10, use, var=var)
    np.testing.assert_allclose(res.data, mean.astype(np.float32), rtol=2e-7, equal_nan=True)
    np.testing.assert_allclose(res.variance, v.astype(np.float32), rtol=2e-6, equal_nan=True)
    assert_same(res.count, use.sum(axis=0).astype(np.int16))
    expect_dq = np.where(use.sum(axis=0) == 0, NODATA, 0) | np.where(fallback, SATURATED, 0)
    assert_same(res.dq, expect_dq.astype(np.uint16))
    # injected truth
    others = np.delete(sci[:, 2, 3], 1) + 10
    assert res.data[2, 3] == np.float32(others.astype(np.float64).mean()) and res.count[2, 3] == N - 1
    assert res.data[4, 5] == np.float32(65010 + (N - 1) / 2) and res.dq[4, 5] == SATURATED
    assert res.count[6, 7] == N - 2 and res.dq[6, 7] == 0
    for y, x in ((8, 9), (9, 10)):
        assert np.isnan(res.data[y, x]) and res.count[y, x] == 0 and res.dq[y, x] == NODATA
    assert res.count[10, 11] == N - 1 - (dq[:, 10, 11] & CombineConfig().dq_bad != 0).sum()
    assert res.header()["CMBDQBAD"] == CombineConfig().dq_bad


def test_dq_bits_choose_what_is_bad(tmp_path):
    sci, var, dq = reduced_stack(1)
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    for bits in (BAD, BAD | COSMIC, COSMIC | INTERPOLATED, "1|4", "0x6"):
        value = {"1|4": 5, "0x6": 6}.get(bits, bits)
        res = combine(paths, hdu=("SCI", 1), dq="DQ", dq_bad=bits, clip="none").compute()
        use, fallback = ref_usable(sci, dq, value)
        mean, _ = ref_mean(sci, use)
        np.testing.assert_allclose(res.data, mean.astype(np.float32), rtol=2e-7, equal_nan=True)
        assert_same(res.count, use.sum(axis=0).astype(np.int16))
        assert (res.dq == SATURATED).sum() == fallback.sum()
    with pytest.raises(ConfigError, match="dq_bad"):
        CombineConfig(dq_bad=70000)
    with pytest.raises(ConfigError, match="dq_bad"):
        CombineConfig(dq_bad="bad")


def test_dq_before_sigma_clipping_equals_astropy_on_the_masked_stack(tmp_path):
    from astropy.stats import sigma_clip

    sci, var, dq = reduced_stack(2)
    dq[:, 4, 5] = 0  # no fallback pixel: astropy has no such rule
    dq[:, 9, 10] = BAD
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    res = combine(paths, hdu=("SCI", 1), dq="DQ", nkeep=0).compute()
    masked = np.where((dq & CombineConfig().dq_bad) != 0, np.nan, sci)
    clipped = sigma_clip(masked, axis=0, sigma=3.0, maxiters=5, stdfunc="mad_std", masked=True)
    expect = clipped.mean(axis=0).filled(np.nan).astype(np.float32)
    np.testing.assert_allclose(res.data, expect, rtol=2e-7, equal_nan=True)
    assert_same(res.count, (~clipped.mask).sum(axis=0).astype(np.int16))


def test_plain_frames_with_separate_mask_files_and_arrays(tmp_path):
    sci, _, dq = reduced_stack(3)
    frames = write_planes(tmp_path, sci, "f")
    masks = write_planes(tmp_path, (dq & BAD) != 0, "m", dtype=np.uint8)
    float_masks = write_planes(tmp_path, (dq & BAD).astype(np.float32), "fm")
    use, _ = ref_usable(sci, dq, BAD)
    mean, _ = ref_mean(sci, use)
    for given in (masks, float_masks, (dq & BAD) != 0, list((dq & BAD).astype(np.int32)), da.from_array(dq & BAD)):
        res = combine(frames if not isinstance(given, np.ndarray) else sci, dq=given, clip="none").compute()
        np.testing.assert_allclose(res.data, mean.astype(np.float32), rtol=2e-7, equal_nan=True)
        assert_same(res.count, use.sum(axis=0).astype(np.int16))
    bad_mask = write_planes(tmp_path, np.full((N, NY, NX), 0.5), "half")
    with pytest.raises(FitsReadError, match=r"half00\.fits"):
        combine(frames, dq=bad_mask).compute()
    with pytest.raises(ShapeMismatchError, match="DQ planes"):
        combine(sci, dq=dq[:, :5])
    with pytest.raises(ConfigError, match="integers or booleans"):
        combine(sci, dq=dq.astype(np.float32))
    with pytest.raises(ConfigError, match="names an extension"):
        combine(sci, dq="DQ")
    with pytest.raises(FitsReadError, match=r"f00\.fits"):
        combine(frames, dq="DQ")  # plain files have no DQ extension
    with pytest.raises(ConfigError, match="3 files for 7 frames"):
        combine(frames, dq=masks[:3])


# ---------------------------------------------------------------------------------------------
# variance propagation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mean", "sum", "median"])
def test_variance_propagates_in_quadrature_with_scale_and_weights(tmp_path, method):
    sci, var, dq = reduced_stack(4)
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    scale = np.linspace(0.8, 1.3, N)
    weights = np.linspace(1.0, 2.0, N) if method != "median" else None
    res = combine(
        paths, hdu=("SCI", 1), variance="VAR", dq="DQ", clip="none", method=method, scale=scale, weights=weights
    ).compute()
    use, _ = ref_usable(sci, dq, CombineConfig().dq_bad)
    s2v = np.where(use, var * scale[:, None, None] ** 2, 0.0)
    cnt = use.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "mean":
            _, expect = ref_mean(sci, use, weights=weights, var=var, scale=scale)
        elif method == "sum":
            expect = (np.where(use, weights[:, None, None] ** 2, 0.0) * s2v).sum(axis=0)
        else:
            expect = np.pi / 2 * s2v.sum(axis=0) / cnt**2
    expect = np.where(cnt > 0, expect, np.nan)
    np.testing.assert_allclose(res.variance, expect.astype(np.float32), rtol=3e-6, equal_nan=True)
    assert res.header()["CMBVAR"] == "planes"


# ---------------------------------------------------------------------------------------------
# varclip
# ---------------------------------------------------------------------------------------------
def varclip_stack(seed):
    rng = np.random.default_rng(seed)
    var = rng.uniform(20.0, 400.0, (N, NY, NX)).astype(np.float32)
    sci = (300.0 + rng.normal(0, 1, var.shape) * np.sqrt(var)).astype(np.float32)
    sci[rng.random(sci.shape) < 0.08] += rng.uniform(30, 300, (N, NY, NX))[rng.random(sci.shape) < 0.08][:1]
    sci[rng.random(sci.shape) < 0.05] = 3000.0
    sci[0, 0, 0] = np.nan
    var[1, 0, 1] = np.nan
    return sci, var


@pytest.mark.parametrize(
    ("lo", "hi", "maxiters", "mclip", "method"),
    [
        (3.0, 3.0, 5, True, "mean"),
        (2.0, 2.5, None, False, "mean"),
        (1.0, 1.0, 2, True, "median"),
        (2.0, 2.0, 1, True, "sum"),
    ],
)
def test_varclip_equals_the_published_definition(tmp_path, lo, hi, maxiters, mclip, method):
    sci, var = varclip_stack(5)
    frames = write_planes(tmp_path, sci, "f")
    variances = write_planes(tmp_path, var, "v")
    res = combine(
        frames,
        variance=variances,
        clip="varclip",
        sigma_lower=lo,
        sigma_upper=hi,
        maxiters=maxiters,
        mclip=mclip,
        method=method,
        rejmask_cube=True,
        nrej_plane=True,
    ).compute()
    keep = np.zeros(sci.shape, bool)
    for y in range(NY):
        for x in range(NX):
            keep[:, y, x] = ref_varclip(
                sci[:, y, x].astype(np.float64), var[:, y, x].astype(np.float64), lo, hi, maxiters, mclip
            )
    assert_same(res.rejmask, (~keep).astype(np.uint8))
    assert_same(res.count, keep.sum(axis=0).astype(np.int16))
    took_part = np.isfinite(sci) & np.isfinite(var)
    assert_same(res.nrej, (took_part & ~keep).sum(axis=0).astype(np.int16))
    x64 = np.where(keep, sci, np.nan).astype(np.float64)
    with np.errstate(invalid="ignore"):
        if method == "mean":
            expect = np.nanmean(x64, axis=0)
            expect_var = np.nansum(np.where(keep, var, np.nan), axis=0) / keep.sum(axis=0) ** 2
        elif method == "sum":
            expect = np.nansum(x64, axis=0)
            expect_var = np.nansum(np.where(keep, var, np.nan), axis=0)
        else:
            expect = np.nanmedian(x64, axis=0)
            expect_var = np.pi / 2 * np.nansum(np.where(keep, var, np.nan), axis=0) / keep.sum(axis=0) ** 2
    np.testing.assert_allclose(res.data, expect.astype(np.float32), rtol=2e-7)
    np.testing.assert_allclose(res.variance, expect_var.astype(np.float32), rtol=2e-6)
    assert (~keep).sum() > N  # the stack has something to reject


def test_varclip_scales_the_variance_and_needs_planes():
    sci, var = varclip_stack(6)
    scale = np.linspace(0.5, 2.0, N)
    res = combine(sci, variance=var, clip="varclip", scale=scale, rejmask_cube=True).compute()
    x = (sci.astype(np.float64) * scale[:, None, None]).astype(np.float32).astype(np.float64)
    v = var.astype(np.float64) * scale[:, None, None] ** 2
    for y, xx in ((0, 0), (3, 4), (7, 11), (12, 16)):
        keep = ref_varclip(x[:, y, xx], v[:, y, xx], 3.0, 3.0, 5, True)
        assert_same(res.rejmask[:, y, xx], (~keep).astype(np.uint8))
        assert res.data[y, xx] == np.float32(x[keep, y, xx].mean())
    with pytest.raises(ConfigError, match="variance"):
        combine(sci, clip="varclip").compute()


# ---------------------------------------------------------------------------------------------
# optional outputs
# ---------------------------------------------------------------------------------------------
def test_sigma_nrej_and_rejmask_planes_against_numpy(tmp_path):
    from astropy.stats import sigma_clip

    sci, var, dq = reduced_stack(7)
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    weights = np.linspace(1, 3, N)
    res = combine(
        paths,
        hdu=("SCI", 1),
        dq="DQ",
        weights=weights,
        nkeep=0,
        sigma_plane=True,
        nrej_plane=True,
        rejmask_cube=True,
    ).compute()
    use, _ = ref_usable(sci, dq, CombineConfig().dq_bad)
    masked = np.where(use, sci, np.nan)
    survivors = ~sigma_clip(masked, axis=0, sigma=3.0, maxiters=5, stdfunc="mad_std", masked=True).mask
    assert_same(res.rejmask, (~survivors).astype(np.uint8))
    assert_same(res.nrej, (use & ~survivors).sum(axis=0).astype(np.int16))
    assert_same(res.count, survivors.sum(axis=0).astype(np.int16))
    mean, _ = ref_mean(sci, survivors, weights=weights)
    np.testing.assert_allclose(res.data, mean.astype(np.float32), rtol=2e-7, equal_nan=True)
    expect = ref_sigma(sci, survivors, res.data, weights=weights)
    np.testing.assert_allclose(res.sigma, expect.astype(np.float32), rtol=1e-5, atol=1e-3, equal_nan=True)
    assert res.sigma[8, 9] != res.sigma[8, 9] and res.count[8, 9] == 0  # NaN where nothing survived
    one = (res.count == 1) & (res.data == res.data)
    assert np.all(res.sigma[one] == 0)


def test_planes_do_not_depend_on_the_tiling_and_are_lazy(tmp_path):
    sci, var, dq = reduced_stack(8, n=6, ny=150, nx=160)
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    opts = dict(hdu=("SCI", 1), variance="VAR", dq="DQ", sigma_plane=True, nrej_plane=True, rejmask_cube=True)
    with no_compute():
        whole = combine(paths, **opts)
        small = combine(paths, memory_per_task="1 MiB", **opts)
        arrays = combine(
            da.from_array(sci, chunks=(2, 37, 41)),
            variance=var,
            dq=dq,
            memory_per_task="1 MiB",
            **{k: v for k, v in opts.items() if k not in ("hdu", "variance", "dq")},
        )
        grown = combine(paths, clip="sigclip", grow=1.5, memory_per_task="1 MiB", **opts)
        grown_whole = combine(paths, clip="sigclip", grow=1.5, **opts)
        varclip = combine(paths, clip="varclip", memory_per_task="1 MiB", **opts)
        varclip_whole = combine(paths, clip="varclip", **opts)
    assert len(small.data.chunks[0]) > 3 and len(whole.data.chunks[0]) == 1
    assert small.rejmask.shape == (6, 150, 160) and small.rejmask.chunks[1] == small.data.chunks[0]
    names = ("data", "count", "variance", "dq", "nrej", "sigma", "rejmask")
    for a, b in ((whole, small), (whole, arrays), (grown_whole, grown), (varclip_whole, varclip)):
        a, b = a.compute(), b.compute(scheduler="sync")
        for name in names:
            assert_same(getattr(a, name), getattr(b, name))


def test_combine_planes_block_without_extras_equals_combine_block():
    from ccdask.combine import combine_block

    sci, var, _ = reduced_stack(9)
    cfg = CombineConfig(clip="sigclip")
    a = combine_planes(sci, cfg, variance=var, return_variance=True)
    b = combine_block(sci, cfg, variance=var)
    assert_same(a.data, b.data)
    assert_same(a.variance, b.variance)
    assert a.dq is None and a.nrej is None and a.sigma is None and a.rejmask is None


def test_inverse_variance_weights_per_pixel(tmp_path):
    sci, var, dq = reduced_stack(10)
    var[2, 1, 1] = 0.0  # no weight without a variance > 0
    var[3, 1, 2] = np.nan
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    scale = np.linspace(0.9, 1.2, N)
    res = combine(
        paths,
        hdu=("SCI", 1),
        variance="VAR",
        dq="DQ",
        weights="ivar",
        scale=scale,
        clip="none",
        sigma_plane=True,
        nrej_plane=True,
    ).compute()
    use, _ = ref_usable(sci, dq, CombineConfig().dq_bad)
    use &= np.isfinite(var) & (var > 0)
    x = (sci.astype(np.float64) * scale[:, None, None]).astype(np.float32).astype(np.float64)
    v = var.astype(np.float64) * scale[:, None, None] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(use, 1.0 / v, 0.0)
        expect = (w * np.where(use, x, 0.0)).sum(axis=0) / w.sum(axis=0)
        expect_var = 1.0 / w.sum(axis=0)
    cnt = use.sum(axis=0)
    np.testing.assert_allclose(
        res.data, np.where(cnt > 0, expect, np.nan).astype(np.float32), rtol=2e-7, equal_nan=True
    )
    np.testing.assert_allclose(
        res.variance, np.where(cnt > 0, expect_var, np.nan).astype(np.float32), rtol=2e-6, equal_nan=True
    )
    assert_same(res.count, cnt.astype(np.int16))
    assert res.count[1, 1] == use[:, 1, 1].sum() and not use[2, 1, 1]
    sig = ref_sigma(x, use, res.data, weights=None)  # unweighted reference differs: check the weighted one
    with np.errstate(invalid="ignore"):
        wsig = np.sqrt(
            np.where(use, w * (x - res.data.astype(np.float64)) ** 2, 0.0).sum(axis=0)
            / w.sum(axis=0)
            * np.where(cnt > 1, cnt / np.maximum(cnt - 1, 1), 1)
        )
    np.testing.assert_allclose(res.sigma, np.where(cnt > 0, wsig, np.nan).astype(np.float32), rtol=1e-5, equal_nan=True)
    assert not np.allclose(sig[cnt > 2], wsig[cnt > 2])
    with pytest.raises(ConfigError, match="variance planes"):
        combine(sci, weights="ivar")
    with pytest.raises(ConfigError, match="mean"):
        combine(sci, variance=var, weights="ivar", method="sum")


def test_file_region_writes_blocks_of_any_shape_in_place(tmp_path):
    from ccdask.combine._result import _FileRegion

    cube = np.arange(3 * 10 * 12, dtype=np.int16).reshape(3, 10, 12) - 100
    path = tmp_path / "region.bin"
    offset = 2880
    path.write_bytes(b"\0" * (offset + cube.nbytes))
    for chunks in ((2, 3, 5), (3, 4, 12), (1, 10, 7)):
        target = _FileRegion(str(path), offset, cube.shape, cube.dtype)
        da.store(da.from_array(cube, chunks=chunks), target, lock=False, scheduler="threads")
        back = np.fromfile(path, dtype=">i2", offset=offset).reshape(cube.shape)
        assert_same(back.astype(np.int16), cube)
        path.write_bytes(b"\0" * (offset + cube.nbytes))


def test_write_fits_single_result_layout_and_values(tmp_path):
    from ccdask.combine._result import write_fits

    sci, var, dq = reduced_stack(11)
    paths = write_reduced(tmp_path, sci, var, dq, chips=1)
    res = combine(
        paths,
        hdu=("SCI", 1),
        variance="VAR",
        dq="DQ",
        scale="median",
        nrej_plane=True,
        sigma_plane=True,
        rejmask_cube=True,
        memory_per_task="1 MiB",
    )
    out = tmp_path / "out.fits"
    (done,) = write_fits(out, [(None, res, fits.Header({"OBJECT": "flat"}))])
    expect = res.compute()
    with fits.open(out) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul] == ["PRIMARY", "COUNT", "VAR", "DQ", "NREJ", "SIGMA", "REJMASK"]
        for hdu, attr in zip(hdul, ("data", "count", "variance", "dq", "nrej", "sigma", "rejmask"), strict=True):
            assert_same(hdu.data.astype(getattr(expect, attr).dtype), getattr(expect, attr))
        hdr = hdul[0].header
        assert hdr["OBJECT"] == "flat" and hdr["NCOMBINE"] == N
        np.testing.assert_array_equal([hdr[f"CMBSC{i:03d}"] for i in range(1, N + 1)], expect.scale_factors)
    np.testing.assert_array_equal(done.scale_factors, expect.scale_factors)
    with pytest.raises(ConfigError, match="exists"):
        write_fits(out, [(None, res, None)])


def test_noise_weights_from_each_frames_robust_sigma(tmp_path):
    from ccdask.combine import scale_sample_step

    rng = np.random.default_rng(12)
    noise = np.array([2.0, 4.0, 1.0, 3.0, 8.0])
    stack = (500.0 + rng.normal(0, 1, (5, 40, 30)) * noise[:, None, None]).astype(np.float32)
    stack[1, 3:6, 4:9] = 9000.0  # a star in one frame, inside the section: MAD shrugs it off
    paths = write_planes(tmp_path, stack, "n")
    statsec = "[3:28,2:37]"  # x 3..28, y 2..37 (1-based, inclusive)
    rows, cols = slice(1, 37), slice(2, 28)
    step = scale_sample_step((36, 26))
    expect_w = []
    for frame in stack:
        sample = frame[rows, cols][::step, ::step].astype(np.float64)
        sigma = 1.482602218505602 * np.median(np.abs(sample - np.median(sample)))
        expect_w.append(1.0 / sigma**2)
    expect_w = np.array(expect_w)
    with no_compute():
        lazy = combine(paths, weights="noise", statsec=statsec, clip="none")
    res = lazy.compute()
    np.testing.assert_allclose(res.frame_weights, expect_w, rtol=1e-12)
    mean, _ = ref_mean(stack, np.ones(stack.shape, bool), weights=expect_w)
    np.testing.assert_allclose(res.data, mean.astype(np.float32), rtol=2e-7)
    assert res.header()["CMBWEIGH"] == "noise"
    np.testing.assert_allclose([res.header()[f"CMBWT{i:03d}"] for i in range(1, 6)], expect_w)
    arrays = combine(stack, weights="noise", statsec=statsec, clip="none").compute()
    assert_same(arrays.data, res.data)
    flat = np.full((3, 10, 10), 7.0, np.float32)
    with pytest.raises(ConfigError, match="frame 0"):
        combine(flat, weights="noise").compute()
