"""``ccdask demo``: simulate a mosaic night and reduce it on an embedded LocalCluster."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["register", "run_demo"]

HELP = "simulate a small mosaic night and reduce it"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("demo", help=HELP)
    p.add_argument("--out", default="ccdask-demo", help="output folder (default ./ccdask-demo)")
    p.add_argument("--chips", type=int, default=4, help="number of chips (default 4)")
    p.add_argument(
        "--size",
        choices=("small", "medium"),
        default="medium",
        help="chip size: small 192x160, medium 1024x1024 data pixels (default medium)",
    )
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, chips=args.chips, size=args.size, workers=args.workers)


_SIZES = {"small": dict(nbias=5, ndark=3, nflat=3, nscience=2), "medium": dict(nbias=7, ndark=3, nflat=4, nscience=3)}


def run_demo(
    out: str | Path = "ccdask-demo", *, chips: int = 4, size: str = "medium", workers: int = 2, print_=print
) -> int:
    """Simulate a night under ``out/raw`` (once) and reduce it into ``out/reduced-night``."""
    from ..cluster import ClusterConfig, describe_client, open_client
    from ..night._reduce import reduce
    from ..simulate._night import SimulatedNight, simulate_night

    if size not in _SIZES:
        raise ConfigError(f"demo size must be one of {', '.join(_SIZES)}, not {size!r}")
    out = Path(out).resolve()
    t0 = time.perf_counter()
    try:
        night = SimulatedNight.load(out / "night")
        if night.size != size or len(night.chips) != chips:
            raise FileNotFoundError
        print_(f"using the simulated night already in {night.raw_dir}")
    except (FileNotFoundError, OSError, ValueError, ConfigError):
        print_(f"simulating a {size} night of a {chips}-chip, 2-amplifier camera into {out / 'night'} ...")
        night = simulate_night(
            out / "night", chips=chips, amps=2, size=size, filters=("g", "r"), seed=2026, overwrite=True, **_SIZES[size]
        )
        print_(f"  {len(night.all_files)} raw files in {time.perf_counter() - t0:.1f} s")
    counts = ", ".join(f"{len(v)} {k}" for k, v in night.files.items())
    print_(f"raw frames: {counts} ({len(night.chips)} chips of {night.shape[0]}x{night.shape[1]} data pixels)")
    result_dir = out / "reduced-night"
    with open_client(ClusterConfig(workers=workers)) as client:
        print_(describe_client(client))
        print_(f"dashboard: {client.dashboard_link}")
        t1 = time.perf_counter()
        result = reduce(night.raw_dir, result_dir, client=client, progress=False, log=print_)
        elapsed = time.perf_counter() - t1
    raw_mpix = result.raw_pixels / 1e6
    print_("")
    print_(
        f"processed {raw_mpix:.0f} Mpix of raw pixels in {elapsed:.1f} s: {raw_mpix / elapsed:.1f} Mpix/s "
        "(cached masters and finished frames are not re-read)"
    )
    for stage, rec in result.stages.items():
        if "tasks" in rec:
            extra = f", {rec.get('cached', 0)} master(s) from cache" if rec.get("cached") else ""
            print_(f"  {stage:<8} {rec['tasks']:>6} tasks {rec['seconds']:>7.1f} s{extra}")
    print_(f"outputs:  {result_dir / 'reduced'} ({len(result.outputs)} reduced, {len(result.skipped)} already done)")
    print_(f"masters:  {result_dir / 'masters'}")
    print_(f"QA:       {result_dir / 'qa'}")
    print_(f"manifest: {result.manifest_path}")
    return 0
