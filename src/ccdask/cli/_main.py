"""The ``ccdask`` command line: a thin layer over the Python API.

Exit codes: 0 done; 1 runtime failure; 2 usage error (bad options); 3 bad input or an
unsatisfiable plan (named file, keyword, filter or chip), found before any computation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import CcdaskError, ConfigError, FitsReadError, PlanError, ProfileError, SectionError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3


def _catalog(args: argparse.Namespace) -> int:
    import warnings

    from ..catalog import Catalog
    from ..errors import CcdaskWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CcdaskWarning)  # the summary lists the problems itself
        cat = Catalog.scan(args.raw, profile=args.profile, strict=args.strict)
    print(cat.summary(long=args.long))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(out=args.out, chips=args.chips, size=args.size, workers=args.workers)


def _precheck(args: argparse.Namespace) -> None:
    """Configuration, catalogue and plan checked, and OUT made, before a cluster is started, so
    bad input fails in seconds (``reduce`` checks again; headers only, cheap). Catalogue
    warnings are shown here only when the check fails (otherwise ``reduce`` shows them)."""
    import warnings
    from pathlib import Path

    from ..catalog import Catalog
    from ..config import load_config
    from ..night._plan import make_plan

    cfg = load_config(args.config)
    error = None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            make_plan(Catalog.scan(args.raw, profile=cfg.profile), cfg)
        except CcdaskError as exc:
            error = exc
    if error is not None:
        for w in seen:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        raise error
    Path(args.out).mkdir(parents=True, exist_ok=True)


def _reduce(args: argparse.Namespace) -> int:
    from ..cluster import ClusterConfig, SlurmConfig, describe_client, open_client
    from ..config import load_config
    from ..night._reduce import reduce

    _precheck(args)
    if args.slurm:
        slurm = SlurmConfig.from_dict({k: v for k, v in {
            "queue": args.slurm_queue, "jobs": args.slurm_jobs, "cores": args.slurm_cores,
            "memory": args.slurm_memory, "walltime": args.slurm_walltime, "account": args.slurm_account,
        }.items() if v is not None})
        ccfg = ClusterConfig(slurm=slurm)
    elif args.scheduler:
        ccfg = ClusterConfig(scheduler=args.scheduler)
    elif args.scheduler_file:
        ccfg = ClusterConfig(scheduler_file=args.scheduler_file)
    else:
        ccfg = ClusterConfig(workers=args.workers)
    with open_client(ccfg) as client:
        print(describe_client(client))
        print(f"dashboard: {client.dashboard_link}")
        config = load_config(args.config)
        if args.profile:
            config = config.replace(profile=args.profile)
        result = reduce(args.raw, args.out, config=config, client=client, cache=args.cache,
                        progress=sys.stderr.isatty(), log=print)
    print(f"reduced {len(result.outputs)} exposure(s), {len(result.skipped)} already done; "
          f"manifest: {result.manifest_path}")
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from ..config import defaults_toml, load_config

    if args.check:
        load_config(args.check)
        print(f"{args.check}: valid")
        return EXIT_OK
    print(defaults_toml())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccdask",
        description="Out-of-core, parallel reduction of raw CCD frames on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"ccdask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("catalog", help="print the frame table of raw files and the problems found")
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS files or folders")
    p.add_argument("--profile", help="instrument profile name or TOML path (default: detect)")
    p.add_argument("--long", action="store_true", help="one row per file and chip")
    p.add_argument("--strict", action="store_true", help="unusable files are errors, not skipped")
    p.set_defaults(func=_catalog)

    p = sub.add_parser("demo", help="simulate a small mosaic night and reduce it")
    p.add_argument("--out", default="ccdask-demo", help="output folder (default ./ccdask-demo)")
    p.add_argument("--chips", type=int, default=4, help="number of chips (default 4)")
    p.add_argument("--size", choices=("small", "medium"), default="medium",
                   help="chip size: small 192x160, medium 1024x1024 data pixels (default medium)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.set_defaults(func=_demo)

    p = sub.add_parser("reduce", help="reduce a night: masters, science frames, QA, manifest")
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="TOML configuration (see `ccdask config --defaults`)")
    p.add_argument("--cache", help="master cache folder (default OUT/cache.zarr)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="embedded LocalCluster worker processes")
    where.add_argument("--scheduler", metavar="ADDR", help="address of a running dask scheduler")
    where.add_argument("--scheduler-file", metavar="F", help="scheduler file of a running cluster")
    where.add_argument("--slurm", action="store_true", help="submit dask workers as SLURM jobs")
    p.add_argument("--slurm-queue", metavar="Q", help="SLURM partition (sbatch -p)")
    p.add_argument("--slurm-jobs", type=int, metavar="N", help="number of SLURM jobs, one dask worker each")
    p.add_argument("--slurm-cores", type=int, metavar="C", help="cores per job (sbatch --cpus-per-task)")
    p.add_argument("--slurm-memory", metavar="M", help="memory per job, e.g. 8GB (sbatch --mem)")
    p.add_argument("--slurm-walltime", metavar="T", help="time limit per job, e.g. 02:00:00 (sbatch -t)")
    p.add_argument("--slurm-account", metavar="A", help="account charged (sbatch -A)")
    p.add_argument("--profile", help="instrument profile name or TOML path for every file "
                                     "(default: the configuration's, else detected per file)")
    p.set_defaults(func=_reduce)

    p = sub.add_parser("config", help="print the documented default configuration")
    p.add_argument("--defaults", action="store_true", help="print every option with its default")
    p.add_argument("--check", metavar="FILE", help="validate a configuration file")
    p.set_defaults(func=_config)

    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list:
    """The commands with a module of their own in this package (each has ``register(subparsers)``)."""
    import importlib

    mods = []
    for name in ("ccdask.cli._combine", "ccdask.cli._cache", "ccdask.cli._gain"):
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (PlanError, FitsReadError, SectionError, ProfileError, ConfigError) as exc:
        print(f"ccdask {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (CcdaskError, OSError) as exc:  # OSError: an output folder that cannot be written...
        print(f"ccdask {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"ccdask {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
