"""Simulated nights written with a real camera's header cards (private to :mod:`ccdask.simulate`).

A :class:`CameraHeaders` holds the published header cards of one raw exposure of a real camera
(every HDU kept: the primary and the image extensions, or a subset of a mosaic's extensions)
and the camera's amplifier layout *as its documentation describes it* (:class:`CameraAmp`:
where each amplifier's data, overscans and prescans lie in the raw frame, where its data go in
the assembled chip, whether it reads flipped, and which header card holds its gain). The
simulator lays its model's pixels out with that description only: it never asks ccdask's layout
resolver, so a reduction of the night checks the resolver against an independent account of
the camera.

Every frame of the night is written with the published cards (structural cards are rewritten
by astropy for the synthetic data; tile-compressed HDUs are written tile-compressed again, with
the published tiling and algorithm). The frame-specific cards are set through the keywords of
the camera's ccdask profile: for each of the fields ``imagetyp``, ``exptime``, ``filter``,
``date`` and ``object`` the first keyword of the profile's list present in the published
headers is set in every HDU that has it (added to the primary header when none is present);
``date`` also sets the other keywords of its list that are present (``MJD-...`` ones to the
modified Julian date), and ``DARKTIME`` follows the exposure time where it is present. Each
frame is then classified with the profile to make sure ccdask will read it as it was meant.

The model is the default night's (``ccdask.simulate._night``), in the assembled chip:
electrons from flat × (lamp | sky + stars) + dark × t (Poisson) plus cosmic rays; per amplifier
``ADU = electrons / gain + bias pattern``, turned into the raw orientation (flips), plus the
row bias of the raw row the pixel is read in and read noise, rounded, held at the saturation
level. Overscans and prescans carry the row bias and read noise only. Every other raw pixel
(the corners where overscans cross, gaps) holds the amplifiers' mean bias level, without
noise: nothing should read it. The row bias drifts along the raw rows for an amplifier with a
serial overscan (which can follow it); one with only a parallel overscan has a steady level (a
frame offset), as a camera must to be reducible with such an overscan.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.io import fits

from ..errors import ConfigError
from ..profiles import Profile, available_profiles, load_profile
from ..utils import atomic_path
from . import _model as model
from . import _write as sio

__all__ = ["DEFAULT_IMAGETYP", "CameraAmp", "CameraHeaders", "read_header_file"]

KINDS = ("bias", "dark", "flat", "science")

#: Header values of the image type per kind, unless the camera says otherwise.
DEFAULT_IMAGETYP: dict[str, str] = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "OBJECT"}

#: Cards astropy writes itself for the data, and fpack's bookkeeping: dropped from the published
#: headers (BLANK is kept for integer data, where it means something).
_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|CHECKSUM|DATASUM|"
    r"TFIELDS|TTYPE\d+|TFORM\d+|Z[A-Z]+\d*)$"
)
_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")
_HDU_LINE = re.compile(r"^# --- HDU (\d+) ---\s*$")
_NAME = re.compile(r"^[^/\s][^/]*$")
_FIELDS = ("imagetyp", "exptime", "filter", "date", "object")

Block = tuple[slice, slice]


# --------------------------------------------------------------------------------------------
# the description


def read_header_file(path: str | Path) -> dict[int, fits.Header]:
    """The cards of every HDU of a header text file, by the HDU's index in the original file.

    The format is ``tests/data/headers``': one card per line, each HDU introduced by a line
    ``# --- HDU n ---``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the header file: {exc}") from exc
    hdus: dict[int, list[str]] = {}
    current: list[str] | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        m = _HDU_LINE.match(line)
        if m:
            current = hdus.setdefault(int(m.group(1)), [])
        elif current is None:
            if line.strip():
                raise ConfigError(f"{path}:{n}: a card before the first '# --- HDU n ---' line")
        else:
            current.append(line[:80].ljust(80))
    if not hdus:
        raise ConfigError(f"{path}: no '# --- HDU n ---' section")
    return {k: fits.Header.fromstring("".join(v)) for k, v in hdus.items()}


@dataclass(frozen=True)
class CameraAmp:
    """One amplifier as the camera's documentation describes it.

    Sections are FITS sections ``[x1:x2,y1:y2]`` (1-based, inclusive, columns first), written
    forward; the readout direction is given by ``flip_x``/``flip_y``.

    Parameters
    ----------
    hdu : int
        The HDU holding it, numbered as in the original file (the header file's ``HDU n``).
    name : str
        Amplifier name (truth keys; ccdask's name for it is what the test compares with).
    data : str
        Its light-sensitive pixels in the raw frame.
    chip : str
        Where those pixels go in the assembled chip (the trimmed CCD image).
    gain : float or str
        e-/ADU, or the header keyword holding it (the HDU's cards over the primary's).
    serial, parallel : str, optional
        Its serial overscan (columns beside the data) and parallel overscan (rows above or
        below them) in the raw frame.
    prescan : str or sequence of str
        Prescan regions in the raw frame: they get the bias level and read noise.
    flip_x, flip_y : bool
        The raw data run the other way than the assembled chip along x (y).
    rdnoise : float or str, optional
        Read noise (e-) or its header keyword; None when the header publishes none: the
        simulator then draws one (3–8 e-) and writes nothing.
    saturate : float or str, optional
        Saturation (raw ADU) or its header keyword; None: the largest value of the data type
        (65535 for floating-point data).
    """

    hdu: int
    name: str
    data: str
    chip: str
    gain: float | str
    serial: str | None = None
    parallel: str | None = None
    prescan: str | Sequence[str] = ()
    flip_x: bool = False
    flip_y: bool = False
    rdnoise: float | str | None = None
    saturate: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prescan, str):
            object.__setattr__(self, "prescan", (self.prescan,))
        else:
            object.__setattr__(self, "prescan", tuple(self.prescan))
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"CameraAmp: name must be a non-empty string without '/', got {self.name!r}")
        if isinstance(self.hdu, bool) or not isinstance(self.hdu, int) or self.hdu < 0:
            raise ConfigError(f"CameraAmp {self.name}: hdu must be a non-negative integer, got {self.hdu!r}")


@dataclass(frozen=True)
class CameraHeaders:
    """A real camera for :func:`ccdask.simulate.simulate_night`: published header cards and the
    documented amplifier layout.

    Parameters
    ----------
    headers : mapping of int to astropy.io.fits.Header
        The published cards of each HDU kept, by its index in the original file; HDU 0 (the
        primary) is required. Every image HDU must hold amplifiers.
    amps : sequence of CameraAmp
        Every amplifier of every image HDU.
    name : str
        The camera's name (recorded in the truth and in a HISTORY card of each frame).
    profile : str, optional
        The ccdask profile whose keywords name the frame cards (a shipped name or a TOML
        path); None: the shipped profile whose ``[detect]`` block matches, else ``generic``,
        as ``ccdask catalog`` chooses.
    imagetyp : mapping of str to str
        The header value of the image type per kind (``bias``, ``dark``, ``flat``,
        ``science``); kinds left out use :data:`DEFAULT_IMAGETYP`.
    filters : mapping of str to str
        The header value of each simulated filter name (default: the name itself).
    cards : mapping of str to mapping of str to object
        Further cards per kind, set in every HDU that has the keyword (else added to the
        primary), e.g. ``{"science": {"ESO DPR CATG": "SCIENCE"}}``.
    source : str
        Where the cards come from (recorded in the truth).
    """

    headers: Mapping[int, fits.Header]
    amps: Sequence[CameraAmp]
    name: str = "camera"
    profile: str | None = None
    imagetyp: Mapping[str, str] = field(default_factory=dict)
    filters: Mapping[str, str] = field(default_factory=dict)
    cards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        headers = {int(k): v for k, v in sorted(self.headers.items())}
        if 0 not in headers:
            raise ConfigError(f"camera {self.name}: the headers need the primary HDU 0")
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "amps", tuple(self.amps))
        if not self.amps or not all(isinstance(a, CameraAmp) for a in self.amps):
            raise ConfigError(f"camera {self.name}: amps must be a non-empty sequence of CameraAmp")
        for what, table in (("imagetyp", self.imagetyp), ("cards", self.cards)):
            unknown = sorted(set(table) - set(KINDS))
            if unknown:
                raise ConfigError(f"camera {self.name}: {what} names {unknown}; kinds are {', '.join(KINDS)}")
        object.__setattr__(self, "imagetyp", {**DEFAULT_IMAGETYP, **dict(self.imagetyp)})
        object.__setattr__(self, "filters", dict(self.filters))
        object.__setattr__(self, "cards", {k: dict(v) for k, v in self.cards.items()})

    @classmethod
    def from_file(
        cls, path: str | Path, amps: Sequence[CameraAmp], *, hdus: Sequence[int] | None = None, **kwargs: Any
    ) -> CameraHeaders:
        """The camera of a header text file (see :func:`read_header_file`).

        ``hdus`` keeps only those HDUs besides the primary (default: every HDU of the file that
        holds an amplifier, and the primary). Other keywords are :class:`CameraHeaders`'.
        """
        headers = read_header_file(path)
        keep = {0, *(hdus if hdus is not None else (a.hdu for a in amps))}
        missing = sorted(keep - set(headers))
        if missing:
            raise ConfigError(f"{path}: no HDU {missing[0]} in the header file (it has {sorted(headers)})")
        kwargs.setdefault("name", Path(path).name.split(".")[0])
        kwargs.setdefault("source", str(path))
        return cls({k: headers[k] for k in sorted(keep)}, amps, **kwargs)


# --------------------------------------------------------------------------------------------
# the description, checked and turned into numpy blocks


@dataclass(frozen=True)
class _Hdu:
    published: int
    cards: fits.Header  # the published cards minus the structural ones
    shape: tuple[int, int] | None  # None: no data
    dtype: np.dtype | None
    compressed: bool
    tile: tuple[int, int] | None
    compression: str
    limits: tuple[float, float]  # the data type's range, the BLANK value kept out


@dataclass(frozen=True)
class _Amp:
    spec: CameraAmp
    data: Block
    chip: Block
    serial: Block | None
    parallel: Block | None
    prescan: tuple[Block, ...]
    flip: tuple[bool, bool]  # (y, x)
    readout: tuple[int, int]  # assembled-chip (row, column) of its readout corner


@dataclass(frozen=True)
class _Chip:
    index: int
    name: str
    hdu: _Hdu
    position: int  # in the written file
    merged: fits.Header  # the primary's cards under the HDU's
    amps: tuple[_Amp, ...]


@dataclass(frozen=True)
class _Camera:
    spec: CameraHeaders
    profile: Profile
    hdus: tuple[_Hdu, ...]  # written order
    chips: tuple[_Chip, ...]
    shape: tuple[int, int]


def _block(text: object, what: str) -> Block:
    if not isinstance(text, str):
        raise ConfigError(f"{what}: a FITS section string is needed, got {text!r}")
    m = _SECTION.match(text.strip())
    if not m:
        raise ConfigError(f"{what}: {text!r} is not a FITS section [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    if not (1 <= x1 <= x2 and 1 <= y1 <= y2):
        raise ConfigError(f"{what}: {text!r} must run forward from 1 (flips are flip_x/flip_y)")
    return (slice(y1 - 1, y2), slice(x1 - 1, x2))


def _shape(b: Block) -> tuple[int, int]:
    return (b[0].stop - b[0].start, b[1].stop - b[1].start)


def _orient(arr: np.ndarray, flip: tuple[bool, bool]) -> np.ndarray:
    """Assembled-chip orientation ⇄ raw orientation (the same flips both ways)."""
    if flip[0]:
        arr = arr[::-1]
    if flip[1]:
        arr = arr[:, ::-1]
    return arr


def _dtype(bitpix: int, bzero: float) -> np.dtype:
    table = {
        8: np.uint8,
        16: np.uint16 if bzero == 32768 else np.int16,
        32: np.uint32 if bzero == 2**31 else np.int32,
        -32: np.float32,
        -64: np.float64,
    }
    if bitpix not in table:
        raise ConfigError(f"BITPIX = {bitpix} is not supported")
    return np.dtype(table[bitpix])


def _hdu(published: int, h: fits.Header, name: str) -> _Hdu:
    compressed = h.get("ZIMAGE", False) is True
    naxis = h.get("ZNAXIS" if compressed else "NAXIS", 0)
    if published > 0 and not compressed and h.get("XTENSION", "IMAGE").strip() != "IMAGE":
        raise ConfigError(f"camera {name}: HDU {published} is a {h['XTENSION'].strip()}, not an image; leave it out")
    cards = fits.Header()
    bitpix = h.get("ZBITPIX" if compressed else "BITPIX", 16)
    for card in h.cards:
        if _STRUCTURAL.match(card.keyword) or (card.keyword == "BLANK" and bitpix < 0):
            continue
        cards.append(card)
    if naxis == 0:
        return _Hdu(published, cards, None, None, False, None, "", (0.0, 0.0))
    if naxis != 2:
        raise ConfigError(f"camera {name}: HDU {published} has {naxis} axes; images of 2 are supported")
    ax = "ZNAXIS" if compressed else "NAXIS"
    shape = (int(h[f"{ax}2"]), int(h[f"{ax}1"]))
    dtype = _dtype(int(bitpix), float(h.get("BZERO", 0)))
    if dtype.kind == "f":
        limits = (-math.inf, math.inf)
    else:
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
        if "BLANK" in h:  # the physical value of BLANK would read back as missing
            blank = float(h["BLANK"]) * float(h.get("BSCALE", 1)) + float(h.get("BZERO", 0))
            lo, hi = (lo + 1, hi) if blank == lo else (lo, hi - 1) if blank == hi else (lo, hi)
        limits = (lo, hi)
    tile = None
    if compressed:
        tile = (int(h.get("ZTILE2", 1)), int(h.get("ZTILE1", shape[1])))
    return _Hdu(published, cards, shape, dtype, compressed, tile, str(h.get("ZCMPTYPE", "RICE_1")).strip(), limits)


def _merged(primary: fits.Header, h: fits.Header | None) -> fits.Header:
    """The primary's cards overridden by an extension's (what a profile sees)."""
    out = primary.copy()
    if h is not None:
        for card in h.cards:
            if card.keyword not in ("COMMENT", "HISTORY", ""):
                out[card.keyword] = card.value
    return out


def _detect(merged: fits.Header) -> Profile:
    for name in available_profiles():
        prof = load_profile(name)
        if prof.matches(merged):
            return prof
    return load_profile("generic")


def _readout(data: Block, chip: Block, serial: Block | None, flip: tuple[bool, bool]) -> tuple[int, int]:
    """Assembled-chip (row, column) of the amplifier's readout corner, where its bias ramp and
    glow start: its first raw data row, and its data column next to the serial overscan (else
    its first raw data column)."""
    dx = data[1].stop - 1 - data[1].start if serial is not None and serial[1].start >= data[1].stop else 0
    row = chip[0].stop - 1 if flip[0] else chip[0].start
    column = chip[1].stop - 1 - dx if flip[1] else chip[1].start + dx
    return (row, column)


def _resolve(spec: CameraHeaders, nchips: int | None) -> _Camera:
    name = spec.name
    hdus = {k: _hdu(k, h, name) for k, h in spec.headers.items()}
    by_hdu: dict[int, list[CameraAmp]] = {}
    for a in spec.amps:
        if a.hdu not in hdus:
            raise ConfigError(f"camera {name}: amplifier {a.name} is in HDU {a.hdu}, which the headers lack")
        by_hdu.setdefault(a.hdu, []).append(a)
    images = [k for k, h in hdus.items() if h.shape is not None]
    for k in images:
        if k not in by_hdu:
            raise ConfigError(f"camera {name}: HDU {k} is an image without amplifiers; leave it out (hdus=...)")
    for k in by_hdu:
        if hdus[k].shape is None:
            raise ConfigError(f"camera {name}: HDU {k} holds amplifiers but has no image data")
    if nchips is not None:
        if nchips > len(images):
            raise ConfigError(f"simulate_night: chips={nchips} but camera {name} has {len(images)} chip(s)")
        images = images[:nchips]
    primary = hdus[0].cards
    written = [0, *(k for k in images if k != 0)]
    position = {k: i for i, k in enumerate(written)}
    first = _merged(primary, None if images[0] == 0 else hdus[images[0]].cards)
    profile = load_profile(spec.profile) if spec.profile is not None else _detect(first)

    chips = []
    shape: tuple[int, int] | None = None
    for index, k in enumerate(images):
        hdu = hdus[k]
        assert hdu.shape is not None
        merged = _merged(primary, None if k == 0 else hdu.cards)
        amps = []
        taken = np.zeros(hdu.shape, dtype=np.int8)
        for sp in by_hdu[k]:
            where = f"camera {name}, HDU {k}, amplifier {sp.name}"
            data = _block(sp.data, f"{where}: data")
            chip = _block(sp.chip, f"{where}: chip")
            serial = None if sp.serial is None else _block(sp.serial, f"{where}: serial")
            parallel = None if sp.parallel is None else _block(sp.parallel, f"{where}: parallel")
            prescan = tuple(_block(p, f"{where}: prescan") for p in sp.prescan)
            if _shape(data) != _shape(chip):
                raise ConfigError(f"{where}: data {sp.data} and chip {sp.chip} differ in size")
            regions: list[tuple[Block | None, str | None]] = [
                (data, sp.data),
                (serial, sp.serial),
                (parallel, sp.parallel),
            ]
            regions += list(zip(prescan, sp.prescan, strict=True))
            for region, text in regions:
                if region is None:
                    continue
                if region[0].stop > hdu.shape[0] or region[1].stop > hdu.shape[1]:
                    raise ConfigError(f"{where}: {text} lies outside the {hdu.shape[1]}x{hdu.shape[0]} raw image")
                taken[region] += 1
            flip = (bool(sp.flip_y), bool(sp.flip_x))
            amps.append(_Amp(sp, data, chip, serial, parallel, prescan, flip, _readout(data, chip, serial, flip)))
        if taken.max() > 1:
            y, x = np.argwhere(taken > 1)[0]
            raise ConfigError(f"camera {name}, HDU {k}: raw pixel ({x + 1}, {y + 1}) is in two amplifier regions")
        ny = max(amp.chip[0].stop for amp in amps)
        nx = max(amp.chip[1].stop for amp in amps)
        cover = np.zeros((ny, nx), dtype=np.int8)
        for amp in amps:
            cover[amp.chip] += 1
        if cover.min() != 1 or cover.max() != 1:
            raise ConfigError(f"camera {name}, HDU {k}: the amplifiers' chip sections do not tile a {nx}x{ny} chip")
        if shape is None:
            shape = (ny, nx)
        elif shape != (ny, nx):
            raise ConfigError(f"camera {name}: chips of different sizes ({shape} and {(ny, nx)}) are not supported")
        names = [amp.spec.name for amp in amps]
        if len(set(names)) != len(names):
            raise ConfigError(f"camera {name}, HDU {k}: amplifier names {names} repeat")
        chip_name = profile.lookup(merged, "chip")
        chip_name = f"CHIP{index + 1}" if chip_name is None else str(chip_name).strip()
        if not _NAME.match(chip_name):
            raise ConfigError(f"camera {name}, HDU {k}: chip name {chip_name!r} cannot name truth arrays")
        chips.append(_Chip(index, chip_name, hdu, position[k], merged, tuple(amps)))
    if len({c.name for c in chips}) != len(chips):
        raise ConfigError(f"camera {name}: chip names {[c.name for c in chips]} repeat")
    if len({len(c.amps) for c in chips}) != 1:
        raise ConfigError(f"camera {name}: chips with different numbers of amplifiers are not supported")
    assert shape is not None
    return _Camera(spec, profile, tuple(hdus[k] for k in written), tuple(chips), shape)


def _number(merged: fits.Header, value: float | str, what: str) -> float:
    if isinstance(value, str):
        if value not in merged:
            raise ConfigError(f"{what}: the header has no {value}")
        value = merged[value]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{what}: {v} must be positive")
    return v


def _amp_models(seed: int, cam: _Camera, chip: _Chip) -> tuple[tuple[model.AmpModel, ...], tuple[str, ...]]:
    """Each amplifier's constants: gain, read noise and saturation from the header (or drawn),
    bias level drawn; and where each read noise came from."""
    out, sources = [], []
    assert chip.hdu.dtype is not None
    for a, amp in enumerate(chip.amps):
        rng = model.rng_for(seed, "camera-amp", chip.index, a)
        level = round(float(rng.uniform(1000.0, 2000.0)), 2)
        drawn = round(float(rng.uniform(3.0, 8.0)), 2)
        what = f"camera {cam.spec.name}, chip {chip.name}, amplifier {amp.spec.name}"
        gain = _number(chip.merged, amp.spec.gain, f"{what}: gain")
        if amp.spec.rdnoise is None:
            rdnoise, source = drawn, "simulated"
        else:
            rdnoise, source = _number(chip.merged, amp.spec.rdnoise, f"{what}: rdnoise"), "header"
        if amp.spec.saturate is None:
            sat = 65535.0 if chip.hdu.dtype.kind == "f" else chip.hdu.limits[1]
        else:
            sat = _number(chip.merged, amp.spec.saturate, f"{what}: saturate")
        out.append(model.AmpModel(amp.spec.name, gain, rdnoise, level, int(sat)))
        sources.append(source)
    return tuple(out), tuple(sources)


# --------------------------------------------------------------------------------------------
# static truth


def _bias_pattern(seed: int, shape: tuple[int, int], chip: _Chip) -> np.ndarray:
    """Fixed bias structure (ADU, assembled chip): per amplifier a ramp of 2–6 ADU from its
    readout column and a column pattern of 0.3–1 ADU rms; over the chip a row ramp of ±1 ADU."""
    rng = model.rng_for(seed, "camera-bias-pattern", chip.index)
    out = np.zeros(shape, dtype=np.float64)
    for amp in chip.amps:
        rows, cols = amp.chip
        width = cols.stop - cols.start
        dist = np.abs(np.arange(cols.start, cols.stop) - amp.readout[1])
        ramp = rng.uniform(2.0, 6.0)
        scale = max(3.0, rng.uniform(0.03, 0.08) * width)
        colrms = rng.uniform(0.3, 1.0)
        out[rows, cols] += (ramp * np.exp(-dist / scale) + rng.normal(0.0, colrms, width))[None, :]
    slope = rng.uniform(-1.0, 1.0)
    out += (slope * (np.arange(shape[0]) / max(shape[0] - 1, 1) - 0.5))[:, None]
    return out.astype(np.float32)


def _dark_rate(seed: int, shape: tuple[int, int], chip: _Chip, cm: model.ChipModel) -> tuple[np.ndarray, np.ndarray]:
    """Dark current (e-/s) and hot pixels, as :func:`ccdask.simulate._model.dark_rate`, with
    each amplifier's glow decaying from its readout corner."""
    rng = model.rng_for(seed, "camera-dark", chip.index)
    rate = rng.standard_normal(shape, dtype=np.float32)
    rate *= np.float32(0.05 * cm.dark_base)
    rate += np.float32(cm.dark_base)
    for amp in chip.amps:
        rows, cols = amp.chip
        scale = float(rng.uniform(0.04, 0.08)) * min(rows.stop - rows.start, cols.stop - cols.start)
        y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] - np.float32(amp.readout[0])
        x = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] - np.float32(amp.readout[1])
        rate[rows, cols] += np.float32(cm.glow) * np.exp(-np.sqrt(y * y + x * x) / np.float32(scale))
    npix = shape[0] * shape[1]
    nhot = int(rng.poisson(1.0e-3 * npix))
    hot_idx = np.sort(rng.choice(npix, size=nhot, replace=False))
    hot = np.zeros(shape, dtype=bool)
    hot.ravel()[hot_idx] = True
    rate.ravel()[hot_idx] = np.exp(rng.uniform(math.log(0.5), math.log(5.0), nhot)).astype(np.float32)
    np.maximum(rate, 0.0, out=rate)
    return rate, hot


# --------------------------------------------------------------------------------------------
# one chip of one exposure


def _row_bias(rng: np.random.Generator, nrows: int, chip: _Chip, amps: Sequence[model.AmpModel]) -> np.ndarray:
    """The overscan level of every raw row per amplifier for one frame (ADU, (amps, raw rows)):
    level + frame offset (±2 ADU rms), and for amplifiers with a serial overscan a slow sine of
    2–5 ADU and a quadratic term of up to ±3 ADU along the raw rows."""
    t = np.arange(nrows) / max(nrows - 1, 1)
    out = np.empty((len(amps), nrows))
    for a, (amp, m) in enumerate(zip(chip.amps, amps, strict=True)):
        offset = rng.normal(0.0, 2.0)
        height, cycles, phase = rng.uniform(2.0, 5.0), rng.uniform(0.7, 2.0), rng.uniform(0, 2 * math.pi)
        quad = rng.uniform(-3.0, 3.0)
        out[a] = m.bias_level + offset
        if amp.serial is not None:
            out[a] += height * np.sin(2 * math.pi * cycles * t + phase) + quad * 4.0 * (t - 0.5) ** 2
    return out


def _render(
    rng: np.random.Generator,
    fp: model.Geometry,
    chip: _Chip,
    amps: Sequence[model.AmpModel],
    pattern: np.ndarray,
    exposure: model.ChipExposure,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The raw image of one chip (its HDU's shape and data type) and the frame's truth:
    ``row_bias`` (ADU, (amps, raw rows)) and, for exposed frames, ``cosmic_rays`` and
    ``saturated`` as sorted flat indices into the assembled chip."""
    hdu = chip.hdu
    assert hdu.shape is not None and hdu.dtype is not None
    shape = (fp.ny, fp.nx)
    rb = _row_bias(rng, hdu.shape[0], chip, amps)
    exposed = exposure.exptime > 0 or exposure.flat_level > 0
    cr_idx, cr_q = model.cosmic_rays(rng, fp, exposure.exptime, exposure.cr_rate) if exposed else (None, None)
    lam = None
    if exposure.flat is not None:
        illum = exposure.flat_level + exposure.sky
        if exposure.stars is not None:
            lam = exposure.stars.astype(np.float64)
            lam += illum
            lam *= exposure.flat
        else:
            lam = exposure.flat.astype(np.float64) * illum
    if exposure.dark is not None and exposure.exptime > 0:
        d = exposure.dark.astype(np.float64) * exposure.exptime
        lam = d if lam is None else lam + d
    elec = rng.poisson(lam).astype(np.float64) if lam is not None else np.zeros(shape)
    del lam
    if cr_idx is not None and cr_idx.size:
        elec.ravel()[cr_idx] += cr_q

    raw = np.full(hdu.shape, round(float(np.mean([m.bias_level for m in amps]))), dtype=np.float64)
    saturated = np.zeros(shape, dtype=bool)
    for a, (amp, m) in enumerate(zip(chip.amps, amps, strict=True)):
        for region in (*amp.prescan, amp.serial, amp.parallel):
            if region is not None:
                noise = rng.standard_normal(_shape(region)) * m.rn_adu
                raw[region] = np.rint(noise + rb[a, region[0]][:, None])
        adu = elec[amp.chip] / m.gain
        adu += pattern[amp.chip]
        adu = _orient(adu, amp.flip)
        adu = adu + rb[a, amp.data[0]][:, None] + rng.standard_normal(adu.shape) * m.rn_adu
        np.rint(adu, out=adu)
        if exposed:
            hit = adu >= m.saturate
            if hit.any():
                saturated[amp.chip] |= _orient(hit, amp.flip)
                np.minimum(adu, m.saturate, out=adu)
        raw[amp.data] = adu
    del elec
    np.clip(raw, *hdu.limits, out=raw)
    truth: dict[str, np.ndarray] = {"row_bias": rb.astype(np.float32)}
    if exposed:
        assert cr_idx is not None
        truth["cosmic_rays"] = cr_idx.astype(np.int64)
        truth["cosmic_ray_charge"] = np.asarray(cr_q, dtype=np.float32)
        truth["saturated"] = np.flatnonzero(saturated).astype(np.int64)
    return raw.astype(hdu.dtype), truth


# --------------------------------------------------------------------------------------------
# headers and files


def _set(headers: Sequence[fits.Header], key: str, value: Any) -> None:
    """Set ``key`` in every header that has it, else add it to the primary (the first)."""
    holders = [h for h in headers if key in h] or [headers[0]]
    for h in holders:
        h[key] = value


def _frame_headers(cam: _Camera, rec: dict[str, Any], seed: int) -> list[fits.Header]:
    """The cards of every written HDU for one frame."""
    headers = [h.cards.copy() for h in cam.hdus]
    spec = cam.spec
    kind = rec["kind"]
    values: dict[str, Any] = {
        "imagetyp": spec.imagetyp[kind],
        "exptime": rec["exptime"],
        "object": rec["object"],
        "date": rec["date_obs"],
    }
    if rec["filter"] is not None:
        values["filter"] = spec.filters.get(rec["filter"], rec["filter"])
    for name in _FIELDS:
        if name not in values:
            continue
        keys = [k for k in cam.profile.keywords.get(name, ()) if "{" not in k]
        if not keys:
            continue
        present = [k for k in keys if any(k in h for h in headers)]
        targets = present if name == "date" else (present[:1] or keys[:1])
        for key in targets or keys[:1]:
            value = rec["mjd_obs"] if name == "date" and key.upper().startswith("MJD") else values[name]
            _set(headers, key, value)
    if any("DARKTIME" in h for h in headers):
        _set(headers, "DARKTIME", rec["exptime"])
    for key, value in spec.cards.get(kind, {}).items():
        _set(headers, key, value)
    headers[0]["HISTORY"] = f"ccdask.simulate (seed {seed}): synthetic pixels, {spec.name} header cards"[:72]
    return headers


def _check_frame(cam: _Camera, rec: dict[str, Any], headers: Sequence[fits.Header]) -> None:
    """The profile must read the frame as it was meant (type, exposure time, filter)."""
    for chip in cam.chips:
        merged = _merged(headers[0], None if chip.position == 0 else headers[chip.position])
        got = cam.profile.classify(merged)
        want = rec["kind"]
        problems = []
        if got.imagetyp != want:
            problems.append(f"image type {got.imagetyp!r} ({got.reason}), not {want!r}")
        if cam.profile.exptime(merged) != rec["exptime"]:
            problems.append(f"exposure time {cam.profile.exptime(merged)!r}, not {rec['exptime']}")
        if rec["filter"] is not None:
            value = cam.spec.filters.get(rec["filter"], rec["filter"])
            if cam.profile.lookup(merged, "filter") != value:
                problems.append(f"filter {cam.profile.lookup(merged, 'filter')!r}, not {value!r}")
        if problems:
            raise ConfigError(
                f"camera {cam.spec.name}: profile {cam.profile.name} reads {rec['name']} (chip {chip.name}) with "
                + "; ".join(problems)
                + ": set the camera's imagetyp/filters values or its profile"
            )


def _write(path: Path, cam: _Camera, headers: Sequence[fits.Header], data: Mapping[int, np.ndarray]) -> None:
    """Write one frame atomically: the HDUs in published order, compressed where published so."""
    hdus: list[Any] = []
    for pos, (hdu, cards) in enumerate(zip(cam.hdus, headers, strict=True)):
        arr = data.get(pos)
        if pos == 0:
            hdus.append(fits.PrimaryHDU(data=arr, header=cards))
        elif hdu.compressed:
            hdus.append(
                fits.CompImageHDU(data=arr, header=cards, compression_type=hdu.compression, tile_shape=hdu.tile)
            )
        else:
            hdus.append(fits.ImageHDU(data=arr, header=cards))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


# --------------------------------------------------------------------------------------------
# the night


def generate(
    seed: int,
    camera: CameraHeaders,
    nchips: int | None,
    filters: tuple[str, ...],
    frames: list[dict[str, Any]],
    root: Path,
    raw_dir: Path,
    stage: Path,
    scene: model.Scene | None = None,
) -> dict[str, Any]:
    """Write the frames of ``frames`` (records of ``_night._plan``) with the camera's headers,
    and the truth; returns the truth's metadata."""
    scene = scene or model.Scene()
    cam = _resolve(camera, nchips)
    ny, nx = cam.shape
    fp = model.Geometry(ny=ny, nx=nx, nover=0, amps=1, chips=len(cam.chips))
    chip_models: list[model.ChipModel] = []
    sources: dict[str, tuple[str, ...]] = {}
    for chip in cam.chips:
        amps, sources[chip.name] = _amp_models(seed, cam, chip)
        base = model.make_chip(seed, fp, chip.index)
        chip_models.append(dataclasses.replace(base, name=chip.name, amps=amps))
    optics = model.make_optics(seed, fp)
    for rec in frames:
        rec["imagetyp"] = camera.imagetyp[rec["kind"]]
        if rec["filter"] is not None:
            rec["header_filter"] = camera.filters.get(rec["filter"], rec["filter"])

    staged: dict[str, Path] = {}

    def stage_array(key: str, arr: np.ndarray) -> None:
        p = stage / f"{len(staged):05d}.npy"
        np.save(p, arr, allow_pickle=False)
        staged[key] = p

    def mapped(key: str, mode: Literal["r", "r+"] = "r") -> np.memmap:
        arr: np.memmap = np.load(staged[key], mmap_mode=mode)
        return arr

    dust: dict[str, dict[str, list[Any]]] = {}
    for chip, cm in zip(cam.chips, chip_models, strict=True):
        stage_array(f"{chip.name}/bias_pattern", _bias_pattern(seed, cam.shape, chip))
        rate, hot = _dark_rate(seed, cam.shape, chip, cm)
        stage_array(f"{chip.name}/dark_rate", rate)
        stage_array(f"{chip.name}/hot_pixels", hot)
        del rate, hot
        stage_array(f"{chip.name}/dead_columns", np.array(cm.dead_columns, dtype=np.int32))
        stage_array(f"{chip.name}/dead_response", np.array(cm.dead_response, dtype=np.float32))
        response = model.flat_base(seed, fp, cm, optics)
        dust[chip.name] = {}
        for f in filters:
            resp = response.copy()
            dust[chip.name][f] = model.apply_dust(seed, fp, cm, f, resp)
            stage_array(f"{chip.name}/flat_{f}", resp)
            del resp
        del response
    flat_scale = {}
    for f in filters:
        flats = [mapped(f"{c.name}/flat_{f}", "r+") for c in cam.chips]
        med = model.focal_plane_median([np.asarray(arr) for arr in flats])
        flat_scale[f] = med
        for arr in flats:
            np.divide(arr, np.float32(med), out=arr)
            arr.flush()
        del flats
    stars = model.make_stars(seed, fp, scene.star_density)

    frame_arrays: list[tuple[str, np.ndarray]] = []
    for rec in frames:
        kind, t = rec["kind"], rec["exptime"]
        headers = _frame_headers(cam, rec, seed)
        _check_frame(cam, rec, headers)
        flux = stars.rate(rec["filter"]) * t * rec["transparency"] if kind == "science" else None
        data: dict[int, np.ndarray] = {}
        rec["chips"] = {}
        for chip, cm in zip(cam.chips, chip_models, strict=True):
            exposure = model.ChipExposure(exptime=t, cr_rate=scene.cr_rate)
            if kind != "bias":
                exposure.dark = mapped(f"{chip.name}/dark_rate")
            if kind == "flat":
                exposure.flat = mapped(f"{chip.name}/flat_{rec['filter']}")
                exposure.flat_level = rec["flat_level"]
            elif kind == "science":
                assert flux is not None
                exposure.flat = mapped(f"{chip.name}/flat_{rec['filter']}")
                exposure.sky = rec["sky"]
                exposure.stars = model.render_stars(fp, chip.index, stars, flux, rec["fwhm"])
            rng = model.rng_for(seed, "camera-chipframe", rec["name"], chip.index)
            raw, truth = _render(rng, fp, chip, cm.amps, mapped(f"{chip.name}/bias_pattern"), exposure)
            data[chip.position] = raw
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
        _write(raw_dir / f"{rec['name']}.fits", cam, headers, data)
        del data
        if not rec["chips"]:
            del rec["chips"]

    star_arrays = [("stars/y", stars.y), ("stars/x", stars.x), ("stars/chip", stars.chip)]
    star_arrays += [(f"stars/rate_{f}", stars.rate(f)) for f in filters]

    def entries() -> Iterator[tuple[str, np.ndarray | Path]]:
        yield from staged.items()
        yield from frame_arrays
        yield from star_arrays

    sio.write_npz(root / "truth.npz", entries())
    meta = _meta(seed, cam, fp, filters, chip_models, sources, optics, dust, flat_scale, frames, stars)
    sio.write_json(root / "truth.json", meta)
    return meta


def _section(b: Block | None) -> str | None:
    if b is None:
        return None
    return f"[{b[1].start + 1}:{b[1].stop},{b[0].start + 1}:{b[0].stop}]"


def _meta(
    seed: int,
    cam: _Camera,
    fp: model.Geometry,
    filters: tuple[str, ...],
    chip_models: list[model.ChipModel],
    sources: dict[str, tuple[str, ...]],
    optics: model.Optics,
    dust: dict[str, dict[str, list[Any]]],
    flat_scale: dict[str, float],
    frames: list[dict[str, Any]],
    stars: model.StarField,
) -> dict[str, Any]:
    chips: dict[str, Any] = {}
    for chip, cm in zip(cam.chips, chip_models, strict=True):
        amps = {}
        for amp, m, source in zip(chip.amps, cm.amps, sources[chip.name], strict=True):
            amps[m.name] = {
                "gain": m.gain,
                "rdnoise": m.rdnoise,
                "rdnoise_adu": m.rn_adu,
                "rdnoise_source": source,
                "bias_level": m.bias_level,
                "saturate": m.saturate,
                "rows": [amp.chip[0].start, amp.chip[0].stop],
                "columns": [amp.chip[1].start, amp.chip[1].stop],
                "readout": list(amp.readout),
                "flip": [amp.flip[0], amp.flip[1]],
                "datasec": _section(amp.data),
                "chipsec": _section(amp.chip),
                "biassec": _section(amp.serial),
                "parallel_biassec": _section(amp.parallel),
                "prescan": [_section(p) for p in amp.prescan],
            }
        assert chip.hdu.shape is not None
        oy, ox = fp.origin(chip.index)
        chips[chip.name] = {
            "index": chip.index,
            "hdu": chip.position,
            "published_hdu": chip.hdu.published,
            "raw_shape": list(chip.hdu.shape),
            "origin": [oy, ox],
            "sensitivity": cm.sensitivity,
            "dark_base": cm.dark_base,
            "amp_glow": cm.glow,
            "dead_columns": list(cm.dead_columns),
            "dead_response": list(cm.dead_response),
            "dust": dust[chip.name],
            "amps": amps,
        }
    spec = cam.spec
    meta: dict[str, Any] = {
        "format": 1,
        "generator": "ccdask.simulate._camera",
        "seed": seed,
        "size": "camera",
        "shape": [fp.ny, fp.nx],
        "amps": len(cam.chips[0].amps),
        "amp_names": [a.spec.name for a in cam.chips[0].amps],
        "grid": list(fp.grid),
        "filters": list(filters),
        "arrays": "truth.npz",
        "units": {
            "bias_pattern": "ADU",
            "row_bias": "ADU, per raw row of the chip's HDU",
            "dark_rate": "e-/s",
            "sky": "e-",
            "flat": "normalised response",
            "star rate": "e-/s",
        },
        "camera": {
            "name": spec.name,
            "source": spec.source,
            "profile": cam.profile.name,
            "hdus": [h.published for h in cam.hdus],
            "imagetyp": dict(spec.imagetyp),
            "filters": {f: spec.filters.get(f, f) for f in filters},
        },
        "optics": {"axis_y": optics.axis_y, "axis_x": optics.axis_x, "vignetting_at_corner": optics.falloff},
        "flat_normalisation": flat_scale,
        "chips": chips,
        "frames": frames,
        "n_stars": int(stars.y.size),
    }
    stars_list = sio.star_list(stars, fp, [c.name for c in cam.chips], filters)
    if stars_list is not None:
        meta["stars"] = stars_list
    return meta
