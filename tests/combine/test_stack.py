"""The dask layer of combine: inputs, tiling, laziness, determinism, files, a real cluster."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import VarianceUncertainty
from astropy.stats import sigma_clip

from ccdask.combine import (
    CombineConfig,
    CombineResult,
    combine,
    combine_block,
    scale_sample_step,
    tile_shape,
)
from ccdask.errors import ConfigError, FitsReadError, ShapeMismatchError
from tests.helpers import no_compute


def assert_same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{(~same).sum()} differ"


def stack_with_outliers(seed=0, n=9, ny=31, nx=45):
    rng = np.random.default_rng(seed)
    a = rng.normal(500.0, 8.0, (n, ny, nx)).astype(np.float32)
    a[rng.random(a.shape) < 0.04] = 9000.0
    a[rng.random(a.shape) < 0.03] = np.nan
    a[:, 3, 4] = np.nan
    return a


def write_frames(folder, stack, kind="plain", exptimes=None, chips=None):
    """Write frames as uint16 (BZERO) FITS: plain, gzip, fpack or MEF with `chips` chips."""
    paths = []
    for i, frame in enumerate(stack):
        data = np.nan_to_num(frame, nan=0).clip(0, 65535).astype(np.uint16)
        hdr = fits.Header()
        hdr["EXPTIME"] = float(exptimes[i]) if exptimes is not None else 1.0
        suffix = {"plain": ".fits", "gzip": ".fits.gz", "fpack": ".fits.fz"}[kind]
        path = folder / f"f{i:02d}{suffix}"
        if chips:
            hdus = [fits.PrimaryHDU(header=hdr)]
            hdus += [fits.ImageHDU(data + 10 * c, name=f"CCD{c + 1}") for c in range(chips)]
            fits.HDUList(hdus).writeto(path)
        elif kind == "fpack":
            fits.HDUList([fits.PrimaryHDU(header=hdr), fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(
                path
            )
        else:
            fits.PrimaryHDU(data, header=hdr).writeto(path)
        paths.append(path)
    return paths


def as_uint16(stack):
    return np.nan_to_num(stack, nan=0).clip(0, 65535).astype(np.uint16).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mean", "median"])
def test_awkward_chunks_equal_astropy_on_the_whole_stack(method):
    stack = stack_with_outliers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sigma_clip(stack, axis=0, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std")
    ref64 = np.ma.MaskedArray(ref.data.astype(np.float64), mask=ref.mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stat = np.ma.mean(ref64, axis=0) if method == "mean" else np.ma.median(ref64, axis=0)
    expect = np.ma.filled(stat, np.nan).astype(np.float32)
    frames = da.from_array(stack, chunks=(stack.shape[0], 7, 13))
    res = combine(frames, method=method, nkeep=0).compute()
    assert_same(res.data, expect)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    assert res.count.dtype == np.int16 and res.ncombine == 9


def test_bitwise_independent_of_chunks_budget_and_input_kind():
    stack = stack_with_outliers(1, n=12, ny=64, nx=50)
    base = combine(stack, variance="scatter").compute()
    variants = [
        combine(da.from_array(stack, chunks=(1, 7, 13)), variance="scatter"),
        combine(da.from_array(stack, chunks=(5, 64, 3)), variance="scatter"),
        combine(list(stack), variance="scatter"),
        combine([da.from_array(f, chunks=(9, 11)) for f in stack], variance="scatter"),
        combine(stack, memory_per_task=2**20 + 1, variance="scatter"),
    ]
    for v in variants:
        got = v.compute(scheduler="threads")
        assert_same(got.data, base.data)
        assert_same(got.variance, base.variance)
        np.testing.assert_array_equal(got.count, base.count)
    sync = combine(da.from_array(stack, chunks=(3, 5, 50)), variance="scatter")
    assert_same(sync.compute(scheduler="sync").data, base.data)
    # and equal to the kernel on the whole stack
    assert_same(base.data, combine_block(stack).data)


def test_tile_shape_keeps_rows_and_bounds_memory():
    for n in (3, 12, 48, 400):
        ty, tx = tile_shape(n, (4096, 2048), 64 * 2**20)
        assert tx == 2048 and n * ty * tx * 4 <= 64 * 2**20
    assert tile_shape(48, (4096, 2048))[0] < tile_shape(12, (4096, 2048))[0]
    ty, tx = tile_shape(5000, (100, 8000), 2**20)  # a row does not fit: columns are cut
    assert ty == 1 and tx * 5000 * 4 <= 2**20
    assert tile_shape(4, (10, 10)) == (10, 10)
    res = combine(np.zeros((48, 1000, 600), np.float32), memory_per_task="8 MiB")
    assert max(res.data.chunks[0]) * 600 * 48 * 4 <= 8 * 2**20


def test_weights_scale_zero_and_variance_planes_through_dask():
    stack = stack_with_outliers(2, n=6)
    var = np.full(stack.shape, 2.0, np.float32)
    w = [1, 2, 3, 1, 2, 3]
    scale = [1.0, 1.1, 0.9, 1.0, 1.2, 0.8]
    zero = [0, 5, -5, 0, 1, 2]
    res = combine(
        da.from_array(stack, chunks=(2, 10, 10)),
        weights=w,
        scale=scale,
        zero=zero,
        variance=da.from_array(var, chunks=(3, 7, 9)),
    ).compute()
    ref = combine_block(stack, weights=w, scale=scale, zero=zero, variance=var)
    assert_same(res.data, ref.data)
    assert_same(res.variance, ref.variance)
    assert res.variance_source == "planes"
    assert combine(stack).variance is None


def test_scale_median_and_mean_use_the_fixed_sample_grid():
    rng = np.random.default_rng(4)
    levels = np.array([100, 200, 400, 150, 300], np.float32)
    stack = (rng.normal(1, 0.01, (5, 70, 90)) * levels[:, None, None]).astype(np.float32)
    step = scale_sample_step(stack.shape[1:])
    for stat in ("median", "mean"):
        sample = stack[:, ::step, ::step].astype(np.float64)
        lv = np.median(sample, axis=(1, 2)) if stat == "median" else sample.mean(axis=(1, 2))
        factors = lv.mean() / lv
        res = combine(da.from_array(stack, chunks=(1, 13, 17)), scale=stat).compute()
        np.testing.assert_allclose(res.scale_factors, factors, rtol=1e-12)
        assert_same(res.data, combine_block(stack, scale=res.scale_factors).data)
    res = combine(stack, scale="exposure", exptime=[1, 2, 4, 1.5, 3]).compute()
    np.testing.assert_allclose(res.scale_factors, 2.3 / np.array([1, 2, 4, 1.5, 3]))
    with pytest.raises(ConfigError, match="exptime"):
        combine(stack, scale="exposure")
    neg = stack.copy()
    neg[2] = -5
    with pytest.raises(ConfigError, match="frame 2"):
        combine(neg, scale="median").compute()


def test_building_computes_nothing(tmp_path):
    stack = stack_with_outliers(3)
    paths = write_frames(tmp_path, stack[:4])
    (tmp_path / "gz").mkdir()
    gz = write_frames(tmp_path / "gz", stack[:3], kind="gzip")
    with no_compute():
        combine(stack)
        combine(da.from_array(stack, chunks=(1, 7, 13)), scale="median", variance="scatter")
        combine(list(stack), method="median", clip="extrema")
        combine(paths, scale="median")
        combine(paths, scale="exposure")
        combine(gz, scale="mean")
        combine(da.from_array(stack, chunks=(1, 7, 13)), clip="sigclip", grow=1.5, variance=stack * 0 + 1)
        combine(paths, clip="avsigclip", grow=2.0)
        res = combine(paths)
        with pytest.raises(AssertionError, match="computed"):
            res.compute()


def test_task_keys_are_readable():
    res = combine(np.ones((3, 8, 8), np.float32), name="bias-CCD1", scale="median")
    names = list(res.data.dask.layers)
    assert any(n.startswith("combine-bias-CCD1-") for n in names)
    assert res.data.name.startswith("combine-bias-CCD1-data-")
    assert res.count.name.startswith("combine-bias-CCD1-count-")
    assert any(n.startswith("combine-bias-CCD1-scale-") for n in names)
    assert combine(np.ones((3, 8, 8), np.float32)).data.name.startswith("combine-data-")
    # same inputs, same keys (deterministic tokens); other options, other keys
    assert combine(np.ones((3, 8, 8), np.float32)).data.name == combine(np.ones((3, 8, 8), np.float32)).data.name
    assert (
        combine(np.ones((3, 8, 8), np.float32), method="median").data.name
        != combine(np.ones((3, 8, 8), np.float32)).data.name
    )


def test_to_ccddata_and_header():
    stack = stack_with_outliers(5, n=4)
    res = combine(stack, variance="scatter")
    ccd = res.to_ccddata()
    assert isinstance(ccd.uncertainty, VarianceUncertainty)
    assert ccd.header["NCOMBINE"] == 4 and ccd.header["CMBMETH"] == "mean"
    assert ccd.header["IMCMB001"] == "frame 0" and "CCDASKV" in ccd.header
    assert ccd.mask[3, 4] and not ccd.mask[0, 0]
    assert combine(stack).to_ccddata().uncertainty is None
    assert isinstance(res, CombineResult) and res.is_lazy and not res.compute().is_lazy


def test_input_errors(tmp_path):
    with pytest.raises(ShapeMismatchError):
        combine(np.ones((4, 5), np.float32))
    with pytest.raises(ShapeMismatchError, match="frame 1"):
        combine([np.ones((4, 5)), np.ones((4, 6))])
    with pytest.raises(ConfigError, match="at least one"):
        combine([])
    with pytest.raises(ConfigError, match="single file"):
        combine(str(tmp_path / "a.fits"))
    with pytest.raises(ConfigError, match="4 frames"):
        combine(np.ones((4, 5, 5)), weights=[1, 2])
    with pytest.raises(ConfigError):
        combine(np.ones((4, 5, 5)), variance="yes")
    with pytest.raises(ShapeMismatchError):
        combine(np.ones((4, 5, 5)), variance=np.ones((4, 5, 4)))
    paths = write_frames(tmp_path, np.ones((2, 6, 7), np.float32))
    odd = tmp_path / "odd.fits"
    fits.PrimaryHDU(np.ones((6, 8), np.uint16)).writeto(odd)
    with pytest.raises(ShapeMismatchError, match=r"odd\.fits"):
        combine([*paths, odd])
    with pytest.raises(FitsReadError, match=r"missing\.fits"):
        combine([*paths, tmp_path / "missing.fits"])
    with pytest.raises(ConfigError, match="mix"):
        combine([paths[0], np.ones((6, 7))])
    no_exptime = tmp_path / "noexp.fits"
    fits.PrimaryHDU(np.ones((6, 7), np.uint16)).writeto(no_exptime)
    with pytest.raises(ConfigError, match=r"noexp\.fits.*EXPTIME"):
        combine([*paths, no_exptime], scale="exposure")


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "gzip", "fpack"])
def test_files_equal_arrays(tmp_path, kind):
    stack = stack_with_outliers(6, n=7, ny=40, nx=33)
    paths = write_frames(tmp_path, stack, kind=kind, exptimes=[1, 2, 1, 2, 1, 2, 4])
    expect = combine(as_uint16(stack), scale="exposure", exptime=[1, 2, 1, 2, 1, 2, 4]).compute()
    got = combine(paths, scale="exposure", memory_per_task=2**20).compute()
    assert_same(got.data, expect.data)
    np.testing.assert_array_equal(got.count, expect.count)
    assert got.inputs[0] == paths[0].name
    med = combine(paths, scale="median", method="median").compute()
    assert_same(med.data, combine(as_uint16(stack), scale="median", method="median").compute().data)


def test_mef_files_by_hdu(tmp_path):
    stack = stack_with_outliers(7, n=5, ny=20, nx=24)
    paths = write_frames(tmp_path, stack, chips=2)
    with pytest.raises(FitsReadError, match="2 image HDUs"):
        combine(paths)
    a = combine(paths, hdu="CCD2").compute()
    b = combine(paths, hdu=2).compute()
    assert_same(a.data, b.data)
    assert_same(a.data, combine(as_uint16(stack) + 10).compute().data)


# ---------------------------------------------------------------------------------------------
# a real cluster (processes)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster_client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.mark.slow
def test_local_cluster_equals_threads(cluster_client, tmp_path):
    stack = stack_with_outliers(8, n=10, ny=90, nx=64)
    paths = write_frames(tmp_path, stack)
    cases = [
        lambda: combine(da.from_array(stack, chunks=(1, 30, 64)), variance="scatter", memory_per_task=2**20),
        lambda: combine(paths, scale="median", method="median", memory_per_task=2**20),
        lambda: combine(paths, clip="extrema", nlow=2, nhigh=2, memory_per_task=2**20),
    ]
    for make in cases:
        threaded = make().compute(scheduler="threads")
        remote = make().compute(scheduler=cluster_client)
        assert_same(remote.data, threaded.data)
        np.testing.assert_array_equal(remote.count, threaded.count)
        if threaded.variance is not None:
            assert_same(remote.variance, threaded.variance)


def test_config_object_and_keywords_agree():
    cfg = combine(np.ones((3, 4, 4)), clip="extrema", nlow=0, nhigh=1).config
    assert cfg == CombineConfig(clip="extrema", nlow=0, nhigh=1)


def test_docstring_examples_run():
    import doctest
    import sys

    from ccdask.combine import _config, _kernels, _result, _stack

    # ``ccdask.combine`` is the function at the package top; the subpackage is in sys.modules
    package = sys.modules["ccdask.combine"]
    for module in (package, _config, _kernels, _result, _stack):
        failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0, module.__name__


def test_avsigclip_tiles_hold_whole_rows_and_equal_the_whole_block():
    # avsigclip's sigma factor is estimated per image row: a tile cut inside a row would change it
    rng = np.random.default_rng(3)
    stack = rng.normal(1000.0, 20.0, (40, 3, 7000)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.05] += 400.0
    assert tile_shape(40, (3, 7000), "1 MiB", stacked=True)[1] < 7000  # the budget alone would cut rows
    res = combine(stack, clip="avsigclip", sigma_lower=2.0, sigma_upper=2.0, memory_per_task="1 MiB")
    assert res.data.chunks[1] == (7000,)
    done = res.compute()
    whole = combine_block(stack, CombineConfig(clip="avsigclip", sigma_lower=2.0, sigma_upper=2.0))
    assert_same(done.data, whole.data)
    assert_same(done.count, whole.count)
    assert (done.count < 40).any()
    # the factor is per row: a row computed alone gives the same values
    row = combine_block(stack[:, 1:2], CombineConfig(clip="avsigclip", sigma_lower=2.0, sigma_upper=2.0))
    assert_same(row.data[0], whole.data[1])
    # the rest of the row changes a pixel's rejection: noisier columns elsewhere raise the factor
    part = stack[:, :, :120].copy()
    noisy = part.copy()
    noisy[:, :, 60:] += rng.normal(0.0, 600.0, noisy[:, :, 60:].shape).astype(np.float32)
    cfg = CombineConfig(clip="avsigclip", sigma_lower=2.0, sigma_upper=2.0)
    calm, loud = combine_block(part, cfg), combine_block(noisy, cfg)
    assert (loud.count[:, :60] > calm.count[:, :60]).any()


@pytest.mark.parametrize("shape", [(200, 300), (4, 12000)])
def test_grow_does_not_depend_on_the_tiling(tmp_path, shape):
    # rows tiles (200 x 300) and, with one row over the budget, column tiles (4 x 12000): each tile
    # is computed with a halo of ceil(grow) pixels, so it sees every rejection within grow
    rng = np.random.default_rng(5)
    stack = np.round(rng.normal(1000.0, 15.0, (9, *shape))).astype(np.float32)
    stack[rng.random(stack.shape) < 0.03] += 400.0
    cfg = CombineConfig(clip="sigclip", grow=2.0, sigma_lower=2.5, sigma_upper=2.5)
    whole = combine_block(stack, cfg)
    ungrown = combine_block(stack, cfg.replace(grow=0.0))
    assert (whole.count < ungrown.count).sum() > 100  # the growth matters here
    lazy = combine(stack, clip="sigclip", grow=2.0, sigma_lower=2.5, sigma_upper=2.5, memory_per_task="1 MiB")
    assert len(lazy.data.chunks[0]) * len(lazy.data.chunks[1]) > 1
    done = lazy.compute()
    assert_same(done.data, whole.data)
    assert_same(done.count, whole.count)
    if shape == (200, 300):  # variance planes take the same halo
        var = np.abs(stack) * np.float32(0.5)
        wv = combine_block(stack, cfg, variance=var)
        lv = combine(
            stack, clip="sigclip", grow=2.0, sigma_lower=2.5, sigma_upper=2.5, memory_per_task="1 MiB", variance=var
        )
        assert len(lv.data.chunks[0]) > 1
        assert_same(lv.compute().variance, wv.variance)
    paths = write_frames(tmp_path, stack)
    files = combine(paths, clip="sigclip", grow=2.0, sigma_lower=2.5, sigma_upper=2.5, memory_per_task="1 MiB")
    assert len(files.data.chunks[0]) * len(files.data.chunks[1]) > 1
    fdone = files.compute()
    assert_same(fdone.data, whole.data)
    assert_same(fdone.count, whole.count)
