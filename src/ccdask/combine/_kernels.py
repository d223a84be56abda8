"""Clipping kernels on one ``(N, ty, tx)`` block of frames (numba, ``nogil``).

Every output pixel is computed from its own ``N`` values only, in a fixed order, so results do not
depend on the block shape, on where a pixel sits in the block or on the scheduler. No fastmath.

How a block is processed
------------------------
Each row of the block is filled frame by frame (sequential reads) into a float32 row buffer
``(N, SEGMENT)`` after thresholds, scale and zero (``float32(float64(v) * scale + zero)``), then
processed in strips of :data:`STRIP` pixels copied to a compact ``(N, STRIP)`` buffer that stays
in L1 cache. Loops run over frames outside and pixels inside, so they vectorise. Where the
rejection needs order statistics (median center, MAD spread, median method, extrema) a copy of the
strip is sorted with a Batcher odd-even merge sorting network whose compare-exchanges run over the
whole strip at once (SIMD; non-finite values sort last as +inf). The survivors of any
sigma-clipping iteration are then a contiguous window of the sorted values:

* median/MAD: the first iteration runs on the whole strip at once (the median is a gather; the
  deviations ``|s - median|`` of sorted values are V-shaped, i.e. bitonic, so a bitonic merging
  network sorts them and the MAD is a gather); pixels where it rejected something continue one by
  one (median O(1), MAD by binary search over the two sorted halves of the deviations);
* mean/std needs no sort: the running window is the intersection of the bounds so far (an
  interval), and each iteration is three vectorised passes over the frame-order values;
* mixed center/spread (median/std, mean/MAD) run per pixel on the sorted window.

Survivors are then flagged in frame order and accumulated (count, weighted sum, variance).

Semantics (checked against astropy 8 and ccdproc 2.5)
-----------------------------------------------------
Sigma clipping reproduces ``astropy.stats.sigma_clip(data, axis=0, sigma_lower, sigma_upper,
maxiters, cenfunc, stdfunc)`` (its C fast path):

* non-finite values (NaN, ±inf) are ignored;
* each iteration computes center and spread of the current survivors (float64), the bounds
  ``center - sigma_lower * spread`` and ``center + sigma_upper * spread``, keeps the values
  inside ``[lower, upper]`` (inclusive); it stops when nothing changed, when nothing would be left
  (those bounds are still the final ones), or after ``maxiters`` iterations (``None``: no limit);
* the median of an even count is the mean of the two middle values; ``mad_std`` is
  ``1.482602218505602 × median(|x - median|)``; ``std`` is the population standard deviation
  (``ddof=0``) about the mean;
* the survivors are **all** finite values inside the *last* bounds, not only those of the
  shrinking window (astropy applies the final bounds to the whole input);
* ``nkeep``: if the last bounds keep fewer than ``nkeep`` values, the bounds of the latest
  iteration that kept at least ``nkeep`` are used, or no clipping at all if none did. With
  ``sigma >= 1`` astropy keeps at least one value (the one nearest the center is within one
  spread) except with mean center and MAD spread (``[0, 0, 1]``: bounds ``[1/3, 1/3]``), so the
  default ``nkeep=1`` changes nothing in the usual cases; ``nkeep=0`` is astropy exactly.

Bounds are bit-identical to astropy's for median/MAD (order statistics and the same float64
operations) and for mean/std (sums in frame order over the survivors, as astropy's C code). For the
mixed modes astropy sums in the order its selection algorithm leaves its buffer and we sum in
sorted order: the bounds may differ in the last bit of a float64, which changes a rejection only
for a value within ~1e-16 (relative) of a bound.

Extrema: among the finite values of a pixel (NaN ignored), ranked by ``(value, frame index)``, the
``nlow`` first and ``nhigh`` last are rejected; no survivor if ``nlow + nhigh >= nfinite``.
Min/max thresholds (``min_clip``/``max_clip``) reject input values (before scale and zero)
outside ``[min_clip, max_clip]``; they apply with any clip mode.

Combination of the survivors, in frame order, float64 accumulation: ``mean`` = ``sum(v)/n``
(weighted: ``sum(w v)/sum(w)``), ``median`` (even: mean of the middle two), ``sum`` = ``sum(w v)``
(``w = 1`` without weights). No survivor: NaN and count 0.

``clip="varclip"`` (DRAGONS: each value against its own variance) runs its own per-pixel
kernel, :mod:`ccdask.combine._varclip`, with the same transforms and combination.

Variance of the result
----------------------
* with input variance planes ``var`` (scaled by ``scale**2``): mean ``sum(w² var)/sum(w)²``
  (unweighted: ``sum var / n²``), sum ``sum(w² var)``, median ``π/2 · sum var / n²``;
* without: from the survivors' scatter ``s² = sum((v - m)²)/n`` (``m`` their unweighted mean,
  ``ddof=0`` like ccdproc): mean ``s² · sum(w²)/sum(w)²`` (``s²/n``), sum ``s² · sum(w²)``
  (``n s²``), median ``π/2 · s²/n``. One survivor gives variance 0 (scatter), none NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from ..errors import ConfigError, ShapeMismatchError
from ._config import IRAF_CLIPS, MAX_FRAMES, SIRIL_CLIPS, CombineConfig

__all__ = [
    "STRIP",
    "BlockResult",
    "combine_block",
    "grow_offsets",
    "pclip_offset",
    "sorting_network",
]

#: Pixels per strip in the kernel scratch buffers (a strip of N frames stays in L1/L2 cache).
STRIP = 128
#: Columns of a row segment filled at once, frame by frame (sequential reads of the block).
SEGMENT = 2048

MAD_TO_SIGMA = 1.482602218505602  # the constant of astropy's C fast path

_METHOD = {"mean": 0, "median": 1, "sum": 2}
_CLIP = {
    "none": 0,
    "sigma": 1,
    "minmax": 0,
    "extrema": 3,
    "sigclip": 4,
    "ccdclip": 5,
    "crreject": 6,
    "pclip": 7,
    "avsigclip": 8,
}
_M_MEAN, _M_MEDIAN, _M_SUM = 0, 1, 2
_C_NONE, _C_SIGMA, _C_EXTREMA, _C_SIGCLIP, _C_CCDCLIP, _C_CRREJECT, _C_PCLIP, _C_AVSIGCLIP = 0, 1, 3, 4, 5, 6, 7, 8
#: Rejections whose survivors are a window [a, b) of the sorted values (ties told apart by frame).
_WINDOW_CLIPS = (_C_EXTREMA, _C_SIGCLIP, _C_CCDCLIP, _C_CRREJECT, _C_PCLIP, _C_AVSIGCLIP)


class BlockResult(NamedTuple):
    """Outputs of :func:`combine_block` for one ``(N, ty, tx)`` block."""

    data: np.ndarray
    """``(ty, tx)`` float32 combined values (NaN where no survivor)."""
    count: np.ndarray  # type: ignore[assignment]  # the public name shadows tuple.count
    """``(ty, tx)`` int16 number of survivors."""
    variance: np.ndarray | None
    """``(ty, tx)`` float32 variance of the result, or None if not asked for."""
    mask: np.ndarray | None
    """``(N, ty, tx)`` bool, True where a value was rejected (or not finite), or None."""


@lru_cache(maxsize=64)
def sorting_network(n: int) -> np.ndarray:
    """Comparators ``(m, 2)`` int64 of Batcher's odd-even merge sort for ``n`` inputs.

    Built for the next power of two; comparators touching an index ``>= n`` are dropped, which is
    exact when the missing inputs are +inf (they never move). The array is read-only.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    out = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------
_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
_F = TypeVar("_F", bound=Callable[..., Any])

# The kernels' arrays: float32 values (frame-order or sorted strips, blocks), float64 scratch,
# int64 counts and indices, bool flags.
_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]
_I64 = NDArray[np.int64]
_Bool = NDArray[np.bool_]


def _jit(func: _F) -> _F:
    """``numba.njit`` with the kernels' options, typed as the Python function it compiles."""
    return njit(**_JIT)(func)


@_jit
def _median_sorted(s: _F32, j: int, a: int, b: int) -> float:  # pragma: no cover - compiled
    """Median of the sorted window s[a:b, j] (float64)."""
    cnt = b - a
    h = cnt // 2
    if cnt % 2 == 1:
        return np.float64(s[a + h, j])
    return 0.5 * (np.float64(s[a + h, j]) + np.float64(s[a + h - 1, j]))


@_jit
def _mad_sorted(s: _F32, j: int, a: int, b: int, med: float) -> float:  # pragma: no cover - compiled
    """median(|x - med|) over the sorted window s[a:b, j].

    The deviations form two ascending lists, ``L[t] = med - s[p-1-t]`` (values below the median)
    and ``R[t] = s[p+t] - med``; the order statistics of their merge are found by binary search
    on how many of the ``m`` smallest come from ``L`` (O(log n), no merge walk).
    """
    cnt = b - a
    h = cnt // 2
    # p: first index of the window with s >= med (the median sits at a + h - 1 .. a + h)
    p = a + h
    if p > b - 1:
        p = b - 1
    while p > a and np.float64(s[p - 1, j]) >= med:
        p -= 1
    while p < b and np.float64(s[p, j]) < med:
        p += 1
    nl = p - a
    nr = b - p
    m = h + 1  # take the h + 1 smallest deviations: rank h is the largest of them
    # i = number taken from L: the first i in [lo_i, hi_i] where "take more from L"
    # (L[i] < R[m - 1 - i]) is false; branch-free lower bound with a data-independent trip count
    lo_i = m - nr if m > nr else 0
    hi_i = m if m < nl else nl
    base = lo_i
    size = hi_i - lo_i + 1
    while size > 1:
        half = size // 2
        i = base + half - 1
        more = med - np.float64(s[p - 1 - i, j]) < np.float64(s[p + m - 1 - i, j]) - med
        base = base + half if more else base
        size -= half
    i = base
    k = m - i
    top_l = med - np.float64(s[p - i, j]) if i >= 1 else -np.inf
    top_l2 = med - np.float64(s[p - i + 1, j]) if i >= 2 else -np.inf
    top_r = np.float64(s[p + k - 1, j]) - med if k >= 1 else -np.inf
    top_r2 = np.float64(s[p + k - 2, j]) - med if k >= 2 else -np.inf
    if top_l >= top_r:
        first = top_l
        second = top_l2 if top_l2 > top_r else top_r
    else:
        first = top_r
        second = top_r2 if top_r2 > top_l else top_l
    if cnt % 2 == 1:
        return first
    return 0.5 * (first + second)


@_jit
def _first_ge(s: _F32, j: int, nf: int, lo: float) -> int:  # pragma: no cover - compiled
    """First index i in [0, nf) with s[i, j] >= lo (nf if none); s sorted."""
    i = 0
    while i < nf and np.float64(s[i, j]) < lo:
        i += 1
    return i


@_jit
def _end_le(s: _F32, j: int, start: int, nf: int, hi: float) -> int:  # pragma: no cover - compiled
    """One past the last index i in [start, nf) with s[i, j] <= hi; s sorted."""
    i = nf
    while i > start and np.float64(s[i - 1, j]) > hi:
        i -= 1
    return i


@_jit
def _sigma_bounds_medmad(
    srt: _F32,
    w: int,
    nfin: _I64,
    sig_lo: float,
    sig_hi: float,
    maxiters: int,
    nkeep: int,
    out_lo: _F64,
    out_hi: _F64,
    dev: _F64,
    med: _F64,
    blo: _F64,
    bhi: _F64,
    win_a: _I64,
    win_b: _I64,
    nbelow: _I64,
    nabove: _I64,
    active: _Bool,
) -> None:  # pragma: no cover - compiled
    """Median/MAD sigma-clipping bounds for pixels 0..w of a sorted strip.

    The first iteration works on all pixels at once so its loops vectorise: the median is a
    gather from the sorted values; the deviations ``|s - median|`` of sorted values are V-shaped
    (a bitonic sequence; +inf past the finite values and in the padding rows of ``dev``, which
    has ``P`` = next power of two rows), so a bitonic merging network sorts them and the MAD is a
    gather again; the new window comes from counting the values outside the bounds. Pixels where
    the first iteration rejected something continue one by one (:func:`_medmad_continue`, a
    median and a binary-search MAD on the sorted window). Same values and operations as astropy.
    """
    n = srt.shape[0]
    P = dev.shape[0]
    nact = 0
    for j in range(w):
        out_lo[j] = -np.inf
        out_hi[j] = np.inf
        win_a[j] = 0
        win_b[j] = nfin[j]
        active[j] = nfin[j] > 0
        nact += 1 if nfin[j] > 0 else 0
    if nact == 0:
        return
    # ---- first iteration, all pixels at once
    for j in range(w):
        cnt = win_b[j] - win_a[j]
        if cnt <= 0:
            med[j] = 0.0
            continue
        h = cnt // 2
        top = np.float64(srt[h, j])
        if cnt % 2 == 1:
            med[j] = top
        else:
            med[j] = 0.5 * (top + np.float64(srt[h - 1, j]))
    for k in range(n):
        for j in range(w):
            d = abs(np.float64(srt[k, j]) - med[j])
            dev[k, j] = d if k < win_b[j] else np.inf
    half = P // 2
    while half >= 1:
        for start in range(0, P, 2 * half):
            for i in range(start, start + half):
                for j in range(w):
                    x = dev[i, j]
                    y = dev[i + half, j]
                    dev[i, j] = y if y < x else x
                    dev[i + half, j] = x if y < x else y
        half //= 2
    for j in range(w):
        cnt = win_b[j]
        h = cnt // 2 if cnt > 0 else 0
        mad = dev[h, j]
        if cnt % 2 == 0 and cnt > 0:
            mad = 0.5 * (mad + dev[h - 1, j])
        spread = mad * MAD_TO_SIGMA
        blo[j] = med[j] - sig_lo * spread
        bhi[j] = med[j] + sig_hi * spread
        nbelow[j] = 0
        nabove[j] = 0
    for k in range(n):
        for j in range(w):
            v = np.float64(srt[k, j])
            inw = k < win_b[j]
            nbelow[j] += 1 if (inw & (v < blo[j])) else 0
            nabove[j] += 1 if (inw & (v > bhi[j])) else 0
    # ---- later iterations, pixel by pixel (only where the first one rejected something)
    for j in range(w):
        if not active[j]:
            continue
        cnt = win_b[j]
        newcnt = cnt - nbelow[j] - nabove[j]
        good_lo = -np.inf
        good_hi = np.inf
        if newcnt >= nkeep or _count_inside(srt, j, nfin[j], blo[j], bhi[j]) >= nkeep:
            good_lo = blo[j]
            good_hi = bhi[j]
        if not (newcnt == cnt or newcnt == 0 or maxiters == 1):
            good_lo, good_hi = _medmad_continue(
                srt, j, nfin[j], nbelow[j], cnt - nabove[j], sig_lo, sig_hi, maxiters, nkeep, good_lo, good_hi
            )
        out_lo[j] = good_lo
        out_hi[j] = good_hi


@_jit
def _medmad_continue(
    s: _F32,
    j: int,
    nf: int,
    a: int,
    b: int,
    sig_lo: float,
    sig_hi: float,
    maxiters: int,
    nkeep: int,
    good_lo: float,
    good_hi: float,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Median/MAD iterations 2, 3... of pixel j from the window [a, b) left by the first."""
    it = 1
    while True:
        cnt = b - a
        med = _median_sorted(s, j, a, b)
        spread = _mad_sorted(s, j, a, b, med) * MAD_TO_SIGMA
        lo = med - sig_lo * spread
        hi = med + sig_hi * spread
        na = a
        while na < b and np.float64(s[na, j]) < lo:
            na += 1
        nb = b
        while nb > na and np.float64(s[nb - 1, j]) > hi:
            nb -= 1
        newcnt = nb - na
        if newcnt >= nkeep or _count_inside(s, j, nf, lo, hi) >= nkeep:
            good_lo = lo
            good_hi = hi
        if newcnt == cnt or newcnt == 0:
            break
        a = na
        b = nb
        it += 1
        if maxiters > 0 and it >= maxiters:
            break
    return good_lo, good_hi


@_jit
def _count_inside(s: _F32, j: int, nf: int, lo: float, hi: float) -> int:  # pragma: no cover - compiled
    """Number of the sorted finite values s[0:nf, j] inside [lo, hi]."""
    fa = _first_ge(s, j, nf, lo)
    return _end_le(s, j, fa, nf, hi) - fa


@_jit
def _sigma_bounds_sorted(
    s: _F32, j: int, nf: int, sig_lo: float, sig_hi: float, maxiters: int, use_median: bool, use_mad: bool, nkeep: int
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Sigma-clipping bounds of pixel j from its sorted finite values s[0:nf, j]."""
    a = 0
    b = nf
    it = 0
    good_lo = -np.inf
    good_hi = np.inf
    while True:
        cnt = b - a
        med = 0.0
        mean = 0.0
        if use_median or use_mad:
            med = _median_sorted(s, j, a, b)
        if not (use_median and use_mad):
            acc = 0.0
            for i in range(a, b):
                acc += np.float64(s[i, j])
            mean = acc / cnt
        cen = med if use_median else mean
        if use_mad:
            spread = _mad_sorted(s, j, a, b, med) * MAD_TO_SIGMA
        else:
            acc = 0.0
            for i in range(a, b):
                d = np.float64(s[i, j]) - mean
                acc += d * d
            spread = math.sqrt(acc / cnt)
        lo = cen - sig_lo * spread
        hi = cen + sig_hi * spread
        # the shrinking window
        na = a
        while na < b and np.float64(s[na, j]) < lo:
            na += 1
        nb = b
        while nb > na and np.float64(s[nb - 1, j]) > hi:
            nb -= 1
        newcnt = nb - na
        # astropy's survivors are every finite value inside the bounds (a superset of the
        # window): nkeep keeps the latest bounds that leave at least nkeep of them
        if newcnt >= nkeep or _count_inside(s, j, nf, lo, hi) >= nkeep:
            good_lo = lo
            good_hi = hi
        if newcnt == cnt or newcnt == 0:
            break
        a = na
        b = nb
        it += 1
        if maxiters > 0 and it >= maxiters:
            break
    return good_lo, good_hi


@_jit
def _sigma_bounds_meanstd(
    vals: _F32,
    w: int,
    nfin: _I64,
    sig_lo: float,
    sig_hi: float,
    maxiters: int,
    nkeep: int,
    out_lo: _F64,
    out_hi: _F64,
    cur_lo: _F64,
    cur_hi: _F64,
    cnt: _I64,
    active: _Bool,
    acc: _F64,
    mean: _F64,
    newcnt: _I64,
    fullcnt: _I64,
) -> None:  # pragma: no cover - compiled
    """Mean/std sigma-clipping bounds for pixels 0..w of a strip (frame-order values, no sort).

    The running window is the interval [cur_lo, cur_hi] (intersection of all bounds so far);
    loops run over frames outside and pixels inside so they vectorise. Sums run in frame order
    over the window, as astropy's C code does, so the bounds are bit-identical to astropy's.
    """
    n = vals.shape[0]
    nact = 0
    for j in range(w):
        out_lo[j] = -np.inf
        out_hi[j] = np.inf
        cur_lo[j] = -np.inf
        cur_hi[j] = np.inf
        cnt[j] = nfin[j]
        active[j] = nfin[j] > 0
        if active[j]:
            nact += 1
    it = 0
    while nact > 0:
        for j in range(w):
            acc[j] = 0.0
        for k in range(n):
            for j in range(w):
                v = np.float64(vals[k, j])
                inw = (v >= cur_lo[j]) & (v <= cur_hi[j])
                acc[j] += v if inw else 0.0
        for j in range(w):
            mean[j] = acc[j] / cnt[j]
            acc[j] = 0.0
        for k in range(n):
            for j in range(w):
                v = np.float64(vals[k, j])
                inw = (v >= cur_lo[j]) & (v <= cur_hi[j])
                d = v - mean[j]
                acc[j] += d * d if inw else 0.0
        for j in range(w):
            sd = math.sqrt(acc[j] / cnt[j])
            acc[j] = mean[j] - sig_lo * sd  # new lower bound
            mean[j] = mean[j] + sig_hi * sd  # new upper bound
            newcnt[j] = 0
            fullcnt[j] = 0
        for k in range(n):
            for j in range(w):
                v = np.float64(vals[k, j])
                inb = (v >= acc[j]) & (v <= mean[j])
                inw = (v >= cur_lo[j]) & (v <= cur_hi[j])
                fullcnt[j] += 1 if inb else 0
                newcnt[j] += 1 if (inb & inw) else 0
        it += 1
        for j in range(w):
            if not active[j]:
                continue
            if fullcnt[j] >= nkeep:
                out_lo[j] = acc[j]
                out_hi[j] = mean[j]
            if newcnt[j] == cnt[j] or newcnt[j] == 0 or (maxiters > 0 and it >= maxiters):
                active[j] = False
                nact -= 1
            else:
                cnt[j] = newcnt[j]
                if acc[j] > cur_lo[j]:
                    cur_lo[j] = acc[j]
                if mean[j] < cur_hi[j]:
                    cur_hi[j] = mean[j]


@_jit
def _trim_window(
    s: _F32, j: int, a: int, b: int, c: float, tlo: float, thi: float
) -> tuple[int, int]:  # pragma: no cover - compiled
    """The part ``[na, nb)`` of the sorted window ``[a, b)`` of pixel j whose deviations from
    ``c`` lie within ``[tlo, thi]``."""
    na = a
    while na < b and not (np.float64(s[na, j]) - c >= tlo):
        na += 1
    nb = b
    while nb > na and not (np.float64(s[nb - 1, j]) - c <= thi):
        nb -= 1
    return na, nb


@_jit
def _iraf_sigclip_bounds(
    s: _F32, j: int, nf: int, sig_lo: float, sig_hi: float, mclip: bool, nkeep: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """IRAF ``reject=sigclip`` for pixel j of a sorted strip: the survivors' window ``[a, b)``.

    Rules (measured against IRAF imcombine, see tests/combine/test_iraf.py): ``nkeep < 0`` means
    keep at least ``nf + nkeep``; no rejection when ``nf <= max(2, nkeep)``. Each iteration takes
    the center of the current survivors (median with ``mclip``; otherwise the mean, excluding the
    lowest and highest value in the first iteration), the sample sigma about it
    ``sqrt(sum((v - c)²) / (m - 1))``, and keeps ``-lsigma·s <= v - c <= hsigma·s``. If that
    leaves fewer than ``nkeep``, the nearest rejected value is put back (the nearest below and
    the nearest above together when equally near) until ``nkeep`` survive, and it stops (IRAF
    differs from this in some stacks where several rejected values are equal: not reproduced); it also stops when nothing
    changed or at most ``max(2, nkeep)`` survive. Survivors stay a contiguous window of the
    sorted values; equal values at its ends are told apart by frame index, as for extrema.
    """
    nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
    if nf <= max(2, nk):
        return 0, nf
    a = 0
    b = nf
    first = True
    while True:
        m = b - a
        if mclip:
            c = _median_sorted(s, j, a, b)
        else:
            tot = 0.0
            for i in range(a, b):
                tot += np.float64(s[i, j])
            c = (tot - np.float64(s[a, j]) - np.float64(s[b - 1, j])) / (m - 2) if first else tot / m
        first = False
        ss = 0.0
        for i in range(a, b):
            d = np.float64(s[i, j]) - c
            ss += d * d
        sd = math.sqrt(ss / (m - 1))
        tlo = -sig_lo * sd
        thi = sig_hi * sd
        na, nb = _trim_window(s, j, a, b, c, tlo, thi)
        if nb - na < nk:
            # put back the nearest rejected value (both sides' nearest when equally near)
            while nb - na < nk:
                rl = c - np.float64(s[na - 1, j]) if na > a else np.inf
                rh = np.float64(s[nb, j]) - c if nb < b else np.inf
                if rl <= rh:
                    na -= 1
                if rh <= rl:
                    nb += 1
            a = na
            b = nb
            break
        if nb - na == m:
            break
        a = na
        b = nb
        if b - a <= max(2, nk):
            break
    return a, b


@_jit
def _iraf_sigclip_strip(
    s: _F32,
    w: int,
    nfin: _I64,
    sig_lo: float,
    sig_hi: float,
    mclip: bool,
    nkeep: int,
    out_a: _I64,
    out_b: _I64,
    cen: _F64,
    tlo: _F64,
) -> None:  # pragma: no cover - compiled
    """:func:`_iraf_sigclip_bounds` of the ``w`` pixels of a sorted strip, into ``out_a``, ``out_b``.

    The first iteration runs over the whole strip at once (frames outside, pixels inside): the
    center and the sum of squares about it (the same float64 operations in the same order as the
    per-pixel routine; the padding terms add +0.0). Deviations of sorted values ascend, so that
    iteration rejects nothing where the lowest and the highest value are within ``-lsigma·s`` and
    ``hsigma·s``: those pixels are done, ``[0, nf)``, as the per-pixel routine returns. The others, and stacks too small to clip, run
    :func:`_iraf_sigclip_bounds` from the start, so every result is that routine's exactly.
    """
    n = s.shape[0]
    for j in range(w):
        tlo[j] = 0.0
    if mclip:
        for j in range(w):
            cen[j] = _median_sorted(s, j, 0, nfin[j]) if nfin[j] > 0 else 0.0
    else:
        for i in range(n):
            for j in range(w):
                tlo[j] += np.float64(s[i, j]) if i < nfin[j] else 0.0
        for j in range(w):
            nf = nfin[j]
            cen[j] = (tlo[j] - np.float64(s[0, j]) - np.float64(s[nf - 1, j])) / (nf - 2) if nf > 2 else 0.0
            tlo[j] = 0.0
    for i in range(n):  # sum of squares about the center (in tlo)
        row = s[i]
        for j in range(w):
            d = np.float64(row[j]) - cen[j]
            tlo[j] += d * d if i < nfin[j] else 0.0
    for j in range(w):
        nf = nfin[j]
        nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
        done = False
        if nf > max(2, nk):
            sd = math.sqrt(tlo[j] / (nf - 1))
            c = cen[j]
            # nothing trimmed: the lowest and the highest values are inside (sorted: all are)
            done = (np.float64(s[0, j]) - c >= -sig_lo * sd) and (np.float64(s[nf - 1, j]) - c <= sig_hi * sd)
        if done:
            out_a[j] = 0
            out_b[j] = nf
        else:
            wa, wb = _iraf_sigclip_bounds(s, j, nf, sig_lo, sig_hi, mclip, nkeep)
            out_a[j] = wa
            out_b[j] = wb


@_jit
def _restore_window(
    s: _F32, j: int, a: int, b: int, na: int, nb: int, c: float, nk: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """IRAF's ``nkeep``: widen the survivors' window ``[na, nb)`` inside ``[a, b)`` until ``nk`` survive.

    The rejected value nearest the center ``c`` is put back, the nearest below and the nearest
    above together when equally near (IRAF puts back a different subset in some stacks where
    several rejected values are equal; not reproduced).
    """
    while nb - na < nk:
        rl = c - np.float64(s[na - 1, j]) if na > a else np.inf
        rh = np.float64(s[nb, j]) - c if nb < b else np.inf
        if rl <= rh:
            na -= 1
        if rh <= rl:
            nb += 1
    return na, nb


@_jit
def _iraf_ccdclip_bounds(
    s: _F32,
    j: int,
    nf: int,
    sig_lo: float,
    sig_hi: float,
    mclip: bool,
    nkeep: int,
    rn2: float,
    gain: float,
    snoise: float,
    high_only: bool,
) -> tuple[int, int]:  # pragma: no cover - compiled
    """IRAF ``reject=ccdclip`` (``crreject`` with ``high_only``) for pixel j: the survivors' window.

    Rules (measured against IRAF imcombine, tests/combine/test_iraf.py): no rejection when
    ``nf <= max(1, nkeep)`` (``nkeep < 0``: keep at least ``nf + nkeep``). Each iteration takes
    the center ``c`` of the current survivors: the median with ``mclip``, otherwise the mean
    without the lowest and highest value while more than two remain (every iteration, unlike
    sigclip's), the mean of both when two remain; the expected sigma
    ``sqrt(rn2 + max(c, 0) / gain + (snoise c)²)`` (``rn2 = (rdnoise / gain)²``, data units); it
    keeps ``-lsigma·σ <= v - c <= hsigma·σ`` (no lower bound for crreject). It stops when
    nothing changed or at most ``max(1, nkeep)`` survive; ``nkeep`` restores as
    :func:`_restore_window`.
    """
    nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
    if nf <= max(1, nk):
        return 0, nf
    a = 0
    b = nf
    while True:
        m = b - a
        if mclip:
            c = _median_sorted(s, j, a, b)
        else:
            tot = 0.0
            for i in range(a, b):
                tot += np.float64(s[i, j])
            c = (tot - np.float64(s[a, j]) - np.float64(s[b - 1, j])) / (m - 2) if m > 2 else tot / m
        sd = math.sqrt(rn2 + max(c, 0.0) / gain + (snoise * c) ** 2)
        tlo = -np.inf if high_only else -sig_lo * sd
        thi = sig_hi * sd
        na, nb = _trim_window(s, j, a, b, c, tlo, thi)
        if nb - na < nk:
            return _restore_window(s, j, a, b, na, nb, c, nk)
        if nb - na == m:
            break
        a = na
        b = nb
        if b - a <= max(1, nk):
            break
    return a, b


@_jit
def _iraf_pclip_bounds(
    s: _F32, j: int, nf: int, sig_lo: float, sig_hi: float, nkeep: int, kpct: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    """IRAF ``reject=pclip`` for pixel j of a sorted strip: the survivors' window ``[a, b)``.

    ``kpct`` is the signed offset of the percentile pixel from the median pixel (fixed for the
    stack by :func:`pclip_offset`); the median pixel is the lower middle one for ``kpct < 0``,
    the upper one otherwise, and the percentile pixel is clamped to the extremes. The width is
    ``w = |median - percentile pixel|``; values with ``median - v < lsigma·w`` and
    ``v - median < hsigma·w`` survive (strictly inside: at one sigma the percentile pixel goes,
    as in IRAF), nothing is rejected when ``w = 0`` or ``nf <= max(2, nkeep)``. One pass;
    ``nkeep`` restores as :func:`_restore_window` (from the middle when nothing survived).
    """
    nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
    if nf <= max(2, nk):
        return 0, nf
    med = _median_sorted(s, j, 0, nf)
    if kpct < 0:
        p = (nf - 1) // 2 + kpct
        p = p if p > 0 else 0
    else:
        p = nf // 2 + kpct
        p = p if p < nf - 1 else nf - 1
    width = abs(med - np.float64(s[p, j]))
    if width == 0.0:
        return 0, nf
    tlo = sig_lo * width
    thi = sig_hi * width
    na = 0
    while na < nf and not (med - np.float64(s[na, j]) < tlo):
        na += 1
    nb = nf
    while nb > na and not (np.float64(s[nb - 1, j]) - med < thi):
        nb -= 1
    if nb <= na:
        na = nf // 2
        nb = na
    if nb - na < nk:
        return _restore_window(s, j, 0, nf, na, nb, med, nk)
    return na, nb


@_jit
def _avsig_center(s: _F32, j: int, a: int, b: int, mclip: bool, first: bool) -> float:  # pragma: no cover - compiled
    """avsigclip's center of the sorted window s[a:b, j]: median, or mean (first: without the extremes)."""
    m = b - a
    if mclip:
        return _median_sorted(s, j, a, b)
    tot = 0.0
    for i in range(a, b):
        tot += np.float64(s[i, j])
    if first and m > 2:
        return (tot - np.float64(s[a, j]) - np.float64(s[b - 1, j])) / (m - 2)
    return tot / m


@_jit
def _avsig_row_factor(
    row: _F32, nx: int, comps: _I64, mclip: bool, vals: _F32, srt: _F32
) -> float:  # pragma: no cover - compiled
    """IRAF avsigclip's proportionality factor of one image row (``row``: ``(N, nx)``, NaN = absent).

    ``g = sum(sum_i (v_i - c)²) / sum(n c)`` over the row's pixels with at least three values and
    a center ``c > 0`` (median, or the mean without the lowest and highest value); the expected
    sigma at a pixel is then ``sqrt(g c)``. The sums were measured against IRAF: a per-pixel mean
    of ``sum (v - c)² / (n c)`` differs from IRAF's by ~0.4 %.
    """
    n = row.shape[0]
    S = vals.shape[1]
    inf32 = np.float32(np.inf)
    ncomp = comps.shape[0]
    num = 0.0
    den = 0.0
    for x0 in range(0, nx, S):
        w = min(S, nx - x0)
        for k in range(n):
            for j in range(w):
                v = row[k, x0 + j]
                srt[k, j] = v if v == v else inf32
        for c in range(ncomp):
            ca = comps[c, 0]
            cb = comps[c, 1]
            for j in range(w):
                p = srt[ca, j]
                q = srt[cb, j]
                srt[ca, j] = q if q < p else p
                srt[cb, j] = p if q < p else q
        for j in range(w):
            nf = 0
            while nf < n and srt[nf, j] < inf32:
                nf += 1
            if nf < 3:
                continue
            cen = _avsig_center(srt, j, 0, nf, mclip, True)
            if not cen > 0:
                continue
            ss = 0.0
            for i in range(nf):
                d = np.float64(srt[i, j]) - cen
                ss += d * d
            num += ss
            den += nf * cen
    return num / den if den > 0 else 0.0


@_jit
def _iraf_avsigclip_bounds(
    s: _F32, j: int, nf: int, sig_lo: float, sig_hi: float, mclip: bool, nkeep: int, factor: float
) -> tuple[int, int]:  # pragma: no cover - compiled
    """IRAF ``reject=avsigclip`` for pixel j of a sorted strip: the survivors' window ``[a, b)``.

    As :func:`_iraf_sigclip_bounds` (no rejection when ``nf <= max(2, nkeep)``; the first
    mean without the extremes; stops when nothing changed or at most ``max(2, nkeep)`` survive;
    ``nkeep`` restores as :func:`_restore_window`), but the sigma is ``sqrt(factor · max(c, 0))``
    with the row's ``factor`` (:func:`_avsig_row_factor`), not recomputed after rejections.
    Measured against IRAF imcombine (tests/combine/test_iraf.py).
    """
    nk = nkeep if nkeep >= 0 else max(nf + nkeep, 0)
    if nf <= max(2, nk):
        return 0, nf
    a = 0
    b = nf
    first = True
    while True:
        m = b - a
        c = _avsig_center(s, j, a, b, mclip, first)
        first = False
        sd = math.sqrt(factor * max(c, 0.0))
        tlo = -sig_lo * sd
        thi = sig_hi * sd
        na, nb = _trim_window(s, j, a, b, c, tlo, thi)
        if nb - na < nk:
            return _restore_window(s, j, a, b, na, nb, c, nk)
        if nb - na == m:
            break
        a = na
        b = nb
        if b - a <= max(2, nk):
            break
    return a, b


@_jit
def _sort_strip(vals: _F32, srt: _F32, w: int, comps: _I64) -> None:  # pragma: no cover - compiled
    """``srt[:, :w]`` = the strip's values sorted per pixel (non-finite as +inf: they sort last).

    Small functions of their own (as the other strip passes below), with row views, so that
    each loop over pixels is vectorised on its own.
    """
    n = vals.shape[0]
    inf32 = np.float32(np.inf)
    for k in range(n):
        src = vals[k]
        dst = srt[k]
        for j in range(w):
            v = src[j]
            dst[j] = v if v == v else inf32
    for c in range(comps.shape[0]):
        a = srt[comps[c, 0]]
        b = srt[comps[c, 1]]
        for j in range(w):
            p = a[j]
            q = b[j]
            a[j] = q if q < p else p
            b[j] = p if q < p else q


@_jit
def _keep_strip(vals: _F32, keep: _Bool, w: int, lo: _F64, hi: _F64) -> None:  # pragma: no cover - compiled
    """``keep[k, j]``: the value of frame k at pixel j lies inside ``[lo[j], hi[j]]`` (float64)."""
    for k in range(vals.shape[0]):
        src = vals[k]
        dst = keep[k]
        for j in range(w):
            v = np.float64(src[j])
            dst[j] = (v >= lo[j]) & (v <= hi[j])


@_jit
def _accumulate_strip(
    vals: _F32, keep: _Bool, w: int, wk: _F64, cnt: _I64, acc: _F64, sw: _F64
) -> None:  # pragma: no cover - compiled
    """Count, weighted sum and sum of weights of the kept values, in frame order (float64)."""
    for k in range(vals.shape[0]):
        wgt = wk[k]
        src = vals[k]
        kk = keep[k]
        for j in range(w):
            kp = kk[j]
            v = np.float64(src[j])
            cnt[j] += 1 if kp else 0
            acc[j] += wgt * v if kp else 0.0
            sw[j] += wgt if kp else 0.0


@_jit
def _kernel(
    block: _F32,
    var: _F32,
    scale: _F64,
    zero: _F64,
    weights: _F64,
    comps: _I64,
    min_clip: float,
    max_clip: float,
    clip: int,
    method: int,
    sig_lo: float,
    sig_hi: float,
    maxiters: int,
    use_median: bool,
    use_mad: bool,
    nlow: int,
    nhigh: int,
    nkeep: int,
    rn2: float,
    gain: float,
    snoise: float,
    kpct: int,
    want_var: bool,
    want_mask: bool,
    out_data: _F32,
    out_count: NDArray[np.int16],
    out_var: _F32,
    out_mask: _Bool,
) -> None:  # pragma: no cover - compiled
    n, ny, nx = block.shape
    S = STRIP
    has_scale = scale.shape[0] == n
    has_zero = zero.shape[0] == n
    has_w = weights.shape[0] == n
    has_var = var.shape[0] == n
    has_thr = min_clip > -np.inf or max_clip < np.inf
    transform = has_scale or has_zero
    need_sort = method == _M_MEDIAN or clip in _WINDOW_CLIPS or (clip == _C_SIGMA and (use_median or use_mad))
    scatter = want_var and not has_var
    vals = np.empty((n, S), np.float32)
    srt = np.empty((n, S), np.float32)
    keep = np.empty((n, S), np.bool_)
    nfin = np.zeros(S, np.int64)
    lo = np.empty(S, np.float64)
    hi = np.empty(S, np.float64)
    # accumulators
    cnt = np.zeros(S, np.int64)
    acc = np.zeros(S, np.float64)
    sw = np.zeros(S, np.float64)
    sw2 = np.zeros(S, np.float64)
    uacc = np.zeros(S, np.float64)
    vacc = np.zeros(S, np.float64)
    # mean/std scratch
    t_cur_lo = np.empty(S, np.float64)
    t_cur_hi = np.empty(S, np.float64)
    t_cnt = np.empty(S, np.int64)
    t_active = np.empty(S, np.bool_)
    t_acc = np.empty(S, np.float64)
    t_mean = np.empty(S, np.float64)
    t_newcnt = np.empty(S, np.int64)
    t_fullcnt = np.empty(S, np.int64)
    t_wa = np.empty(S, np.int64)
    t_wb = np.empty(S, np.int64)
    npow = 1
    while npow < n:
        npow *= 2
    dev = np.full((npow, S), np.inf)
    # per-frame constants
    wk = np.ones(n, np.float64)
    vk = np.ones(n, np.float64)  # variance factor scale² w²
    sk = np.ones(n, np.float64)
    zk = np.zeros(n, np.float64)
    for k in range(n):
        if has_w:
            wk[k] = weights[k]
        if has_scale:
            sk[k] = scale[k]
        if has_zero:
            zk[k] = zero[k]
        vk[k] = (sk[k] * sk[k]) * (wk[k] * wk[k])
    half_pi = 0.5 * np.pi
    nan32 = np.float32(np.nan)

    # avsigclip needs whole image rows (IRAF's lines) in the row buffer
    seg = nx if clip == _C_AVSIGCLIP else min(nx, SEGMENT)
    row_factor = 0.0
    row = np.empty((n, seg), np.float32)
    rfin = np.zeros(seg, np.int64)
    nseg = (nx + seg - 1) // seg
    for yseg in range(ny * nseg):
        y = yseg // nseg
        xs = (yseg % nseg) * seg
        sw_ = min(seg, nx - xs)
        # ---- fill a row segment, frame by frame (sequential reads): thresholds, scale,
        # zero; NaN marks a value that does not take part
        for x in range(sw_):
            rfin[x] = 0
        for k in range(n):
            src = block[k, y]
            dst = row[k]
            s_k = sk[k]
            z_k = zk[k]
            for x in range(sw_):
                v = src[xs + x]
                if has_thr:
                    v = v if (v >= min_clip) & (v <= max_clip) else nan32
                if transform:
                    v = np.float32(np.float64(v) * s_k + z_k)
                fin = np.isfinite(v)
                dst[x] = v if fin else nan32
                rfin[x] += 1 if fin else 0
        if clip == _C_AVSIGCLIP:
            row_factor = _avsig_row_factor(row, nx, comps, use_median, vals, srt)
        for xo in range(0, sw_, S):
            x0 = xs + xo
            w = min(S, sw_ - xo)
            # the strip's values into a compact (N, STRIP) buffer (L1) for the passes below
            for j in range(w):
                nfin[j] = rfin[xo + j]
            for k in range(n):
                for j in range(w):
                    vals[k, j] = row[k, xo + j]
            # ---- sort (non-finite as +inf: they sort last)
            if need_sort:
                _sort_strip(vals, srt, w, comps)
            # ---- bounds per pixel
            if clip == _C_SIGMA:
                if use_median and use_mad:
                    _sigma_bounds_medmad(
                        srt,
                        w,
                        nfin,
                        sig_lo,
                        sig_hi,
                        maxiters,
                        nkeep,
                        lo,
                        hi,
                        dev,
                        t_mean,
                        t_cur_lo,
                        t_cur_hi,
                        t_wa,
                        t_wb,
                        t_newcnt,
                        t_fullcnt,
                        t_active,
                    )
                elif use_median or use_mad:
                    for j in range(w):
                        if nfin[j] == 0:
                            lo[j] = -np.inf
                            hi[j] = np.inf
                        else:
                            blo, bhi = _sigma_bounds_sorted(
                                srt, j, nfin[j], sig_lo, sig_hi, maxiters, use_median, use_mad, nkeep
                            )
                            lo[j] = blo
                            hi[j] = bhi
                else:
                    _sigma_bounds_meanstd(
                        vals,
                        w,
                        nfin,
                        sig_lo,
                        sig_hi,
                        maxiters,
                        nkeep,
                        lo,
                        hi,
                        t_cur_lo,
                        t_cur_hi,
                        t_cnt,
                        t_active,
                        t_acc,
                        t_mean,
                        t_newcnt,
                        t_fullcnt,
                    )
            elif clip == _C_SIGCLIP:
                _iraf_sigclip_strip(srt, w, nfin, sig_lo, sig_hi, use_median, nkeep, t_wa, t_wb, t_mean, t_acc)
                for j in range(w):
                    wa = t_wa[j]
                    wb = t_wb[j]
                    lo[j] = srt[wa, j] if wb > wa else np.nan
                    hi[j] = srt[wb - 1, j] if wb > wa else np.nan
            elif clip in (_C_CCDCLIP, _C_CRREJECT, _C_PCLIP, _C_AVSIGCLIP):
                for j in range(w):
                    if clip == _C_AVSIGCLIP:
                        wa, wb = _iraf_avsigclip_bounds(srt, j, nfin[j], sig_lo, sig_hi, use_median, nkeep, row_factor)
                    elif clip == _C_PCLIP:
                        wa, wb = _iraf_pclip_bounds(srt, j, nfin[j], sig_lo, sig_hi, nkeep, kpct)
                    else:
                        wa, wb = _iraf_ccdclip_bounds(
                            srt, j, nfin[j], sig_lo, sig_hi, use_median, nkeep, rn2, gain, snoise, clip == _C_CRREJECT
                        )
                    t_wa[j] = wa
                    t_wb[j] = wb
                    lo[j] = srt[wa, j] if wb > wa else np.nan
                    hi[j] = srt[wb - 1, j] if wb > wa else np.nan
            elif clip == _C_EXTREMA:
                for j in range(w):
                    nf = nfin[j]
                    t_wa[j] = nlow
                    t_wb[j] = nf - nlow - nhigh + nlow
                    if nf - nlow - nhigh <= 0:
                        lo[j] = np.nan  # nothing survives
                        hi[j] = np.nan
                    else:
                        lo[j] = srt[nlow, j]
                        hi[j] = srt[nf - nhigh - 1, j]
            else:
                for j in range(w):
                    lo[j] = -np.inf
                    hi[j] = np.inf
            # ---- survivors (frame order)
            _keep_strip(vals, keep, w, lo, hi)
            if clip in _WINDOW_CLIPS:
                # ties at the lowest/highest kept value: rank by (value, frame index)
                for j in range(w):
                    nf = nfin[j]
                    wa = t_wa[j]
                    wb = t_wb[j]
                    if wb - wa <= 0:
                        continue
                    lv = srt[wa, j]
                    hv = srt[wb - 1, j]
                    tie_lo = wa > 0 and srt[wa - 1, j] == lv
                    tie_hi = wb < nf and srt[wb, j] == hv
                    if not (tie_lo or tie_hi):
                        continue
                    r_lo = wa
                    while r_lo > 0 and srt[r_lo - 1, j] == lv:
                        r_lo -= 1
                    r_hi = wb - 1
                    while r_hi > 0 and srt[r_hi - 1, j] == hv:
                        r_hi -= 1
                    seen_lo = 0
                    seen_hi = 0
                    for k in range(n):
                        v = vals[k, j]
                        if v == lv:
                            r = r_lo + seen_lo
                            seen_lo += 1
                            if v == hv:
                                seen_hi += 1
                            keep[k, j] = (r >= wa) & (r < wb)
                        elif v == hv:
                            r = r_hi + seen_hi
                            seen_hi += 1
                            keep[k, j] = (r >= wa) & (r < wb)
            # ---- accumulate the survivors in frame order
            for j in range(w):
                cnt[j] = 0
                acc[j] = 0.0
                sw[j] = 0.0
                sw2[j] = 0.0
                uacc[j] = 0.0
                vacc[j] = 0.0
            _accumulate_strip(vals, keep, w, wk, cnt, acc, sw)
            if has_w and want_var:
                for k in range(n):
                    wgt = wk[k]
                    for j in range(w):
                        kp = keep[k, j]
                        sw2[j] += wgt * wgt if kp else 0.0
                        uacc[j] += np.float64(vals[k, j]) if kp else 0.0
            if has_var:
                for k in range(n):
                    c = vk[k]
                    for j in range(w):
                        vacc[j] += np.float64(var[k, y, x0 + j]) * c if keep[k, j] else 0.0
            if want_mask:
                for k in range(n):
                    for j in range(w):
                        out_mask[k, y, x0 + j] = not keep[k, j]
            if scatter:
                # scatter of the survivors about their unweighted mean (vacc: sum of squares)
                for j in range(w):
                    if not has_w:
                        uacc[j] = acc[j]
                        sw2[j] = sw[j]
                    uacc[j] = uacc[j] / cnt[j]
                for k in range(n):
                    for j in range(w):
                        d = np.float64(vals[k, j]) - uacc[j]
                        vacc[j] += d * d if keep[k, j] else 0.0
            # ---- finish
            for j in range(w):
                x = x0 + j
                c = cnt[j]
                out_count[y, x] = c
                if c == 0:
                    out_data[y, x] = np.nan
                    if want_var:
                        out_var[y, x] = np.nan
                    continue
                if method == _M_MEAN:
                    res = acc[j] / sw[j]
                elif method == _M_SUM:
                    res = acc[j]
                else:
                    a = t_wa[j] if clip in _WINDOW_CLIPS else _first_ge(srt, j, nfin[j], lo[j])
                    res = _median_sorted(srt, j, a, a + c)
                out_data[y, x] = res
                if want_var:
                    if has_var:
                        if method == _M_MEAN:
                            var_res = vacc[j] / (sw[j] * sw[j])
                        elif method == _M_SUM:
                            var_res = vacc[j]
                        else:
                            var_res = half_pi * vacc[j] / (np.float64(c) * c)
                    else:
                        s2 = vacc[j] / c
                        if method == _M_MEAN:
                            var_res = s2 * sw2[j] / (sw[j] * sw[j])
                        elif method == _M_SUM:
                            var_res = s2 * sw2[j]
                        else:
                            var_res = half_pi * s2 / c
                    out_var[y, x] = var_res


# ---------------------------------------------------------------------------------------------
# Python entry point
# ---------------------------------------------------------------------------------------------
_EMPTY1 = np.empty(0, np.float64)
_EMPTY3 = np.empty((0, 0, 0), np.float32)
_EMPTY2 = np.empty((0, 0), np.float32)
_EMPTYM = np.empty((0, 0, 0), np.bool_)


def _per_frame(name: str, value: ArrayLike | None, n: int) -> _F64:
    if value is None:
        return _EMPTY1
    arr = np.ascontiguousarray(value, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ConfigError(f"{name} has {arr.shape[0]} values for {n} frames")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite, got {arr}")
    return arr


def pclip_offset(nframes: int, pclip: float) -> int:
    """The signed offset of IRAF's percentile pixel from the median pixel for ``nframes`` frames.

    ``|pclip| >= 1`` is a number of pixels (truncated), otherwise the fraction of the pixels on
    that side of the median pixel (truncated); at least 1, at most that side's count (as IRAF
    reports it in its log, e.g. ``pclip = -0.5`` on 10 frames is ``-2``).

    >>> pclip_offset(10, -0.5), pclip_offset(10, 0.5), pclip_offset(6, -0.5), pclip_offset(7, 2.0)
    (-2, 2, -1, 2)
    """
    side = (nframes - 1) // 2 if pclip < 0 else nframes - 1 - nframes // 2
    mag = abs(pclip)
    k = int(mag) if mag >= 1 else int(mag * side)
    k = max(1, min(k, side))
    return -k if pclip < 0 else k


def _noise_values(cfg: CombineConfig, noise: tuple[float, float, float] | None) -> tuple[float, float, float]:
    """``(rdnoise, gain, snoise)`` as numbers: from ``noise`` or the config's numeric fields."""
    if noise is None:
        values = (cfg.rdnoise, cfg.gain, cfg.snoise)
        if any(isinstance(v, str) for v in values):
            raise ConfigError(
                f"noise parameters {values} name header keywords: they must be resolved to numbers before the kernel"
            )
        noise = (float(values[0]), float(values[1]), float(values[2]))
    rdnoise, gain, snoise = (float(v) for v in noise)
    if not (math.isfinite(rdnoise) and rdnoise >= 0 and math.isfinite(snoise) and snoise >= 0):
        raise ConfigError(f"rdnoise {rdnoise} and snoise {snoise} must be finite numbers >= 0")
    if not (math.isfinite(gain) and gain > 0):
        raise ConfigError(f"gain {gain} must be a finite number > 0")
    return rdnoise, gain, snoise


def grow_offsets(radius: float) -> list[tuple[int, int]]:
    """The offsets ``(dy, dx) != (0, 0)`` with ``dy² + dx² <= radius²`` (IRAF's grow disk).

    >>> len(grow_offsets(1.0)), len(grow_offsets(1.5)), len(grow_offsets(2.0))
    (4, 8, 12)
    """
    r = math.floor(radius)
    r2 = radius * radius
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy or dx) and dy * dy + dx * dx <= r2]


def _combine_grown(
    block: ArrayLike,
    cfg: CombineConfig,
    *,
    scale: ArrayLike | None,
    zero: ArrayLike | None,
    weights: ArrayLike | None,
    variance: ArrayLike | None,
    return_variance: bool,
    return_mask: bool,
    noise: tuple[float, float, float] | None,
) -> BlockResult:
    """``combine_block`` with ``grow``: reject, grow the rejections in each frame, combine again.

    1. The rejection runs as without grow (its mask of rejected values).
    2. The values the rejection itself rejected (not the non-finite ones, nor those outside the
       thresholds) are grown in their frame over :func:`grow_offsets`.
    3. The block is combined again without rejection, the grown values set aside; pixels left
       with no value keep the result of step 1.

    As measured against IRAF imcombine (tests/combine/test_iraf.py): IRAF's help says a grown
    pixel left with fewer than ``nkeep`` values keeps its ungrown value; IRAF itself grows
    regardless of ``nkeep`` and uses the ungrown value only where nothing is left (its
    number-rejected mask then counts every value; ccdask's count is the ungrown one).

    The block is the whole neighbourhood: pixels within ``grow`` of its edges see only the
    rejections inside it (the dask layer adds a halo of ``ceil(grow)`` pixels and crops it).
    """
    data = np.ascontiguousarray(block, dtype=np.float32)
    if data.ndim != 3:
        raise ShapeMismatchError(f"a block must be (N, ty, tx), got shape {data.shape}")
    _, ty, tx = data.shape
    plain = cfg.replace(grow=0.0)
    kw: dict[str, Any] = dict(scale=scale, zero=zero, weights=weights, variance=variance, noise=noise)
    first = combine_block(data, plain, return_variance=return_variance, return_mask=True, **kw)
    assert first.mask is not None
    eligible = np.isfinite(data)
    if cfg.min_clip is not None:
        eligible &= data >= cfg.min_clip
    if cfg.max_clip is not None:
        eligible &= data <= cfg.max_clip
    rejected = first.mask & eligible
    grown = rejected.copy()
    for dy, dx in grow_offsets(cfg.grow):
        ys, yd = (slice(0, ty - dy), slice(dy, ty)) if dy >= 0 else (slice(-dy, ty), slice(0, ty + dy))
        xs, xd = (slice(0, tx - dx), slice(dx, tx)) if dx >= 0 else (slice(-dx, tx), slice(0, tx + dx))
        grown[:, yd, xd] |= rejected[:, ys, xs]
    drop = grown & eligible
    kept = eligible.sum(axis=0) - drop.sum(axis=0)
    fallback = (kept == 0) & (first.count > 0)
    thinned = np.where(drop, np.float32(np.nan), data)
    second = combine_block(
        thinned, plain.replace(clip="none", nkeep=0), return_variance=return_variance, return_mask=True, **kw
    )
    assert second.mask is not None
    out_data = np.where(fallback, first.data, second.data)
    out_count = np.where(fallback, first.count, second.count).astype(np.int16)
    out_var = None
    if return_variance or variance is not None:
        assert first.variance is not None and second.variance is not None
        out_var = np.where(fallback, first.variance, second.variance)
    mask = None
    if return_mask:
        mask = np.where(fallback[None], first.mask, second.mask | ~np.isfinite(data))
    return BlockResult(out_data, out_count, out_var, mask)


def combine_block(
    block: ArrayLike,
    config: CombineConfig | None = None,
    *,
    scale: ArrayLike | None = None,
    zero: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    variance: ArrayLike | None = None,
    return_variance: bool = False,
    return_mask: bool = False,
    noise: tuple[float, float, float] | None = None,
) -> BlockResult:
    """Clip and combine one ``(N, ty, tx)`` block along axis 0 (see the module notes).

    Parameters
    ----------
    block : array_like, shape (N, ty, tx)
        The values (converted to float32; NaN and ±inf are ignored). With ``clip="avsigclip"``
        each row of the block is one of IRAF's lines (its sigma factor is estimated per row):
        pass whole image rows.
    config : CombineConfig, optional
        Method and rejection options (default ``CombineConfig()``). Its ``scale`` field must be
        numeric (or None) here: statistics such as ``"median"`` are resolved by the dask layer.
    scale, zero, weights : array_like (N,), optional
        Per-frame factors/offsets/weights; override the config's numeric fields.
    variance : array_like, shape (N, ty, tx), optional
        Input variance planes, propagated to the result's variance.
    return_variance : bool
        Also compute the variance of the result (always when ``variance`` is given).
    return_mask : bool
        Also return the ``(N, ty, tx)`` rejection mask.
    noise : (rdnoise, gain, snoise), optional
        ``ccdclip``/``crreject`` noise model in numbers; overrides the config's (which must then
        be numbers, not header keywords).

    Returns
    -------
    BlockResult
        ``data`` float32, ``count`` int16, ``variance`` float32 or None, ``mask`` bool or None.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.ones((5, 2, 3), np.float32); stack[2, 0, 0] = 100.0
    >>> res = combine_block(stack)
    >>> float(res.data[0, 0]), int(res.count[0, 0]), int(res.count[1, 1])
    (1.0, 4, 5)
    """
    cfg = CombineConfig() if config is None else config
    if cfg.grow > 0:
        return _combine_grown(
            block,
            cfg,
            scale=scale,
            zero=zero,
            weights=weights,
            variance=variance,
            return_variance=return_variance,
            return_mask=return_mask,
            noise=noise,
        )
    data = np.ascontiguousarray(block, dtype=np.float32)
    if data.ndim != 3:
        raise ShapeMismatchError(f"a block must be (N, ty, tx), got shape {data.shape}")
    n, ty, tx = data.shape
    if n > MAX_FRAMES:
        raise ConfigError(f"combine takes at most {MAX_FRAMES} frames, got {n}")
    if scale is None and isinstance(cfg.scale, tuple):
        scale = cfg.scale
    elif isinstance(cfg.scale, str) and scale is None:
        raise ConfigError(f"scale={cfg.scale!r} must be resolved to factors before the kernel")
    zero = cfg.zero if zero is None else zero
    weights = cfg.weights if weights is None else weights
    sc = _per_frame("scale", scale, n)
    if sc.size and np.any(sc == 0):
        raise ConfigError("scale factors must be non-zero")
    zr = _per_frame("zero", zero, n)
    wt = _per_frame("weights", weights, n)
    if wt.size and cfg.method == "median":
        raise ConfigError("weights apply to method 'mean' or 'sum', not 'median'")
    if variance is not None:
        var = np.ascontiguousarray(variance, dtype=np.float32)
        if var.shape != data.shape:
            raise ShapeMismatchError(f"variance planes {var.shape} do not match the block {data.shape}")
        return_variance = True
    else:
        var = _EMPTY3
    if cfg.clip in SIRIL_CLIPS:
        # Siril's kinds (_siril.py): rejection and mean/sum in one pass; otherwise their rejections
        # marked as NaN in a copy, the rest a combine without rejection (the same numbers)
        from ._siril import combine_siril, reject_block

        if n and variance is None and not return_variance and not return_mask and cfg.method != "median":
            siril_data, siril_count = combine_siril(data, cfg, sc, zr, wt, sorting_network(n))
            return BlockResult(siril_data, siril_count, None, None)
        return combine_block(
            reject_block(data, cfg, sc, zr, sorting_network(n)),
            cfg.replace(clip="none"),
            scale=sc if sc.size else None,
            zero=zr if zr.size else None,
            weights=wt if wt.size else None,
            variance=variance,
            return_variance=return_variance,
            return_mask=return_mask,
        )
    rdnoise, gain, snoise = _noise_values(cfg, noise) if cfg.clip in ("ccdclip", "crreject") else (0.0, 1.0, 0.0)
    out_data = np.empty((ty, tx), np.float32)
    out_count = np.empty((ty, tx), np.int16)
    out_var = np.empty((ty, tx), np.float32) if return_variance else _EMPTY2
    out_mask = np.empty((n, ty, tx), np.bool_) if return_mask else _EMPTYM
    if cfg.clip == "varclip":  # per-value bounds from the variance planes: its own kernel
        if var is _EMPTY3:
            raise ConfigError("clip='varclip' rejects against the input variance planes: pass variance=")
        from ._varclip import varclip_kernel

        if data.size:
            varclip_kernel(
                data,
                var,
                sc,
                zr,
                wt,
                -np.inf if cfg.min_clip is None else cfg.min_clip,
                np.inf if cfg.max_clip is None else cfg.max_clip,
                _METHOD[cfg.method],
                cfg.sigma_lower,
                cfg.sigma_upper,
                -1 if cfg.maxiters is None else cfg.maxiters,
                cfg.mclip,
                cfg.nkeep,
                bool(return_mask),
                out_data,
                out_count,
                out_var,
                out_mask,
            )
    elif data.size:
        _kernel(
            data,
            var,
            sc,
            zr,
            wt,
            sorting_network(n),
            -np.inf if cfg.min_clip is None else cfg.min_clip,
            np.inf if cfg.max_clip is None else cfg.max_clip,
            _CLIP[cfg.clip],
            _METHOD[cfg.method],
            cfg.sigma_lower,
            cfg.sigma_upper,
            -1 if cfg.maxiters is None else cfg.maxiters,
            cfg.mclip if cfg.clip in IRAF_CLIPS else cfg.center == "median",
            cfg.spread == "mad_std",
            cfg.nlow,
            cfg.nhigh,
            cfg.nkeep,
            (rdnoise / gain) ** 2,
            gain,
            snoise,
            pclip_offset(n, cfg.pclip),
            bool(return_variance),
            bool(return_mask),
            out_data,
            out_count,
            out_var,
            out_mask,
        )
    elif n == 0 and ty * tx:
        out_data[...] = np.nan
        out_count[...] = 0
        if return_variance:
            out_var[...] = np.nan
    return BlockResult(out_data, out_count, out_var if return_variance else None, out_mask if return_mask else None)
