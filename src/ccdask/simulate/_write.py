"""Writing the simulated night to disk (private to :mod:`ccdask.simulate._night`).

Every file is written under a temporary name in its final directory and renamed when complete,
so a reader never sees a partial file. Nothing written depends on the clock, the host or the
output path: the FITS headers carry the simulated observation dates, the zip entries of the
truth archive carry a fixed timestamp, and paths in the JSON are relative to the night's root.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..sections import section_from_slices
from ..utils import atomic_path
from ._model import ChipModel, Geometry, StarField

# the earliest timestamp a zip entry can hold; used for every entry to keep archives identical
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

#: Stars are listed in truth.json only up to this many (small nights).
STAR_LIST_MAX = 2000


def section(rows: slice, cols: slice, shape: tuple[int, int]) -> str:
    """FITS section string of ``image[rows, cols]``."""
    return str(section_from_slices(rows, cols, shape))


def detsize(geom: Geometry) -> str:
    """Focal-plane extent as a FITS section."""
    fy, fx = geom.fp_shape
    return f"[1:{fx},1:{fy}]"


def detsec(geom: Geometry, k: int) -> str:
    """Where chip ``k``'s data sit in the focal plane."""
    oy, ox = geom.origin(k)
    return f"[{ox + 1}:{ox + geom.nx},{oy + 1}:{oy + geom.ny}]"


def amp_sections(geom: Geometry) -> list[dict[str, str]]:
    """Raw-frame DATASEC and BIASSEC of every amplifier."""
    shape = geom.raw_shape
    rows = slice(0, geom.ny)
    return [
        {
            "datasec": section(rows, geom.raw_data_cols(a), shape),
            "biassec": section(rows, geom.raw_over_cols(a), shape),
        }
        for a in range(geom.amps)
    ]


def trimsec(geom: Geometry) -> str:
    """Raw-frame section of the whole data area."""
    return section(slice(0, geom.ny), geom.raw_trim_cols, geom.raw_shape)


def chip_header(geom: Geometry, chip: ChipModel) -> fits.Header:
    """Extension keywords of one chip (the structural ones are added by astropy)."""
    h = fits.Header()
    h["EXTNAME"] = (chip.name, "extension name")
    h["CCDNAME"] = (chip.name, "detector name")
    h["DETSIZE"] = (detsize(geom), "focal-plane size in data pixels")
    h["DETSEC"] = (detsec(geom, chip.index), "this chip's data in the focal plane")
    h["TRIMSEC"] = (trimsec(geom), "data area of the raw image")
    h["BUNIT"] = ("ADU", "pixel unit")
    secs = amp_sections(geom)
    if geom.amps == 1:
        amp = chip.amps[0]
        h["DATASEC"] = (secs[0]["datasec"], "data area")
        h["BIASSEC"] = (secs[0]["biassec"], "serial overscan")
        h["GAIN"] = (amp.gain, "e-/ADU")
        h["RDNOISE"] = (amp.rdnoise, "read noise (e-)")
        h["SATURATE"] = (amp.saturate, "saturation level (ADU)")
    else:
        for a, amp in enumerate(chip.amps):
            s = amp.name
            h[f"DATASEC{s}"] = (secs[a]["datasec"], f"data read by amplifier {s}")
            h[f"BIASSEC{s}"] = (secs[a]["biassec"], f"serial overscan of amplifier {s}")
        for amp in chip.amps:
            s = amp.name
            h[f"GAIN{s}"] = (amp.gain, f"gain of amplifier {s} (e-/ADU)")
            h[f"RDNOISE{s}"] = (amp.rdnoise, f"read noise of amplifier {s} (e-)")
            h[f"SATURAT{s}"] = (amp.saturate, f"saturation of amplifier {s} (ADU)")
    return h


def primary_header(frame: dict, geom: Geometry) -> fits.Header:
    """Primary-HDU keywords of one exposure described by a frame record."""
    h = fits.Header()
    h["INSTRUME"] = ("SIMCAM", "simulated mosaic camera (ccdask.simulate._night)")
    h["TELESCOP"] = ("SIM 1m", "simulated telescope")
    h["OBJECT"] = (frame["object"], "target")
    h["IMAGETYP"] = (frame["imagetyp"], "type of exposure")
    h["EXPTIME"] = (frame["exptime"], "exposure time (s)")
    h["DARKTIME"] = (frame["exptime"], "dark current integration time (s)")
    if frame["filter"] is not None:
        h["FILTER"] = (frame["filter"], "filter name")
    h["DATE-OBS"] = (frame["date_obs"], "UTC start of exposure")
    h["MJD-OBS"] = (frame["mjd_obs"], "modified Julian date at start of exposure")
    h["NCCDS"] = (geom.chips, "number of chips")
    h["NAMPS"] = (geom.amps, "amplifiers per chip")
    h["DETSIZE"] = (detsize(geom), "focal-plane size in data pixels")
    return h


def star_list(stars: StarField, geom: Geometry, names: list[str], filters: tuple[str, ...]) -> list[dict] | None:
    """The stars as truth.json lists them (chip, focal-plane and chip position, rate per filter),
    or None when there are more than :data:`STAR_LIST_MAX`."""
    if stars.y.size > STAR_LIST_MAX:
        return None
    rates = {f: stars.rate(f) for f in filters}
    return [
        {
            "chip": names[int(stars.chip[i])],
            "y_fp": float(stars.y[i]),
            "x_fp": float(stars.x[i]),
            "y": float(stars.y[i] - geom.origin(int(stars.chip[i]))[0]),
            "x": float(stars.x[i] - geom.origin(int(stars.chip[i]))[1]),
            "rate": {f: float(rates[f][i]) for f in filters},
        }
        for i in range(stars.y.size)
    ]


def write_mef(path: Path, primary: fits.Header, chips: Iterable[tuple[fits.Header, np.ndarray]]) -> None:
    """Write a multi-extension FITS file atomically: an empty primary HDU and one uint16 image
    extension per chip (stored as int16 with BZERO = 32768)."""
    hdus = [fits.PrimaryHDU(header=primary)]
    for header, data in chips:
        hdus.append(fits.ImageHDU(data=data, header=header))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically with a stable layout."""
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_npz(path: Path, entries: Iterable[tuple[str, np.ndarray | Path]]) -> None:
    """Write an uncompressed ``.npz`` archive atomically and reproducibly.

    ``entries`` yields ``(key, value)`` where value is an array or the path of an ``.npy`` file
    (copied in by streaming, so large staged arrays never need to be in memory). Unlike
    ``numpy.savez``, every zip entry gets the same fixed timestamp, so equal contents give equal
    bytes. ``numpy.load`` reads the result as usual.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in entries:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as out:
                if isinstance(value, Path):
                    with open(value, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
                else:
                    np.lib.format.write_array(out, np.asarray(value), allow_pickle=False)
