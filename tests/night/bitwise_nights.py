"""The three nights whose outputs must stay bitwise identical across refactors, and their digests.

Record (from the repository root, with the code whose results are the reference)::

    .venv/bin/python tests/night/bitwise_nights.py record

which writes ``tests/data/bitwise_digests.json``; ``test_bitwise.py`` reduces the same nights
and compares. Only the public API is used (``ccdask.reduce``, ``ccdask.simulate_night``), so the
same script runs on the code before and after a change of layout. A digest covers every HDU's
pixel bytes (with its EXTNAME/EXTVER) of every FITS file under ``masters/`` and ``reduced/``;
headers carry versions and timestamps, so they are left out except for those two names.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from astropy.io import fits

HERE = Path(__file__).resolve().parent
DIGESTS = HERE.parent / "data" / "bitwise_digests.json"
REAL = Path(os.environ.get("CCDASK_REAL_DATA", HERE.parents[2] / "shared" / "data" / "real"))

#: The simulated mosaic night: two chips of two amplifiers, darks, flats in two filters.
SIM = {
    "chips": 2,
    "amps": 2,
    "size": "small",
    "nbias": 3,
    "ndark": 2,
    "nflat": 2,
    "filters": ("g", "r"),
    "nscience": 1,
    "seed": 5,
}
KAST_CONFIG = {"read_noise": "overscan"}
ISIS_CONFIG = {"profile": "wht_isis_red", "flat": {"enabled": False}, "cosmics": {"method": "none"}}
ISIS_FILES = ("r2700982", "r2700984", "r2700986", "r2700988", "r2701253")


def file_digest(path: Path) -> dict[str, str]:
    """sha256 of each HDU's pixel bytes (big-endian, as on disk), keyed ``index:EXTNAME:EXTVER``."""
    out = {}
    with fits.open(path, memmap=False) as hdus:
        for i, hdu in enumerate(hdus):
            if hdu.data is None:
                continue
            name = f"{i}:{hdu.header.get('EXTNAME', '')}:{hdu.header.get('EXTVER', '')}"
            data = hdu.data
            out[name] = hashlib.sha256(data.dtype.str.encode() + str(data.shape).encode() + data.tobytes()).hexdigest()
    return out


def night_digest(out: Path) -> dict[str, Any]:
    return {
        str(p.relative_to(out)): file_digest(p)
        for sub in ("masters", "reduced")
        for p in sorted((out / sub).glob("*.fits"))
    }


def reduce_night(name: str, work: Path) -> dict[str, Any]:
    """Reduce one of the named nights under ``work`` (threads) and return its digest."""
    import ccdask

    if name == "simulated":
        night = ccdask.simulate_night(work / "sim", **SIM)
        raw, config = [str(night.raw_dir)], None
    elif name == "kast":
        raw, config = [str(REAL / "shane_kast_blue")], KAST_CONFIG
    elif name == "isis":
        raw = [str(REAL / "wht_isis_red" / f"{f}.fit.gz") for f in ISIS_FILES]
        config = ISIS_CONFIG
    else:
        raise ValueError(name)
    out = work / f"out-{name}"
    ccdask.reduce(raw, out, config=config, client="threads")
    return night_digest(out)


NIGHTS = ("simulated", "kast", "isis")


def record() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        digests = {n: reduce_night(n, Path(tmp)) for n in NIGHTS}
    DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DIGESTS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["record"]:
        sys.exit("usage: bitwise_nights.py record")
    record()
