"""The photon-transfer curve: gain, read noise, turn-off (full well) and linearity per amplifier.

From pairs of flats at several levels (the two flats of a pair equally exposed) and two or more
biases, per amplifier, on raw ADU:

- each frame's level is the clipped mean of its data section minus that of its serial overscan
  (the overscan follows the frame's bias offset); the signal ``S`` of a pair is the mean of its
  two flats' levels minus the biases' mean level;
- the pair's variance ``V`` (ADU² per frame, read noise included) is that of
  ``(F1 - b) - r (F2 - b)`` divided by ``1 + r²`` (``r`` the level ratio of the two flats: the
  flat-field pattern cancels), each readout line's mean removed first, with the clipped
  statistics of :mod:`ccdask.calibrate._gainpairs`;
- the biases give the read noise ``RN = sqrt(var(B1 - B2) / 2)`` (ADU; averaged over consecutive
  bias pairs when there are more);
- the **turn-off** is the signal of the pair of largest variance: above it, pixels reach their
  full well (or the ADC's limit), their charge stops growing and the variance collapses. It is
  reported in ADU above the bias, in raw ADU (what the profile's ``saturate`` means) and in
  electrons (the full well). When the variance still grows at the brightest pair, the turn-off
  was not reached;
- the **gain** is the weighted least-squares slope of the photon variance ``V - RN²`` against
  ``S`` through the origin, ``V - RN² = S / G``, over the pairs below ``fit_fraction`` of the
  turn-off (all pairs when it was not reached). Each point's weight is that of a variance of
  ``n`` pixels, ``Var(V) = 2 V² / n``; the error is the fit's, scaled up by the square root of
  the reduced chi-square when that exceeds one;
- the **linearity**: ``S`` against exposure time over the same pairs, fitted by ``S = a t``
  (the residuals, in per cent, are the linearity residual) and by ``S = a t + b t²``, whose
  ``beta = b / a²`` is the curve ``m = s + beta s²`` of :mod:`ccdask.simulate` and
  ``linearity.file`` (its inverse's series ``[-beta, 2 beta²]`` corrects it).

:func:`ptc_from_files` reads raw FITS files (every chip), :func:`ptc_from_arrays` takes arrays;
:func:`write_profile_snippet` writes the per-amplifier ``gain``, ``rdnoise`` and ``saturate``
as ``[[layout.amplifiers]]`` tables of a profile, :func:`write_linearity` a ``linearity.file``,
:func:`plot_ptc` the curves as a PNG.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeMismatchError
from ..profiles._layout import ChipLayout
from ..utils import MAD_TO_SIGMA, atomic_write_text
from ..utils._atomic import atomic_path
from ._gainpairs import _clipped_mean, _clipped_var

__all__ = [
    "AmpPtc",
    "PtcPoint",
    "PtcRun",
    "plot_ptc",
    "ptc_from_arrays",
    "ptc_from_files",
    "ptc_lines",
    "write_linearity",
    "write_profile_snippet",
]


@dataclass(frozen=True)
class PtcPoint:
    """One pair of flats of one amplifier."""

    exptime: float
    signal: float  #: ADU above the bias
    variance: float  #: ADU² per frame, read noise included
    variance_err: float
    npix: int
    ratio: float


@dataclass(frozen=True)
class AmpPtc:
    """The photon-transfer curve of one amplifier and what it gives."""

    chip: str
    amp: str
    points: tuple[PtcPoint, ...]
    gain: float  #: e-/ADU
    gain_err: float
    read_noise: float  #: e-
    read_noise_err: float
    read_noise_adu: float
    bias_level: float  #: raw ADU of the biases' data section
    turnoff: float | None  #: ADU above the bias; None when not reached
    nfit: int  #: pairs in the gain and linearity fits
    linear_slope: float  #: ADU/s
    linearity_residual: float  #: largest |S - a t| / (a t) of the fitted pairs, per cent
    beta: float  #: 1/ADU, m = s + beta s²
    beta_err: float
    datasec: str = ""
    biassec: str | None = None
    overscan_axis: str | None = None

    @property
    def turnoff_raw(self) -> float | None:
        """The turn-off in raw ADU (the profile's ``saturate``)."""
        return None if self.turnoff is None else self.turnoff + self.bias_level

    @property
    def full_well(self) -> float | None:
        """The turn-off in electrons."""
        return None if self.turnoff is None else self.turnoff * self.gain


def _level(frame: np.ndarray, data: tuple[slice, slice], over: tuple[slice, slice] | None, sigma: float) -> float:
    m, _ = _clipped_mean(frame[data], sigma, 10)
    if over is not None:
        m -= _clipped_mean(frame[over], sigma, 10)[0]
    return m


def _typical(x: np.ndarray, sigma: float, maxiters: int = 10) -> np.ndarray:
    """Pixels within ``sigma`` of the mean, iteratively (the first pass about the median with the
    MAD's sigma), as :func:`~ccdask.calibrate._gainpairs._clipped_mean` keeps them."""
    med = float(np.median(x))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(x - med)))
    keep = np.abs(x - med) <= sigma * spread if spread > 0 else np.ones(x.shape, bool)
    for _ in range(maxiters):
        std = float(x[keep].std(ddof=1)) if keep.sum() > 1 else 0.0
        new = np.abs(x - float(x[keep].mean())) <= sigma * std if std > 0 else keep
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


def _fit_through_origin(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Slope of ``y = k x`` by weighted least squares and its error (scaled by sqrt(chi2/dof) > 1)."""
    sxx = float(np.sum(w * x * x))
    k = float(np.sum(w * x * y)) / sxx
    err = 1.0 / math.sqrt(sxx)
    if x.size > 1:
        chi2 = float(np.sum(w * (y - k * x) ** 2)) / (x.size - 1)
        err *= math.sqrt(max(1.0, chi2))
    return k, err


def _amp_ptc(
    chip: str,
    amp: Any,
    pairs: Sequence[tuple[np.ndarray, np.ndarray, float]],
    biases: Sequence[np.ndarray],
    *,
    sigma: float,
    fit_fraction: float,
) -> AmpPtc:
    data = amp.datasec.normalized().slices if amp is not None else (slice(None), slice(None))
    over = amp.biassec.normalized().slices if amp is not None and amp.biassec is not None else None
    axis = amp.overscan_axis if amp is not None else None
    lines = 1 if axis == "parallel" else 0
    name = amp.name if amp is not None else "-"
    bias_levels = [_level(b, data, over, sigma) for b in biases]
    bias = float(np.mean(bias_levels))
    bias_raw = float(np.mean([_clipped_mean(b[data], sigma, 10)[0] for b in biases]))
    bvars = [
        _clipped_var(b1[data].astype(np.float64) - b2[data].astype(np.float64), sigma, 10, lines)
        for b1, b2 in itertools.pairwise(biases)
    ]
    var_b = float(np.mean([v for v, _ in bvars]))
    nb = sum(n for _, n in bvars)
    rn_adu = math.sqrt(var_b / 2.0)

    points = []
    for f1, f2, t in pairs:
        cut1 = f1[data].astype(np.float64)
        cut2 = f2[data].astype(np.float64)
        if over is not None:  # each frame's own offset, so that r scales the signal only
            cut1 -= _clipped_mean(f1[over], sigma, 10)[0]
            cut2 -= _clipped_mean(f2[over], sigma, 10)[0]
        # one set of pixels for the levels and the variance: dead, hot or saturated-early pixels
        # outlying in the pair's mean leave both (kept in the variance only, they would bias it)
        keep = _typical(0.5 * (cut1 + cut2), sigma)
        s1 = float(cut1[keep].mean()) - bias
        s2 = float(cut2[keep].mean()) - bias
        if not (s1 > 0 and s2 > 0):
            raise ConfigError(
                f"chip {chip}, amplifier {name}: a flat pair of {t:g} s is not above the bias "
                f"(levels {s1:.1f} and {s2:.1f} ADU above it)"
            )
        r = s1 / s2
        diff = np.where(keep, cut1 - r * cut2, np.nan)
        var_f, n_f = _clipped_var(diff, sigma, 10, lines)
        v = var_f / (1.0 + r * r)
        points.append(PtcPoint(float(t), 0.5 * (s1 + s2), v, v * math.sqrt(2.0 / n_f), n_f, r))
    points.sort(key=lambda p: (p.signal, p.exptime))
    if len(points) < 3:
        raise ConfigError(f"chip {chip}, amplifier {name}: a photon-transfer curve needs at least 3 flat pairs")

    peak = int(np.argmax([p.variance for p in points]))
    turnoff = points[peak].signal if peak < len(points) - 1 else None
    limit = fit_fraction * turnoff if turnoff is not None else math.inf
    fit = [p for p in points if p.signal <= limit]
    if len(fit) < 3:
        raise ConfigError(
            f"chip {chip}, amplifier {name}: fewer than 3 flat pairs below {fit_fraction:g} of the turn-off "
            f"({turnoff:.0f} ADU); add fainter pairs"
        )
    s = np.array([p.signal for p in fit])
    photon = np.array([p.variance for p in fit]) - rn_adu**2
    w = 1.0 / np.array([p.variance_err for p in fit]) ** 2
    inv_gain, inv_err = _fit_through_origin(s, photon, w)
    if not inv_gain > 0:
        raise ConfigError(f"chip {chip}, amplifier {name}: the variance does not grow with the signal")
    gain = 1.0 / inv_gain
    gain_err = gain * inv_err / inv_gain
    rn = gain * rn_adu
    rn_err = rn * math.sqrt((gain_err / gain) ** 2 + 1.0 / (2.0 * max(nb, 1)))

    times = np.array([p.exptime for p in fit])
    if not np.all(times > 0):
        raise ConfigError(f"chip {chip}, amplifier {name}: every flat needs a positive exposure time")
    ws = 1.0 / s**2  # relative residuals
    a, _ = _fit_through_origin(times, s, ws)
    residual = float(np.max(np.abs(s - a * times) / (a * times))) * 100.0
    design = np.stack([times, times * times], axis=1) * np.sqrt(ws)[:, None]
    coef, *_ = np.linalg.lstsq(design, s * np.sqrt(ws), rcond=None)
    a2, b2 = (float(c) for c in coef)
    dof = max(len(fit) - 2, 1)
    resid = s * np.sqrt(ws) - design @ coef
    cov = np.linalg.inv(design.T @ design) * max(float(resid @ resid) / dof, 0.0)
    beta = b2 / a2**2
    beta_err = math.sqrt(cov[1, 1] / a2**4 + 4.0 * b2**2 * cov[0, 0] / a2**6 - 4.0 * b2 * cov[0, 1] / a2**5)
    return AmpPtc(
        chip=chip,
        amp=name,
        points=tuple(points),
        gain=gain,
        gain_err=gain_err,
        read_noise=rn,
        read_noise_err=rn_err,
        read_noise_adu=rn_adu,
        bias_level=bias_raw,
        turnoff=turnoff,
        nfit=len(fit),
        linear_slope=a,
        linearity_residual=residual,
        beta=beta,
        beta_err=beta_err,
        datasec=str(amp.datasec) if amp is not None else "",
        biassec=str(amp.biassec) if amp is not None and amp.biassec is not None else None,
        overscan_axis=axis,
    )


def ptc_from_arrays(
    pairs: Sequence[tuple[Any, Any, float]],
    biases: Sequence[Any],
    *,
    layout: ChipLayout | None = None,
    chip: str | None = None,
    sigma: float = 5.0,
    fit_fraction: float = 0.8,
) -> list[AmpPtc]:
    """The photon-transfer curve of one chip, per amplifier.

    Parameters
    ----------
    pairs : sequence of (flat1, flat2, exptime)
        Raw flats (ADU, overscan included when a layout is given), the two of a pair equally
        exposed, and their exposure time (s).
    biases : sequence of arrays
        At least two raw biases.
    layout : ChipLayout, optional
        The chip's amplifiers (each measured on its data section, levels taken against its serial
        overscan); without it the whole array is one amplifier ``"-"``.
    chip : str, optional
        Name for the results (default the layout's).
    sigma : float
        Clipping threshold (robust sigma) of the means and variances.
    fit_fraction : float
        The gain and linearity fits use the pairs whose signal is at most this fraction of the
        turn-off.

    Returns
    -------
    list of AmpPtc
    """
    if len(biases) < 2:
        raise ConfigError("ptc: give at least two biases (the read noise comes from their difference)")
    if not 0 < fit_fraction <= 1:
        raise ConfigError(f"ptc: fit_fraction must lie in (0, 1], got {fit_fraction!r}")
    arrays = [np.asarray(b) for b in biases]
    flats = [(np.asarray(f1), np.asarray(f2), float(t)) for f1, f2, t in pairs]
    shapes = {a.shape for a in arrays} | {f.shape for f1, f2, _ in flats for f in (f1, f2)}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"ptc: the frames differ in shape: {sorted(shapes)}")
    if layout is not None and tuple(layout.raw_shape) != shapes.pop():
        raise ShapeMismatchError(f"chip {layout.name}: frames do not match the layout's raw shape {layout.raw_shape}")
    label = chip or (layout.name if layout is not None else "chip")
    amps = list(layout.amplifiers) if layout is not None else [None]
    return [_amp_ptc(label, a, flats, arrays, sigma=sigma, fit_fraction=fit_fraction) for a in amps]


@dataclass(frozen=True)
class PtcRun:
    """What :func:`ptc_from_files` measured and from what."""

    amplifiers: tuple[AmpPtc, ...]
    pairs: tuple[tuple[str, str, float], ...]  #: (flat 1, flat 2, exposure time)
    biases: tuple[str, ...]
    skipped: tuple[str, ...]  #: flats without a second flat of their exposure time, and other frames


def ptc_from_files(
    raw: Sequence[str | os.PathLike[str]],
    *,
    profile: str | None = None,
    sigma: float = 5.0,
    fit_fraction: float = 0.8,
) -> PtcRun:
    """The photon-transfer curve of every chip and amplifier from raw FITS files.

    The catalogue sorts the files into biases and flats (other frames are skipped); the flats
    are paired by exposure time: the flats of one exposure time, in the order given, make
    consecutive pairs (a flat left without a partner is skipped). Layouts and exposure times
    come from the headers through the instrument profile (detected when not given).
    """
    from ._files import entries_by_chip, read_chip

    cats = {os.fspath(p): entries_by_chip([p], profile=profile) for p in raw}
    first = {p: next(iter(c.values()))[0] if c else None for p, c in cats.items()}
    biases = [p for p, e in first.items() if e is not None and e.imagetyp == "bias"]
    flats = [p for p, e in first.items() if e is not None and e.imagetyp == "flat"]
    skipped = [p for p in cats if p not in biases and p not in flats]
    if len(biases) < 2:
        raise ConfigError(f"ptc: {len(biases)} bias(es) among the files; give at least two (the read noise)")
    by_time: dict[float, list[str]] = {}
    for p in flats:
        head = first[p]
        assert head is not None
        t = head.exptime
        if t is None:
            raise ConfigError(f"{p}: no exposure time (needed to pair the flats and fit the linearity)")
        by_time.setdefault(float(t), []).append(p)
    pair_files = []
    for t, names in sorted(by_time.items()):
        pair_files += [(names[i], names[i + 1], t) for i in range(0, len(names) - 1, 2)]
        if len(names) % 2:
            skipped.append(names[-1])
    if len(pair_files) < 3:
        raise ConfigError(f"ptc: {len(pair_files)} pair(s) of flats of equal exposure time; at least 3 are needed")
    out: list[AmpPtc] = []
    for chip, (entry, *_) in cats[pair_files[0][0]].items():

        def load(path: str, _chip: str = chip) -> np.ndarray:
            if _chip not in cats[path]:
                raise ConfigError(f"{path}: no chip {_chip!r}")
            return read_chip(cats[path][_chip][0])

        pairs = [(load(a), load(b), t) for a, b, t in pair_files]
        out += ptc_from_arrays(
            pairs,
            [load(b) for b in biases],
            layout=entry.layout,
            chip=entry.chip,
            sigma=sigma,
            fit_fraction=fit_fraction,
        )
    return PtcRun(tuple(out), tuple(pair_files), tuple(biases), tuple(skipped))


PTC_HEADER = (
    f"{'chip':<8} {'amp':<4} {'gain':>8} {'+/-':>7} {'rdnoise':>8} {'+/-':>6} {'turn-off':>9} {'saturate':>9} "
    f"{'full well':>10} {'lin.res':>7} {'beta':>11} {'+/-':>9} {'pairs':>5}"
)
PTC_UNITS = (
    f"{'':<8} {'':<4} {'e-/ADU':>8} {'':>7} {'e-':>8} {'':>6} {'ADU':>9} {'raw ADU':>9} {'e-':>10} {'%':>7} "
    f"{'1/ADU':>11} {'':>9} {'fit':>5}"
)


def ptc_lines(results: Sequence[AmpPtc]) -> list[str]:
    """The printable table: a header, units, one line per amplifier."""
    lines = [PTC_HEADER, PTC_UNITS]
    for r in results:
        to = "-" if r.turnoff is None else f"{r.turnoff:.0f}"
        sat = "-" if r.turnoff_raw is None else f"{r.turnoff_raw:.0f}"
        fw = "-" if r.full_well is None else f"{r.full_well:.0f}"
        lines.append(
            f"{r.chip:<8} {r.amp:<4} {r.gain:>8.4f} {r.gain_err:>7.4f} {r.read_noise:>8.3f} {r.read_noise_err:>6.3f} "
            f"{to:>9} {sat:>9} {fw:>10} {r.linearity_residual:>7.3f} {r.beta:>11.3e} {r.beta_err:>9.1e} {r.nfit:>5d}"
        )
    return lines


def write_profile_snippet(path: str | os.PathLike[str], results: Sequence[AmpPtc], note: str = "") -> Path:
    """Write the amplifiers' ``gain``, ``rdnoise`` and ``saturate`` (the turn-off, raw ADU) as the
    ``[[layout.amplifiers]]`` tables of an instrument profile with ``source = "profile"``, one
    set per chip (a profile's layout is every chip's: keep the chip's own, or their mean)."""
    lines = ["# ccdask ptc: photon-transfer curve" + (f" ({note})" if note else ""), ""]
    lines += ["[layout]", 'source = "profile"', ""]
    first = results[0].chip if results else None
    for r in results:
        table = ["[[layout.amplifiers]]", f'name = "{r.amp}"']
        if r.datasec:
            table.append(f'datasec = "{r.datasec}"')
        if r.biassec:
            table.append(f'biassec = "{r.biassec}"')
        if r.overscan_axis:
            table.append(f'overscan_axis = "{r.overscan_axis}"')
        table.append(f"gain = {r.gain:.5g}  # +/- {r.gain_err:.2g} e-/ADU")
        table.append(f"rdnoise = {r.read_noise:.4g}  # +/- {r.read_noise_err:.2g} e-")
        if r.turnoff_raw is not None:
            table.append(f"saturate = {math.floor(r.turnoff_raw)}  # turn-off; full well {r.full_well:.0f} e-")
        # a profile's layout is every chip's: the first chip's tables are live, the others' commented
        lines.append(f"# chip {r.chip}, amplifier {r.amp}")
        lines += table if r.chip == first else [f"# {x}" for x in table]
        lines.append("")
    return atomic_write_text(path, "\n".join(lines))


def write_linearity(path: str | os.PathLike[str], results: Sequence[AmpPtc], note: str = "") -> Path:
    """Write a ``linearity.file`` correcting each amplifier's measured ``beta``: the inverse's
    series ``t = m - beta m² + 2 beta² m³``."""
    lines = ["# ccdask ptc: nonlinearity m = s + beta s^2 per amplifier" + (f" ({note})" if note else ""), ""]
    for r in results:
        lines += [
            "[[linearity]]",
            f'chip = "{r.chip}"',
            f'amp = "{r.amp}"',
            f"coefficients = [{-r.beta:.6e}, {2.0 * r.beta**2:.6e}]  # beta = {r.beta:.4e} +/- {r.beta_err:.1e}",
            "",
        ]
    return atomic_write_text(path, "\n".join(lines))


def plot_ptc(path: str | os.PathLike[str], results: Sequence[AmpPtc]) -> Path:
    """The curves as a PNG: per amplifier the variance against the signal (log-log, the fit and the
    turn-off marked) and the linearity residual against the signal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(results)
    fig = Figure(figsize=(10, 3.2 * n), dpi=90)
    FigureCanvasAgg(fig)
    for i, r in enumerate(results):
        s = np.array([p.signal for p in r.points])
        v = np.array([p.variance for p in r.points])
        t = np.array([p.exptime for p in r.points])
        ax = fig.add_subplot(n, 2, 2 * i + 1)
        ax.loglog(s, v, "o", ms=4, label="pairs")
        grid = np.geomspace(max(s.min(), 1.0), s.max(), 100)
        ax.loglog(grid, grid / r.gain + r.read_noise_adu**2, "-", lw=1, label=f"G = {r.gain:.3f} e-/ADU")
        if r.turnoff is not None:
            ax.axvline(r.turnoff, color="r", ls="--", lw=1, label=f"turn-off {r.turnoff:.0f} ADU")
        ax.set_xlabel("signal (ADU)")
        ax.set_ylabel("variance (ADU²)")
        ax.set_title(f"{r.chip} {r.amp}: RN {r.read_noise:.2f} e-", fontsize=9)
        ax.legend(fontsize=7)
        ax2 = fig.add_subplot(n, 2, 2 * i + 2)
        below = s <= (r.turnoff if r.turnoff is not None else np.inf)  # above the turn-off the signal stops
        ax2.plot(s[below], (s[below] - r.linear_slope * t[below]) / (r.linear_slope * t[below]) * 100.0, "o", ms=4)
        ax2.axhline(0.0, color="k", lw=0.5)
        ax2.set_xscale("log")
        ax2.set_xlabel("signal (ADU)")
        ax2.set_ylabel("S / (a t) - 1 (%)")
        ax2.set_title(f"linearity: beta = {r.beta:.2e} 1/ADU", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
