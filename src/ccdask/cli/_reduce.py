"""``ccdask reduce RAW... --out OUT``: the whole night, on the cluster the flags choose.

The configuration, catalogue and plan are checked before any cluster starts, and the cluster
itself is started only when a stage has something to compute: a rerun over a finished night
(every master cached, every output present with its CCDKEY) ends without one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from typing import Any

HELP = "reduce a night: masters, science frames, QA, manifest"

#: ``reduce --skip`` names: the configuration change each one makes (dotted key -> value).
SKIPPABLE: dict[str, tuple[str, Any]] = {
    "bias": ("bias.enabled", False),
    "dark": ("dark.mode", "none"),
    "flat": ("flat.enabled", False),
}


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


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("reduce", help=HELP)
    p.add_argument("raw", nargs="+", metavar="RAW", help="raw FITS files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="TOML configuration (see `ccdask config --defaults`)")
    p.add_argument("--cache", help="master cache folder (default OUT/cache.zarr)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="embedded LocalCluster worker processes (default: ccdask.cluster.workers, else 2)"
    )
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
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print nothing but warnings and errors")
    shown.add_argument(
        "--log-json", action="store_true", help="one JSON line per stage (tasks, seconds, raw Mpix/s) instead of text"
    )
    p.add_argument("--report", metavar="FILE.html", help="save dask's performance report of the run")
    p.set_defaults(func=run)
    return p


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
    from ..errors import CcdaskError
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


def cluster_config(args: argparse.Namespace) -> Any:
    """The :class:`~ccdask.cluster.ClusterConfig` the flags choose."""
    from ..cluster import cluster_defaults

    if args.slurm:
        given = {
            "queue": args.slurm_queue,
            "jobs": args.slurm_jobs,
            "cores": args.slurm_cores,
            "memory": args.slurm_memory,
            "walltime": args.slurm_walltime,
            "account": args.slurm_account,
        }
        return cluster_defaults(slurm={k: v for k, v in given.items() if v is not None})
    # flags first, then dask's configuration (ccdask.cluster, jobqueue.slurm), then the defaults
    return cluster_defaults(scheduler=args.scheduler, scheduler_file=args.scheduler_file, workers=args.workers)


def run(args: argparse.Namespace) -> int:
    from ..cluster import LazyClient, describe_client
    from ..night._reduce import reduce
    from ._progress import Reporter

    config = _precheck(args)
    mode = "quiet" if args.quiet else "json" if args.log_json else "bar" if sys.stderr.isatty() else "lines"
    shown = Reporter(mode)
    skipped = _skipped(args)
    if skipped:
        shown.log("skipped calibrations (--skip): " + ", ".join(f"{n} ({_setting(n)})" for n in skipped))

    def started(client: Any, stack: contextlib.ExitStack) -> None:
        shown.log(describe_client(client))
        shown.log(f"dashboard: {client.dashboard_link}")
        if args.report:
            from distributed import performance_report

            stack.enter_context(client.as_current())
            stack.enter_context(performance_report(filename=args.report))

    with LazyClient(cluster_config(args), on_start=started) as lazy:
        result = reduce(
            args.raw,
            args.out,
            config=config,
            client=lazy,
            cache=args.cache,
            progress=shown.progress,
            log=shown.log,
            on_stage=shown.on_stage,
        )
    if not result.cluster_started:
        shown.log("nothing to compute: every master is cached and every output is up to date; no cluster started")
        if args.report:
            shown.log(f"no performance report written to {args.report}: nothing was computed")
    summary = (
        f"reduced {len(result.outputs)} exposure(s), {len(result.skipped)} already done; "
        f"manifest: {result.manifest_path}"
    )
    if mode == "json":
        print(
            json.dumps(
                {
                    "done": True,
                    "reduced": len(result.outputs),
                    "skipped": len(result.skipped),
                    "cluster_started": result.cluster_started,
                    "manifest": str(result.manifest_path),
                }
            ),
            flush=True,
        )
    else:
        shown.log(summary)
    return 0
