"""``ccdask combine FILE... -o MASTER.fits``: combine frames as they are into one FITS file.

Single-HDU inputs give the combined image in the primary HDU and a ``COUNT`` extension;
multi-extension inputs give one extension per chip (``EXTNAME`` = chip name) and ``<chip>_COUNT``.
ccdask-reduced inputs (``SCI``/``VAR``/``DQ`` extensions per chip) combine each chip's ``SCI``, leave
out the values its ``DQ`` flags with ``--dq-mask`` bits and propagate its ``VAR``: the output adds
``VAR`` and ``DQ`` (``<chip>_VAR``, ``<chip>_DQ``); ``--nrej``, ``--sigma`` and ``--rejmask`` add
``NREJ``, ``SIGMA`` and ``REJMASK`` (the ``(N, ny, nx)`` cube). The planes are written out of core
(:func:`ccdask.combine._result.write_fits`).
Headers start from the first input's header of that HDU and carry the provenance (``NCOMBINE``,
``IMCMBnnn`` input names, ``CMB*`` parameters, ``CCDASKV``). The file is written under a
temporary name in the output folder and renamed when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, get_args

from ..errors import CcdaskError, ConfigError, FitsReadError, ShapeMismatchError
from ..utils import check_output

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
    from ..combine._config import DEFAULT_DQ_BAD, Center, Clip, Method, Normalize, ScaleMode, Spread, ZeroMode

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
        help="rejection (default sigma); sigclip, avsigclip, ccdclip, crreject and pclip are IRAF imcombine's "
        "reject= kinds, winsorized, linearfit and gesd Siril's",
    )
    p.add_argument(
        "--gesd-fraction",
        type=float,
        default=0.3,
        metavar="F",
        help="gesd: the most outliers tested, as a fraction of the frames (Siril's rej g first value; default 0.3)",
    )
    p.add_argument(
        "--gesd-alpha",
        type=float,
        default=0.05,
        metavar="A",
        help="gesd: significance of the test (Siril's rej g second value; default 0.05)",
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
        metavar="none|exposure|ivar|noise|!KEY",
        help="weights of the mean: exposure times, a header keyword, ivar (per pixel 1/VAR of reduced "
        "inputs) or noise (1/sigma^2 of each frame over --statsec) (default none)",
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
    p.add_argument(
        "--dq-mask",
        default=str(DEFAULT_DQ_BAD),
        metavar="BITS",
        help="reduced inputs: DQ bits that make a value bad, e.g. 5 or 1|4 or 0x2f; saturated values are "
        f"kept where every frame is saturated (default {DEFAULT_DQ_BAD}: bad, saturated, cosmic, no data, bleed)",
    )
    p.add_argument(
        "--planes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the VAR and DQ extensions of ccdask-reduced inputs (default); --no-planes combines SCI alone",
    )
    p.add_argument("--nrej", action="store_true", help="also write NREJ: the number of values rejected per pixel")
    p.add_argument("--sigma", action="store_true", help="also write SIGMA: the standard deviation of the survivors")
    p.add_argument(
        "--rejmask", action="store_true", help="also write REJMASK: a cube, 1 where a frame's value was not used"
    )
    p.add_argument("--overwrite", action="store_true", help="replace MASTER.fits if it exists")
    p.set_defaults(func=run)
    return p


def _hdu_key(text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else text


def _reduced_chips(infos: list[Any]) -> tuple[list[tuple[str | None, Any, Any]], bool, bool]:
    """The ``SCI`` HDUs of a ccdask-reduced file as chips, and whether it has VAR and DQ planes."""
    names = {(i.extname or "").upper() for i in infos}
    sci = [i for i in infos if (i.extname or "").upper() == "SCI"]
    chips: list[tuple[str | None, Any, Any]] = []
    for info in sci:
        key = ("SCI", info.extver) if info.extver is not None else "SCI"
        name = str(info.header.get("CCDNAME", f"SCI{info.extver or 1}")).strip() or f"SCI{info.extver or 1}"
        chips.append((None if len(sci) == 1 else name, key, info.header))
    return chips, "VAR" in names, "DQ" in names


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
    from ..combine._result import write_fits
    from ..combine._stack import combine
    from ..io import scan_file

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
        gesd_fraction=args.gesd_fraction,
        gesd_alpha=args.gesd_alpha,
        grow=args.grow,
        scale=None if args.scale == "none" else args.scale,
        zero=None if args.zero == "none" else args.zero,
        weights=None if args.weights == "none" else args.weights,
        statsec=args.statsec,
        normalize=args.normalize,
        memory_per_task=int(args.memory_per_task * 2**20),
        dq_bad=args.dq_mask,
        nrej_plane=args.nrej,
        rejmask_cube=args.rejmask,
        sigma_plane=args.sigma,
    )
    planes: dict[str, Any] = {}
    chips: list[tuple[str | None, Any, Any]] = []
    if args.hdu is None and args.planes:
        chips, has_var, has_dq = _reduced_chips(scan_file(files[0]))
        planes = {"variance": "VAR" if has_var else None, "dq": "DQ" if has_dq else None}
    if not chips:
        chips = _chips(files[0], _hdu_key(args.hdu))
    results = [combine(files, hdu=key, name=name or "master", **planes, **options) for name, key, _ in chips]
    from .._version import __version__

    primary = None
    if chips[0][0] is not None:
        primary = _primary_header(files[0])
        primary["NCOMBINE"] = (results[0].ncombine, "number of frames combined")
        primary["CCDASKV"] = (__version__, "ccdask version")
        primary.add_history(f"ccdask combine: {len(chips)} chips, see extensions")
    parts = [(name, res, _clean(base)) for (name, _, base), res in zip(chips, results, strict=True)]
    write_fits(output, parts, primary=primary, overwrite=args.overwrite, scheduler=_scheduler())
    ny, nx = results[0].data.shape
    what = "1 image" if chips[0][0] is None else f"{len(chips)} chips"
    print(
        f"ccdask combine: wrote {output} ({what} of {ny} x {nx} from {len(files)} frames, "
        f"{args.method}/{args.clip}) in {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
