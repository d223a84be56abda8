"""``ccdask combine FILE... -o MASTER.fits``: combine frames as they are into one FITS file.

Single-HDU inputs give the combined image in the primary HDU and a ``COUNT`` extension;
multi-extension inputs give one extension per chip (``EXTNAME`` = chip name) and ``<chip>_COUNT``.
Headers start from the first input's header of that HDU and carry the provenance (``NCOMBINE``,
``IMCMBnnn`` input names, ``CMB*`` parameters, ``CCDASKV``). The file is written under a
temporary name in the output folder and renamed when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from ..errors import CcdaskError, ConfigError, FitsReadError, ShapeMismatchError
from ..utils import atomic_path, check_output

__all__ = ["register", "run"]

EXIT_OK, EXIT_FAILURE, EXIT_INPUT = 0, 1, 3

#: Optional integrations dask.array imports when installed that ``ccdask combine`` never uses:
#: xarray (and pandas with it), scipy's sparse matrices as chunks, scipy's fftpack for dask's fft.
_UNUSED = ("xarray", "scipy.sparse", "scipy.fftpack")


@contextlib.contextmanager
def _unused_integrations(names: tuple[str, ...] = _UNUSED) -> Iterator[None]:
    """While importing dask.array, make the optional integrations ``names`` look absent.

    dask.array imports xarray (and with it pandas) if installed, only to recognise xarray inputs
    of ``da.from_array``, and scipy's sparse and fftpack modules to register sparse chunks and
    scipy's FFTs, none of which this command uses: most of dask.array's import time. Modules already imported are left alone, and the entries are removed afterwards, so
    the rest of the process (tests calling ``main`` in process) imports them normally.
    """
    hidden = [n for n in names if n not in sys.modules]
    for n in hidden:
        sys.modules[n] = None  # type: ignore[assignment]  # "import n" raises ImportError
    try:
        yield
    finally:
        for n in hidden:
            if sys.modules.get(n, 0) is None:
                del sys.modules[n]


with _unused_integrations():  # ccdask.combine imports dask.array
    from ..combine._config import Center, Clip, Method, Normalize, ScaleMode, Spread, ZeroMode

# Cards describing storage, not the image: not copied from the inputs to the master.
_STORAGE = {
    "SIMPLE",
    "BITPIX",
    "EXTEND",
    "XTENSION",
    "PCOUNT",
    "GCOUNT",
    "BZERO",
    "BSCALE",
    "BLANK",
    "EXTNAME",
    "EXTVER",
    "EXTLEVEL",
    "CHECKSUM",
    "DATASUM",
    "INHERIT",
    "NCOMBINE",
}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``combine`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "combine",
        help="combine frames (clipped mean/median/sum) into one FITS file",
        description="Combine the named frames as they are (no calibration) into one FITS file: "
        "the combined image plus COUNT extension(s) holding how many frames "
        "survived at each pixel; one extension per chip for multi-extension inputs.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input FITS files (plain, gz, fpack)")
    p.add_argument("-o", "--output", required=True, metavar="MASTER.fits", help="output file")
    p.add_argument(
        "--method", choices=get_args(Method), default="mean", help="statistic of the survivors (default mean)"
    )
    p.add_argument(
        "--clip",
        "--reject",
        dest="clip",
        choices=get_args(Clip),
        default="sigma",
        help="rejection (default sigma); sigclip, ccdclip, crreject and pclip are IRAF imcombine's reject= kinds",
    )
    p.add_argument(
        "--rdnoise",
        default="0",
        metavar="E|KEY",
        help="ccdclip/crreject: read noise in electrons, or the header keyword holding it (default 0)",
    )
    p.add_argument(
        "--gain",
        default="1",
        metavar="G|KEY",
        help="ccdclip/crreject: gain in electrons per ADU, or the header keyword holding it (default 1)",
    )
    p.add_argument(
        "--snoise",
        default="0",
        metavar="F|KEY",
        help="ccdclip/crreject: sensitivity noise as a fraction, or the header keyword holding it (default 0)",
    )
    p.add_argument(
        "--pclip",
        type=float,
        default=-0.5,
        metavar="P",
        help="pclip: percentile pixel from the median, pixels (|P| >= 1) or fraction; negative below (default -0.5)",
    )
    p.add_argument(
        "--nkeep",
        type=int,
        default=1,
        metavar="N",
        help="minimum survivors of sigma clipping; with sigclip a negative N is the most rejected (default 1)",
    )
    p.add_argument(
        "--mclip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sigclip: center on the median (--mclip, default) or the mean (--no-mclip), as IRAF",
    )
    p.add_argument(
        "--grow",
        type=float,
        default=0.0,
        metavar="R",
        help="also reject the neighbours within R pixels of a rejected value, in its frame (IRAF grow; default 0)",
    )
    p.add_argument(
        "--sigma-lower", type=float, default=3.0, metavar="S", help="lower sigma-clipping threshold (default 3)"
    )
    p.add_argument(
        "--sigma-upper", type=float, default=3.0, metavar="S", help="upper sigma-clipping threshold (default 3)"
    )
    p.add_argument(
        "--maxiters",
        type=int,
        default=5,
        metavar="N",
        help="max sigma-clipping iterations, 0 = until nothing changes (default 5)",
    )
    p.add_argument(
        "--center", choices=get_args(Center), default="median", help="sigma-clipping center (default median)"
    )
    p.add_argument(
        "--spread", choices=get_args(Spread), default="mad_std", help="sigma-clipping spread (default mad_std)"
    )
    p.add_argument(
        "--nlow",
        type=int,
        default=1,
        metavar="N",
        help="extrema clipping: lowest values rejected per pixel (default 1)",
    )
    p.add_argument(
        "--nhigh",
        type=int,
        default=1,
        metavar="N",
        help="extrema clipping: highest values rejected per pixel (default 1)",
    )
    p.add_argument(
        "--min-clip", type=float, default=None, metavar="X", help="reject input values below X (any clip mode)"
    )
    p.add_argument(
        "--max-clip", type=float, default=None, metavar="X", help="reject input values above X (any clip mode)"
    )
    p.add_argument(
        "--scale",
        default="none",
        metavar="|".join(("none", *get_args(ScaleMode), "!KEY")),
        help="scale frames to a common level: a statistic over --statsec (mode is IRAF's), the exposure "
        "time, or the header keyword holding each frame's factor (default none)",
    )
    p.add_argument(
        "--zero",
        default="none",
        metavar="|".join(("none", *get_args(ZeroMode), "!KEY")),
        help="additive offsets: a statistic over --statsec, or a header keyword added before the scale (default none)",
    )
    p.add_argument(
        "--weights",
        default="none",
        metavar="none|exposure|!KEY",
        help="weights of the mean: exposure times or a header keyword (default none)",
    )
    p.add_argument(
        "--statsec",
        default=None,
        metavar="[x1:x2,y1:y2]",
        help="section (1-based, inclusive) of the scale/zero statistics (default: the whole frame)",
    )
    p.add_argument(
        "--normalize",
        choices=get_args(Normalize),
        default="mean",
        help="statistic scales/zeros relative to the stack's mean level or the first frame (IRAF) (default mean)",
    )
    p.add_argument(
        "--hdu",
        default=None,
        metavar="N|NAME",
        help="image HDU (index or EXTNAME) of each file; default: every image HDU",
    )
    p.add_argument(
        "--memory-per-task",
        type=float,
        default=64.0,
        metavar="MB",
        help="memory budget of one task in MiB; sets the tile size (default 64)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace MASTER.fits if it exists")
    p.set_defaults(func=run)
    return p


def _hdu_key(text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else text


def _chips(first: str, hdu: Any) -> list[tuple[str | None, Any, Any]]:
    """``[(chip name or None for single-HDU, hdu key, merged header of the first file)]``."""
    from ..io import image_source, open_chips, scan_file

    infos = scan_file(first)
    if hdu is not None:
        src = image_source(first, hdu)
        info = next(i for i in infos if i.index == src.hdu)
        return [(None, hdu, info.header)]
    if len(infos) == 1:
        return [(None, infos[0].index, infos[0].header)]
    names = list(open_chips(first))
    out = []
    for name, info in zip(names, infos, strict=True):
        if info.extname:
            same = [i for i in infos if i.extname and i.extname.upper() == info.extname.upper()]
            key = info.extname if len(same) == 1 else (info.extname, info.extver or 1)
        else:
            key = info.index
        out.append((name, key, info.header))
    return out


def _clean(header: Any) -> Any:
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STORAGE or key.startswith("NAXIS") or key.startswith("IMCMB"):
            continue
        out.append(card, end=True)
    return out


def _primary_header(path: str) -> Any:
    """The first input's primary header without storage cards (empty if unreadable)."""
    from astropy.io import fits

    try:
        return _clean(fits.getheader(path, 0))
    except (OSError, ValueError):
        return fits.Header()


def _write_atomic(hdul: Any, output: Path, overwrite: bool) -> None:
    with atomic_path(output, overwrite=overwrite) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="silentfix")


def run(args: argparse.Namespace) -> int:
    """Run ``ccdask combine``; returns the exit status (errors are printed to stderr)."""
    try:
        return _run(args)
    except (ConfigError, FitsReadError, ShapeMismatchError) as exc:
        print(f"ccdask combine: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except CcdaskError as exc:
        print(f"ccdask combine: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _scheduler() -> Any:
    """The configured dask scheduler, else the threaded one, passed as a function so that dask
    does not import distributed to look for a client (none runs in this process)."""
    import dask
    import dask.threaded

    configured = dask.config.get("scheduler", None)
    return dask.threaded.get if configured is None else configured


def _run(args: argparse.Namespace) -> int:
    import dask
    import numpy as np
    from astropy.io import fits

    from ..combine._stack import combine

    t0 = time.perf_counter()
    output = check_output(args.output, overwrite=args.overwrite)
    files = [str(f) for f in args.files]
    for f in files:
        if not os.path.isfile(f):
            raise FitsReadError(f"{f}: no such file")
    if args.maxiters < 0:
        raise ConfigError(f"--maxiters must be >= 0, not {args.maxiters}")
    options = dict(
        method=args.method,
        clip=args.clip,
        sigma_lower=args.sigma_lower,
        sigma_upper=args.sigma_upper,
        maxiters=args.maxiters or None,
        center=args.center,
        spread=args.spread,
        nlow=args.nlow,
        nhigh=args.nhigh,
        min_clip=args.min_clip,
        max_clip=args.max_clip,
        nkeep=args.nkeep,
        mclip=args.mclip,
        rdnoise=args.rdnoise,
        gain=args.gain,
        snoise=args.snoise,
        pclip=args.pclip,
        grow=args.grow,
        scale=None if args.scale == "none" else args.scale,
        zero=None if args.zero == "none" else args.zero,
        weights=None if args.weights == "none" else args.weights,
        statsec=args.statsec,
        normalize=args.normalize,
        memory_per_task=int(args.memory_per_task * 2**20),
    )
    chips = _chips(files[0], _hdu_key(args.hdu))
    results = [combine(files, hdu=key, name=name or "master", **options) for name, key, _ in chips]
    computed = dask.compute(
        *[(r.data, r.count, r.scale_factors, r.zero_offsets) for r in results], scheduler=_scheduler()
    )
    hdus: list[Any] = []
    for (name, _, base), res, (data, count, factors, zeros) in zip(chips, results, computed, strict=True):
        res = dataclasses.replace(res, data=data, count=count, scale_factors=factors, zero_offsets=zeros)
        header = res.header(_clean(base))
        if name is None:
            hdus.append(fits.PrimaryHDU(data=np.asarray(data, np.float32), header=header))
            hdus.append(fits.ImageHDU(data=np.asarray(count, np.int16), name="COUNT"))
        else:
            if not hdus:
                primary = fits.PrimaryHDU(header=_primary_header(files[0]))
                primary.header["NCOMBINE"] = (res.ncombine, "number of frames combined")
                primary.header["CCDASKV"] = header["CCDASKV"]
                primary.header.add_history(f"ccdask combine: {len(chips)} chips, see extensions")
                hdus.append(primary)
            hdus.append(fits.ImageHDU(data=np.asarray(data, np.float32), header=header, name=name))
            hdus.append(fits.ImageHDU(data=np.asarray(count, np.int16), name=f"{name}_COUNT"))
    _write_atomic(fits.HDUList(hdus), output, args.overwrite)
    ny, nx = results[0].data.shape
    what = "1 image" if chips[0][0] is None else f"{len(chips)} chips"
    print(
        f"ccdask combine: wrote {output} ({what} of {ny} x {nx} from {len(files)} frames, "
        f"{args.method}/{args.clip}) in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
