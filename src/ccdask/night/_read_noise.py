"""Read noise where the headers and the profile have none: measured in the night's biases.

With ``read_noise = "auto"`` (the default), an amplifier whose layout carries no read noise gets
the median, over the night's bias frames of its chip, of the noise of its overscan, times its
gain: electrons, as the variance needs. The noise of one overscan is the standard deviation of
its pixels about their line's mean (each readout line's level removed), 3-sigma clipped
iteratively from a MAD start and corrected for the n - 1 degrees of freedom of each line; a
plain MAD would be quantised on integer ADU (MAD = 2 ADU exactly for a 3 ADU noise). The measurement reads only the overscan columns of the biases, in one small stage
(``read-noise``) before the masters. A chip with no bias but an overscan in every frame has its
read noise measured frame by frame in the overscan (the ``overscan`` mode, for that chip); one
with neither fails before any computation, naming the chip, the amplifier and a file.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import dask
import numpy as np

from ..cache import MasterCache
from ..catalog import Entry
from ..config import ReduceConfig
from ..errors import PlanError
from ..utils import MAD_TO_SIGMA, canonical_hash
from ._plan import ChipPlan, Plan
from ._stages import Runner

__all__ = ["measure_read_noise", "needs_read_noise"]


def needs_read_noise(entry: Entry) -> list[str]:
    """The amplifiers of ``entry`` whose layout has no read noise."""
    return [a.name for a in entry.layout.amplifiers if a.rdnoise is None]


def _has_overscan(entry: Entry) -> bool:
    return all(a.biassec is not None for a in entry.layout.amplifiers)


#: Bump when the measurement changes: recorded measurements then stop matching.
READ_NOISE_VERSION = 1


def record_key(cp: ChipPlan) -> str:
    """The key of one chip's measurement: its bias frames, their layout and the method."""
    ids = sorted((e.identity for e in cp.biases), key=lambda d: (d["path"], d["hdu"]))
    return canonical_hash({"biases": ids, "layout": cp.biases[0].layout.to_dict(), "version": READ_NOISE_VERSION})


def measure_read_noise(
    plan: Plan, cfg: ReduceConfig, runner: Runner, store: MasterCache | None = None
) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """The plan with measured read noise filled into its layouts, and what was measured.

    Returns ``(plan, measured)`` where ``measured`` maps chip → ``{"source": ...,
    "amplifiers": {amp: e-}, "frames": n, "history": [lines]}`` (empty when nothing was
    missing). The terminal hears of every measured value through the runner's log. With a
    ``store``, each chip's measurement is recorded there (keyed by its bias frames and layout)
    and taken from it on a rerun, so a night with nothing left to do computes nothing here.
    """
    if cfg.read_noise != "auto":
        return plan, {}
    wanted: dict[str, ChipPlan] = {}
    for chip, cp in plan.chips.items():
        entries = cp.biases + cp.darks + cp.science + tuple(e for es in cp.flats.values() for e in es)
        missing = sorted({a for e in entries for a in needs_read_noise(e)})
        if not missing:
            continue
        biases = tuple(e for e in cp.biases if _has_overscan(e))
        if biases:
            wanted[chip] = dataclasses.replace(cp, biases=biases)
        elif not all(_has_overscan(e) for e in entries):
            e = next(e for e in entries if needs_read_noise(e))
            raise PlanError(
                f"{e.path}[{e.hdu}]: chip {chip}, amplifier {missing[0]}: no read noise known "
                "(no RDNOISE in the header or profile) and it cannot be measured: the night has no "
                "bias frame with an overscan for this chip, and not every frame has an overscan; "
                "set rdnoise in the profile or read_noise in the configuration"
            )
    if not wanted:
        return plan, {}
    measured: dict[str, dict[str, Any]] = {}
    if store is not None:
        for chip, cp in list(wanted.items()):
            rec = store.get_record("read_noise", record_key(cp))
            if rec is not None:
                measured[chip] = rec
                del wanted[chip]
                runner.log(f"  {rec['history'][0]} (recorded)")
    where = [(chip, e) for chip, cp in wanted.items() for e in cp.biases]
    if not where:
        return _with_read_noise(plan, {c: m["amplifiers"] for c, m in measured.items()}), measured
    values = runner.compute(
        "read-noise",
        [
            dask.delayed(_overscan_noise, pure=True)(
                e.source, e.layout, dask_key_name=f"read-noise-{e.name}-{chip}-{dask.base.tokenize(e.identity)[:8]}"
            )
            for chip, e in where
        ],
    )
    per_chip: dict[str, dict[str, list[float]]] = {}
    for (chip, _e), noise in zip(where, values, strict=True):
        for amp, v in noise.items():
            per_chip.setdefault(chip, {}).setdefault(amp, []).append(v)
    for chip, noise in per_chip.items():
        layout = wanted[chip].biases[0].layout
        amps = {a.name: float(np.median(noise[a.name])) * float(a.gain) for a in layout.amplifiers if a.rdnoise is None}
        n = len(wanted[chip].biases)
        text = ", ".join(f"{a} {v:.3f} e-" for a, v in amps.items())
        line = f"read noise of {chip} measured in the overscans of {n} bias frame(s): {text}"
        runner.log(f"  {line}")
        measured[chip] = {"source": "bias overscans", "frames": n, "amplifiers": amps, "history": [line]}
        if store is not None:
            store.put_record("read_noise", record_key(wanted[chip]), measured[chip])
    measured = {c: measured[c] for c in plan.chips if c in measured}  # in the plan's order
    return _with_read_noise(plan, {c: m["amplifiers"] for c, m in measured.items()}), measured


def _with_read_noise(plan: Plan, values: Mapping[str, Mapping[str, float]]) -> Plan:
    """``plan`` with every entry of the chips in ``values`` given those read noises (only for
    amplifiers that had none)."""
    cache: dict[int, Entry] = {}

    def fix(e: Entry) -> Entry:
        rn = values.get(e.chip)
        if rn is None or not needs_read_noise(e):
            return e
        if id(e) not in cache:
            amps = tuple(
                a if a.rdnoise is not None or a.name not in rn else dataclasses.replace(a, rdnoise=rn[a.name])
                for a in e.layout.amplifiers
            )
            cache[id(e)] = dataclasses.replace(e, layout=dataclasses.replace(e.layout, amplifiers=amps))
        return cache[id(e)]

    def fix_all(es: tuple[Entry, ...]) -> tuple[Entry, ...]:
        return tuple(fix(e) for e in es)

    chips = {
        c: dataclasses.replace(
            cp,
            biases=fix_all(cp.biases),
            darks=fix_all(cp.darks),
            science=fix_all(cp.science),
            flats={f: fix_all(es) for f, es in cp.flats.items()},
        )
        for c, cp in plan.chips.items()
    }
    exposures = tuple(dataclasses.replace(x, chips=fix_all(x.chips)) for x in plan.exposures)
    return dataclasses.replace(plan, chips=chips, exposures=exposures)


def overscan_noise(overscan: np.ndarray, axis: str, *, sigma: float = 3.0, maxiters: int = 10) -> float:
    """Noise (ADU) of one overscan region: clipped standard deviation about each line's mean.

    ``axis`` is the amplifier's overscan axis: ``serial`` lines are rows, ``parallel`` lines
    columns. Each line's mean is taken over its kept pixels; the variance about it is scaled by
    n / (n - 1), and the result is divided by the fraction of a Gaussian's standard deviation
    that clipping at ``sigma`` of the clipped spread keeps (:func:`clipped_fraction`), so it is
    unbiased for Gaussian noise.
    """
    lines = np.asarray(overscan, dtype=np.float64)
    if axis == "parallel":
        lines = lines.T
    keep = np.isfinite(lines)
    for _ in range(maxiters):
        n = keep.sum(axis=1)
        mean = np.where(n > 0, np.where(keep, lines, 0.0).sum(axis=1) / np.maximum(n, 1), 0.0)
        resid = np.where(keep, lines - mean[:, None], np.nan)
        spread = (
            MAD_TO_SIGMA * float(np.nanmedian(np.abs(resid)))
            if _ == 0
            else float(np.sqrt(np.nansum(resid**2) / max(int(keep.sum()) - len(lines), 1)))
        )
        new = keep & (np.abs(np.nan_to_num(resid, nan=np.inf)) <= sigma * max(spread, 1e-12))
        if np.array_equal(new, keep):
            break
        keep = new
    n = keep.sum(axis=1)
    mean = np.where(n > 0, np.where(keep, lines, 0.0).sum(axis=1) / np.maximum(n, 1), 0.0)
    resid = np.where(keep, lines - mean[:, None], 0.0)
    dof = int(keep.sum()) - int((n > 0).sum())
    return float(np.sqrt((resid**2).sum() / dof)) / clipped_fraction(sigma) if dof > 0 else float("nan")


def clipped_fraction(k: float) -> float:
    """The ratio r of the converged k-sigma-clipped standard deviation of a Gaussian to its true
    sigma: the fixed point of r = c(k r), with c(t) = sqrt(1 - 2 t phi(t) / (2 Phi(t) - 1)) the
    standard deviation of a unit Gaussian truncated at +-t (0.985 for k = 3)."""

    def truncated_std(t: float) -> float:
        phi = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        inside = math.erf(t / math.sqrt(2.0))
        return math.sqrt(1.0 - 2.0 * t * phi / inside)

    r = 1.0
    for _ in range(100):
        r_new = truncated_std(k * r)
        if abs(r_new - r) < 1e-12:
            break
        r = r_new
    return r


def _overscan_noise(source: Any, layout: Any) -> dict[str, float]:
    """Per amplifier, the noise (ADU) of one raw frame's overscan (one task per bias frame)."""
    out = {}
    for a in layout.amplifiers:
        rows, cols = a.biassec.slices
        out[a.name] = overscan_noise(source.read(rows, cols), a.overscan_axis or "serial")
    return out
