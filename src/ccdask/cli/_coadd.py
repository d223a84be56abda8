"""``ccdask coadd REDUCED... -o COADD.fits``: reduced frames reprojected onto one footprint and stacked.

The output holds ``SCI``, ``VAR``, ``DQ``, ``COVERAGE`` and ``EXPOSURE`` extensions on the
footprint's TAN WCS (see ``docs/coadd.md``); it is written tile by tile into a temporary file in
the output folder and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, get_args

from ..combine._config import Center, Clip, Spread
from ..errors import CcdaskError, ConfigError, FitsReadError, ShapeMismatchError, WcsError
from ..utils import check_output

__all__ = ["register", "run"]

EXIT_OK, EXIT_FAILURE, EXIT_INPUT = 0, 1, 3


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``coadd`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "coadd",
        help="reproject reduced frames onto one sky footprint and stack them",
        description="Reproject every chip of the named reduced frames (SCI/VAR/DQ) onto one "
        "tangent-plane footprint and stack them with rejection and inverse-variance weights: "
        "SCI, VAR, DQ, COVERAGE and EXPOSURE extensions in one FITS file.",
    )
    p.add_argument("files", nargs="+", metavar="REDUCED", help="reduced frames (ccdask reduce's reduced/*.fits)")
    p.add_argument("-o", "--output", required=True, metavar="COADD.fits", help="output file")
    p.add_argument(
        "--footprint",
        default="auto",
        metavar="auto|FILE.fits",
        help="output grid: auto (covering every chip, median scale and rotation) or an image whose WCS and shape are used",
    )
    p.add_argument(
        "--wcs-from", default=None, metavar="FILE", help="take the projection of FILE's WCS, sized to cover every chip"
    )
    p.add_argument(
        "--pixel-scale", type=float, default=None, metavar="ARCSEC", help="auto footprint: pixel scale (arcsec)"
    )
    p.add_argument("--rotation", type=float, default=None, metavar="DEG", help="auto footprint: rotation (degrees)")
    p.add_argument(
        "--method", choices=("interp", "adaptive", "exact"), default="interp", help="resampling (default interp)"
    )
    p.add_argument(
        "--reject",
        "--clip",
        dest="clip",
        choices=get_args(Clip),
        default="none",
        help="the combine engine's rejection along the frame axis, after --noise-sigma (default none)",
    )
    p.add_argument(
        "--noise-sigma",
        type=float,
        default=4.0,
        metavar="S",
        help="reject values more than S times their own sqrt(VAR) from the pixel's median; 0: off (default 4)",
    )
    p.add_argument("--sigma-lower", type=float, default=3.0, metavar="S", help="lower clipping threshold (default 3)")
    p.add_argument("--sigma-upper", type=float, default=3.0, metavar="S", help="upper clipping threshold (default 3)")
    p.add_argument(
        "--maxiters", type=int, default=5, metavar="N", help="max clipping iterations, 0 = until no change (default 5)"
    )
    p.add_argument("--center", choices=get_args(Center), default="median", help="clipping center (default median)")
    p.add_argument("--spread", choices=get_args(Spread), default="mad_std", help="clipping spread (default mad_std)")
    p.add_argument("--nlow", type=int, default=1, metavar="N", help="extrema: lowest values rejected (default 1)")
    p.add_argument("--nhigh", type=int, default=1, metavar="N", help="extrema: highest values rejected (default 1)")
    p.add_argument("--nkeep", type=int, default=1, metavar="N", help="minimum survivors of clipping (default 1)")
    p.add_argument(
        "--mclip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sigclip: center on the median (default) or the mean (--no-mclip)",
    )
    p.add_argument(
        "--weights", choices=("ivar", "none"), default="ivar", help="inverse-variance weights or none (default ivar)"
    )
    p.add_argument(
        "--scale", choices=("none", "exposure"), default="none", help="per-exposure flux scale (default none)"
    )
    p.add_argument(
        "--memory-per-task",
        type=float,
        default=64.0,
        metavar="MB",
        help="memory budget of one tile task in MiB; sets the tile size (default 64)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run on an embedded LocalCluster of N worker processes (default 0: threads in this process)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace COADD.fits if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ccdask coadd``; returns the exit status (errors are printed to stderr)."""
    try:
        return _run(args)
    except (ConfigError, FitsReadError, ShapeMismatchError, WcsError) as exc:
        print(f"ccdask coadd: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except CcdaskError as exc:
        print(f"ccdask coadd: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    from ..coadd import coadd

    t0 = time.perf_counter()
    output = check_output(args.output, overwrite=args.overwrite)
    if args.maxiters < 0:
        raise ConfigError(f"--maxiters must be >= 0, not {args.maxiters}")
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, not {args.workers}")
    result = coadd(
        args.files,
        footprint=args.footprint,
        wcs_from=args.wcs_from,
        pixel_scale=args.pixel_scale,
        rotation=args.rotation,
        method=args.method,
        clip=args.clip,
        sigma_lower=args.sigma_lower,
        sigma_upper=args.sigma_upper,
        maxiters=args.maxiters or None,
        center=args.center,
        spread=args.spread,
        nlow=args.nlow,
        nhigh=args.nhigh,
        nkeep=args.nkeep,
        mclip=args.mclip,
        noise_sigma=args.noise_sigma or None,
        weights=args.weights,
        scale=args.scale,
        memory_per_task=int(args.memory_per_task * 2**20),
    )
    if args.workers:
        from ..cluster import ClusterConfig, describe_client, open_client

        with open_client(ClusterConfig(workers=args.workers)) as client:
            print(f"ccdask coadd: {describe_client(client)}")
            result.write(output, overwrite=args.overwrite, scheduler=client)
    else:
        result.write(output, overwrite=args.overwrite, scheduler="threads")
    ny, nx = result.footprint.shape
    print(
        f"ccdask coadd: wrote {output} ({nx} x {ny} pixels from {result.nchips} chips of {len(result.inputs)} "
        f"frames, {args.method}/{args.clip}, tiles {result.tile[0]} x {result.tile[1]}) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
