"""End-to-end throughput of a night of `large` chips (4096 x 2048 data pixels per chip).

Simulates the night once (kept under --dir), then reduces it on an embedded LocalCluster and
reports, per stage, the raw pixels processed, the time, the throughput in raw Mpix/s and the
tasks per chip-frame; then reruns it to show the cache and resume (no stacking, no science).

    .venv/bin/python benchmarks/bench_night.py --chips 2 --workers 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ccdask.cluster import ClusterConfig, describe_client, open_client
from ccdask.night._reduce import reduce
from ccdask.simulate._night import SimulatedNight, simulate_night


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("benchmarks/_data/night-large"))
    ap.add_argument("--chips", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="large")
    args = ap.parse_args()
    try:
        night = SimulatedNight.load(args.dir)
        assert len(night.chips) == args.chips and night.size == args.size
    except Exception:
        t = time.perf_counter()
        night = simulate_night(
            args.dir,
            chips=args.chips,
            amps=2,
            size=args.size,
            nbias=5,
            ndark=3,
            nflat=3,
            filters=("r",),
            nscience=4,
            seed=7,
            overwrite=True,
        )
        print(f"simulated {len(night.all_files)} files in {time.perf_counter() - t:.0f} s")
    nchipframes = len(night.all_files) * len(night.chips)
    out = Path(tempfile.mkdtemp(prefix="ccdask-night-"))
    try:
        with open_client(ClusterConfig(workers=args.workers, memory_limit="4GiB")) as client:
            print(describe_client(client))
            t = time.perf_counter()
            first = reduce(night.raw_dir, out, client=client)
            total = time.perf_counter() - t
            t = time.perf_counter()
            again = reduce(night.raw_dir, out, client=client)
            rerun = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(
        f"night: {len(night.all_files)} files x {len(night.chips)} chips ({nchipframes} chip-frames), "
        f"{first.raw_pixels / 1e6:.0f} Mpix raw"
    )
    print("| stage | raw Mpix | seconds | raw Mpix/s | tasks |")
    print("|---|---:|---:|---:|---:|")
    tasks = 0
    for stage, rec in first.stages.items():
        if "tasks" not in rec:
            continue
        mpix = rec.get("raw_pixels", 0) / 1e6
        tasks += rec["tasks"]
        print(
            f"| {stage} | {mpix:.0f} | {rec['seconds']:.1f} | {mpix / max(rec['seconds'], 1e-9):.1f} | {rec['tasks']} |"
        )
    print(
        f"| whole night | {first.raw_pixels / 1e6:.0f} | {total:.1f} | {first.raw_pixels / 1e6 / total:.1f} | {tasks} |"
    )
    print(f"tasks per chip-frame: {tasks / nchipframes:.1f} (small nights: dominated by per-chip parts)")
    built = sum(r.get("built", 0) for r in again.stages.values())
    print(f"rerun: {rerun:.1f} s, masters built {built}, reduced {len(again.outputs)}, skipped {len(again.skipped)}")


if __name__ == "__main__":
    main()
