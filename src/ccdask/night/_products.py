"""Writing what a reduction produces: reduced chips and masters as FITS, with provenance.

The functions named ``*_task`` run inside dask tasks (on any worker); each writes exactly one
part file, so there is never more than one writer per file. :func:`ccdask.io._write.concat_parts`
then assembles the parts of one output and renames it into place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
from astropy.io import fits

from .. import dq as DQ
from .._version import __version__
from ..config import ReduceConfig
from ..frame import Master
from ..io._write import TMP_PREFIX, concat_parts, write_part
from ..profiles._layout import ChipLayout
from ..utils import canonical_hash
from ._plan import safe_filter_name
from ._qa import _start, bin_image, chip_stats
from ._stages import NightMasters, key_of

__all__ = [
    "MasterFile",
    "chip_header",
    "has_key",
    "master_outputs",
    "master_part_task",
    "output_name",
    "reduced_part_task",
    "safe_filter_name",
]

# Cards that describe the raw layout or storage and are wrong after trimming.
_DROP = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|BLANK|CHECKSUM|DATASUM"
    r"|EXTNAME|EXTVER|DATASEC[A-H]?|BIASSEC[A-H]?|TRIMSEC|CCDSEC[A-H]?|AMPSEC[A-H]?)$"
)


def output_name(name: str) -> str:
    """The reduced file's name from the raw file's name (never from header values)."""
    return f"{name}.fits"


def chip_header(merged: fits.Header, primary: fits.Header | None, layout: ChipLayout) -> fits.Header:
    """The chip's own cards (those not identical in the primary), minus raw-layout cards.

    WCS reference pixels are shifted by the trim so sky coordinates stay right.
    """
    out = fits.Header()
    for card in merged.cards:
        key = card.keyword
        if not key or key in ("HISTORY", "COMMENT") or _DROP.match(key):
            continue
        if primary is not None and key in primary and primary[key] == card.value:
            continue
        out.append(card, end=True)
    y0 = min(_start(a.datasec.normalized().y) for a in layout.amplifiers) - 1
    x0 = min(_start(a.datasec.normalized().x) for a in layout.amplifiers) - 1
    for axis, offset in (("1", x0), ("2", y0)):
        key = f"CRPIX{axis}"
        if key in out and offset:
            out[key] = (float(out[key]) - offset, "shifted by the trim (ccdask)")
    return out


def reduced_part_task(
    part: str,
    sci: np.ndarray,
    var: np.ndarray,
    dqa: np.ndarray,
    *,
    header: fits.Header,
    chip: str,
    extver: int,
    history: Sequence[str],
    thumb_factor: int,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one chip's SCI/VAR/DQ to ``part`` and return its QA statistics (with
    ``extra_stats``, e.g. the cosmic-ray step's), its thumbnail and where its cosmic rays are
    (the binned pixels holding one)."""
    hdus = []
    for extname, data, bunit in (("SCI", sci, "electron"), ("VAR", var, "electron2"), ("DQ", dqa, "")):
        h = header.copy() if extname == "SCI" else fits.Header()
        h["EXTNAME"] = extname
        h["EXTVER"] = extver
        h["CCDNAME"] = chip
        if bunit:
            h["BUNIT"] = bunit
        if extname == "SCI":
            for line in history:
                h.add_history(line)
        if extname == "DQ":
            h["DQBITS"] = ("1=bad 2=sat 4=cr 8=nodata 16=interp", "DQ bits")
            data = data.astype(np.int16)
        else:
            data = np.asarray(data, dtype=np.float32)
        hdus.append((h, data))
    write_part(part, hdus)
    stats = chip_stats(sci, var, dqa)
    stats.update(extra_stats or {})
    hits = bin_image(((dqa & DQ.COSMIC) != 0).astype(np.float32), thumb_factor) > 0
    return {"chip": chip, "stats": stats, "thumb": bin_image(sci, thumb_factor), "hits": hits}


def master_part_task(
    part: str,
    data: np.ndarray,
    variance: np.ndarray | None,
    count: np.ndarray | None,
    *,
    chip: str,
    kind: str,
    ncombine: int,
    meta: dict[str, Any],
    thumb_factor: int,
) -> dict[str, Any]:
    """Write one chip of a master (data, ``<chip>_COUNT``, ``<chip>_VAR``) to ``part``."""
    h = fits.Header()
    h["EXTNAME"] = chip
    h["CCDNAME"] = chip
    h["MASTER"] = (kind, "kind of master")
    h["NCOMBINE"] = (ncombine, "number of frames combined")
    h["BUNIT"] = {"bias": "electron", "dark": "electron/s", "flat": "", "fringe": "electron"}.get(kind, "")
    if meta.get("key"):
        h["CACHEKEY"] = (meta["key"], "ccdask cache key of this master")
    if meta.get("filter") is not None:
        h["FILTER"] = meta["filter"]
    for i, name in enumerate(meta.get("inputs", [])[:999]):
        h[f"IMCMB{i + 1:03d}"] = name
    h.add_history(f"ccdask {__version__}: {kind} master of {ncombine} frames")
    for k, v in meta.get("params", {}).items():
        h.add_history(f"{k}: {v}")
    hdus = [(h, np.asarray(data, dtype=np.float32))]
    if count is not None:
        hc = fits.Header()
        hc["EXTNAME"] = f"{chip}_COUNT"
        hc["CCDNAME"] = chip
        hdus.append((hc, np.asarray(count, dtype=np.int16)))
    if variance is not None:
        hv = fits.Header()
        hv["EXTNAME"] = f"{chip}_VAR"
        hv["CCDNAME"] = chip
        hv["BUNIT"] = {"bias": "electron2", "dark": "electron2/s2", "flat": "", "fringe": "electron2"}.get(kind, "")
        hdus.append((hv, np.asarray(variance, dtype=np.float32)))
    write_part(part, hdus)
    return {"chip": chip, "thumb": bin_image(data, thumb_factor)}


def has_key(path: Path, key: str) -> bool:
    """Whether ``path`` exists and its primary header's ``CCDKEY`` is ``key``."""
    if not path.exists():
        return False
    try:
        return bool(fits.getheader(path, 0).get("CCDKEY") == key)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class MasterFile:
    """One file of ``OUT/masters``: its label, the task writing it (None when it is already
    there with the same masters) and its path."""

    label: str
    task: Any
    path: Path


def master_outputs(out: Path, masters: NightMasters, cfg: ReduceConfig, factor: int) -> list[MasterFile]:
    """Delayed writers of OUT/masters/*.fits, one per kind (and per filter, per dark time)."""
    if not cfg.output.masters_fits:
        return []
    mdir = out / "masters"
    files: list[tuple[str, dict[str, Master]]] = []
    if masters.bias:
        files.append(("bias", dict(masters.bias)))
    if masters.dark:
        files.append(("dark", dict(masters.dark)))
    elif masters.dark_groups:
        for t in sorted({t for _, t in masters.dark_groups if t is not None}):
            files.append((f"dark_{t:g}s", {c: m for (c, tt), m in masters.dark_groups.items() if tt == t}))
    for filt, ms in masters.flats.items():
        files.append((f"flat_{safe_filter_name(filt)}", dict(ms)))
    for filt, ms in masters.fringes.items():
        files.append((f"fringe_{safe_filter_name(filt)}", dict(ms)))
    outs = []
    for label, ms in files:
        final = mdir / f"{label}.fits"
        ident = canonical_hash({c: (key_of(m), m.kind) for c, m in ms.items()})
        if has_key(final, ident):
            outs.append(MasterFile(label, None, final))
            continue
        parts_paths, parts = [], []
        for number, (chip, m) in enumerate(ms.items(), start=1):
            part = mdir / f"{TMP_PREFIX}{label}.{number}.part"  # never a header value in a path
            meta = {
                "key": key_of(m),
                "inputs": m.meta.get("inputs", []),
                "filter": m.filter,
                "params": m.meta.get("params", {}),
            }
            parts.append(
                dask.delayed(master_part_task, pure=True)(
                    str(part),
                    m.data,
                    m.variance,
                    m.count,
                    chip=chip,
                    kind=m.kind,
                    ncombine=m.ncombine,
                    meta=meta,
                    thumb_factor=factor,
                    dask_key_name=f"write-master-{label}-{chip}-{ident[:8]}",
                )
            )
            parts_paths.append(str(part))
        prim = fits.Header()
        prim["CCDASKV"] = (__version__, "ccdask version")
        prim["CCDKEY"] = (ident, "identity of these masters")
        prim["MASTER"] = (label, "kind of master")
        task = dask.delayed(_finish, pure=True)(
            str(final), prim, parts_paths, parts, dask_key_name=f"assemble-master-{label}-{ident[:8]}"
        )
        outs.append(MasterFile(label, task, final))
    return outs


def _finish(
    final: str, primary: fits.Header, part_paths: list[str], chip_results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    concat_parts(final, primary, part_paths)
    return chip_results
