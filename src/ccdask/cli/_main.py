"""The ``ccdask`` command line: a thin layer over the Python API.

Exit codes: 0 done; 1 runtime failure; 2 usage error (bad options); 3 bad input or an
unsatisfiable plan (named file, keyword, filter or chip), found before any computation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import (
    CcdaskError,
    CcdaskWarning,
    ConfigError,
    FitsReadError,
    PlanError,
    ProfileError,
    SectionError,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

#: ``reduce --skip`` names: the configuration change each one makes (dotted key -> value).
SKIPPABLE: dict[str, tuple[str, Any]] = {
    "bias": ("bias.enabled", False),
    "dark": ("dark.mode", "none"),
    "flat": ("flat.enabled", False),
}


def _catalog(args: argparse.Namespace) -> int:
    from ..catalog import Catalog

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CcdaskWarning)  # the summary lists the problems itself
        cat = Catalog.scan(args.raw, profile=args.profile, strict=args.strict)
    print(cat.summary(long=args.long))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(out=args.out, chips=args.chips, size=args.size, workers=args.workers)


def _setting(name: str) -> str:
    """What ``--skip name`` sets, as it would read in the TOML file: ``flat.enabled = false``."""
    key, value = SKIPPABLE[name]
    return f"{key} = {json.dumps(value)}"


def _skip_names(text: str) -> tuple[str, ...]:
    """One ``--skip`` value: comma-separated calibration names (an argparse ``type``)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    valid = ", ".join(SKIPPABLE)
    if not names:
        raise argparse.ArgumentTypeError(f"no calibration named in {text!r} (choose from {valid})")
    unknown = [n for n in names if n not in SKIPPABLE]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown calibration(s) {', '.join(map(repr, unknown))} (choose from {valid}, comma-separated)"
        )
    return names


def _skipped(args: argparse.Namespace) -> list[str]:
    """The calibrations ``--skip`` names, each once, in the order of ``SKIPPABLE``."""
    given = {n for group in args.skip or () for n in group}
    return [n for n in SKIPPABLE if n in given]


def _reduce_config(args: argparse.Namespace) -> Any:
    """The ``--config`` file (or the defaults), then ``--profile`` and ``--skip`` over it."""
    from ..config import load_config

    config = load_config(args.config)
    if args.profile:
        config = config.replace(profile=args.profile)
    for name in _skipped(args):
        section, _, key = SKIPPABLE[name][0].partition(".")
        step = getattr(config, section)
        config = config.replace(**{section: step.replace(**{key: SKIPPABLE[name][1]})})
    return config


def _precheck(args: argparse.Namespace) -> Any:
    """Configuration, catalogue and plan checked, and OUT made, before a cluster is started, so
    bad input fails in seconds (``reduce`` checks again; headers only, cheap). Catalogue
    warnings are shown here only when the check fails (otherwise ``reduce`` shows them).
    Returns the configuration of the run."""
    from pathlib import Path

    from ..catalog import Catalog
    from ..night._plan import make_plan

    cfg = _reduce_config(args)
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
    return cfg


def _reduce(args: argparse.Namespace) -> int:
    from ..cluster import ClusterConfig, SlurmConfig, describe_client, open_client
    from ..night._reduce import reduce

    config = _precheck(args)
    skipped = _skipped(args)
    if skipped:
        print("skipped calibrations (--skip): " + ", ".join(f"{n} ({_setting(n)})" for n in skipped))
    if args.slurm:
        slurm = SlurmConfig.from_dict(
            {
                k: v
                for k, v in {
                    "queue": args.slurm_queue,
                    "jobs": args.slurm_jobs,
                    "cores": args.slurm_cores,
                    "memory": args.slurm_memory,
                    "walltime": args.slurm_walltime,
                    "account": args.slurm_account,
                }.items()
                if v is not None
            }
        )
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
        result = reduce(
            args.raw, args.out, config=config, client=client, cache=args.cache, progress=sys.stderr.isatty(), log=print
        )
    print(
        f"reduced {len(result.outputs)} exposure(s), {len(result.skipped)} already done; "
        f"manifest: {result.manifest_path}"
    )
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
    p.add_argument(
        "--size",
        choices=("small", "medium"),
        default="medium",
        help="chip size: small 192x160, medium 1024x1024 data pixels (default medium)",
    )
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
    p.add_argument(
        "--profile",
        help="instrument profile name or TOML path for every file "
        "(default: the configuration's, else detected per file)",
    )
    p.add_argument(
        "--skip",
        action="append",
        type=_skip_names,
        metavar="STEPS",
        help="calibrations to go without, comma-separated, repeatable: "
        + ", ".join(f"{n} ({_setting(n)})" for n in SKIPPABLE)
        + "; overrides --config",
    )
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
    for name in (
        "ccdask.cli._combine",
        "ccdask.cli._cache",
        "ccdask.cli._crosstalk",
        "ccdask.cli._gain",
        "ccdask.cli._inspect",
        "ccdask.cli._profile",
    ):
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


def _one_line(text: object) -> str:
    """``text`` with its line breaks (and the indentation after them) turned into one space."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` of the command line: ``ccdask: warning: ...``, one line each.

    A catalogue warning that carries its ``problems`` gives one line per problem
    (``ccdask: warning: <file>[<hdu>]: <problem>``); any other ccdask warning is its message;
    a warning of another library is its category and message. No source line is printed.
    """
    stream = file if file is not None else sys.stderr
    if stream is None:  # no stderr (pythonw): nowhere to show it
        return
    problems = getattr(message, "problems", None)
    if problems:
        lines = [_one_line(p) + ("" if "skipped" in p.reason else "; skipped") for p in problems]
    elif issubclass(category, CcdaskWarning):
        lines = [_one_line(message)]
    else:
        lines = [f"{category.__name__}: {_one_line(message)}"]
    try:
        for text in lines:
            stream.write(f"ccdask: warning: {text}\n")
        stream.flush()
    except OSError:  # a closed or broken stderr must not turn a warning into a failure
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Warnings show as one clean line each, for this command only: the library's warnings and
    # filters stay as they are for every other caller. ccdask's own warnings are always shown
    # (once per message), whatever filters the calling process set.
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("default", CcdaskWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (PlanError, FitsReadError, SectionError, ProfileError, ConfigError) as exc:
        print(f"ccdask {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        # the reader of our output went away (``ccdask inspect ... | head``): not a failure;
        # point stdout at /dev/null so the interpreter's final flush does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CcdaskError, OSError) as exc:  # OSError: an output folder that cannot be written...
        print(f"ccdask {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"ccdask {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
