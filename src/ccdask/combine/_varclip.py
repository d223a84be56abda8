"""``varclip``: reject the values that deviate from the center by more than their own noise.

The rejection of DRAGONS' ``stackFrames`` (``reject_method="varclip"``), defined there as sigma
clipping where the variance plane of each input, rather than the scatter of the stack, says how
far a value may lie from the center. At one pixel, with ``x_i`` the (scaled) values and ``v_i``
their variances (the input variance times ``scale_i²``):

1. the survivors start as the values that take part (finite, inside the thresholds, a finite
   variance ``>= 0``, not masked);
2. each iteration computes the center ``c`` of the survivors: their median in the first
   iteration, then the median again (``mclip=True``) or their mean (``mclip=False``);
3. it rejects every survivor with ``x_i < c - sigma_lower sqrt(v_i)`` or
   ``x_i > c + sigma_upper sqrt(v_i)``; a rejected value stays rejected;
4. it stops when an iteration rejects nothing, after ``maxiters`` iterations (``None``: until
   nothing changes), or (ccdask's ``nkeep``, which DRAGONS does not have) when an iteration
   would leave fewer than ``nkeep`` survivors: that iteration is not applied.

The survivors are combined as the other kinds are (``mean`` weighted, ``median`` with the mean of
the middle two, ``sum``) and the input variance is propagated over them: ``sum(w² v)/sum(w)²``
for the mean, ``sum(w² v)`` for the sum and ``π/2 · sum(v)/n²`` for the median. The median is
the exact median of the survivors in float64 (DRAGONS computes it in float32).

One pixel is processed at a time (``N`` values, an insertion sort for the median): ``varclip``
is not one of the vectorised strip kernels of :mod:`ccdask.combine._kernels`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["varclip_kernel"]

_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]
_Bool = NDArray[np.bool_]

_M_MEAN, _M_MEDIAN, _M_SUM = 0, 1, 2
_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    """``numba.njit`` with the options of :mod:`ccdask.combine._kernels` (which imports this module)."""
    return njit(nogil=True, cache=True, error_model="numpy")(func)


@_jit
def _median_of(x: _F64, keep: _Bool, n: int, tmp: _F64) -> float:  # pragma: no cover - compiled
    """Median (mean of the middle two for an even count) of ``x[k]`` where ``keep[k]``."""
    m = 0
    for k in range(n):
        if keep[k]:
            v = x[k]
            i = m
            while i > 0 and tmp[i - 1] > v:
                tmp[i] = tmp[i - 1]
                i -= 1
            tmp[i] = v
            m += 1
    if m == 0:
        return np.nan
    h = m // 2
    if m % 2 == 1:
        return tmp[h]
    return 0.5 * (tmp[h - 1] + tmp[h])


@_jit
def varclip_kernel(
    block: _F32,
    var: _F32,
    scale: _F64,
    zero: _F64,
    weights: _F64,
    min_clip: float,
    max_clip: float,
    method: int,
    sig_lo: float,
    sig_hi: float,
    maxiters: int,
    mclip: bool,
    nkeep: int,
    want_mask: bool,
    out_data: _F32,
    out_count: NDArray[np.int16],
    out_var: _F32,
    out_mask: _Bool,
) -> None:  # pragma: no cover - compiled
    """Clip every pixel of ``block`` (``(N, ty, tx)``) against its variance ``var`` and combine.

    ``scale``/``zero``/``weights`` are per frame (empty: none); ``maxiters < 0`` iterates until
    nothing changes. Values are transformed as in the other kernels,
    ``float32(float64(v) * scale + zero)``, after the thresholds.
    """
    n, ny, nx = block.shape
    has_scale = scale.shape[0] == n
    has_zero = zero.shape[0] == n
    has_w = weights.shape[0] == n
    x = np.empty(n, np.float64)
    v = np.empty(n, np.float64)
    sd = np.empty(n, np.float64)
    keep = np.empty(n, np.bool_)
    trial = np.empty(n, np.bool_)
    tmp = np.empty(n, np.float64)
    half_pi = 0.5 * np.pi
    for y in range(ny):
        for xx in range(nx):
            nk = 0
            for k in range(n):
                val = block[k, y, xx]
                s = scale[k] if has_scale else 1.0
                ok = (val >= min_clip) & (val <= max_clip) & np.isfinite(val)
                if has_scale or has_zero:
                    val = np.float32(np.float64(val) * s + (zero[k] if has_zero else 0.0))
                vk = np.float64(var[k, y, xx]) * (s * s)
                ok = ok & np.isfinite(val) & np.isfinite(vk) & (vk >= 0.0)
                x[k] = np.float64(val)
                v[k] = vk
                sd[k] = np.sqrt(vk) if ok else 0.0
                keep[k] = ok
                nk += 1 if ok else 0
            # ---- iterate
            it = 0
            first = True
            while nk > 0 and (maxiters < 0 or it < maxiters):
                if first or mclip:
                    c = _median_of(x, keep, n, tmp)
                else:
                    acc = 0.0
                    for k in range(n):
                        acc += x[k] if keep[k] else 0.0
                    c = acc / nk
                newk = 0
                for k in range(n):
                    t = keep[k] and not ((x[k] < c - sig_lo * sd[k]) or (x[k] > c + sig_hi * sd[k]))
                    trial[k] = t
                    newk += 1 if t else 0
                if newk == nk or newk < nkeep:
                    break
                for k in range(n):
                    keep[k] = trial[k]
                nk = newk
                first = False
                it += 1
            # ---- combine the survivors
            out_count[y, xx] = nk
            if want_mask:
                for k in range(n):
                    out_mask[k, y, xx] = not keep[k]
            if nk == 0:
                out_data[y, xx] = np.nan
                out_var[y, xx] = np.nan
                continue
            res: float
            var_res: float
            if method == _M_MEDIAN:
                res = _median_of(x, keep, n, tmp)
                sv = 0.0
                for k in range(n):
                    sv += v[k] if keep[k] else 0.0
                var_res = half_pi * sv / (np.float64(nk) * nk)
            else:
                acc = 0.0
                sw = 0.0
                sv = 0.0
                for k in range(n):
                    if keep[k]:
                        wk = weights[k] if has_w else 1.0
                        acc += wk * x[k]
                        sw += wk
                        sv += wk * wk * v[k]
                if method == _M_MEAN:
                    res = acc / sw
                    var_res = sv / (sw * sw)
                else:
                    res = acc
                    var_res = sv
            out_data[y, xx] = res
            out_var[y, xx] = var_res
