"""Soak: a 100-exposure simulated night on a LocalCluster with a 1 GB memory limit per worker.

Simulates a night (default: 2 chips x 2 amplifiers of 1024 x 1024 pixels; 20 biases, 10 darks,
10 flats and 25 science frames in each of g and r = 100 exposures, 200 chip images), reduces it
with ``ccdask.reduce`` on ``ClusterConfig(workers=2, memory_limit="1GB")`` and, while it runs,
samples every ``--interval`` seconds the resident memory (RSS) of the whole process tree: this
process (the client, scheduler and QA), the nannies and the worker processes. It reports the
peak of the tree and of each worker, and checks that **no worker was restarted** (for memory or
any other reason): the workers' addresses and process ids (and their start times) are the same
before and after, the scheduler logged no worker removal, and the nannies report no restarts.

Usage::

    .venv/bin/python benchmarks/bench_soak.py [--dir DIR] [--size medium] [--chips 2]
        [--workers 2] [--memory-limit 1GB] [--interval 0.2] [--keep] [--json FILE]

Exit status 0 when the reduction finished and no worker was restarted, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from ccdask.cluster import ClusterConfig, open_client
from ccdask.night._reduce import reduce
from ccdask.simulate._night import simulate_night

NIGHT = {"nbias": 20, "ndark": 10, "nflat": 10, "nscience": 25, "filters": ("g", "r")}


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants until stopped."""

    def __init__(self, root_pid: int, interval: float):
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_by_pid: dict[int, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            self.peak_by_pid[p.pid] = max(self.peak_by_pid.get(p.pid, 0), rss)
        self.peak_total = max(self.peak_total, total)
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def _workers(client) -> dict[str, tuple[int, float]]:
    """Worker address -> (pid, process start time)."""

    def ident():
        p = psutil.Process(os.getpid())
        return p.pid, p.create_time()

    return {addr: tuple(v) for addr, v in client.run(ident).items()}


def _restart_events(client) -> list[dict]:
    """Scheduler-side records of a worker going away while the client ran: the nanny's
    ``worker-restart-memory`` topic (a restart at the memory limit), ``worker-fail-hard``, and
    ``remove-worker``/``closing-worker`` actions logged under a worker's address."""
    found = []
    for topic, events in client.get_events().items():
        for _t, msg in events:
            action = msg.get("action") if isinstance(msg, dict) else None
            if topic in ("worker-restart-memory", "worker-fail-hard") or action in (
                "remove-worker",
                "closing-worker",
                "restart-workers",
            ):
                found.append({"topic": str(topic), "event": str(msg)[:300]})
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="work folder (default: a temporary folder, removed unless --keep)")
    ap.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    ap.add_argument("--chips", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    ap.add_argument("--keep", action="store_true", help="keep the night and the outputs")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ccdask-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        night = simulate_night(
            work / "night", chips=args.chips, amps=2, size=args.size, seed=2026, overwrite=True, **NIGHT
        )
        t_sim = time.perf_counter() - t0
        nfiles = len(night.all_files)
        raw_bytes = sum(p.stat().st_size for p in night.all_files)
        print(
            f"night: {nfiles} exposures x {args.chips} chips ({args.size}, {night.shape[0]}x{night.shape[1]} "
            f"data pixels per chip), {raw_bytes / 1e6:.0f} MB raw, simulated in {t_sim:.0f} s",
            flush=True,
        )

        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        cfg = ClusterConfig(workers=args.workers, memory_limit=args.memory_limit)
        sampler = TreeSampler(os.getpid(), args.interval)
        with open_client(cfg) as client:
            client.wait_for_workers(args.workers, timeout=120)
            before = _workers(client)
            limits = {a: w["memory_limit"] for a, w in client.scheduler_info()["workers"].items()}
            sampler.start()
            t0 = time.perf_counter()
            result = reduce(night.raw_dir, out, client=client, log=lambda m: print(m, flush=True))
            wall = time.perf_counter() - t0
            sampler.stop()
            after = _workers(client)
            events = _restart_events(client)
        worker_peaks = {addr: sampler.peak_by_pid.get(pid, 0) for addr, (pid, _t) in before.items()}
        restarted = before != after or bool(events)
        numbers = {
            "exposures": nfiles,
            "chips": args.chips,
            "size": args.size,
            "raw_MB": round(raw_bytes / 1e6, 1),
            "workers": args.workers,
            "memory_limit_per_worker_MB": {a: round(v / 1e6) for a, v in limits.items()},
            "reduced": len(result.outputs),
            "wall_seconds": round(wall, 1),
            "stage_seconds": {k: round(v.get("seconds", 0.0), 1) for k, v in result.stages.items()},
            "peak_rss_tree_MB": round(sampler.peak_total / 1e6),
            "peak_rss_worker_MB": {a: round(v / 1e6) for a, v in worker_peaks.items()},
            "peak_rss_client_MB": round(sampler.peak_by_pid.get(os.getpid(), 0) / 1e6),
            "rss_samples": sampler.samples,
            "workers_unchanged": before == after,
            "restart_events": events,
            "restarted": restarted,
        }
        print(json.dumps(numbers, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(numbers, indent=1))
        if restarted:
            print("FAIL: a worker was restarted or removed during the reduction", file=sys.stderr)
            return 1
        if len(result.outputs) != len(night.files["science"]):
            print("FAIL: not every science exposure was reduced", file=sys.stderr)
            return 1
        print(
            "OK: no worker restarted; peak RSS of the process tree "
            f"{numbers['peak_rss_tree_MB']} MB, per worker {numbers['peak_rss_worker_MB']}"
        )
        return 0
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
