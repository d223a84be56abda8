"""How well a reduction found a simulated frame's cosmic rays, scored against the truth.

Three figures per chip of a science frame, from the DQ plane a reduction wrote and the
simulator's record of every hit and every star:

* **completeness**: of the pixels a hit deposited more than ``sigma`` times the pixel's noise
  in (the noise of sky, stars and read noise there, ``sqrt(signal + rn²)``), the fraction with
  DQ bit 4 (cosmic ray). Pixels the reduction masked otherwise (bad, saturated, no data)
  cannot be flagged and are left out.
* **false flags on sky**: the fraction of sky pixels flagged as cosmic rays, a sky pixel being
  one no hit touched within ``near`` pixels (Chebyshev) where the stars add less than a tenth of
  the noise.
* **star-core flags**: the fraction of the core pixels of bright stars flagged as cosmic rays.
  A bright star peaks at more than ``core_sigma`` times the sky noise; its core is the pixels
  within half the seeing FWHM of its centre; core pixels within ``near`` pixels of a hit, and
  masked pixels (a saturated star's), are left out.

:func:`truth_masters` gives the simulator's own bias, dark and flat for one chip in the form
:func:`ccdask.calibrate.process_in_memory` takes, so the science chain can be run alone on a
frame with exact calibrations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .. import dq as dqbits
from ._night import Truth

__all__ = ["CosmicScore", "score_cosmics", "star_cores", "truth_masters"]


@dataclass(frozen=True)
class CosmicScore:
    """The three figures of one chip of one frame, with the counts behind them."""

    fwhm: float
    hits: int  # hit pixels above the threshold, not otherwise masked
    found: int
    sky_pixels: int
    sky_flagged: int
    core_pixels: int
    core_flagged: int

    @property
    def completeness(self) -> float:
        return self.found / self.hits if self.hits else math.nan

    @property
    def false_rate(self) -> float:
        return self.sky_flagged / self.sky_pixels if self.sky_pixels else math.nan

    @property
    def core_fraction(self) -> float:
        return self.core_flagged / self.core_pixels if self.core_pixels else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(completeness=self.completeness, false_rate=self.false_rate, core_fraction=self.core_fraction)
        return d


def _read_noise(truth: Truth, chip: str) -> float:
    return float(max(a["rdnoise"] for a in truth.meta["chips"][chip]["amps"].values()))


def star_cores(truth: Truth, chip: str, frame: str, *, core_sigma: float = 20.0) -> np.ndarray:
    """Boolean image of the core pixels (within FWHM / 2 of the centre) of the stars of a frame
    that peak above ``core_sigma`` times the sky noise on ``chip``."""
    rec = truth.frame(frame)
    k = int(truth.meta["chips"][chip]["index"])
    ny, nx = truth.shape
    stars = truth.stars()
    flux = stars[f"rate_{rec['filter']}"] * rec["exptime"] * rec["transparency"]
    fwhm = float(rec["fwhm"])
    sig = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    # the centre pixel of a Gaussian holds about (erf(0.5/(sqrt2 sig)))^2 of the flux
    centre = math.erf(0.5 / (math.sqrt(2.0) * sig)) ** 2
    noise = math.sqrt(rec["sky"] + _read_noise(truth, chip) ** 2)
    oy, ox = truth.meta["chips"][chip]["origin"]
    on = (stars["chip"] == k) & (flux * centre > core_sigma * noise)
    cores = np.zeros((ny, nx), dtype=bool)
    r = fwhm / 2.0
    h = math.ceil(r)
    for y, x in zip(stars["y"][on] - oy, stars["x"][on] - ox, strict=True):
        iy, ix = round(y), round(x)
        y0, y1, x0, x1 = max(iy - h, 0), min(iy + h + 1, ny), max(ix - h, 0), min(ix + h + 1, nx)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cores[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return cores


def score_cosmics(
    truth: Truth,
    chip: str,
    frame: str,
    dq: np.ndarray,
    *,
    sigma: float = 10.0,
    core_sigma: float = 20.0,
    near: int = 2,
) -> CosmicScore:
    """Score the DQ plane ``dq`` of one chip of a reduced science frame against the truth."""
    dq = np.asarray(dq)
    flagged = (dq & dqbits.COSMIC) != 0
    masked = (dq & (dqbits.BAD | dqbits.SATURATED | dqbits.NODATA)) != 0
    rec = truth.frame(frame)
    rn = _read_noise(truth, chip)
    signal = truth.signal(chip, frame)
    noise = np.sqrt(np.maximum(signal, 0.0) + rn * rn)
    charge = truth.cosmic_ray_charge(chip, frame)
    hit = charge > 0
    strong = (charge > sigma * noise) & ~masked
    around = ndimage.binary_dilation(hit, np.ones((2 * near + 1, 2 * near + 1), dtype=bool))
    stars = signal - rec["sky"]
    sky = ~around & ~masked & (stars < 0.1 * math.sqrt(rec["sky"] + rn * rn))
    cores = star_cores(truth, chip, frame, core_sigma=core_sigma) & ~around & ~masked
    return CosmicScore(
        fwhm=float(rec["fwhm"]),
        hits=int(strong.sum()),
        found=int((strong & flagged).sum()),
        sky_pixels=int(sky.sum()),
        sky_flagged=int((sky & flagged).sum()),
        core_pixels=int(cores.sum()),
        core_flagged=int((cores & flagged).sum()),
    )


def truth_masters(truth: Truth, chip: str, filt: str) -> dict[str, Any]:
    """The simulator's own bias (its fixed pattern, e-), dark rate (e-/s) and ``filt`` flat of
    ``chip``, as :func:`ccdask.calibrate.process_in_memory` takes masters."""
    pattern = truth.array(chip, "bias_pattern").astype(np.float64)
    gain = np.empty(truth.shape, dtype=np.float64)
    for amp in truth.meta["chips"][chip]["amps"].values():
        c0, c1 = amp["columns"]
        gain[:, c0:c1] = amp["gain"]
    return {
        "bias": ((pattern * gain).astype(np.float32), None),
        "dark": (truth.array(chip, "dark_rate").astype(np.float32), None),
        "flat": (truth.array(chip, f"flat_{filt}").astype(np.float32), None),
        "bias_label": "truth",
        "dark_label": "truth",
        "flat_label": "truth",
    }
