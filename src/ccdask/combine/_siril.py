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

__all__ = ["SIRIL_FLOOR", "combine_siril", "gesd_critical_values", "gesd_max_outliers", "reject_block"]

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
    r0: int,
) -> None:  # pragma: no cover - compiled
    """Winsorized or linear-fit passes over the sorted values ``vals[:m]``; ``rej[p]``: rejected.

    ``r0``: the values rejected before (by earlier passes, not in ``vals``), for Siril's floor.
    """
    for p in range(m):
        rej[p] = False
    if m <= 2:
        return
    n = m
    for p in range(m):
        cur[p] = vals[p]
        pos[p] = p
    r = r0
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
#: The strip-wise loops go on while at least one pixel in this many still iterates; the rest
#: finish pixel by pixel (from where they are: the same numbers).
PIXEL_SHARE = 8
#: Pixels still winsorizing at or below which the winsorization finishes them one by one.
FEW_PIXELS = 8


@_jit
def _full(w: int, n: int, a: _I64, b: _I64) -> bool:  # pragma: no cover - compiled
    """Every window ``[a[j], b[j])`` is all ``n`` positions (the sweeps need no mask then)."""
    full = True
    for j in range(w):
        full = full and a[j] == 0 and b[j] == n
    return full


@_jit
def _window_mean_std(
    sv: _F64, w: int, a: _I64, b: _I64, mean: _F64, sd: _F64, acc: _F64
) -> None:  # pragma: no cover - compiled
    """Mean and sample standard deviation of the sorted values ``sv[a[j]:b[j], j]`` of each pixel.

    The sums run over the positions in order (outside the window a term is ``+0.0``, which
    leaves a sum unchanged), so each pixel's numbers are those of :func:`_sample_std`.
    """
    n = sv.shape[0]
    full = _full(w, n, a, b)
    for j in range(w):
        acc[j] = 0.0
    if full:
        for p in range(n):
            row = sv[p]
            for j in range(w):
                acc[j] += row[j]
    else:
        for p in range(n):
            row = sv[p]
            for j in range(w):
                acc[j] += row[j] if (p >= a[j]) & (p < b[j]) else 0.0
    for j in range(w):
        mean[j] = acc[j] / (b[j] - a[j])
        acc[j] = 0.0
    _sum_squares(sv, w, a, b, full, mean, acc)
    for j in range(w):
        sd[j] = math.sqrt(acc[j] / (b[j] - a[j] - 1))


@_jit
def _sum_squares(
    sv: _F64, w: int, a: _I64, b: _I64, full: bool, mean: _F64, acc: _F64
) -> None:  # pragma: no cover - compiled
    """``acc[j] +=`` the squared deviations from ``mean[j]`` of the window's values, in order."""
    n = sv.shape[0]
    if full:
        for p in range(n):
            row = sv[p]
            for j in range(w):
                d = row[j] - mean[j]
                acc[j] += d * d
    else:
        for p in range(n):
            row = sv[p]
            for j in range(w):
                d = row[j] - mean[j]
                acc[j] += d * d if (p >= a[j]) & (p < b[j]) else 0.0


@_jit
def _winsor_step(
    wins: _F64, w: int, a: _I64, b: _I64, lo: _F64, hi: _F64, mean: _F64, sd: _F64, acc: _F64
) -> None:  # pragma: no cover - compiled
    """Clip ``wins`` to ``[lo, hi]`` and take mean and sample std of the windows (:func:`_window_mean_std`)."""
    n = wins.shape[0]
    full = _full(w, n, a, b)
    for j in range(w):
        acc[j] = 0.0
    if full:
        for p in range(n):
            row = wins[p]
            for j in range(w):
                v = min(hi[j], max(lo[j], row[j]))
                row[j] = v
                acc[j] += v
    else:
        for p in range(n):
            row = wins[p]
            for j in range(w):
                v = min(hi[j], max(lo[j], row[j]))
                row[j] = v
                acc[j] += v if (p >= a[j]) & (p < b[j]) else 0.0
    for j in range(w):
        mean[j] = acc[j] / (b[j] - a[j])
        acc[j] = 0.0
    _sum_squares(wins, w, a, b, full, mean, acc)
    for j in range(w):
        sd[j] = math.sqrt(acc[j] / (b[j] - a[j] - 1))


@_jit
def _winsor_rest(wins: _F64, q: int, a: int, b: int, med: float, s: float) -> float:  # pragma: no cover - compiled
    """The rest of one pixel's winsorization loop (:func:`_passes`) on ``wins[a:b, q]``: its final sigma."""
    n = b - a
    while True:
        lo = med - WINSOR_CLIP * s
        hi = med + WINSOR_CLIP * s
        for p in range(a, b):
            wins[p, q] = min(hi, max(lo, wins[p, q]))
        s0 = s
        acc = 0.0
        for p in range(a, b):
            acc += wins[p, q]
        mean = acc / n
        ss = 0.0
        for p in range(a, b):
            d = wins[p, q] - mean
            ss += d * d
        s = WINSOR_FACTOR * math.sqrt(ss / (n - 1))
        if not (abs(s - s0) > s0 * WINSOR_TOLERANCE):
            return s


@_jit
def _winsorize(
    sv: _F64,
    w: int,
    ca: _I64,
    cb: _I64,
    med: _F64,
    s: _F64,
    act: _Bool,
    wins: _F64,
    ci: _I64,
    cf: _F64,
    cact: _Bool,
    acc: _F64,
) -> None:  # pragma: no cover - compiled
    """``s[j]``, for the pixels ``act[j]``: the winsorization loop of :func:`_passes` on ``sv[ca[j]:cb[j], j]``.

    The pixels still iterating are packed into the first columns of ``wins`` (again whenever
    half of them have converged), so each sweep runs over those pixels only. ``ci`` (3, S) and
    ``cf`` (6, S): scratch for the packed pixels' index, window, center and sigmas.
    """
    cid = ci[0]
    cla = ci[1]
    clb = ci[2]
    cmed = cf[0]
    cs = cf[1]
    clo = cf[2]
    chi = cf[3]
    cmean = cf[4]
    csw = cf[5]
    width = 0
    for j in range(w):
        if act[j]:
            cid[width] = j
            width += 1
    for q in range(width):
        j = cid[q]
        cla[q] = ca[j]
        clb[q] = cb[j]
        cmed[q] = med[j]
        cs[q] = s[j]
        cact[q] = True
    for p in range(sv.shape[0]):
        src = sv[p]
        dst = wins[p]
        for q in range(width):
            dst[q] = src[cid[q]]
    while width > 0:
        for q in range(width):
            clo[q] = cmed[q] - WINSOR_CLIP * cs[q]
            chi[q] = cmed[q] + WINSOR_CLIP * cs[q]
        _winsor_step(wins, width, cla, clb, clo, chi, cmean, csw, acc)
        nw = 0
        for q in range(width):
            if cact[q]:
                sj = WINSOR_FACTOR * csw[q]
                if not (abs(sj - cs[q]) > cs[q] * WINSOR_TOLERANCE):
                    cact[q] = False
                cs[q] = sj
                s[cid[q]] = sj
                nw += 1 if cact[q] else 0
        if 0 < nw <= FEW_PIXELS:  # pixel by pixel: a sweep over a few lanes costs as much as over many
            for q in range(width):
                if cact[q]:
                    s[cid[q]] = _winsor_rest(wins, q, cla[q], clb[q], cmed[q], cs[q])
            return
        if nw * 2 <= width:
            k = 0
            for q in range(width):
                if cact[q]:
                    if k != q:
                        for p in range(wins.shape[0]):
                            wins[p, k] = wins[p, q]
                        cid[k] = cid[q]
                        cla[k] = cla[q]
                        clb[k] = clb[q]
                        cmed[k] = cmed[q]
                        cs[k] = cs[q]
                        cact[k] = True
                    k += 1
            width = k


@_jit
def _window_tails(
    sv: _F64,
    w: int,
    a: _I64,
    b: _I64,
    center: _F64,
    s: _F64,
    sig_lo: float,
    sig_hi: float,
    nlo: _I64,
    nhi: _I64,
    nc: _I64,
) -> None:  # pragma: no cover - compiled
    """Count the window's values below/above the bounds (``nlo``/``nhi``) and either (``nc``)."""
    for j in range(w):
        nlo[j] = 0
        nhi[j] = 0
        nc[j] = 0
    for p in range(sv.shape[0]):
        row = sv[p]
        for j in range(w):
            d = row[j] - center[j]
            inw = (p >= a[j]) & (p < b[j])
            low = inw & (-d > s[j] * sig_lo)
            high = inw & (d > s[j] * sig_hi)
            nlo[j] += 1 if low else 0
            nhi[j] += 1 if high else 0
            nc[j] += 1 if low | high else 0


@_jit
def _hand_over(w: int, nact: int, act: _Bool, cont: _Bool) -> bool:  # pragma: no cover - compiled
    """Once fewer than one pixel in :data:`PIXEL_SHARE` of a strip is still iterating, those go on
    pixel by pixel (``cont``): True when the strip's passes should stop."""
    if nact * PIXEL_SHARE >= w:
        return False
    for j in range(w):
        cont[j] = cont[j] or act[j]
    return True


@_jit
def _winsorized_strip(
    sv: _F64,
    w: int,
    m: _I64,
    sig_lo: float,
    sig_hi: float,
    act: _Bool,
    a: _I64,
    b: _I64,
    ca: _I64,
    cb: _I64,
    r: _I64,
    cont: _Bool,
    wins: _F64,
    med: _F64,
    mean: _F64,
    s: _F64,
    acc: _F64,
    wact: _Bool,
    nlo: _I64,
    nhi: _I64,
    nc: _I64,
) -> None:  # pragma: no cover - compiled
    """Winsorized passes for the strip's pixels at once; survivors: the sorted window ``[a, b)``.

    Each pass computes on the windows ``[ca, cb)``: a pixel's survivors while it iterates, three
    zeros once it is done (finite arithmetic, results not used). Left to the per-pixel code
    (``cont``, with ``r`` values rejected so far): a pixel whose next pass would meet Siril's
    floor (fewer rejections allowed than candidates) or whose candidates are not two tails, and
    the pixels still iterating once fewer than one in :data:`PIXEL_SHARE` are.
    """
    ci = np.empty((3, sv.shape[1]), np.int64)
    cf = np.empty((6, sv.shape[1]), np.float64)
    nact = 0
    for j in range(w):
        a[j] = 0
        b[j] = m[j]
        r[j] = 0
        cont[j] = False
        act[j] = m[j] > 2
        nact += 1 if act[j] else 0
    while nact > 0:
        if _hand_over(w, nact, act, cont):
            return
        for j in range(w):
            ca[j] = a[j] if act[j] else 0
            cb[j] = b[j] if act[j] else 3
            n = cb[j] - ca[j]
            h = ca[j] + n // 2
            med[j] = sv[h, j] if n % 2 == 1 else 0.5 * (sv[h - 1, j] + sv[h, j])
        _window_mean_std(sv, w, ca, cb, mean, s, acc)
        _winsorize(sv, w, ca, cb, med, s, act, wins, ci, cf, wact, acc)
        _window_tails(sv, w, ca, cb, med, s, sig_lo, sig_hi, nlo, nhi, nc)
        nact = 0
        for j in range(w):
            if not act[j]:
                continue
            n = b[j] - a[j]
            allowed = max(0, n - r[j] - SIRIL_FLOOR)
            if nc[j] > allowed or nc[j] != nlo[j] + nhi[j]:
                cont[j] = True  # this pass again, pixel by pixel
                act[j] = False
                continue
            a[j] += nlo[j]
            b[j] -= nhi[j]
            r[j] += nc[j]
            act[j] = nc[j] > 0 and b[j] - a[j] > 3
            nact += 1 if act[j] else 0


@_jit
def _linearfit_strip(
    sv: _F64,
    w: int,
    m: _I64,
    sig_lo: float,
    sig_hi: float,
    act: _Bool,
    alive: _Bool,
    cand: _Bool,
    cnt: _I64,
    r: _I64,
    cont: _Bool,
    ym: _F64,
    slope: _F64,
    icpt: _F64,
    sxx: _F64,
    s: _F64,
    xi: _F64,
    nc: _I64,
) -> None:  # pragma: no cover - compiled
    """Linear-fit passes for the strip's pixels at once; survivors: ``alive[p, j]`` (sorted positions).

    Each survivor's rank is counted as the positions are walked in order, so every sum is the
    one :func:`_passes` computes over the compacted survivors. ``cont`` and ``r`` as for
    :func:`_winsorized_strip`.
    """
    nmax = sv.shape[0]
    nact = 0
    for p in range(nmax):
        for j in range(w):
            alive[p, j] = p < m[j]
    for j in range(w):
        cnt[j] = m[j]
        r[j] = 0
        cont[j] = False
        act[j] = m[j] > 2
        nact += 1 if act[j] else 0
    while nact > 0:
        if _hand_over(w, nact, act, cont):
            return
        for j in range(w):
            ym[j] = 0.0
            slope[j] = 0.0
            sxx[j] = 0.0
            s[j] = 0.0
            xi[j] = 0.0
            nc[j] = 0
        for p in range(nmax):
            row = sv[p]
            al = alive[p]
            for j in range(w):
                ym[j] += row[j] if al[j] else 0.0
        for j in range(w):
            ym[j] /= cnt[j]
        for p in range(nmax):
            row = sv[p]
            al = alive[p]
            for j in range(w):
                dx = xi[j] - 0.5 * (cnt[j] - 1)
                slope[j] += dx * (row[j] - ym[j]) if al[j] else 0.0
                sxx[j] += dx * dx if al[j] else 0.0
                xi[j] += 1.0 if al[j] else 0.0
        for j in range(w):
            slope[j] = slope[j] / sxx[j]
            icpt[j] = ym[j] - slope[j] * (0.5 * (cnt[j] - 1))
            xi[j] = 0.0
        for p in range(nmax):
            row = sv[p]
            al = alive[p]
            for j in range(w):
                res = abs(row[j] - (icpt[j] + slope[j] * xi[j]))
                s[j] += res if al[j] else 0.0
                xi[j] += 1.0 if al[j] else 0.0
        for j in range(w):
            s[j] /= cnt[j]
            xi[j] = 0.0
        for p in range(nmax):
            row = sv[p]
            al = alive[p]
            cd = cand[p]
            for j in range(w):
                d = row[j] - (icpt[j] + slope[j] * xi[j])
                c = al[j] & act[j] & ((-d > s[j] * sig_lo) | (d > s[j] * sig_hi))
                cd[j] = c
                nc[j] += 1 if c else 0
                xi[j] += 1.0 if al[j] else 0.0
        nact = 0
        for j in range(w):
            if not act[j]:
                continue
            allowed = max(0, cnt[j] - r[j] - SIRIL_FLOOR)
            if nc[j] > allowed:
                cont[j] = True  # this pass again, pixel by pixel
                act[j] = False
                continue
            cnt[j] -= nc[j]
            r[j] += nc[j]
            act[j] = nc[j] > 0 and cnt[j] > 3
            nact += 1 if act[j] else 0
        for p in range(nmax):
            al = alive[p]
            cd = cand[p]
            for j in range(w):
                al[j] = al[j] & (not (cd[j] & (not cont[j])))


@_jit
def _gesd_strip(
    sv: _F64,
    w: int,
    m: _I64,
    nframes: int,
    max_out: int,
    crit: _F64,
    a: _I64,
    b: _I64,
    ka: _I64,
    kb: _I64,
    rmax: _I64,
    mean: _F64,
    sd: _F64,
    acc: _F64,
) -> None:  # pragma: no cover - compiled
    """GESD for the strip's pixels at once; survivors: the sorted window ``[ka, kb)`` (as :func:`_gesd`)."""
    steps = 0
    for j in range(w):
        rm = max_out - (nframes - m[j])
        if rm > m[j] - 2:
            rm = m[j] - 2
        rmax[j] = rm if m[j] > 2 else 0
        steps = max(steps, rmax[j])
        a[j] = 0
        b[j] = m[j]
        ka[j] = 0
        kb[j] = m[j]
    for i in range(steps):
        for j in range(w):
            if i >= rmax[j]:  # done: a window of 3 keeps the arithmetic finite, not used
                a[j] = 0
                b[j] = 3
        _window_mean_std(sv, w, a, b, mean, sd, acc)
        for j in range(w):
            if i >= rmax[j]:
                continue
            size = b[j] - a[j]
            dlo = mean[j] - sv[a[j], j]
            dhi = sv[b[j] - 1, j] - mean[j]
            if dhi > dlo:
                stat = dhi / sd[j]
                b[j] -= 1
            else:
                stat = dlo / sd[j]
                a[j] += 1
            if stat > crit[size]:
                ka[j] = a[j]
                kb[j] = b[j]


@_jit
def _siril_kernel(
    block: _F32,
    scale: _F64,
    zero: _F64,
    weights: _F64,
    min_clip: float,
    max_clip: float,
    comps: _I64,
    kind: int,
    sig_lo: float,
    sig_hi: float,
    max_out: int,
    crit: _F64,
    per_pixel: bool,
    fused: bool,
    method: int,
    out: _F32,
    out_data: _F32,
    out_count: NDArray[np.int16],
) -> None:  # pragma: no cover - compiled
    """Siril's rejection of each pixel's values; rejected values NaN in ``out`` or, ``fused``, the combine.

    Each row is taken in strips of :data:`STRIP` pixels, read frame by frame (sequential reads:
    planes a power of two apart would share cache sets if read pixel by pixel). Each value becomes
    an int64 key ``(order-preserving bits of the float32) << 16 | frame`` (non-finite: the largest
    key), and the keys of the whole strip are sorted at once by the sorting network ``comps``
    (SIMD), which orders every pixel's values by ``(value, frame)``. The rejection then runs for
    the strip's pixels at once (``_*_strip``, loops over pixels inside loops over values), the
    pixels it cannot take (Siril's floor binding, few pixels left iterating) by :func:`_passes`;
    ``per_pixel``: every pixel by :func:`_passes`/:func:`_gesd` (the reference the tests hold the
    strip code to).

    Not ``fused``: ``out`` (a copy of ``block``) gets NaN at the rejected values. ``fused``: the
    survivors are combined as :func:`ccdask.combine._kernels.combine_block` combines a block
    without rejection (``method`` 0 mean, else sum; ``weights`` empty: all 1), into
    ``out_data``/``out_count``.
    """
    n, ny, nx = block.shape
    S = STRIP
    has_scale = scale.shape[0] == n
    has_zero = zero.shape[0] == n
    transform = has_scale or has_zero
    has_thr = min_clip > -np.inf or max_clip < np.inf
    ncomp = comps.shape[0]
    wk = np.ones(n, np.float64)
    if weights.shape[0] == n:
        for k in range(n):
            wk[k] = weights[k]
    strip = np.empty((n, S), np.float32)
    norm = np.empty((n, S), np.float32)
    bits = norm.view(np.uint32)
    keys = np.empty((n, S), np.int64)
    dec = np.empty((n, S), np.uint32)
    fdec = dec.view(np.float32)
    sv = np.zeros((n, S), np.float64)
    wins = np.zeros((n, S), np.float64)
    alive = np.zeros((n, S), np.bool_)
    rejf = np.zeros((n, S), np.bool_)
    nfin = np.zeros(S, np.int64)
    act = np.zeros(S, np.bool_)
    wact = np.zeros(S, np.bool_)
    cont = np.zeros(S, np.bool_)
    cand2 = np.zeros((n, S), np.bool_)
    ia = np.zeros(S, np.int64)
    ib = np.zeros(S, np.int64)
    ic = np.zeros(S, np.int64)
    id_ = np.zeros(S, np.int64)
    ie = np.zeros(S, np.int64)
    ig = np.zeros(S, np.int64)
    ih = np.zeros(S, np.int64)
    ii = np.zeros(S, np.int64)
    f1 = np.zeros(S, np.float64)
    f2 = np.zeros(S, np.float64)
    f3 = np.zeros(S, np.float64)
    f4 = np.zeros(S, np.float64)
    f5 = np.zeros(S, np.float64)
    f6 = np.zeros(S, np.float64)
    # per-pixel scratch (the reference code, and the pixels the strip code leaves)
    vals = np.empty(n, np.float64)
    rej = np.zeros(n, np.bool_)
    cur = np.empty(n, np.float64)
    pos = np.empty(n, np.int64)
    pwins = np.empty(n, np.float64)
    dist = np.empty(n, np.float64)
    cand = np.zeros(n, np.bool_)
    taken = np.empty(n, np.int64)
    idx = np.empty(n, np.int64)
    nan32 = np.float32(np.nan)
    zero32 = np.float32(0.0)
    last = np.int64(0x7FFFFFFFFFFFFFFF)
    sign = np.uint32(0x80000000)
    for y in range(ny):
        for x0 in range(0, nx, S):
            w = min(S, nx - x0)
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
                    strip[k, j] = v
                    norm[k, j] = v + zero32  # -0.0 becomes 0.0: one key per value
                for j in range(w):
                    u = bits[k, j]
                    u = ~u if u & sign else u | sign
                    fin = np.isfinite(norm[k, j])
                    keys[k, j] = (np.int64(u) << 16) | k if fin else last
                    nfin[j] += 1 if fin else 0
            for c in range(ncomp):
                ca = keys[comps[c, 0]]
                cb = keys[comps[c, 1]]
                for j in range(w):
                    p = ca[j]
                    q = cb[j]
                    ca[j] = min(p, q)
                    cb[j] = max(p, q)
            for k in range(n):
                kr = keys[k]
                dr = dec[k]
                for j in range(w):
                    u = np.uint32((kr[j] >> 16) & 0xFFFFFFFF)
                    dr[j] = u ^ sign if u & sign else ~u
                fr = fdec[k]
                sr = sv[k]
                for j in range(w):
                    sr[j] = np.float64(fr[j]) if k < nfin[j] else 0.0
            # ---- the rejection: alive[p, j] for the sorted positions p < nfin[j]
            for j in range(w):
                cont[j] = per_pixel
                ic[j] = 0  # rejected so far (for the pixels the per-pixel code continues)
            if per_pixel:
                for p in range(n):
                    for j in range(w):
                        alive[p, j] = p < nfin[j]
            elif kind == _K_GESD:
                _gesd_strip(sv, w, nfin, n, max_out, crit, ia, ib, ic, id_, ie, f1, f2, f3)
                for p in range(n):
                    for j in range(w):
                        alive[p, j] = (p >= ic[j]) & (p < id_[j])
            elif kind == _K_WINSORIZED:
                _winsorized_strip(
                    sv, w, nfin, sig_lo, sig_hi, act, ia, ib, id_, ie, ic, cont, wins, f1, f2, f3, f4, wact, ig, ih, ii
                )
                for p in range(n):
                    for j in range(w):
                        alive[p, j] = (p >= ia[j]) & (p < ib[j])
            else:
                _linearfit_strip(
                    sv, w, nfin, sig_lo, sig_hi, act, alive, cand2, ia, ic, cont, f1, f2, f3, f4, f5, f6, ig
                )
            for j in range(w):
                if not cont[j]:
                    continue
                # the survivors so far, in sorted order, go on pixel by pixel
                mm = 0
                for p in range(nfin[j]):
                    if alive[p, j]:
                        vals[mm] = sv[p, j]
                        idx[mm] = p
                        mm += 1
                if kind == _K_GESD:
                    _gesd(vals, mm, max_out - (n - mm), crit, rej, taken)
                else:
                    _passes(kind, vals, mm, sig_lo, sig_hi, rej, cur, pos, pwins, dist, cand, ic[j])
                for q in range(mm):
                    alive[idx[q], j] = not rej[q]
            # ---- the rejected values, by frame
            for k in range(n):
                for j in range(w):
                    rejf[k, j] = False
            for p in range(n):
                for j in range(w):
                    if p < nfin[j] and not alive[p, j]:
                        rejf[keys[p, j] & 0xFFFF, j] = True
            if not fused:
                for k in range(n):
                    for j in range(w):
                        if rejf[k, j]:
                            out[k, y, x0 + j] = nan32
                continue
            # ---- combine the survivors (frame order, float64), as combine_block with clip="none"
            for j in range(w):
                ia[j] = 0
                f1[j] = 0.0
                f2[j] = 0.0
            for k in range(n):
                wgt = wk[k]
                src = strip[k]
                rk = rejf[k]
                for j in range(w):
                    v = src[j]
                    kp = np.isfinite(v) & (not rk[j])
                    ia[j] += 1 if kp else 0
                    f1[j] += wgt * np.float64(v) if kp else 0.0
                    f2[j] += wgt if kp else 0.0
            for j in range(w):
                x = x0 + j
                c = ia[j]
                out_count[y, x] = c
                if c == 0:
                    out_data[y, x] = nan32
                elif method == 0:
                    out_data[y, x] = f1[j] / f2[j]
                else:
                    out_data[y, x] = f1[j]


def _kernel_args(config: CombineConfig, n: int) -> tuple[float, float, int, _F64]:
    """Thresholds, the GESD outlier limit and critical values for :func:`_siril_kernel`."""
    if config.clip == "gesd":
        max_out = gesd_max_outliers(n, config.gesd_fraction)
        crit = gesd_critical_values(n, config.gesd_alpha)
    else:
        max_out = 0
        crit = np.empty(0, np.float64)
    lo = -np.inf if config.min_clip is None else config.min_clip
    hi = np.inf if config.max_clip is None else config.max_clip
    return lo, hi, max_out, crit


def _check(config: CombineConfig) -> None:
    if config.clip not in SIRIL_CLIPS:
        raise ValueError(f"reject_block: clip {config.clip!r} is not one of Siril's {SIRIL_CLIPS}")


_EMPTY_F32 = np.empty((0, 0), np.float32)
_EMPTY_I16 = np.empty((0, 0), np.int16)
_EMPTY_W = np.empty(0, np.float64)


def reject_block(
    block: NDArray[np.float32],
    config: CombineConfig,
    scale: _F64,
    zero: _F64,
    comps: _I64,
    *,
    per_pixel: bool = False,
) -> NDArray[np.float32]:
    """A copy of the ``(N, ty, tx)`` float32 ``block`` with the values Siril's rejection rejects set to NaN.

    ``config.clip`` is one of :data:`ccdask.combine._config.SIRIL_CLIPS`; ``scale``/``zero`` are
    the per-frame factors/offsets (empty arrays: none), applied (with the thresholds) to the values
    the rejection sees, not to the copy, which holds the input values. ``comps``: the comparators
    of a sorting network for ``N`` inputs (:func:`ccdask.combine._kernels.sorting_network`, passed
    in: this module does not import the kernels module, which calls it). ``per_pixel``: reject
    pixel by pixel (the reference the strip-wise code is tested against; same results, slower).

    >>> stack = np.full((6, 1, 1), 0.5, np.float32); stack[:, 0, 0] += np.float32([0, 1, -1, 2, -2, 0]) * 1e-3
    >>> stack[3, 0, 0] = 0.9
    >>> from ccdask.combine._kernels import sorting_network
    >>> cfg = CombineConfig(clip="gesd", gesd_fraction=0.3)
    >>> out = reject_block(stack, cfg, np.empty(0), np.empty(0), sorting_network(6))
    >>> np.isnan(out[:, 0, 0]).tolist()
    [False, False, False, True, False, False]
    """
    _check(config)
    data = np.ascontiguousarray(block, dtype=np.float32)
    n = data.shape[0]
    out = data.copy()
    lo, hi, max_out, crit = _kernel_args(config, n)
    if data.size:
        _siril_kernel(
            data,
            np.ascontiguousarray(scale, dtype=np.float64),
            np.ascontiguousarray(zero, dtype=np.float64),
            _EMPTY_W,
            lo,
            hi,
            np.ascontiguousarray(comps, dtype=np.int64),
            _KIND[config.clip],
            config.sigma_lower,
            config.sigma_upper,
            max_out,
            crit,
            per_pixel,
            False,
            0,
            out,
            _EMPTY_F32,
            _EMPTY_I16,
        )
    return out


def combine_siril(
    block: NDArray[np.float32],
    config: CombineConfig,
    scale: _F64,
    zero: _F64,
    weights: _F64,
    comps: _I64,
    *,
    per_pixel: bool = False,
) -> tuple[NDArray[np.float32], NDArray[np.int16]]:
    """Siril's rejection and the mean (or sum) of the survivors of an ``(N, ty, tx)`` block, in one pass.

    The same numbers as :func:`reject_block` followed by
    :func:`ccdask.combine._kernels.combine_block` with ``clip="none"`` (float64 accumulation in
    frame order, weighted by ``weights``; empty arrays: none), without the second copy of the
    block and the second pass. ``config.method`` is ``mean`` or ``sum``; ``N >= 1``. Returns the
    combined ``(ty, tx)`` float32 values (NaN where nothing survives) and the int16 counts.

    >>> stack = np.full((6, 1, 2), 0.5, np.float32); stack[:, 0, 0] += np.float32([0, 1, -1, 2, -2, 0]) * 1e-3
    >>> stack[3, 0, 0] = 0.9
    >>> from ccdask.combine._kernels import sorting_network
    >>> cfg = CombineConfig(clip="gesd", gesd_fraction=0.3)
    >>> data, count = combine_siril(stack, cfg, np.empty(0), np.empty(0), np.empty(0), sorting_network(6))
    >>> count.tolist(), round(float(data[0, 0]), 4)
    ([[5, 6]], 0.4996)
    """
    _check(config)
    if config.method not in ("mean", "sum"):
        raise ValueError(f"combine_siril: method {config.method!r} is not 'mean' or 'sum'")
    data = np.ascontiguousarray(block, dtype=np.float32)
    n, ty, tx = data.shape
    if n == 0:
        raise ValueError("combine_siril: no frames")
    out_data = np.empty((ty, tx), np.float32)
    out_count = np.empty((ty, tx), np.int16)
    lo, hi, max_out, crit = _kernel_args(config, n)
    if data.size:
        _siril_kernel(
            data,
            np.ascontiguousarray(scale, dtype=np.float64),
            np.ascontiguousarray(zero, dtype=np.float64),
            np.ascontiguousarray(weights, dtype=np.float64),
            lo,
            hi,
            np.ascontiguousarray(comps, dtype=np.int64),
            _KIND[config.clip],
            config.sigma_lower,
            config.sigma_upper,
            max_out,
            crit,
            per_pixel,
            True,
            0 if config.method == "mean" else 2,
            data,
            out_data,
            out_count,
        )
    return out_data, out_count
