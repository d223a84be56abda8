"""A realistic, seeded synthetic night of a mosaic CCD camera, with its truth.

:func:`simulate_night` writes raw multi-extension FITS frames (biases, darks, flats per filter,
science frames per filter) of the simulated camera ``SIMCAM`` and, beside them, the truth they
were made from: every static property of the detector (bias structure, dark current, hot
pixels, flat-field response per filter, dead columns, gains, read noises, saturation levels) and
every per-frame random ingredient that a reduction should find (row-wise bias drift, cosmic
rays, saturated pixels, sky level, stars). With ``camera=`` the frames carry a real camera's
published header cards and raw layout instead (:mod:`ccdask.simulate._camera`).

Layout on disk::

    out_dir/raw/bias_000.fits ...            raw frames, one image extension per chip
    out_dir/truth.json                       scalars, geometry, the frame list (index)
    out_dir/truth.npz                        truth arrays, data-pixel frame of each chip

The same ``seed`` always gives byte-identical files. Each quantity draws from its own named
random stream (see :func:`ccdask.simulate._model.rng_for`), so e.g. chip 2's bias pattern
does not change when the night has more biases or more chips.

The model, per chip and amplifier (all truth in the trimmed data frame)::

    electrons = Poisson(flat × (flat-lamp level | sky + stars) + dark_rate × t) + cosmic rays
    ADU       = electrons / gain + row_bias(row) + bias_pattern + N(0, rdnoise / gain)
    raw       = round(ADU), data pixels at or above SATURATE held at SATURATE, clipped to uint16

Only photons are flat-fielded: dark current and cosmic-ray charge arise in the silicon and are
not multiplied by the flat response (what a reduction that subtracts the dark before dividing
by the flat assumes). The overscan columns carry ``row_bias`` and read noise only.

Examples
--------
>>> night = simulate_night(tmp_dir, chips=2, seed=3)               # doctest: +SKIP
>>> night.files["bias"][0].name                                    # doctest: +SKIP
'bias_000.fits'
>>> truth = night.truth()                                          # doctest: +SKIP
>>> truth.array("CCD1", "dark_rate").shape                         # doctest: +SKIP
(192, 160)
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..utils import TMP_PREFIX
from . import _camera
from . import _model as model
from . import _write as sio
from ._camera import CameraHeaders

__all__ = ["SIZES", "SimulatedNight", "Truth", "simulate_night"]

#: Data pixels per chip ``(ny, nx)`` and serial overscan columns per amplifier, per size.
SIZES: dict[str, tuple[int, int, int]] = dict(model.SIZES)

KINDS = ("bias", "dark", "flat", "science")
_IMAGETYP = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "OBJECT"}
_FILTER_NAME = re.compile(r"^[A-Za-z0-9]{1,16}$")
_RAW_NAME = re.compile(r"^(bias|dark|flat_[A-Za-z0-9]+|science_[A-Za-z0-9]+)_\d{3,}\.fits$")
_TMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}.+\.[0-9a-f]{{8}}$")  # an interrupted atomic write
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# results


class Truth:
    """The truth of a simulated night, loaded lazily from ``truth.json`` and ``truth.npz``.

    Parameters
    ----------
    path : path-like
        The ``truth.json`` file, or the night's root directory.

    Attributes
    ----------
    meta : dict
        Everything in ``truth.json``: ``seed``, ``size``, ``shape`` (data pixels per chip),
        ``amps``, ``filters``, ``chips`` (per chip: ``sensitivity``, ``dark_base``, ``detsec``,
        ``dead_columns`` and ``amps`` with per amplifier ``gain``, ``rdnoise``, ``bias_level``,
        ``saturate``, ``datasec``, ``biassec``, ``columns``), ``frames`` (per frame: ``name``,
        ``file``, ``kind``, ``imagetyp``, ``filter``, ``exptime``, ``date_obs`` and the frame's
        conditions) and, for small nights, ``stars``.

    Notes
    -----
    Arrays are addressed by chip and name, e.g. ``array("CCD1", "bias_pattern")`` (ADU),
    ``"dark_rate"`` (e-/s), ``"hot_pixels"`` (bool), ``"flat_g"`` (response normalised to a
    focal-plane median of 1), ``"dead_columns"`` (column indices), ``"bad_pixels"`` (hot
    pixels or dead columns, bool), and per frame ``"<frame>/row_bias"`` (ADU, (amps, ny)),
    ``"<frame>/cosmic_rays"`` and ``"<frame>/saturated"`` (bool masks), ``"<frame>/sky"``
    (e-, science frames). Frame names are file stems such as ``"science_r_000"``.
    :meth:`signal` renders what a perfect reduction of a science frame gives.

    A night written with a camera's headers (``meta["camera"]``) keeps the same arrays in the
    assembled chip frame; its amplifiers record ``rows`` and ``columns`` (their block of the
    chip), their raw sections and flips, and ``rdnoise_source`` (``"header"`` or
    ``"simulated"``: drawn because the header publishes none); ``row_bias`` runs over the raw
    rows of the chip's HDU.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "truth.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no truth file (is this a simulated night?)")
        self.path = path
        self.meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.arrays_path = path.parent / self.meta["arrays"]
        self._npz: Any = None

    # -- scalars ---------------------------------------------------------------------------
    @property
    def chips(self) -> tuple[str, ...]:
        """Chip names in order."""
        return tuple(self.meta["chips"])

    @property
    def shape(self) -> tuple[int, int]:
        """Data pixels per chip ``(ny, nx)``."""
        return tuple(self.meta["shape"])

    def frame(self, name: str) -> dict[str, Any]:
        """The record of one frame (by name, e.g. ``'dark_001'``, or file name)."""
        stem = Path(name).name.removesuffix(".fits")
        for rec in self.meta["frames"]:
            if rec["name"] == stem:
                return rec
        raise ConfigError(f"{self.path}: no frame {name!r} in this night")

    def amp(self, chip: str, amp: str = "A") -> dict[str, Any]:
        """Constants of one amplifier (``gain``, ``rdnoise``, ``bias_level``, ``saturate``...)."""
        try:
            return self.meta["chips"][chip]["amps"][amp]
        except KeyError:
            raise ConfigError(f"{self.path}: no amplifier {amp!r} of chip {chip!r}") from None

    # -- arrays ----------------------------------------------------------------------------
    def _archive(self):
        if self._npz is None:
            self._npz = np.load(self.arrays_path, allow_pickle=False)
        return self._npz

    def keys(self) -> list[str]:
        """All array keys ``'<chip>/<name>'`` (masks listed under their mask name)."""
        return [k.removesuffix(".idx") for k in self._archive().files]

    def array(self, chip: str, name: str) -> np.ndarray:
        """One truth array of ``chip`` (see the class notes for names)."""
        npz = self._archive()
        key = f"{chip}/{name}"
        if key in npz.files:
            return npz[key]
        if f"{key}.idx" in npz.files:
            mask = np.zeros(self.shape, dtype=bool)
            mask.ravel()[npz[f"{key}.idx"]] = True
            return mask
        if name == "bad_pixels" and f"{chip}/hot_pixels" in npz.files:
            mask = npz[f"{chip}/hot_pixels"].copy()
            mask[:, npz[f"{chip}/dead_columns"]] = True
            return mask
        raise ConfigError(f"{self.arrays_path}: no truth array {key!r} (known names of {chip}: {self._names(chip)})")

    def _names(self, chip: str) -> list[str]:
        pre = f"{chip}/"
        return [k[len(pre) :] for k in self.keys() if k.startswith(pre) and k.count("/") == 1]

    def stars(self) -> dict[str, np.ndarray]:
        """The star field: focal-plane ``y``, ``x`` (pixels), ``chip`` index, ``rate_<filter>``
        (e-/s; a frame's star flux is rate × exptime × transparency)."""
        npz = self._archive()
        return {k[len("stars/") :]: npz[k] for k in npz.files if k.startswith("stars/")}

    def signal(self, chip: str, frame: str) -> np.ndarray:
        """What a perfect reduction of a science frame gives on one chip (e-, float64): the sky
        plus the stars, as they fell on the chip before the flat-field response.

        The stars are rendered again from the star field, the frame's exposure time,
        transparency and seeing, exactly as the frame was made.
        """
        rec = self.frame(frame)
        if rec["kind"] != "science":
            raise ConfigError(f"{self.path}: {rec['name']} is a {rec['kind']} frame; only science frames have a signal")
        if chip not in self.meta["chips"]:
            raise ConfigError(f"{self.path}: no chip {chip!r} (chips: {', '.join(self.chips)})")
        k = int(self.meta["chips"][chip]["index"])
        ny, nx = self.shape
        grid = model.Geometry(ny=ny, nx=nx, nover=0, amps=1, chips=len(self.chips))  # chip k's origin
        stars = self.stars()
        dy, dx = rec.get("dither", (0.0, 0.0))
        field = model.StarField(stars["y"] + dy, stars["x"] + dx, stars["chip"], stars["y"] * 0.0, stars["y"] * 0.0)
        flux = stars[f"rate_{rec['filter']}"] * rec["exptime"] * rec["transparency"]
        image = model.render_stars(grid, k, field, flux, rec["fwhm"]).astype(np.float64)
        image += rec["sky"]
        return image

    def cosmic_ray_charge(self, chip: str, frame: str) -> np.ndarray:
        """The charge every cosmic-ray hit of a frame deposited on one chip (e-, float64, zero
        where none), in the assembled chip frame."""
        npz = self._archive()
        key = f"{chip}/{Path(frame).name.removesuffix('.fits')}"
        if f"{key}/cosmic_rays.idx" not in npz.files:
            raise ConfigError(f"{self.arrays_path}: no cosmic rays recorded for {key!r}")
        image = np.zeros(self.shape, dtype=np.float64)
        if f"{key}/cosmic_ray_charge" not in npz.files:
            raise ConfigError(f"{self.arrays_path}: {key!r} has no recorded hit charge (made by an older simulator)")
        image.ravel()[npz[f"{key}/cosmic_rays.idx"]] = npz[f"{key}/cosmic_ray_charge"]
        return image

    def close(self) -> None:
        """Close the array archive (reopened on the next access)."""
        if self._npz is not None:
            self._npz.close()
            self._npz = None

    def __enter__(self) -> Truth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Truth({str(self.path)!r})"


@dataclass(frozen=True)
class SimulatedNight:
    """Where a simulated night was written and what it holds.

    Attributes
    ----------
    root : Path
        The output directory.
    raw_dir : Path
        ``root / "raw"``, the raw frames.
    files : dict of str to list of Path
        Raw files per kind (``"bias"``, ``"dark"``, ``"flat"``, ``"science"``), in
        observation order.
    flats_by_filter, science_by_filter : dict of str to list of Path
        Flats and science frames per filter.
    truth_path : Path
        ``root / "truth.json"``; the arrays are in ``root / "truth.npz"``.
    chips : tuple of str
        Chip (extension) names, ``("CCD1", "CCD2", ...)``.
    size : str
        Size name (see :data:`SIZES`).
    amps : int
        Amplifiers per chip.
    seed : int
        The seed the night was made from.
    shape : tuple of int
        Data pixels per chip ``(ny, nx)``.
    camera : str or None
        The name of the real camera whose headers the frames carry (``size`` is then
        ``"camera"``), or None for the simulated camera ``SIMCAM``.
    """

    root: Path
    raw_dir: Path
    files: dict[str, list[Path]]
    flats_by_filter: dict[str, list[Path]]
    science_by_filter: dict[str, list[Path]]
    truth_path: Path
    chips: tuple[str, ...]
    size: str
    amps: int
    seed: int
    shape: tuple[int, int]
    camera: str | None = None

    def truth(self) -> Truth:
        """Open the truth (arrays are read on demand)."""
        return Truth(self.truth_path)

    @property
    def all_files(self) -> list[Path]:
        """Every raw file in observation order."""
        return [p for kind in KINDS for p in self.files[kind]]

    @classmethod
    def load(cls, root: str | Path) -> SimulatedNight:
        """Describe a night written earlier by :func:`simulate_night` from its ``truth.json``."""
        return _night_from_meta(Path(root), Truth(root).meta)


def _night_from_meta(root: Path, meta: dict[str, Any]) -> SimulatedNight:
    files: dict[str, list[Path]] = {k: [] for k in KINDS}
    flats: dict[str, list[Path]] = {f: [] for f in meta["filters"]}
    science: dict[str, list[Path]] = {f: [] for f in meta["filters"]}
    for rec in meta["frames"]:
        p = root / rec["file"]
        files[rec["kind"]].append(p)
        if rec["kind"] == "flat":
            flats[rec["filter"]].append(p)
        elif rec["kind"] == "science":
            science[rec["filter"]].append(p)
    return SimulatedNight(
        root=root,
        raw_dir=root / "raw",
        files=files,
        flats_by_filter=flats,
        science_by_filter=science,
        truth_path=root / "truth.json",
        chips=tuple(meta["chips"]),
        size=meta["size"],
        amps=meta["amps"],
        seed=meta["seed"],
        shape=tuple(meta["shape"]),
        camera=meta["camera"]["name"] if "camera" in meta else None,
    )


# --------------------------------------------------------------------------------------------
# argument checking


def _count(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"simulate_night: {name} must be an integer, got {value!r}")
    if not minimum <= int(value) <= maximum:
        raise ConfigError(f"simulate_night: {name} must be between {minimum} and {maximum}, got {value}")
    return int(value)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"simulate_night: {name} must be a number of seconds, got {value!r}")
    v = float(value)
    if not (np.isfinite(v) and 0 < v <= 1e5):
        raise ConfigError(f"simulate_night: {name} must be a positive exposure time in seconds, got {value!r}")
    return v


def _check_crosstalk(value: object, amps: int) -> tuple[tuple[int, int, float, float], ...]:
    """``{(source, victim): linear | (linear, quadratic)}`` as amplifier-index terms."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"simulate_night: crosstalk must be a dict {{(source, victim): coefficient}}, got {value!r}")
    names = model.AMP_NAMES[:amps]
    out = []
    for pair, coef in value.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(p in names for p in pair) and pair[0] != pair[1]):
            raise ConfigError(
                f"simulate_night: crosstalk pair {pair!r} must be two different amplifiers among {', '.join(names)}"
            )
        c = coef if isinstance(coef, tuple) else (coef, 0.0)
        if len(c) != 2 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and abs(x) < 0.1 for x in c
        ):
            raise ConfigError(
                f"simulate_night: crosstalk coefficient of {pair!r} must be a number (or a pair: linear, quadratic) "
                f"of magnitude below 0.1, got {coef!r}"
            )
        out.append((names.index(pair[0]), names.index(pair[1]), float(c[0]), float(c[1])))
    return tuple(out)


def _check_crosstalk_chips(value: object, amps: int, chips: int) -> tuple[tuple[int, int, int, int, float, float], ...]:
    """``{((source chip, amp), (victim chip, amp)): linear | (linear, quadratic)}`` as index terms
    ``(source chip, source amp, victim chip, victim amp, linear, quadratic)``."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(
            "simulate_night: crosstalk_chips must be a dict {((source chip, amp), (victim chip, amp)): coefficient}, "
            f"got {value!r}"
        )
    names = model.AMP_NAMES[:amps]
    chip_names = [f"CCD{k + 1}" for k in range(chips)]
    out = []
    for pair, coef in value.items():
        ok = isinstance(pair, tuple) and len(pair) == 2
        ok = ok and all(isinstance(x, tuple) and len(x) == 2 and x[0] in chip_names and x[1] in names for x in pair)
        if not ok or pair[0][0] == pair[1][0]:
            raise ConfigError(
                f"simulate_night: crosstalk_chips pair {pair!r} must be ((chip, amp), (chip, amp)) of two different "
                f"chips among {', '.join(chip_names)} and amplifiers among {', '.join(names)}"
            )
        c = coef if isinstance(coef, tuple) else (coef, 0.0)
        if len(c) != 2 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and abs(x) < 0.1 for x in c
        ):
            raise ConfigError(
                f"simulate_night: crosstalk_chips coefficient of {pair!r} must be a number (or a pair: linear, "
                f"quadratic) of magnitude below 0.1, got {coef!r}"
            )
        (sc, sa), (vc, va) = pair
        out.append(
            (chip_names.index(sc), names.index(sa), chip_names.index(vc), names.index(va), float(c[0]), float(c[1]))
        )
    return tuple(out)


def _check_nonlinearity(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) < 1e-5:
        raise ConfigError(
            f"simulate_night: nonlinearity must be a number of magnitude below 1e-5 (1/ADU), got {value!r}"
        )
    return float(value)


def _check_full_well(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise ConfigError(
            f"simulate_night: full_well must be a fraction in (0, 1] of the range below SATURATE, got {value!r}"
        )
    return float(value)


def _check_fringe(value: object, filters: tuple[str, ...]) -> dict[str, float] | None:
    if value is None:
        return None
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and k in filters and isinstance(v, (int, float)) and 0 < v <= 1e5 for k, v in value.items()
    )
    if not ok or not value:
        raise ConfigError(
            f"simulate_night: fringe must be a dict {{filter: amplitude in e-}} over the night's filters "
            f"{list(filters)}, got {value!r}"
        )
    return {str(k): float(v) for k, v in value.items()}


def _check_ptc_levels(value: object) -> tuple[float, ...]:
    if value is None:
        return ()
    try:
        levels = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        levels = ()
    if not levels or len(levels) > 200 or not all(0 < v <= 1e6 for v in levels):
        raise ConfigError(f"simulate_night: ptc_levels must be 1-200 levels in (0, 1e6] e-, got {value!r}")
    return levels


def _check_filters(filters: object) -> tuple[str, ...]:
    if isinstance(filters, str) or not isinstance(filters, Sequence) or not filters:
        raise ConfigError(f"simulate_night: filters must be a non-empty sequence of names, got {filters!r}")
    out = []
    for f in filters:
        if not isinstance(f, str) or not _FILTER_NAME.match(f):
            raise ConfigError(f"simulate_night: filter names must be 1–16 letters or digits, got {f!r}")
        if f in out:
            raise ConfigError(f"simulate_night: filter {f!r} is given twice")
        out.append(f)
    return tuple(out)


def _check_exptimes(value: object) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (_seconds("science_exptime", value),)
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"simulate_night: science_exptime must be seconds or a non-empty sequence of seconds, got {value!r}"
        )
    return tuple(_seconds("science_exptime", v) for v in value)


def _prepare_dirs(root: Path, overwrite: bool) -> Path:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: the output path exists and is not a directory")
    raw = root / "raw"
    if raw.exists() and not raw.is_dir():
        raise ConfigError(f"{raw}: exists and is not a directory")
    existing = sorted(raw.iterdir()) if raw.is_dir() else []
    truths = [p for p in (root / "truth.json", root / "truth.npz") if p.exists()]
    if (existing or truths) and not overwrite:
        what = existing[0] if existing else truths[0]
        raise ConfigError(
            f"{raw if existing else root}: not empty (found {what.name}); "
            f"pass overwrite=True to replace an earlier simulated night"
        )
    if overwrite:
        for p in existing:  # frames of an earlier night, never foreign files
            if p.is_file() and (_RAW_NAME.match(p.name) or _TMP_NAME.match(p.name)):
                p.unlink()
    raw.mkdir(parents=True, exist_ok=True)
    return raw


# --------------------------------------------------------------------------------------------
# the observing plan


def _plan(
    seed: int,
    nbias: int,
    ndark: int,
    nflat: int,
    nscience: int,
    filters: tuple[str, ...],
    dark_exptime: float,
    science_exptime: tuple[float, ...],
    scene: model.Scene,
    ptc_levels: tuple[float, ...] = (),
) -> list[dict[str, Any]]:
    """Frame records in observation order, with dates and per-frame conditions."""
    night = model.rng_for(seed, "night")
    start = _dt.datetime(2026, 1, 1, 23, 0, 0) + _dt.timedelta(
        days=int(night.integers(0, 365)), seconds=int(night.integers(0, 1800))
    )
    specs: list[tuple[str, str | None, int]] = []
    specs += [("bias", None, i) for i in range(nbias)]
    specs += [("dark", None, i) for i in range(ndark)]
    specs += [("flat", f, i) for f in filters for i in range(nflat)]
    specs += [("ptc", filters[0], i) for i in range(2 * len(ptc_levels))]
    specs += [("science", f, i) for f in filters for i in range(nscience)]
    frames = []
    clock = start
    last_kind = None
    for kind, filt, i in specs:
        name = f"{kind}_{i:03d}" if filt is None else f"{kind}_{filt}_{i:03d}"
        level = None
        if kind == "ptc":  # a pair of flats per level, at exactly the same illumination
            name, level, kind = f"ptc_{i // 2:02d}{'ab'[i % 2]}", ptc_levels[i // 2], "flat"
        rng = model.rng_for(seed, "frame", name)
        if kind == "science" and last_kind != "science":
            clock += _dt.timedelta(seconds=int(night.integers(1800, 3600)))  # wait for dark
        rec: dict[str, Any] = {
            "name": name,
            "file": f"raw/{name}.fits",
            "kind": kind,
            "imagetyp": _IMAGETYP[kind],
            "filter": filt,
            "object": {"bias": "bias", "dark": "dark", "flat": f"flat {filt}", "science": "SIMFIELD-1"}[kind],
        }
        if kind == "bias":
            rec["exptime"] = 0.0
        elif kind == "dark":
            rec["exptime"] = dark_exptime
        elif kind == "flat" and level is not None:
            rec["exptime"] = level / 1000.0
            rec["flat_level"] = level
        elif kind == "flat":
            rec["exptime"] = round(float(rng.uniform(2.0, 8.0)), 1)
            rec["flat_level"] = float(rng.uniform(15000.0, 25000.0))
        else:
            t = science_exptime[i % len(science_exptime)]
            sky_rate = model.filter_properties(filt)[0] if scene.sky is None else scene.sky
            rec["exptime"] = t
            rec["sky"] = float(sky_rate * t * rng.uniform(0.8, 1.25))
            rec["fwhm"] = float(rng.uniform(*scene.fwhm))
            rec["transparency"] = float(rng.uniform(0.85, 1.0))
        rec["date_obs"] = clock.isoformat(timespec="milliseconds")
        mjd = (clock - _dt.datetime(1858, 11, 17)).total_seconds() / 86400.0
        rec["mjd_obs"] = round(mjd, 8)
        clock += _dt.timedelta(seconds=rec["exptime"] + float(night.uniform(20.0, 40.0)))
        last_kind = kind
        frames.append(rec)
    return frames


# --------------------------------------------------------------------------------------------
# the generator


def simulate_night(
    out_dir: str | Path,
    *,
    chips: int | None = None,
    amps: int | None = None,
    size: str | None = None,
    nbias: int = 5,
    ndark: int = 3,
    nflat: int = 3,
    filters: Sequence[str] = ("g", "r"),
    nscience: int = 2,
    seed: int = 0,
    dark_exptime: float = 300.0,
    science_exptime: float | Sequence[float] = (60.0, 120.0),
    overwrite: bool = False,
    camera: CameraHeaders | None = None,
    scene: model.Scene | None = None,
    crosstalk: dict[tuple[str, str], float | tuple[float, float]] | None = None,
    crosstalk_chips: dict[tuple[tuple[str, str], tuple[str, str]], float | tuple[float, float]] | None = None,
    nonlinearity: float | None = None,
    full_well: float | None = None,
    ptc_levels: Sequence[float] | None = None,
    fringe: dict[str, float] | None = None,
    dither: float | None = None,
) -> SimulatedNight:
    """Write a synthetic night of raw mosaic frames and its truth.

    Parameters
    ----------
    out_dir : path-like
        Output directory; frames go to ``out_dir/raw``, the truth to ``out_dir/truth.json``
        and ``out_dir/truth.npz``. Created if missing.
    chips : int, optional
        Number of chips (1–64, default 4), laid out in a grid two chips wide with no gaps.
        With ``camera``: the first ``chips`` image HDUs of the camera (default all).
    amps : int, optional
        Amplifiers per chip, 1 or 2 (default 2); not with ``camera`` (its layout says).
    size : {"small", "medium", "large"}, optional
        Data pixels per chip: 192 × 160, 1024 × 1024 or 4096 × 2048 (ny × nx), with 16, 32 or
        32 overscan columns per amplifier (default ``"small"``); not with ``camera``.
    nbias, ndark : int
        Number of bias and dark frames.
    nflat, nscience : int
        Number of flats and of science frames *per filter*.
    filters : sequence of str
        Filter names (letters and digits). Known names (u g r i z y) have their own sky
        brightness and throughput; others get middling values.
    seed : int
        Non-negative seed; the same seed gives byte-identical files.
    dark_exptime : float
        Exposure time of the darks (s).
    science_exptime : float or sequence of float
        Exposure time(s) of the science frames (s); the i-th frame of each filter uses the
        ``i % len`` -th value.
    overwrite : bool
        Allow replacing an earlier night in ``out_dir``: its frames (names the simulator
        writes) are deleted first. Without it, a non-empty ``raw`` directory or existing truth
        files are an error.
    camera : CameraHeaders, optional
        Write every frame with a real camera's published header cards, its pixels laid out
        as the camera's documented amplifier layout says (see :class:`CameraHeaders`): raw
        shape, data type and compression, overscans, prescans, flips, gains (and read noise
        and saturation where published) are the camera's; the truth stays in the assembled
        chip frame. The frame cards (type, exposure time, filter, date, object) are set
        through the keywords of the camera's ccdask profile.
    scene : Scene, optional
        The seeing range (PSF FWHM, pixels), sky rate, star density and cosmic-ray rate of the
        science frames (:class:`Scene`; the defaults when None). Every cosmic-ray hit is
        recorded: ``"<frame>/cosmic_rays"`` (pixels) and ``"<frame>/cosmic_ray_charge"`` (e-
        per pixel, see :meth:`Truth.cosmic_ray_charge`).
    crosstalk : dict, optional
        Crosstalk to inject in every exposed frame of every chip: ``{(source, victim): linear}``
        or ``{(source, victim): (linear, quadratic)}`` with amplifier names (``"A"``, ``"B"``),
        in raw ADU of the source's signal (see :func:`ccdask.simulate._model.add_crosstalk`);
        recorded in ``truth.json`` under ``crosstalk``. Not with ``camera``. Default: none.
    crosstalk_chips : dict, optional
        Crosstalk between chips read by the same controller, in every exposed frame:
        ``{(("CCD1", "A"), ("CCD2", "B")): linear}`` (or ``(linear, quadratic)``), source first.
        After every chip of the frame is rendered (with its own ``crosstalk``), each victim data
        pixel gains ``linear s + quadratic s²`` ADU (rounded), ``s`` the source chip's raw pixel
        read at the same time minus that amplifier's row bias; amplifiers whose overscans lie on
        opposite sides read in opposite directions, so their columns pair mirrored
        (:func:`ccdask.simulate._model.add_crosstalk_chips`). Recorded in ``truth.json`` under
        ``crosstalk_chips``. Not with ``camera``. Default: none.
    nonlinearity : float, optional
        beta (1/ADU): every amplifier reads a signal of ``s`` ADU as ``s + beta s²`` (e.g.
        -5e-7: 1 % low at 20000 ADU); recorded in ``truth.json`` under ``nonlinearity``. Not with
        ``camera``. Default: linear.
    full_well : float, optional
        Bleed trails: every pixel of a science frame holds at most ``full_well`` times its
        amplifier's range below SATURATE, ``full_well x (saturate - bias level) x gain``
        electrons; the excess of a saturated star spills along its columns, filling the pixels
        above and below to the full well (:func:`ccdask.simulate._model.bleed_charge`). The trail
        pixels are recorded as ``"<chip>/<frame>/bleed"`` in ``truth.npz`` (the pixels left at the
        full well, cores and trails, as ``"<chip>/<frame>/full_well"``) and the full wells in
        ``truth.json`` under ``bleed``. A value in (0, 1] (below 1 the trails read below
        SATURATE). Flats are held at the full well too. Not with ``camera``. Default: no
        bleeding (pixels clip at SATURATE).
    ptc_levels : sequence of float, optional
        Pairs of flats for a photon-transfer curve: for each level (e- per pixel before the flat
        response), two flats of the first filter named ``ptc_<k>a`` and ``ptc_<k>b``, exposed
        ``level / 1000`` s (a lamp of 1000 e-/s), after the ordinary flats. Default: none.
    fringe : dict, optional
        Fringes in the science frames: ``{filter: amplitude}`` (e-): every science frame of the
        filter gains, like the sky (so multiplied by the flat response), a fixed pattern of unit
        rms (:func:`ccdask.simulate._model.fringe_pattern`) times its own amplitude, drawn
        uniformly within 0.6-1.4 times ``amplitude``. The amplitudes are recorded per frame
        (``fringe_amplitude`` in the frame's record of ``truth.json``), the patterns as
        ``"<chip>/fringe_<filter>"`` in ``truth.npz``. Not with ``camera``. Default: none.
    dither : float, optional
        Telescope dithers: every science frame's star field is shifted by its own offset, drawn
        uniformly within +-``dither`` pixels in y and x (its own random stream, so the rest of
        the night is unchanged); recorded as ``dither`` ``[dy, dx]`` in the frame's record of
        ``truth.json`` and used by :meth:`SimulatedNight.signal`. Not with ``camera``. Default:
        no dithers (every frame sees the stars on the same pixels).

    Returns
    -------
    SimulatedNight
        The paths of everything written, and :meth:`SimulatedNight.truth`.

    Raises
    ------
    ConfigError
        If an argument is invalid or ``out_dir`` already holds a night and ``overwrite`` is
        false.

    Notes
    -----
    Frames are generated and written one at a time (each chip in strips of rows), and the
    static truth is staged on disk and memory-mapped, so memory stays bounded for ``large``.
    Files are written under temporary names and renamed when complete.
    """
    if camera is not None:
        if not isinstance(camera, CameraHeaders):
            raise ConfigError(
                f"simulate_night: camera must be a CameraHeaders (header cards and amplifier layout), got {camera!r}"
            )
        if amps is not None or size is not None:
            raise ConfigError("simulate_night: amps and size come from the camera; do not pass them with camera=")
        if chips is not None:
            chips = _count("chips", chips, 1, 64)
        if crosstalk or crosstalk_chips or nonlinearity or full_well is not None or ptc_levels or fringe or dither:
            raise ConfigError(
                "simulate_night: crosstalk, nonlinearity, full_well, ptc_levels, fringe and dither are for SIMCAM "
                "nights only; "
                "do not pass them with camera="
            )
    else:
        chips = _count("chips", 4 if chips is None else chips, 1, 64)
        amps = _count("amps", 2 if amps is None else amps, 1, 2)
        size = "small" if size is None else size
        full_well = _check_full_well(full_well)
        if not isinstance(size, str) or size not in SIZES:
            raise ConfigError(f"simulate_night: size must be one of {sorted(SIZES)}, got {size!r}")
    levels = _check_ptc_levels(ptc_levels)
    nbias = _count("nbias", nbias, 0, 999)
    ndark = _count("ndark", ndark, 0, 999)
    nflat = _count("nflat", nflat, 0, 999)
    nscience = _count("nscience", nscience, 0, 999)
    filters = _check_filters(filters)
    fringes = _check_fringe(fringe, filters)
    dither = _check_dither(dither)
    seed = _count("seed", seed, 0, 2**63 - 1)
    dark_exptime = _seconds("dark_exptime", dark_exptime)
    exptimes = _check_exptimes(science_exptime)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"simulate_night: overwrite must be True or False, got {overwrite!r}")
    if scene is None:
        scene = model.Scene()
    elif not isinstance(scene, model.Scene):
        raise ConfigError(f"simulate_night: scene must be a Scene, got {scene!r}")

    root = Path(out_dir)
    raw_dir = _prepare_dirs(root, overwrite)
    frames = _plan(seed, nbias, ndark, nflat, nscience, filters, dark_exptime, exptimes, scene, levels)

    stage = Path(tempfile.mkdtemp(prefix=".simulate-", dir=root))
    try:
        if camera is not None:
            meta = _camera.generate(seed, camera, chips, filters, frames, root, raw_dir, stage, scene)
        else:
            assert amps is not None and size is not None
            ny, nx, nover = SIZES[size]
            geom = model.Geometry(ny=ny, nx=nx, nover=nover, amps=amps, chips=chips)
            terms = _check_crosstalk(crosstalk, amps)
            inter = _check_crosstalk_chips(crosstalk_chips, amps, chips)
            beta = _check_nonlinearity(nonlinearity)
            meta = _generate(
                seed,
                size,
                geom,
                filters,
                frames,
                root,
                raw_dir,
                stage,
                scene,
                terms,
                beta,
                full_well,
                fringes,
                inter,
                dither,
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return _night_from_meta(root, meta)


def _check_dither(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
        raise ConfigError(f"simulate_night: dither must be a number of pixels in [0, 1000], got {value!r}")
    return float(value) or None


def _shifted(stars: model.StarField, rec: dict[str, Any]) -> model.StarField:
    """The star field as a science frame saw it (shifted by its dither, if any)."""
    if "dither" not in rec:
        return stars
    dy, dx = rec["dither"]
    return replace(stars, y=stars.y + dy, x=stars.x + dx)


def _generate(
    seed: int,
    size: str,
    geom: model.Geometry,
    filters: tuple[str, ...],
    frames: list[dict[str, Any]],
    root: Path,
    raw_dir: Path,
    stage: Path,
    scene: model.Scene,
    crosstalk: tuple[tuple[int, int, float, float], ...] = (),
    nonlinearity: float = 0.0,
    full_well: float | None = None,
    fringe: dict[str, float] | None = None,
    crosstalk_chips: tuple[tuple[int, int, int, int, float, float], ...] = (),
    dither: float | None = None,
) -> dict[str, Any]:
    chip_models = [model.make_chip(seed, geom, k) for k in range(geom.chips)]
    optics = model.make_optics(seed, geom)

    # ---- static truth, staged as .npy files and memory-mapped --------------------------------
    staged: dict[str, Path] = {}

    def stage_array(key: str, arr: np.ndarray) -> None:
        p = stage / f"{len(staged):05d}.npy"
        np.save(p, arr, allow_pickle=False)
        staged[key] = p

    dust: dict[str, dict[str, list]] = {}
    for chip in chip_models:
        stage_array(f"{chip.name}/bias_pattern", model.bias_pattern(seed, geom, chip))
        rate, hot = model.dark_rate(seed, geom, chip)
        stage_array(f"{chip.name}/dark_rate", rate)
        stage_array(f"{chip.name}/hot_pixels", hot)
        del rate, hot
        stage_array(f"{chip.name}/dead_columns", np.array(chip.dead_columns, dtype=np.int32))
        stage_array(f"{chip.name}/dead_response", np.array(chip.dead_response, dtype=np.float32))
        base = model.flat_base(seed, geom, chip, optics)
        dust[chip.name] = {}
        for f in filters:
            resp = base.copy()
            dust[chip.name][f] = model.apply_dust(seed, geom, chip, f, resp)
            stage_array(f"{chip.name}/flat_{f}", resp)
            del resp
        del base

    def mapped(key: str, mode: str = "r") -> np.ndarray:
        return np.load(staged[key], mmap_mode=mode)

    flat_scale = {}
    for f in filters:
        flats = [mapped(f"{c.name}/flat_{f}", "r+") for c in chip_models]
        med = model.focal_plane_median(flats)
        flat_scale[f] = med
        for arr in flats:
            np.divide(arr, np.float32(med), out=arr)
            arr.flush()
        del flats

    stars = model.make_stars(seed, geom, scene.star_density)
    for f in fringe or {}:
        for chip in chip_models:
            stage_array(f"{chip.name}/fringe_{f}", model.fringe_pattern(seed, geom, chip.index, f))
    for rec in frames:
        if fringe and rec["kind"] == "science" and rec["filter"] in fringe:
            draw = model.rng_for(seed, "fringe", rec["name"]).uniform(0.6, 1.4)
            rec["fringe_amplitude"] = float(fringe[rec["filter"]] * draw)
        if dither and rec["kind"] == "science":
            dy, dx = model.rng_for(seed, "dither", rec["name"]).uniform(-dither, dither, 2)
            rec["dither"] = [float(dy), float(dx)]

    # ---- frames, one at a time ----------------------------------------------------------------
    frame_arrays: list[tuple[str, np.ndarray]] = []
    for rec in frames:
        kind = rec["kind"]
        t = rec["exptime"]
        flux = None
        if kind == "science":
            flux = stars.rate(rec["filter"]) * t * rec["transparency"]
        hdus = []
        rec["chips"] = {}
        row_biases = []
        for chip in chip_models:
            exposure = model.ChipExposure(exptime=t, cr_rate=scene.cr_rate)
            if kind != "bias":
                exposure.dark = mapped(f"{chip.name}/dark_rate")
            if kind == "flat":
                exposure.flat = mapped(f"{chip.name}/flat_{rec['filter']}")
                exposure.flat_level = rec["flat_level"]
                if full_well is not None:
                    exposure.well = model.full_well(chip, full_well)[geom.col_amp()]
            elif kind == "science":
                exposure.flat = mapped(f"{chip.name}/flat_{rec['filter']}")
                exposure.sky = rec["sky"]
                exposure.stars = model.render_stars(geom, chip.index, _shifted(stars, rec), flux, rec["fwhm"])
                if "fringe_amplitude" in rec:
                    exposure.fringe = mapped(f"{chip.name}/fringe_{rec['filter']}") * np.float32(
                        rec["fringe_amplitude"]
                    )
                if full_well is not None:
                    exposure.charge, trail, full = model.bleed_charge(geom, chip, exposure, full_well)
                    frame_arrays.append((f"{chip.name}/{rec['name']}/bleed.idx", trail))
                    frame_arrays.append((f"{chip.name}/{rec['name']}/full_well.idx", full))
            rng = model.rng_for(seed, "chipframe", rec["name"], chip.index)
            pattern = mapped(f"{chip.name}/bias_pattern")
            raw, truth = model.render_chip(
                rng, geom, chip, pattern, exposure, crosstalk if kind in ("flat", "science") else (), nonlinearity
            )
            hdus.append((sio.chip_header(geom, chip), raw))
            row_biases.append(truth["row_bias"])
            prefix = f"{chip.name}/{rec['name']}"
            frame_arrays.append((f"{prefix}/row_bias", truth["row_bias"]))
            if "cosmic_rays" in truth:
                frame_arrays.append((f"{prefix}/cosmic_rays.idx", truth["cosmic_rays"]))
                frame_arrays.append((f"{prefix}/cosmic_ray_charge", truth["cosmic_ray_charge"]))
                frame_arrays.append((f"{prefix}/saturated.idx", truth["saturated"]))
                rec["chips"][chip.name] = {
                    "cosmic_ray_pixels": int(truth["cosmic_rays"].size),
                    "saturated_pixels": int(truth["saturated"].size),
                }
            if kind == "science":
                frame_arrays.append((f"{prefix}/sky", np.array(rec["sky"])))
        if crosstalk_chips and kind in ("flat", "science"):
            model.add_crosstalk_chips(geom, [raw for _, raw in hdus], row_biases, crosstalk_chips)
        sio.write_mef(raw_dir / f"{rec['name']}.fits", sio.primary_header(rec, geom), hdus)
        del hdus
        if not rec["chips"]:
            del rec["chips"]

    # ---- the truth files ----------------------------------------------------------------------
    star_arrays = [("stars/y", stars.y), ("stars/x", stars.x), ("stars/chip", stars.chip)]
    star_arrays += [(f"stars/rate_{f}", stars.rate(f)) for f in filters]

    def entries() -> Iterator[tuple[str, np.ndarray | Path]]:
        yield from staged.items()
        yield from frame_arrays
        yield from star_arrays

    sio.write_npz(root / "truth.npz", entries())
    meta = _meta(seed, size, geom, filters, chip_models, optics, dust, flat_scale, frames, stars)
    meta["scene"] = scene.to_dict()
    if full_well is not None:  # only when injected, like the crosstalk
        meta["bleed"] = {
            "full_well_fraction": full_well,
            "full_well_e": {
                c.name: dict(zip(model.AMP_NAMES, model.full_well(c, full_well).tolist(), strict=False))
                for c in chip_models
            },
        }
    if nonlinearity:  # only when injected, like the crosstalk
        meta["nonlinearity"] = {"beta": nonlinearity, "model": "measured = s + beta s^2 (ADU)"}
    if crosstalk:  # only when injected, so the truth of other nights stays byte-identical
        names = model.AMP_NAMES
        meta["crosstalk"] = [
            {"source": names[s], "victim": names[v], "linear": c1, "quadratic": c2} for s, v, c1, c2 in crosstalk
        ]
    if crosstalk_chips:  # only when injected, like the crosstalk
        names = model.AMP_NAMES
        meta["crosstalk_chips"] = [
            {
                "source_chip": chip_models[sc].name,
                "source": names[sa],
                "victim_chip": chip_models[vc].name,
                "victim": names[va],
                "linear": c1,
                "quadratic": c2,
            }
            for sc, sa, vc, va, c1, c2 in crosstalk_chips
        ]
    sio.write_json(root / "truth.json", meta)
    return meta


def _meta(
    seed: int,
    size: str,
    geom: model.Geometry,
    filters: tuple[str, ...],
    chip_models: list[model.ChipModel],
    optics: model.Optics,
    dust: dict[str, dict[str, list]],
    flat_scale: dict[str, float],
    frames: list[dict[str, Any]],
    stars: model.StarField,
) -> dict[str, Any]:
    secs = sio.amp_sections(geom)
    chips: dict[str, Any] = {}
    for chip in chip_models:
        amps = {}
        for a, amp in enumerate(chip.amps):
            cols = geom.amp_cols(a)
            amps[amp.name] = {
                "gain": amp.gain,
                "rdnoise": amp.rdnoise,
                "rdnoise_adu": amp.rn_adu,
                "bias_level": amp.bias_level,
                "saturate": amp.saturate,
                "datasec": secs[a]["datasec"],
                "biassec": secs[a]["biassec"],
                "columns": [cols.start, cols.stop],
            }
        oy, ox = geom.origin(chip.index)
        chips[chip.name] = {
            "index": chip.index,
            "detsec": sio.detsec(geom, chip.index),
            "origin": [oy, ox],
            "sensitivity": chip.sensitivity,
            "dark_base": chip.dark_base,
            "amp_glow": chip.glow,
            "dead_columns": list(chip.dead_columns),
            "dead_response": list(chip.dead_response),
            "dust": dust[chip.name],
            "amps": amps,
        }
    meta: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "generator": "ccdask.simulate._night",
        "seed": seed,
        "size": size,
        "shape": [geom.ny, geom.nx],
        "raw_shape": list(geom.raw_shape),
        "overscan": geom.nover,
        "amps": geom.amps,
        "amp_names": [a.name for a in chip_models[0].amps],
        "grid": list(geom.grid),
        "detsize": sio.detsize(geom),
        "trimsec": sio.trimsec(geom),
        "filters": list(filters),
        "arrays": "truth.npz",
        "units": {
            "bias_pattern": "ADU",
            "row_bias": "ADU",
            "dark_rate": "e-/s",
            "sky": "e-",
            "flat": "normalised response",
            "star rate": "e-/s",
        },
        "optics": {"axis_y": optics.axis_y, "axis_x": optics.axis_x, "vignetting_at_corner": optics.falloff},
        "flat_normalisation": flat_scale,
        "chips": chips,
        "frames": frames,
        "n_stars": int(stars.y.size),
    }
    stars_list = sio.star_list(stars, geom, [c.name for c in chip_models], filters)
    if stars_list is not None:
        meta["stars"] = stars_list
    return meta
