"""The clipping kernels on one (N, ty, tx) block, against astropy and numpy references."""

from __future__ import annotations

import json
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.stats import sigma_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ccdask.combine import CombineConfig, combine_block, sorting_network
from ccdask.combine._kernels import STRIP
from ccdask.errors import ConfigError, ShapeMismatchError


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------
def astropy_clip(stack, *, sigma_lower=3.0, sigma_upper=3.0, maxiters=5, center="median", spread="mad_std"):
    """astropy sigma_clip along the frame axis: a float64 masked array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Input data contains invalid values"
        clipped = sigma_clip(
            stack,
            axis=0,
            sigma_lower=sigma_lower,
            sigma_upper=sigma_upper,
            maxiters=maxiters,
            cenfunc=center,
            stdfunc=spread,
        )
    return np.ma.MaskedArray(np.asarray(clipped.data, np.float64), mask=clipped.mask)


def ref_combine(masked, method="mean"):
    """numpy mean/median/sum of the unmasked values, NaN where none, as float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "mean":
            out = np.ma.mean(masked, axis=0)
        elif method == "median":
            out = np.ma.median(masked, axis=0)
        else:
            out = np.ma.sum(masked, axis=0)
    out = np.ma.filled(np.ma.masked_array(out, mask=np.all(masked.mask, axis=0)), np.nan)
    return np.asarray(out, np.float32)


def assert_same(a, b):
    """Bitwise equality with NaN == NaN."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{(~same).sum()} differ, e.g. {a[~same][:5]} vs {b[~same][:5]}"


def noisy_stack(seed, n=15, ny=9, nx=300, nan_frac=0.03):
    rng = np.random.default_rng(seed)
    a = rng.normal(1000.0, 10.0, (n, ny, nx)).astype(np.float32)
    hits = rng.random(a.shape)
    a[hits < 0.04] += rng.uniform(100, 5000, (hits < 0.04).sum()).astype(np.float32)  # cosmics
    a[hits > 0.98] -= 300.0  # cold
    a[rng.random(a.shape) < nan_frac] = np.nan
    a[rng.random(a.shape) < 0.005] = np.inf
    a[:, 0, 0] = np.nan  # a pixel with no valid input
    a[:-1, 0, 1] = np.nan  # one valid input
    a[:, 0, 2] = 7.0  # all equal
    return a


CLIP_CASES = [
    dict(center="median", spread="mad_std", maxiters=5),
    dict(center="median", spread="mad_std", maxiters=None, sigma_lower=2.0, sigma_upper=2.5),
    dict(center="median", spread="std", maxiters=3),
    dict(center="mean", spread="std", maxiters=1),
    dict(center="mean", spread="std", maxiters=None, sigma_lower=1.5),
    dict(center="mean", spread="mad_std", maxiters=5, sigma_upper=2.0),
]


# ---------------------------------------------------------------------------------------------
# sigma clipping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CLIP_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_sigma_clip_matches_astropy(case):
    stack = noisy_stack(1)
    ref = astropy_clip(stack, **case)
    cfg = CombineConfig(**case, nkeep=0)
    res = combine_block(stack, cfg, return_mask=True)
    np.testing.assert_array_equal(res.mask, ref.mask)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    assert_same(res.data, ref_combine(ref, "mean"))
    for method in ("median", "sum"):
        res_m = combine_block(stack, CombineConfig(**case, nkeep=0, method=method))
        assert_same(res_m.data, ref_combine(ref, method))
        np.testing.assert_array_equal(res_m.count, res.count)


@pytest.mark.parametrize("center", ["median", "mean"])
def test_survivors_are_everything_inside_the_last_bounds(center):
    # Found by search: a value rejected by the first iteration's bounds lies inside the final
    # bounds and survives, because astropy's fast path applies the last bounds to every value.
    pix = (
        np.float32([22, 17, 22, 11, 16, 10, 5, 13])
        if center == "median"
        else np.float32([23, 18, 18, 26, 22, 5, 29, 4])
    )
    stack = pix[:, None, None]
    ref = astropy_clip(stack, sigma_lower=1.5, sigma_upper=1.5, maxiters=None, center=center)
    res = combine_block(
        stack, CombineConfig(sigma_lower=1.5, sigma_upper=1.5, maxiters=None, center=center, nkeep=0), return_mask=True
    )
    np.testing.assert_array_equal(res.mask, ref.mask)
    x = pix.astype(np.float64)
    c = np.median(x) if center == "median" else x.mean()
    mad = 1.482602218505602 * np.median(np.abs(x - np.median(x)))
    outside_first = (x < c - 1.5 * mad) | (x > c + 1.5 * mad)
    assert (outside_first & ~res.mask[:, 0, 0]).any()  # readmitted


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stack=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.integers(1, 3), st.integers(1, 4)),
        elements=st.one_of(
            st.integers(-60, 60).map(float),
            st.sampled_from([np.nan, np.inf, -np.inf, 5000.0, -5000.0]),
        ),
    ),
    center=st.sampled_from(["median", "mean"]),
    spread=st.sampled_from(["mad_std", "std"]),
    sigma=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    maxiters=st.sampled_from([1, 2, 5, None]),
)
def test_sigma_clip_hypothesis(stack, center, spread, sigma, maxiters):
    ref = astropy_clip(
        stack, sigma_lower=sigma, sigma_upper=sigma * 1.5, maxiters=maxiters, center=center, spread=spread
    )
    cfg = CombineConfig(
        sigma_lower=sigma, sigma_upper=sigma * 1.5, maxiters=maxiters, center=center, spread=spread, nkeep=0
    )
    res = combine_block(stack, cfg, return_mask=True)
    np.testing.assert_array_equal(res.mask, ref.mask)
    np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
    assert_same(res.data, ref_combine(ref, "mean"))
    # where astropy keeps a value at every pixel with one, nkeep=1 changes nothing (always the
    # case with sigma >= 1, except mean center with MAD spread, e.g. [0, 0, 1])
    if not ((res.count == 0) & np.isfinite(stack).any(axis=0)).any():
        res1 = combine_block(stack, CombineConfig(**{**cfg.to_dict(), "nkeep": 1}))
        assert_same(res1.data, res.data)
    elif sigma >= 1:
        assert center == "mean" and spread == "mad_std"


def test_nkeep_keeps_the_last_bounds_with_enough_survivors():
    # with sigma 0.1 the mean/std bounds of a spread-out pixel exclude everything
    pix = np.array([1, 2, 3, 4, 100], np.float32)[:, None, None]
    ref = astropy_clip(pix, sigma_lower=0.1, sigma_upper=0.1, center="mean", spread="std")
    assert ref.mask.all()
    res0 = combine_block(pix, CombineConfig(sigma_lower=0.1, sigma_upper=0.1, center="mean", spread="std", nkeep=0))
    assert res0.count[0, 0] == 0 and np.isnan(res0.data[0, 0])
    res1 = combine_block(pix, CombineConfig(sigma_lower=0.1, sigma_upper=0.1, center="mean", spread="std", nkeep=1))
    assert res1.count[0, 0] == 5  # no iteration kept one: no clipping
    assert res1.data[0, 0] == pytest.approx(22.0)
    # nkeep larger than what the clip leaves: iterations are undone
    pix = np.array([10, 10, 10, 10, 10, 11, 50, 60], np.float32)[:, None, None]
    full = combine_block(pix, CombineConfig(nkeep=0))
    assert full.count[0, 0] == 5  # MAD 0: only the 10s survive
    kept = combine_block(pix, CombineConfig(nkeep=7))
    assert kept.count[0, 0] == 8
    # fewer finite values than nkeep: all finite values are kept
    pix = np.array([1, np.nan, 3], np.float32)[:, None, None]
    assert combine_block(pix, CombineConfig(nkeep=5)).count[0, 0] == 2


# ---------------------------------------------------------------------------------------------
# extrema, minmax, none
# ---------------------------------------------------------------------------------------------
def extrema_reference(stack, nlow, nhigh):
    """Reject the nlow first / nhigh last finite values ranked by (value, frame index)."""
    order = np.argsort(stack, axis=0, kind="stable")  # NaN last
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(stack.shape[0])[:, None, None], axis=0)
    nf = np.isfinite(stack).sum(axis=0)
    keep = np.isfinite(stack) & (ranks >= nlow) & (ranks < nf - nhigh)
    return np.ma.MaskedArray(stack.astype(np.float64), mask=~keep)


@pytest.mark.parametrize(("nlow", "nhigh"), [(0, 0), (1, 1), (2, 0), (0, 3), (2, 2), (7, 7)])
def test_extrema_matches_numpy(nlow, nhigh):
    rng = np.random.default_rng(nlow * 10 + nhigh)
    stack = rng.integers(0, 6, (9, 5, 140)).astype(np.float32)  # many ties
    stack[rng.random(stack.shape) < 0.15] = np.nan
    ref = extrema_reference(stack, nlow, nhigh)
    for method in ("mean", "median", "sum"):
        res = combine_block(
            stack, CombineConfig(clip="extrema", nlow=nlow, nhigh=nhigh, method=method), return_mask=True
        )
        np.testing.assert_array_equal(res.mask, ref.mask)
        np.testing.assert_array_equal(res.count, (~ref.mask).sum(axis=0))
        assert_same(res.data, ref_combine(ref, method))


def test_minmax_thresholds_match_numpy():
    stack = noisy_stack(5)
    finite = np.isfinite(stack)
    keep = finite & (stack >= 990) & (stack <= 1500)
    ref = np.ma.MaskedArray(stack.astype(np.float64), mask=~keep)
    res = combine_block(stack, CombineConfig(clip="minmax", min_clip=990, max_clip=1500), return_mask=True)
    np.testing.assert_array_equal(res.mask, ref.mask)
    assert_same(res.data, ref_combine(ref))
    # one-sided, and thresholds combined with sigma clipping (applied before it)
    res = combine_block(stack, CombineConfig(clip="minmax", max_clip=1200))
    ref = np.ma.MaskedArray(stack.astype(np.float64), mask=~(finite & (stack <= 1200)))
    assert_same(res.data, ref_combine(ref))
    thr = np.where(stack <= 1200, stack, np.nan)
    ref = astropy_clip(thr)
    res = combine_block(stack, CombineConfig(max_clip=1200, nkeep=0))
    assert_same(res.data, ref_combine(ref))


def test_no_clip_is_nanmean_and_nanmedian():
    stack = noisy_stack(6)
    ref = np.ma.masked_invalid(stack.astype(np.float64))
    for method in ("mean", "median", "sum"):
        res = combine_block(stack, CombineConfig(clip="none", method=method))
        assert_same(res.data, ref_combine(ref, method))
        np.testing.assert_array_equal(res.count, np.isfinite(stack).sum(axis=0))


# ---------------------------------------------------------------------------------------------
# weights, scale, zero, variance
# ---------------------------------------------------------------------------------------------
def test_weighted_mean_and_sum():
    stack = noisy_stack(7, n=8)
    w = np.array([1, 2, 0.5, 1, 3, 1, 0.25, 2])
    ref = astropy_clip(stack)
    res = combine_block(stack, CombineConfig(nkeep=0), weights=w)
    wb = np.broadcast_to(w[:, None, None], stack.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expect = np.ma.average(ref, axis=0, weights=wb).filled(np.nan).astype(np.float32)
    np.testing.assert_allclose(res.data, expect, rtol=1e-6)
    res_s = combine_block(stack, CombineConfig(method="sum", nkeep=0), weights=w)
    expect_s = np.ma.sum(ref * wb, axis=0).filled(np.nan).astype(np.float32)
    expect_s[np.all(ref.mask, axis=0)] = np.nan
    np.testing.assert_allclose(res_s.data, expect_s, rtol=1e-6)


def test_scale_and_zero_apply_before_clipping():
    stack = noisy_stack(8, n=10)
    scale = np.linspace(0.5, 2.0, 10)
    zero = np.linspace(-50, 50, 10)
    transformed = (stack.astype(np.float64) * scale[:, None, None] + zero[:, None, None]).astype(np.float32)
    ref = astropy_clip(transformed)
    res = combine_block(stack, CombineConfig(nkeep=0), scale=scale, zero=zero)
    assert_same(res.data, ref_combine(ref))
    # the config's numeric fields are used too
    res2 = combine_block(stack, CombineConfig(nkeep=0, scale=tuple(scale), zero=tuple(zero)))
    assert_same(res2.data, res.data)


def test_variance_from_planes_and_from_scatter():
    stack = noisy_stack(9, n=12, nan_frac=0.0)
    var = np.random.default_rng(9).uniform(1, 4, stack.shape).astype(np.float32)
    ref = astropy_clip(stack)
    n = (~ref.mask).sum(axis=0)
    vsum = np.ma.MaskedArray(var.astype(np.float64), mask=ref.mask).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        for method, expect in (("mean", vsum / n**2), ("sum", vsum), ("median", np.pi / 2 * vsum / n**2)):
            res = combine_block(stack, CombineConfig(method=method, nkeep=0), variance=var)
            np.testing.assert_allclose(res.variance, np.ma.filled(expect, np.nan), rtol=1e-6)
        s2 = np.ma.var(ref, axis=0)  # ddof=0
        res = combine_block(stack, CombineConfig(nkeep=0), return_variance=True)
        np.testing.assert_allclose(res.variance, np.ma.filled(s2 / n, np.nan), rtol=1e-5, atol=1e-6)
        res = combine_block(stack, CombineConfig(clip="extrema", nlow=2, nhigh=1), return_variance=True)
        ext = extrema_reference(stack, 2, 1)
        np.testing.assert_allclose(
            res.variance, np.ma.filled(np.ma.var(ext, axis=0) / res.count, np.nan), rtol=1e-5, atol=1e-6
        )
        # scale multiplies the planes by scale**2
        scale = np.full(12, 2.0)
        res = combine_block(stack, CombineConfig(clip="none"), variance=var, scale=scale)
        fin = np.isfinite(stack)
        expect = 4 * np.where(fin, var, 0).astype(np.float64).sum(0) / fin.sum(0) ** 2
        np.testing.assert_allclose(res.variance, expect, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# edge cases, determinism, threads
# ---------------------------------------------------------------------------------------------
def test_no_survivors_gives_nan_and_zero_count():
    stack = np.full((4, 2, 3), np.nan, np.float32)
    stack[:, 1, 2] = [1, 2, 3, 4]
    for clip in ("sigma", "extrema", "none"):
        res = combine_block(stack, CombineConfig(clip=clip), return_variance=True)
        assert np.isnan(res.data[0, 0]) and res.count[0, 0] == 0 and np.isnan(res.variance[0, 0])
        assert res.count[1, 2] == (2 if clip == "extrema" else 4)
    res = combine_block(stack, CombineConfig(clip="extrema", nlow=2, nhigh=2))
    assert res.count[1, 2] == 0 and np.isnan(res.data[1, 2])
    one = combine_block(np.float32([[[5.0]]]), return_variance=True)
    assert one.data[0, 0] == 5 and one.count[0, 0] == 1 and one.variance[0, 0] == 0
    empty = combine_block(np.zeros((3, 0, 4), np.float32))
    assert empty.data.shape == (0, 4)


def test_results_do_not_depend_on_the_block_shape():
    stack = noisy_stack(11, n=13, ny=6, nx=2 * STRIP + 37)
    for cfg in (
        CombineConfig(),
        CombineConfig(center="mean", spread="std", maxiters=None),
        CombineConfig(clip="extrema", method="median"),
        CombineConfig(weights=tuple(range(1, 14))),
        CombineConfig(method="sum"),
    ):
        whole = combine_block(stack, cfg, return_variance=True)
        for y0, y1, x0, x1 in ((0, 6, 0, 1), (1, 4, 5, 200), (2, 3, STRIP - 3, STRIP + 9), (0, 6, 77, 2 * STRIP + 37)):
            part = combine_block(stack[:, y0:y1, x0:x1], cfg, return_variance=True)
            assert_same(part.data, whole.data[y0:y1, x0:x1])
            assert_same(part.variance, whole.variance[y0:y1, x0:x1])
            np.testing.assert_array_equal(part.count, whole.count[y0:y1, x0:x1])
        # non-contiguous input (a transposed view) gives the same numbers
        t = np.ascontiguousarray(stack.transpose(0, 2, 1)).transpose(0, 2, 1)
        assert_same(combine_block(t, cfg).data, whole.data)


def test_kernel_is_thread_safe():
    stacks = [noisy_stack(s, n=11, ny=16, nx=400) for s in range(6)]
    serial = [combine_block(s, return_mask=True, return_variance=True) for s in stacks]
    barrier = threading.Barrier(4)

    def work(i):
        if i < 4:
            barrier.wait()
        return combine_block(stacks[i % 6], return_mask=True, return_variance=True)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(24)))
    for i, res in enumerate(results):
        ref = serial[i % 6]
        assert_same(res.data, ref.data)
        assert_same(res.variance, ref.variance)
        np.testing.assert_array_equal(res.count, ref.count)
        np.testing.assert_array_equal(res.mask, ref.mask)


@pytest.mark.parametrize("n", [*range(1, 34), 47, 64, 65, 100])
def test_sorting_network_sorts(n):
    net = sorting_network(n)
    rng = np.random.default_rng(n)
    for _ in range(3):
        x = rng.integers(0, 5, n).astype(float) if _ else rng.normal(size=n)
        y = x.copy()
        for a, b in net:
            if y[b] < y[a]:
                y[a], y[b] = y[b], y[a]
        np.testing.assert_array_equal(y, np.sort(x))


# ---------------------------------------------------------------------------------------------
# configuration and argument checks
# ---------------------------------------------------------------------------------------------
def test_config_round_trip_and_validation():
    cfg = CombineConfig(
        method="median",
        clip="extrema",
        nlow=2,
        scale=(1.0, 2.0),
        zero=(0.0, 1.0),
        maxiters=None,
        memory_per_task="16 MiB",
    )
    doc = json.loads(json.dumps(cfg.to_dict()))
    assert CombineConfig.from_dict(doc) == cfg
    assert cfg.memory_per_task == 16 * 2**20
    bad = [
        dict(method="avg"),
        dict(clip="mad"),
        dict(sigma_lower=-1),
        dict(maxiters=0),
        dict(nlow=-1),
        dict(clip="minmax"),
        dict(min_clip=5, max_clip=1),
        dict(scale="modal"),
        dict(scale=(1.0, 0.0)),
        dict(weights=(0.0, 0.0)),
        dict(method="median", weights=(1.0,)),
        dict(memory_per_task="lots"),
        dict(memory_per_task=10),
        dict(center="mode"),
        dict(sigma_upper=float("nan")),
        dict(scale=(1.0, 2.0), zero=(1.0,)),
    ]
    for kw in bad:
        with pytest.raises(ConfigError) as info:
            CombineConfig(**kw)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="unknown"):
        CombineConfig.from_dict({"methd": "mean"})


def test_kernel_argument_checks():
    stack = np.ones((3, 2, 2), np.float32)
    with pytest.raises(ShapeMismatchError):
        combine_block(stack[0])
    with pytest.raises(ConfigError, match="3 frames"):
        combine_block(stack, weights=[1, 2])
    with pytest.raises(ShapeMismatchError):
        combine_block(stack, variance=np.ones((3, 2, 3)))
    with pytest.raises(ConfigError, match="resolved"):
        combine_block(stack, CombineConfig(scale="median"))
    with pytest.raises(ConfigError, match="non-zero"):
        combine_block(stack, scale=[1, 0, 1])
