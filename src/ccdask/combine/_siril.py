"""Siril's rejection kinds: winsorized sigma clipping, linear-fit clipping and GESD (numba, ``nogil``).

Each pixel's values are rejected from its own ``N`` values only (no neighbours, no block-wide
statistics), so results do not depend on the tiling. :func:`reject_block` marks the rejected values
of a block as NaN; :func:`ccdask.combine._kernels.combine_block` then combines what is left exactly
as it combines any other survivors (``clip="none"``, in frame order, float64 accumulation).

The algorithms are those of Siril (its documentation and ``rejection_float.c``, version 1.0.6),
written here from their definitions; statistics are computed in float64 (Siril computes in
float32 with float64 sums).

Common rules
------------
* the values of a pixel that take part are its finite values after ``min_clip``/``max_clip`` and
  ``scale``/``zero``, sorted by ``(value, frame index)``; Siril's missing value is 0, ccdask's is
  NaN (or ±inf);
* a pixel with at most 2 values is not clipped;
* ``winsorized`` and ``linearfit`` iterate: a pass computes center and spread of the current
  survivors, rejects the values beyond ``sigma_lower``/``sigma_upper`` spreads below/above, and
  the passes go on while a pass rejected something and more than 3 values are left. Siril's
  floor: a pass may reject only while ``n - r > 4`` (``n`` the values entering the pass, ``r``
  every value rejected so far, this pass included), so at most ``max(0, n - r_before - 4)``
  values in a pass. When the floor allows fewer rejections than there are candidates, ccdask
  rejects the candidates farthest from the center (or the line) first, ties in sorted order
  (Siril takes them in the order its array is in: sorted, lowest first, for fewer than 9 values
  and for the linear fit, its quickselect's partial order otherwise — an accident of its
  implementation, not a rule). ``nkeep`` does not apply to these kinds; the floor is their rule;

``winsorized`` (Huber's winsorization, as Siril): ``m`` the median (even count: mean of the middle
two), ``s`` the sample standard deviation (``ddof=1``) of the survivors; a copy ``w`` of them is
winsorized repeatedly, ``w = clip(w, m - 1.5 s, m + 1.5 s)``, ``s = 1.134 × std(w, ddof=1)``,
until ``|s - s_previous| <= 0.0005 s_previous``; values with ``m - v > sigma_lower · s`` or
``v - m > sigma_upper · s`` are rejected.

``linearfit``: the ``n`` sorted survivors ``y_i`` are fitted by least squares with a line
``a + b i`` of their rank ``i = 0 .. n-1``; the spread is the mean absolute residual
``s = mean(|y_i - a - b i|)``; values with ``a + b i - y_i > sigma_lower · s`` or
``y_i - a - b i > sigma_upper · s`` are rejected. (Siril 1.0.6 fits with the rank mean and
rank variance of the *whole stack*, ``(N - 1)/2`` for ``N`` frames, also when fewer values are
left, i.e. after its first rejecting pass or where values are missing: its line is then not the
least-squares line. ccdask fits the values it has; tests/combine/test_siril.py measures the
difference.)

``gesd`` (the generalized extreme studentized deviate test, Rosner 1983): at most
``r = floor(N · gesd_fraction)`` outliers, less the pixel's missing values (as Siril counts them),
and at most ``n - 2``; for ``i = 1 .. r`` the value farthest from the mean of those left (the low
one on a tie) is taken out, with ``R_i = |x - mean| / std(ddof=1)`` and the critical value
``λ_i = (n_i - 1) t / sqrt(n_i (n_i - 2 + t²))``, ``t`` Student's ``t`` quantile at
``1 - gesd_alpha / (2 n_i)`` with ``n_i - 2`` degrees of freedom (``n_i`` the values before the
``i``-th removal); the outliers are the first ``k`` taken out, ``k`` the largest ``i`` with
``R_i > λ_i`` (none if there is none). Siril 1.0.6 differs in two ways: its backward search for
``k`` stops at the second candidate, so it always rejects ``min(2, r)`` values even from a clean
stack; and it marks a high candidate taken after ``c`` low ones at a sorted position ``c`` too
low, so the value it rejects is not the one tested (tests/combine/test_siril.py reproduces
Siril's output from these two rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from numba import njit
from numpy.typing import NDArray

from ._config import SIRIL_CLIPS, CombineConfig

__all__ = ["SIRIL_FLOOR", "gesd_critical_values", "gesd_max_outliers", "reject_block"]

#: Siril's floor: a pass rejects only while the values entering it less all rejected exceed this.
SIRIL_FLOOR = 4
#: Winsorization: clip at this many sigmas, correct the sigma by this factor, stop at this change.
WINSOR_CLIP = 1.5
WINSOR_FACTOR = 1.134
WINSOR_TOLERANCE = 0.0005

_K_WINSORIZED, _K_LINEARFIT, _K_GESD = 1, 2, 3
_KIND = {"winsorized": _K_WINSORIZED, "linearfit": _K_LINEARFIT, "gesd": _K_GESD}

_F = TypeVar("_F", bound=Callable[..., Any])
_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]
_I64 = NDArray[np.int64]
_Bool = NDArray[np.bool_]


def _jit(func: _F) -> _F:
    """``numba.njit`` (nogil, cached, numpy error model: 0/0 is NaN), typed as the Python function."""
    return njit(nogil=True, cache=True, error_model="numpy")(func)


def gesd_max_outliers(nframes: int, fraction: float) -> int:
    """The most outliers GESD tests on ``nframes`` frames: ``floor(nframes * fraction)``.

    >>> gesd_max_outliers(10, 0.3), gesd_max_outliers(24, 0.3), gesd_max_outliers(3, 0.3)
    (3, 7, 0)
    """
    return math.floor(nframes * fraction)


@lru_cache(maxsize=32)
def gesd_critical_values(nframes: int, alpha: float) -> _F64:
    """Rosner's critical values ``λ`` indexed by the sample size ``n`` (``n = 3 .. nframes``; NaN below).

    ``λ(n) = (n - 1) t / sqrt(n (n - 2 + t²))`` with ``t`` the Student ``t`` quantile at
    ``1 - alpha / (2 n)``, ``n - 2`` degrees of freedom. Read-only.

    The value for the whole sample is the two-sided Grubbs test's (table at 5 % for 10 values: 2.290):

    >>> round(float(gesd_critical_values(10, 0.05)[10]), 3)
    2.29
    """
    from scipy.special import stdtrit  # Student's t quantile (scipy.stats would add ~0.7 s of import)

    out = np.full(max(nframes, 2) + 1, np.nan)
    for n in range(3, nframes + 1):
        q = float(stdtrit(n - 2, 1.0 - alpha / (2.0 * n)))
        out[n] = (n - 1) * q / math.sqrt(n * (n - 2 + q * q))
    out.setflags(write=False)
    return out


@_jit
def _sample_std(x: _F64, n: int) -> tuple[float, float]:  # pragma: no cover - compiled
    """Mean and sample standard deviation (``ddof=1``) of ``x[:n]``, ``n >= 2``."""
    acc = 0.0
    for i in range(n):
        acc += x[i]
    mean = acc / n
    ss = 0.0
    for i in range(n):
        d = x[i] - mean
        ss += d * d
    return mean, math.sqrt(ss / (n - 1))


@_jit
def _median_of_sorted(x: _F64, n: int) -> float:  # pragma: no cover - compiled
    h = n // 2
    if n % 2 == 1:
        return x[h]
    return 0.5 * (x[h - 1] + x[h])


@_jit
def _passes(
    kind: int,
    vals: _F64,
    m: int,
    sig_lo: float,
    sig_hi: float,
    rej: _Bool,
    cur: _F64,
    pos: _I64,
    wins: _F64,
    dist: _F64,
    cand: _Bool,
) -> None:  # pragma: no cover - compiled
    """Winsorized or linear-fit passes over the sorted values ``vals[:m]``; ``rej[p]``: rejected."""
    for p in range(m):
        rej[p] = False
    if m <= 2:
        return
    n = m
    for p in range(m):
        cur[p] = vals[p]
        pos[p] = p
    r = 0
    while True:
        ncand = 0
        if kind == _K_WINSORIZED:
            med = _median_of_sorted(cur, n)
            _, s = _sample_std(cur, n)
            for i in range(n):
                wins[i] = cur[i]
            while True:
                lo = med - WINSOR_CLIP * s
                hi = med + WINSOR_CLIP * s
                for i in range(n):
                    wins[i] = min(hi, max(lo, wins[i]))
                s0 = s
                _, sw = _sample_std(wins, n)
                s = WINSOR_FACTOR * sw
                if not (abs(s - s0) > s0 * WINSOR_TOLERANCE):
                    break
            for i in range(n):
                d = cur[i] - med
                c = (-d > s * sig_lo) or (d > s * sig_hi)
                cand[i] = c
                dist[i] = abs(d)
                ncand += 1 if c else 0
        else:
            xm = 0.5 * (n - 1)
            ym = 0.0
            for i in range(n):
                ym += cur[i]
            ym /= n
            sxy = 0.0
            sxx = 0.0
            for i in range(n):
                dx = i - xm
                sxy += dx * (cur[i] - ym)
                sxx += dx * dx
            slope = sxy / sxx
            icpt = ym - slope * xm
            s = 0.0
            for i in range(n):
                s += abs(cur[i] - (icpt + slope * i))
            s /= n
            for i in range(n):
                d = cur[i] - (icpt + slope * i)
                c = (-d > s * sig_lo) or (d > s * sig_hi)
                cand[i] = c
                dist[i] = abs(d)
                ncand += 1 if c else 0
        allowed = n - r - SIRIL_FLOOR
        if allowed < 0:
            allowed = 0
        take = ncand if ncand < allowed else allowed
        if take < ncand:
            # keep only the `take` candidates farthest out (ties: the first in sorted order)
            for i in range(n):
                if cand[i]:
                    farther = 0
                    for q in range(n):
                        if cand[q] and (dist[q] > dist[i] or (dist[q] == dist[i] and q < i)):
                            farther += 1
                    if farther >= take:
                        cand[i] = False
        out = 0
        for i in range(n):
            if cand[i]:
                rej[pos[i]] = True
            else:
                cur[out] = cur[i]
                pos[out] = pos[i]
                out += 1
        r += take
        n = out
        if take == 0 or n <= 3:
            return


@_jit
def _gesd(vals: _F64, m: int, rmax: int, crit: _F64, rej: _Bool, taken: _I64) -> None:  # pragma: no cover - compiled
    """GESD over the sorted values ``vals[:m]`` testing at most ``rmax`` outliers; ``rej[p]``: rejected."""
    for p in range(m):
        rej[p] = False
    if m <= 2:
        return
    if rmax > m - 2:
        rmax = m - 2
    a = 0
    b = m
    nout = 0
    for i in range(rmax):
        size = b - a
        acc = 0.0
        for p in range(a, b):
            acc += vals[p]
        mean = acc / size
        ss = 0.0
        for p in range(a, b):
            d = vals[p] - mean
            ss += d * d
        sd = math.sqrt(ss / (size - 1))
        dlo = mean - vals[a]
        dhi = vals[b - 1] - mean
        if dhi > dlo:
            stat = dhi / sd
            taken[i] = b - 1
            b -= 1
        else:
            stat = dlo / sd
            taken[i] = a
            a += 1
        if stat > crit[size]:
            nout = i + 1
    for i in range(nout):
        rej[taken[i]] = True


#: Pixels of a row gathered at once, frame by frame (sequential reads), into an L1-sized strip.
STRIP = 128


@_jit
def _reject_kernel(
    block: _F32,
    scale: _F64,
    zero: _F64,
    min_clip: float,
    max_clip: float,
    comps: _I64,
    kind: int,
    sig_lo: float,
    sig_hi: float,
    max_out: int,
    crit: _F64,
    out: _F32,
) -> None:  # pragma: no cover - compiled
    """Set ``out[k, y, x]`` (a copy of ``block``) to NaN where the rejection rejects the value.

    Each row is taken in strips of :data:`STRIP` pixels, read frame by frame (sequential reads:
    planes a power of two apart would share cache sets if read pixel by pixel). Each value becomes
    an int64 key ``(order-preserving bits of the float32) << 16 | frame`` (non-finite: the largest
    key), and the keys of the whole strip are sorted at once by the sorting network ``comps``
    (SIMD), which orders every pixel's values by ``(value, frame)``.
    """
    n, ny, nx = block.shape
    has_scale = scale.shape[0] == n
    has_zero = zero.shape[0] == n
    transform = has_scale or has_zero
    has_thr = min_clip > -np.inf or max_clip < np.inf
    ncomp = comps.shape[0]
    strip = np.empty((n, STRIP), np.float32)
    bits = strip.view(np.uint32)
    keys = np.empty((n, STRIP), np.int64)
    dec = np.empty((n, STRIP), np.uint32)
    fdec = dec.view(np.float32)
    nfin = np.zeros(STRIP, np.int64)
    vals = np.empty(n, np.float64)
    rej = np.zeros(n, np.bool_)
    cur = np.empty(n, np.float64)
    pos = np.empty(n, np.int64)
    wins = np.empty(n, np.float64)
    dist = np.empty(n, np.float64)
    cand = np.zeros(n, np.bool_)
    taken = np.empty(n, np.int64)
    nan32 = np.float32(np.nan)
    zero32 = np.float32(0.0)
    last = np.int64(0x7FFFFFFFFFFFFFFF)
    sign = np.uint32(0x80000000)
    for y in range(ny):
        for x0 in range(0, nx, STRIP):
            w = min(STRIP, nx - x0)
            for j in range(w):
                nfin[j] = 0
            for k in range(n):
                s_k = scale[k] if has_scale else 1.0
                z_k = zero[k] if has_zero else 0.0
                for j in range(w):
                    v = block[k, y, x0 + j]
                    if has_thr and not ((v >= min_clip) & (v <= max_clip)):
                        v = nan32
                    if transform:
                        v = np.float32(np.float64(v) * s_k + z_k)
                    strip[k, j] = v + zero32  # -0.0 becomes 0.0: one key per value
                for j in range(w):
                    u = bits[k, j]
                    u = ~u if u & sign else u | sign
                    fin = np.isfinite(strip[k, j])
                    keys[k, j] = (np.int64(u) << 16) | k if fin else last
                    nfin[j] += 1 if fin else 0
            for c in range(ncomp):
                ca = comps[c, 0]
                cb = comps[c, 1]
                for j in range(w):
                    p = keys[ca, j]
                    q = keys[cb, j]
                    keys[ca, j] = min(p, q)
                    keys[cb, j] = max(p, q)
            for k in range(n):
                for j in range(w):
                    u = np.uint32((keys[k, j] >> 16) & 0xFFFFFFFF)
                    dec[k, j] = u ^ sign if u & sign else ~u
            for j in range(w):
                m = nfin[j]
                for p in range(m):
                    vals[p] = np.float64(fdec[p, j])
                if kind == _K_GESD:
                    _gesd(vals, m, max_out - (n - m), crit, rej, taken)
                else:
                    _passes(kind, vals, m, sig_lo, sig_hi, rej, cur, pos, wins, dist, cand)
                for p in range(m):
                    if rej[p]:
                        out[keys[p, j] & 0xFFFF, y, x0 + j] = nan32


def reject_block(
    block: NDArray[np.float32], config: CombineConfig, scale: _F64, zero: _F64, comps: _I64
) -> NDArray[np.float32]:
    """A copy of the ``(N, ty, tx)`` float32 ``block`` with the values Siril's rejection rejects set to NaN.

    ``config.clip`` is one of :data:`ccdask.combine._config.SIRIL_CLIPS`; ``scale``/``zero`` are
    the per-frame factors/offsets (empty arrays: none), applied (with the thresholds) to the values
    the rejection sees, not to the copy, which holds the input values. ``comps``: the comparators
    of a sorting network for ``N`` inputs (:func:`ccdask.combine._kernels.sorting_network`, passed
    in: this module does not import the kernels module, which calls it).

    >>> stack = np.full((6, 1, 1), 0.5, np.float32); stack[:, 0, 0] += np.float32([0, 1, -1, 2, -2, 0]) * 1e-3
    >>> stack[3, 0, 0] = 0.9
    >>> from ccdask.combine._kernels import sorting_network
    >>> cfg = CombineConfig(clip="gesd", gesd_fraction=0.3)
    >>> out = reject_block(stack, cfg, np.empty(0), np.empty(0), sorting_network(6))
    >>> np.isnan(out[:, 0, 0]).tolist()
    [False, False, False, True, False, False]
    """
    if config.clip not in SIRIL_CLIPS:
        raise ValueError(f"reject_block: clip {config.clip!r} is not one of Siril's {SIRIL_CLIPS}")
    data = np.ascontiguousarray(block, dtype=np.float32)
    n = data.shape[0]
    out = data.copy()
    if config.clip == "gesd":
        max_out = gesd_max_outliers(n, config.gesd_fraction)
        crit = gesd_critical_values(n, config.gesd_alpha)
    else:
        max_out = 0
        crit = np.empty(0, np.float64)
    if data.size:
        _reject_kernel(
            data,
            np.ascontiguousarray(scale, dtype=np.float64),
            np.ascontiguousarray(zero, dtype=np.float64),
            -np.inf if config.min_clip is None else config.min_clip,
            np.inf if config.max_clip is None else config.max_clip,
            np.ascontiguousarray(comps, dtype=np.int64),
            _KIND[config.clip],
            config.sigma_lower,
            config.sigma_upper,
            max_out,
            crit,
            out,
        )
    return out
