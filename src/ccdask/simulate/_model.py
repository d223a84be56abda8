"""The physical model behind :mod:`ccdask.simulate._night` (private).

Everything here is pure numpy: the focal-plane geometry, the per-chip and per-amplifier
constants, the static truth (bias pattern, dark current, flat-field response), the star field,
cosmic rays, and the rendering of one chip of one exposure into raw ADU.

Conventions
-----------
* The *data frame* of a chip is its trimmed image, ``(ny, nx)`` pixels; all truth lives there.
  Pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]`` (centre at integers).
* The *raw frame* adds serial overscan columns: ``[data | overscan]`` for one amplifier,
  ``[overscan A | data A | data B | overscan B]`` for two.
* Focal-plane coordinates put chip ``k`` at grid row ``k // 2`` and grid column ``k % 2`` (one
  column when there is a single chip), with no gap between chips.
* Random numbers: every independent quantity draws from its own named stream,
  :func:`rng_for` ``(seed, *key)``, a child of ``SeedSequence(seed)`` through the same
  ``spawn_key`` mechanism ``SeedSequence.spawn`` uses. Names instead of running indices keep
  e.g. chip 2's gain the same whether the night has 2 or 8 chips, or 3 or 10 biases.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ..errors import ConfigError

#: Data pixels per chip ``(ny, nx)`` and serial overscan width per amplifier, per size name.
SIZES: dict[str, tuple[int, int, int]] = {
    "small": (192, 160, 16),
    "medium": (1024, 1024, 32),
    "large": (4096, 2048, 32),
}

AMP_NAMES = ("A", "B")

#: Rows rendered at a time; fixed so that the random streams do not depend on memory settings.
STRIP_ROWS = 512

#: Half-width of a star's rendering stamp (pixels); Gaussian PSFs with FWHM <= 3.5 px are
#: below 1e-9 of their peak there. Wider PSFs get ``ceil(2.3 x FWHM)`` (5.4 sigma, 5e-7).
STAR_HALO = 8

#: Cosmic-ray events per pixel per second of exposure (3e-6 → ~2–4 per 10^4 px in 60–120 s).
CR_RATE = 3.0e-6

#: Mean surface density of stars (per pixel) and their reference rate range (e-/s, log-uniform).
STAR_DENSITY = 6.5e-4
STAR_RATE_RANGE = (30.0, 1.0e5)

# Per filter: sky (e-/s/px), stellar throughput, colour coefficient (mag per unit colour).
_FILTER_TABLE = {
    "u": (2.5, 0.35, 1.6),
    "g": (6.0, 0.80, 0.8),
    "r": (10.0, 1.00, 0.0),
    "i": (14.0, 0.85, -0.5),
    "z": (18.0, 0.55, -0.9),
    "y": (20.0, 0.35, -1.1),
}
_FILTER_DEFAULT = (8.0, 0.70, 0.0)


def filter_properties(name: str) -> tuple[float, float, float]:
    """Sky rate (e-/s/px), stellar throughput and colour coefficient of a filter name."""
    return _FILTER_TABLE.get(name.lower(), _FILTER_DEFAULT)


def _key_part(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode("utf-8"))
    return int(part)


def rng_for(seed: int, *key: int | str) -> np.random.Generator:
    """The random generator of the named stream ``key`` under ``seed``.

    ``SeedSequence(seed, spawn_key=k)`` is exactly the child ``SeedSequence(seed).spawn``
    would produce along the path ``k``; strings are turned into integers with CRC-32.
    """
    spawn_key = tuple(_key_part(p) for p in key)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


# --------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class Geometry:
    """Shapes and column layout of every chip of the camera."""

    ny: int
    nx: int
    nover: int
    amps: int
    chips: int

    @property
    def grid(self) -> tuple[int, int]:
        """Focal-plane grid ``(rows, columns)`` of chips."""
        ncol = 1 if self.chips == 1 else 2
        return (math.ceil(self.chips / ncol), ncol)

    @property
    def fp_shape(self) -> tuple[int, int]:
        """Focal-plane shape ``(ny, nx)`` in data pixels."""
        rows, cols = self.grid
        return (rows * self.ny, cols * self.nx)

    @property
    def raw_shape(self) -> tuple[int, int]:
        """Shape of a raw chip image (data plus overscan)."""
        return (self.ny, self.nx + self.amps * self.nover)

    def origin(self, k: int) -> tuple[int, int]:
        """Focal-plane ``(row, column)`` of chip ``k``'s first data pixel."""
        ncol = self.grid[1]
        return ((k // ncol) * self.ny, (k % ncol) * self.nx)

    @property
    def amp_width(self) -> int:
        return self.nx // self.amps

    def amp_cols(self, a: int) -> slice:
        """Columns of amplifier ``a`` in the data frame."""
        w = self.amp_width
        return slice(a * w, (a + 1) * w)

    def raw_data_cols(self, a: int) -> slice:
        """Columns of amplifier ``a``'s data in the raw frame."""
        off = 0 if self.amps == 1 else self.nover
        w = self.amp_width
        return slice(off + a * w, off + (a + 1) * w)

    def raw_over_cols(self, a: int) -> slice:
        """Columns of amplifier ``a``'s serial overscan in the raw frame."""
        if self.amps == 1:
            return slice(self.nx, self.nx + self.nover)
        if a == 0:
            return slice(0, self.nover)
        return slice(self.nover + self.nx, 2 * self.nover + self.nx)

    @property
    def raw_trim_cols(self) -> slice:
        """Columns of the whole data area in the raw frame."""
        off = 0 if self.amps == 1 else self.nover
        return slice(off, off + self.nx)

    def readout_col(self, a: int) -> int:
        """Data-frame column next to amplifier ``a`` (its serial register's output end)."""
        return 0 if a == 0 else self.nx - 1

    def col_amp(self) -> np.ndarray:
        """Amplifier index of every data-frame column."""
        return np.repeat(np.arange(self.amps), self.amp_width)


# --------------------------------------------------------------------------------------------
# per-chip constants


@dataclass(frozen=True)
class AmpModel:
    """Constants of one amplifier."""

    name: str
    gain: float  # e-/ADU
    rdnoise: float  # e-
    bias_level: float  # ADU
    saturate: int  # ADU

    @property
    def rn_adu(self) -> float:
        return self.rdnoise / self.gain


@dataclass(frozen=True)
class ChipModel:
    """Constants of one chip."""

    index: int
    name: str
    amps: tuple[AmpModel, ...]
    sensitivity: float
    dark_base: float  # e-/s
    glow: float  # e-/s at the amplifier corner
    dead_columns: tuple[int, ...]
    dead_response: tuple[float, ...]


def make_chip(seed: int, geom: Geometry, k: int) -> ChipModel:
    """Draw chip ``k``'s constants (both amplifiers are always drawn, so a 1-amp camera's
    amplifier equals amplifier A of the 2-amp camera with the same seed)."""
    rng = rng_for(seed, "chip", k)
    amps = []
    for name in AMP_NAMES:
        gain = round(float(rng.uniform(1.2, 2.5)), 3)
        rdnoise = round(float(rng.uniform(3.0, 8.0)), 2)
        level = round(float(rng.uniform(1000.0, 2000.0)), 2)
        saturate = int(rng.integers(60000, 65001))
        amps.append(AmpModel(name, gain, rdnoise, level, saturate))
    sensitivity = round(float(rng.uniform(0.85, 1.10)), 4)
    dark_base = float(rng.uniform(0.002, 0.01))
    glow = float(rng.uniform(0.01, 0.04))
    ndead = int(rng.integers(1, 4))
    cols = rng.choice(np.arange(3, geom.nx - 3), size=ndead, replace=False)
    resp = rng.uniform(0.0, 0.05, size=ndead)
    order = np.argsort(cols)
    return ChipModel(
        index=k,
        name=f"CCD{k + 1}",
        amps=tuple(amps[: geom.amps]),
        sensitivity=sensitivity,
        dark_base=dark_base,
        glow=glow,
        dead_columns=tuple(int(c) for c in cols[order]),
        dead_response=tuple(float(r) for r in resp[order]),
    )


@dataclass(frozen=True)
class Optics:
    """Vignetting of the telescope over the focal plane."""

    axis_y: float
    axis_x: float
    falloff: float  # fractional loss at the farthest focal-plane corner
    rmax: float


def make_optics(seed: int, geom: Geometry) -> Optics:
    """Draw the optical axis position and vignetting depth."""
    rng = rng_for(seed, "optics")
    fy, fx = geom.fp_shape
    ay = (fy - 1) / 2 + rng.uniform(-0.03, 0.03) * fy
    ax = (fx - 1) / 2 + rng.uniform(-0.03, 0.03) * fx
    falloff = float(rng.uniform(0.05, 0.15))
    corners = [(0, 0), (0, fx - 1), (fy - 1, 0), (fy - 1, fx - 1)]
    rmax = max(math.hypot(cy - ay, cx - ax) for cy, cx in corners)
    return Optics(float(ay), float(ax), falloff, float(rmax))


# --------------------------------------------------------------------------------------------
# static truth


def bias_pattern(seed: int, geom: Geometry, chip: ChipModel) -> np.ndarray:
    """Fixed 2-D bias structure (ADU) of the data area, the same in every frame.

    Per amplifier: an exponential ramp of 2–6 ADU at the readout edge, a Gaussian column
    pattern of 0.3–1 ADU rms; over the chip a gentle row ramp of up to ±1 ADU.
    """
    rng = rng_for(seed, "bias-pattern", chip.index)
    cols = np.zeros(geom.nx, dtype=np.float64)
    w = geom.amp_width
    for a in range(geom.amps):
        sl = geom.amp_cols(a)
        dist = np.abs(np.arange(sl.start, sl.stop) - geom.readout_col(a))
        amp = rng.uniform(2.0, 6.0)
        scale = max(3.0, rng.uniform(0.03, 0.08) * w)
        colrms = rng.uniform(0.3, 1.0)
        cols[sl] = amp * np.exp(-dist / scale) + rng.normal(0.0, colrms, w)
    slope = rng.uniform(-1.0, 1.0)
    rows = slope * (np.arange(geom.ny) / max(geom.ny - 1, 1) - 0.5)
    return (rows[:, None] + cols[None, :]).astype(np.float32)


def dark_rate(seed: int, geom: Geometry, chip: ChipModel) -> tuple[np.ndarray, np.ndarray]:
    """Dark current (e-/s) and the hot-pixel mask of a chip.

    A base rate of 0.002–0.01 e-/s with 5 % pixel-to-pixel scatter, amplifier glow decaying
    from each readout corner (row 0), and ~0.1 % hot pixels at 0.5–5 e-/s.
    """
    rng = rng_for(seed, "dark", chip.index)
    ny, nx = geom.ny, geom.nx
    rate = rng.standard_normal((ny, nx), dtype=np.float32)
    rate *= np.float32(0.05 * chip.dark_base)
    rate += np.float32(chip.dark_base)
    scale = float(rng.uniform(0.04, 0.08)) * min(ny, geom.amp_width)
    y = np.arange(ny, dtype=np.float32)[:, None]
    for a in range(geom.amps):
        sl = geom.amp_cols(a)
        x = np.arange(sl.start, sl.stop, dtype=np.float32)[None, :] - geom.readout_col(a)
        rate[:, sl] += np.float32(chip.glow) * np.exp(-np.sqrt(y * y + x * x) / np.float32(scale))
    npix = ny * nx
    nhot = int(rng.poisson(1.0e-3 * npix))
    hot_idx = np.sort(rng.choice(npix, size=nhot, replace=False))
    hot = np.zeros((ny, nx), dtype=bool)
    hot.ravel()[hot_idx] = True
    rate.ravel()[hot_idx] = _loguniform(rng, 0.5, 5.0, nhot).astype(np.float32)
    np.maximum(rate, 0.0, out=rate)
    return rate, hot


def flat_base(seed: int, geom: Geometry, chip: ChipModel, optics: Optics) -> np.ndarray:
    """Filter-independent flat response: vignetting × chip sensitivity × PRNU × dead columns."""
    rng = rng_for(seed, "prnu", chip.index)
    oy, ox = geom.origin(chip.index)
    yy = (np.arange(geom.ny, dtype=np.float32) + np.float32(oy - optics.axis_y))[:, None]
    xx = (np.arange(geom.nx, dtype=np.float32) + np.float32(ox - optics.axis_x))[None, :]
    resp = rng.standard_normal((geom.ny, geom.nx), dtype=np.float32)
    resp *= np.float32(0.01)
    resp += np.float32(1.0)
    r2 = yy * yy + xx * xx
    r2 *= np.float32(-optics.falloff / optics.rmax**2)
    r2 += np.float32(1.0)
    resp *= r2
    del r2
    resp *= np.float32(chip.sensitivity)
    for c, v in zip(chip.dead_columns, chip.dead_response, strict=True):
        resp[:, c] *= np.float32(v)
    return resp


def apply_dust(seed: int, geom: Geometry, chip: ChipModel, filt: str, resp: np.ndarray) -> list:
    """Multiply ``resp`` in place by this filter's dust donuts; returns their descriptions.

    Out-of-focus dust on the filter shows as rings (the telescope pupil with its central
    obstruction): outer radius 10–40 px, inner 30–50 % of it, 2–5 % deep, soft 1 px edges.
    """
    rng = rng_for(seed, "dust", filt, chip.index)
    ny, nx = geom.ny, geom.nx
    n = 1 + int(rng.poisson(1.0 + ny * nx / 2.0e6))
    donuts = []
    for _ in range(n):
        r_out = float(rng.uniform(10.0, 40.0))
        r_in = r_out * float(rng.uniform(0.3, 0.5))
        depth = float(rng.uniform(0.02, 0.05))
        cy = float(rng.uniform(0, ny - 1))
        cx = float(rng.uniform(0, nx - 1))
        donuts.append({"y": cy, "x": cx, "r_in": r_in, "r_out": r_out, "depth": depth})
        pad = r_out + 4
        y0, y1 = max(0, int(cy - pad)), min(ny, int(cy + pad) + 1)
        x0, x1 = max(0, int(cx - pad)), min(nx, int(cx + pad) + 1)
        yy = np.arange(y0, y1)[:, None] - cy
        xx = np.arange(x0, x1)[None, :] - cx
        r = np.hypot(yy, xx)
        ring = 1.0 / (1.0 + np.exp(-(r - r_in))) / (1.0 + np.exp(-(r_out - r)))
        resp[y0:y1, x0:x1] *= (1.0 - depth * ring).astype(np.float32)
    return donuts


def focal_plane_median(arrays: list[np.ndarray]) -> float:
    """Exact median of all values of several arrays, without concatenating them.

    A subsample brackets the median; one pass counts the values below the bracket and gathers
    those inside it, which is a small fraction. Falls back to gathering everything if the
    bracket misses (it practically never does).
    """
    total = sum(a.size for a in arrays)
    k1, k2 = (total - 1) // 2, total // 2
    step = max(1, total // 400_000)
    sample = np.concatenate([np.ravel(a)[::step] for a in arrays]).astype(np.float64)
    lo, hi = np.quantile(sample, [0.47, 0.53])
    for lo_, hi_ in ((lo, hi), (-np.inf, np.inf)):
        below = 0
        inside = []
        for a in arrays:
            flat = np.ravel(a)
            below += int(np.count_nonzero(flat < lo_))
            inside.append(flat[(flat >= lo_) & (flat <= hi_)])
        vals = np.sort(np.concatenate(inside).astype(np.float64))
        if below <= k1 and k2 < below + vals.size:
            return float(0.5 * (vals[k1 - below] + vals[k2 - below]))
    raise AssertionError("median bracketing failed")  # unreachable: the second bracket is all


# --------------------------------------------------------------------------------------------
# the sky


@dataclass(frozen=True)
class StarField:
    """Stars over the focal plane: positions in focal-plane pixels, reference rate, colour."""

    y: np.ndarray
    x: np.ndarray
    chip: np.ndarray
    rate_ref: np.ndarray  # e-/s through a throughput-1 filter at colour 0
    colour: np.ndarray  # mag

    def rate(self, filt: str) -> np.ndarray:
        """Detected rate (e-/s) of every star through ``filt``."""
        _, thru, coef = filter_properties(filt)
        return self.rate_ref * thru * 10.0 ** (-0.4 * coef * self.colour)


@dataclass(frozen=True)
class Scene:
    """What the sky and the silicon give a science exposure, as the simulator's parameters.

    ``fwhm`` is the range the seeing (Gaussian PSF FWHM, pixels) of each exposure is drawn from
    uniformly (a single value for every exposure when both ends are equal); ``sky`` the sky rate
    (e-/s/px) replacing the filter's own; ``star_density`` stars per pixel; ``cr_rate`` cosmic-ray
    events per pixel per second. The defaults are the simulator's historical night, drawn the
    same way (same random numbers), so a night made with ``Scene()`` equals one made without it.
    """

    fwhm: tuple[float, float] = (2.6, 3.4)
    sky: float | None = None
    star_density: float = STAR_DENSITY
    cr_rate: float = CR_RATE

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.fwhm)
        if not (0.5 <= lo <= hi <= 20.0):
            raise ConfigError(f"Scene: fwhm must be a range 0.5 <= lo <= hi <= 20 pixels, got {self.fwhm!r}")
        object.__setattr__(self, "fwhm", (lo, hi))
        if self.sky is not None and not (self.sky >= 0 and math.isfinite(self.sky)):
            raise ConfigError(f"Scene: sky must be a rate >= 0 e-/s/px, got {self.sky!r}")
        if not (0 <= self.star_density <= 0.05):
            raise ConfigError(f"Scene: star_density must lie in [0, 0.05] per pixel, got {self.star_density!r}")
        if not (0 <= self.cr_rate <= 1e-3):
            raise ConfigError(f"Scene: cr_rate must lie in [0, 1e-3] events/px/s, got {self.cr_rate!r}")

    def to_dict(self) -> dict[str, object]:
        return {"fwhm": list(self.fwhm), "sky": self.sky, "star_density": self.star_density, "cr_rate": self.cr_rate}


def make_stars(seed: int, geom: Geometry, density: float = STAR_DENSITY) -> StarField:
    """Draw each chip's stars from its own stream (so the field of chip k is stable)."""
    parts = []
    for k in range(geom.chips):
        rng = rng_for(seed, "stars", k)
        n = int(rng.poisson(density * geom.ny * geom.nx))
        oy, ox = geom.origin(k)
        y = oy - 0.5 + rng.uniform(0.0, geom.ny, n)
        x = ox - 0.5 + rng.uniform(0.0, geom.nx, n)
        rate = _loguniform(rng, *STAR_RATE_RANGE, n)
        colour = rng.normal(0.6, 0.4, n)
        parts.append((y, x, np.full(n, k, dtype=np.int32), rate, colour))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return StarField(*cols)


def render_stars(geom: Geometry, k: int, stars: StarField, flux: np.ndarray, fwhm: float) -> np.ndarray:
    """Image (e-, float32, data frame of chip ``k``) of Gaussian stars of total ``flux``.

    Each pixel receives the PSF integrated over its area (products of normal CDFs), so the flux
    is conserved up to what falls off the chip.
    """
    ny, nx = geom.ny, geom.nx
    img = np.zeros((ny, nx), dtype=np.float32)
    oy, ox = geom.origin(k)
    yl, xl = stars.y - oy, stars.x - ox
    h = max(STAR_HALO, math.ceil(2.3 * fwhm))
    near = (yl > -h) & (yl < ny - 1 + h) & (xl > -h) & (xl < nx - 1 + h) & (flux > 0)
    if not near.any():
        return img
    yl, xl, f = yl[near], xl[near], flux[near]
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    off = np.arange(-h, h + 1)
    py = np.rint(yl).astype(np.int64)[:, None] + off
    px = np.rint(xl).astype(np.int64)[:, None] + off
    gy = ndtr((py + 0.5 - yl[:, None]) / sigma) - ndtr((py - 0.5 - yl[:, None]) / sigma)
    gx = ndtr((px + 0.5 - xl[:, None]) / sigma) - ndtr((px - 0.5 - xl[:, None]) / sigma)
    stamps = (f[:, None, None] * gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    ok = ((py >= 0) & (py < ny))[:, :, None] & ((px >= 0) & (px < nx))[:, None, :]
    idx = py[:, :, None] * nx + px[:, None, :]
    np.add.at(img.ravel(), idx[ok], stamps[ok])
    return img


def cosmic_rays(
    rng: np.random.Generator, geom: Geometry, exptime: float, rate: float = CR_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray charge of one exposure: sorted unique flat pixel indices and electrons.

    ~85 % of events are compact hits of 1–3 adjacent pixels (core 800–8000 e-, neighbours
    20–60 % of it); the rest are short straight tracks of 4–15 px depositing 400–1500 e- per
    pixel (±40 %). The event count is Poisson with mean ``rate × pixels × exptime``.
    """
    ny, nx = geom.ny, geom.nx
    n = int(rng.poisson(rate * ny * nx * exptime))
    ys: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    steps = np.array([(0, 1), (0, -1), (1, 0), (-1, 0)])
    for _ in range(n):
        y0 = int(rng.integers(0, ny))
        x0 = int(rng.integers(0, nx))
        if rng.uniform() < 0.85:
            core = float(_loguniform(rng, 800.0, 8000.0))
            npx = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
            pys, pxs, pqs = [y0], [x0], [core]
            for _ in range(npx - 1):
                base = int(rng.integers(0, len(pys)))
                dy, dx = steps[int(rng.integers(0, 4))]
                pys.append(pys[base] + int(dy))
                pxs.append(pxs[base] + int(dx))
                pqs.append(core * float(rng.uniform(0.2, 0.6)))
            ys.append(np.array(pys))
            xs.append(np.array(pxs))
            qs.append(np.array(pqs))
        else:
            length = float(rng.uniform(4.0, 15.0))
            angle = float(rng.uniform(0.0, math.pi))
            dedx = float(rng.uniform(400.0, 1500.0))
            t = np.arange(0.0, length + 1e-9, 0.5)
            ty = np.rint(y0 + t * math.sin(angle)).astype(np.int64)
            tx = np.rint(x0 + t * math.cos(angle)).astype(np.int64)
            pix = np.unique(np.stack([ty, tx], axis=1), axis=0)
            ys.append(pix[:, 0])
            xs.append(pix[:, 1])
            qs.append(dedx * rng.uniform(0.6, 1.4, len(pix)))
    if not ys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    y = np.concatenate(ys)
    x = np.concatenate(xs)
    q = np.concatenate(qs)
    ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
    flat = y[ok] * nx + x[ok]
    idx, inv = np.unique(flat, return_inverse=True)
    return idx, np.bincount(inv, weights=q[ok], minlength=idx.size)


def row_bias(rng: np.random.Generator, geom: Geometry, chip: ChipModel) -> np.ndarray:
    """True overscan level of every row of every amplifier for one frame (ADU, (amps, ny)).

    The amplifier's mean level plus a frame offset (±2 ADU rms), a slow sine of 2–5 ADU
    amplitude (0.7–2 cycles over the chip) and a quadratic term of up to ±3 ADU: smooth,
    different in every frame.
    """
    t = np.arange(geom.ny) / max(geom.ny - 1, 1)
    out = np.empty((geom.amps, geom.ny))
    for a, amp in enumerate(chip.amps):
        offset = rng.normal(0.0, 2.0)
        sine = rng.uniform(2.0, 5.0) * np.sin(2 * math.pi * rng.uniform(0.7, 2.0) * t + rng.uniform(0, 2 * math.pi))
        quad = rng.uniform(-3.0, 3.0) * 4.0 * (t - 0.5) ** 2
        out[a] = amp.bias_level + offset + sine + quad
    return out


# --------------------------------------------------------------------------------------------
# one chip of one exposure


@dataclass
class ChipExposure:
    """What falls on one chip during one exposure (all in electrons, data frame)."""

    exptime: float = 0.0
    dark: np.ndarray | None = None  # e-/s
    flat: np.ndarray | None = None  # normalised response
    flat_level: float = 0.0  # uniform illumination, e- (flats)
    sky: float = 0.0  # e- (science)
    stars: np.ndarray | None = None  # e- (science)
    cr_rate: float = CR_RATE  # cosmic-ray events per pixel per second
    charge: np.ndarray | None = None  # e-, the whole expected charge when given (bleed trails), replacing the above
    well: np.ndarray | None = None  # e- per data column: no pixel holds more (flats of a night with a full well)
    fringe: np.ndarray | None = None  # e-, additive like the sky (science frames of a night with fringes)


def fringe_pattern(seed: int, geom: Geometry, k: int, filt: str) -> np.ndarray:
    """The fringe pattern of ``filt`` on chip ``k`` (float32, data frame), of unit rms over the
    focal plane: three warped waves of 12-30 px period drawn over the focal plane (the same for
    every exposure in the filter; the exposure's amplitude multiplies it)."""
    rng = rng_for(seed, "fringe-pattern", filt)
    oy, ox = geom.origin(k)
    y = (np.arange(geom.ny, dtype=np.float64) + oy)[:, None]
    x = (np.arange(geom.nx, dtype=np.float64) + ox)[None, :]
    out = np.zeros((geom.ny, geom.nx))
    weights = rng.uniform(0.5, 1.0, 3)
    for w in weights:
        period, theta, phase = rng.uniform(12.0, 30.0), rng.uniform(0.0, math.pi), rng.uniform(0.0, 2 * math.pi)
        wperiod, wtheta, wdepth = rng.uniform(150.0, 400.0), rng.uniform(0.0, math.pi), rng.uniform(0.5, 2.0)
        warp = wdepth * np.sin(2 * math.pi * (x * math.cos(wtheta) + y * math.sin(wtheta)) / wperiod)
        out += w * np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period + phase + warp)
    out /= math.sqrt(float(np.sum(weights**2)) / 2.0)
    return out.astype(np.float32)


def full_well(chip: ChipModel, fraction: float) -> np.ndarray:
    """Full well (e-) of each amplifier of ``chip``: ``fraction`` of its range below SATURATE."""
    return np.array([fraction * (a.saturate - a.bias_level) * a.gain for a in chip.amps])


def bleed_charge(
    geom: Geometry, chip: ChipModel, exposure: ChipExposure, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The expected charge of a science exposure (e-, float64, data frame) with bleed trails,
    the sorted flat indices of the trail pixels (those the spilled charge raised) and those of
    the pixels left at the full well (the stars' cores and the filled part of the trails).

    The expected charge is ``(stars + sky) x flat + dark x t``, as :func:`render_chip` makes it.
    Each pixel holds at most its amplifier's full well (:func:`full_well`); the excess of every
    run of overfull pixels along a column flows half up and half down the column, through full
    pixels, filling the next pixels to the full well until it is spent (what reaches the chip's
    edge is lost).
    """
    assert exposure.flat is not None
    lam = exposure.flat.astype(np.float64) * (exposure.flat_level + exposure.sky)
    if exposure.stars is not None:
        lam = (exposure.stars.astype(np.float64) + (exposure.flat_level + exposure.sky)) * exposure.flat
    if exposure.fringe is not None:
        lam += exposure.fringe * exposure.flat
    if exposure.dark is not None and exposure.exptime > 0:
        lam += exposure.dark.astype(np.float64) * exposure.exptime
    cap = full_well(chip, fraction)[geom.col_amp()]
    trail = np.zeros(lam.shape, dtype=bool)
    for x in np.flatnonzero((lam > cap[None, :]).any(axis=0)):
        col, c = lam[:, x], cap[x]
        over = col > c
        edges = np.diff(np.concatenate(([0], over.astype(np.int8), [0])))
        for y0, y1 in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            excess = float(np.sum(col[y0:y1] - c))
            col[y0:y1] = c
            for start, step in ((y1, 1), (y0 - 1, -1)):
                left = excess / 2
                y = start
                while left > 0 and 0 <= y < col.size:
                    room = c - col[y]
                    if room > 0:
                        add = min(room, left)
                        col[y] += add
                        left -= add
                        trail[y, x] = True
                    y += step
    return lam, np.flatnonzero(trail), np.flatnonzero(lam >= cap[None, :])


def render_chip(
    rng: np.random.Generator,
    geom: Geometry,
    chip: ChipModel,
    pattern: np.ndarray,
    exposure: ChipExposure,
    crosstalk: tuple[tuple[int, int, float, float], ...] = (),
    nonlinearity: float = 0.0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw uint16 image of one chip and its per-frame truth.

    Returns ``(raw, truth)`` with truth keys ``row_bias`` (ADU, (amps, ny)), and for exposed
    frames ``cosmic_rays`` and ``saturated`` as sorted flat indices into the data frame and
    ``cosmic_ray_charge`` (e-, float32, one per ``cosmic_rays`` index).
    The model, per pixel: electrons = Poisson(flat × (illumination) + dark × t) + cosmic rays;
    ADU = electrons / gain + row bias + bias pattern + N(0, rdnoise / gain), rounded; data
    pixels at or above SATURATE are held at SATURATE; everything is clipped to 0..65535.

    ``crosstalk`` holds ``(source amp, victim amp, linear, quadratic)`` terms: after saturation,
    each victim data pixel gains ``linear s + quadratic s²`` ADU (rounded), with ``s`` the source
    pixel read at the same time (the amplifiers read from opposite ends of the serial register,
    so the source columns are mirrored) minus the source's row bias (:func:`add_crosstalk`).
    ``nonlinearity`` (beta, 1/ADU) makes the amplifiers' response to the charge quadratic: a
    signal of ``s`` ADU (electrons / gain) is read as ``s + beta s²`` before the bias and the
    read noise are added.
    """
    ny, nx = geom.ny, geom.nx
    rb = row_bias(rng, geom, chip)
    exposed = exposure.exptime > 0 or exposure.flat_level > 0
    cr_idx, cr_q = cosmic_rays(rng, geom, exposure.exptime, exposure.cr_rate) if exposed else (None, None)

    col_amp = geom.col_amp()
    inv_gain = np.array([1.0 / a.gain for a in chip.amps])[col_amp]
    sat = np.array([a.saturate for a in chip.amps], dtype=np.float64)[col_amp]
    rn_raw = np.empty(geom.raw_shape[1])
    for a, amp in enumerate(chip.amps):
        rn_raw[geom.raw_data_cols(a)] = amp.rn_adu
        rn_raw[geom.raw_over_cols(a)] = amp.rn_adu

    raw = np.empty(geom.raw_shape, dtype=np.uint16)
    saturated = []
    for r0 in range(0, ny, STRIP_ROWS):
        r1 = min(ny, r0 + STRIP_ROWS)
        rows = slice(r0, r1)
        lam = None
        if exposure.charge is not None:
            lam = exposure.charge[rows].astype(np.float64)
        elif exposure.flat is not None:
            illum = exposure.flat_level + exposure.sky
            if exposure.stars is not None:
                lam = exposure.stars[rows].astype(np.float64)
                lam += illum
                lam *= exposure.flat[rows]
            else:
                lam = exposure.flat[rows].astype(np.float64) * illum
            if exposure.fringe is not None:
                lam += exposure.fringe[rows] * exposure.flat[rows]
        if exposure.dark is not None and exposure.exptime > 0 and exposure.charge is None:
            d = exposure.dark[rows].astype(np.float64) * exposure.exptime
            lam = d if lam is None else lam + d
        if lam is not None:
            elec = rng.poisson(lam).astype(np.float64)
            del lam
        else:
            elec = np.zeros((r1 - r0, nx))
        if exposure.well is not None:
            np.minimum(elec, exposure.well[None, :], out=elec)
        if cr_idx is not None and cr_idx.size:
            lo, hi = np.searchsorted(cr_idx, [r0 * nx, r1 * nx])
            elec.ravel()[cr_idx[lo:hi] - r0 * nx] += cr_q[lo:hi]

        strip = rng.standard_normal((r1 - r0, geom.raw_shape[1]))
        strip *= rn_raw
        data = strip[:, geom.raw_trim_cols]
        elec *= inv_gain
        if nonlinearity:
            elec += nonlinearity * elec * elec
        data += elec
        del elec
        data += pattern[rows]
        for a in range(geom.amps):
            level = rb[a, rows][:, None]
            strip[:, geom.raw_data_cols(a)] += level
            strip[:, geom.raw_over_cols(a)] += level
        np.rint(strip, out=strip)
        if exposed:
            hit = data >= sat
            if hit.any():
                rr, cc = np.nonzero(hit)
                saturated.append((rr + r0) * nx + cc)
                np.minimum(data, sat, out=data)
        if crosstalk:
            add_crosstalk(geom, data, rb[:, rows], crosstalk)
        np.clip(strip, 0, 65535, out=strip)
        raw[rows] = strip
    truth: dict[str, np.ndarray] = {"row_bias": rb.astype(np.float32)}
    if exposed:
        truth["cosmic_rays"] = cr_idx.astype(np.int64)
        truth["cosmic_ray_charge"] = cr_q.astype(np.float32)
        truth["saturated"] = (np.concatenate(saturated) if saturated else np.zeros(0, dtype=np.int64)).astype(np.int64)
    return raw, truth


def add_crosstalk(
    geom: Geometry, data: np.ndarray, row_levels: np.ndarray, terms: tuple[tuple[int, int, float, float], ...]
) -> None:
    """Add crosstalk to the data columns ``data`` (raw ADU, rows of a strip) in place.

    ``row_levels`` is the row bias of every amplifier for these rows ``(amps, rows)``. Every
    term uses the values before any crosstalk was added; the victims are rounded again.
    """
    signal = [data[:, geom.amp_cols(a)] - row_levels[a][:, None] for a in range(geom.amps)]
    for src, vic, linear, quadratic in terms:
        s = signal[src]
        if geom.readout_col(src) != geom.readout_col(vic):
            s = s[:, ::-1]
        cols = geom.amp_cols(vic)
        data[:, cols] += linear * s + quadratic * s * s
        data[:, cols] = np.rint(data[:, cols])


def add_crosstalk_chips(
    geom: Geometry,
    raws: list[np.ndarray],
    row_biases: list[np.ndarray],
    terms: tuple[tuple[int, int, int, int, float, float], ...],
) -> None:
    """Add crosstalk between chips to the rendered raw chips of one frame, in place.

    ``raws`` are the frame's raw uint16 chips (chip order), ``row_biases`` their row bias per
    amplifier ``(amps, ny)``; each term ``(source chip, source amp, victim chip, victim amp,
    linear, quadratic)`` adds ``linear s + quadratic s²`` (rounded) to the victim's data pixels,
    ``s`` the source's raw data pixel read at the same time minus its row bias, from the values
    before any of these terms (the source's own chip crosstalk included: a second-order
    difference). Amplifiers reading towards opposite ends (``readout_col``) pair mirrored.
    """
    signal = {}
    for sc, sa, _vc, _va, _c1, _c2 in terms:
        if (sc, sa) not in signal:
            cols = geom.raw_data_cols(sa)
            signal[(sc, sa)] = raws[sc][:, cols].astype(np.float64) - row_biases[sc][sa][:, None]
    added: dict[tuple[int, int], np.ndarray] = {}
    for sc, sa, vc, va, linear, quadratic in terms:
        s = signal[(sc, sa)]
        if geom.readout_col(sa) != geom.readout_col(va):
            s = s[:, ::-1]
        ghost = linear * s + quadratic * s * s
        key = (vc, va)
        added[key] = ghost if key not in added else added[key] + ghost
    for (vc, va), ghost in added.items():
        cols = geom.raw_data_cols(va)
        victim = raws[vc][:, cols].astype(np.float64) + np.rint(ghost)
        raws[vc][:, cols] = np.clip(victim, 0, 65535).astype(np.uint16)
