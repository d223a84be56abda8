"""Scheduler overhead per task, measured on a real LocalCluster with a night of small chips.

Reduces a simulated night of ``small`` chips (192 x 160 data pixels: the pixel work is tiny, so
what is left is the cost of scheduling) on an embedded LocalCluster and, for every stage the
runner computes, records:

- ``wall``: the stage's time from submitting its graph to having its results back;
- ``busy``: the summed compute time of its tasks, from the scheduler's task stream;
- ``idle per task`` = ``(wall * threads - busy) / tasks``: the thread time per task not spent
  computing (scheduling, transfers, waiting on dependencies);
- ``null``: the same stage's graph (same keys, same dependencies) with every task replaced by a
  function that does nothing, submitted to the same cluster; ``null / tasks`` is the scheduler's
  own cost per task, with no pixel work at all.

From the null graphs' cost per task and the tasks per chip-frame of the survey graph
(``bench_graph.py``), it extrapolates the scheduling budget of a 31,000 chip-frame night.

    .venv/bin/python benchmarks/bench_scheduler.py --chips 50 --workers 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ccdask.cluster import ClusterConfig, describe_client, open_client
from ccdask.night import _stages
from ccdask.night._reduce import reduce
from ccdask.simulate._night import SimulatedNight, simulate_night


def _noop(*_args: Any) -> None:
    return None


def null_graph(graph: Any) -> dict[Any, Any]:
    """``graph`` with every task replaced by :func:`_noop` of the same dependencies."""
    from dask._task_spec import Task, TaskRef

    return {k: Task(k, _noop, *(TaskRef(d) for d in sorted(node.dependencies, key=str))) for k, node in graph.items()}


def sinks(graph: Any) -> list[Any]:
    needed = set()
    for node in graph.values():
        needed |= set(node.dependencies)
    return [k for k in graph if k not in needed]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("benchmarks/_data/night-scheduler"))
    ap.add_argument("--chips", type=int, default=50)
    ap.add_argument("--exposures", type=int, default=100, help="20 biases, 10 darks, 10 flats, the rest science")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--survey-chip-frames", type=int, default=31_000)
    ap.add_argument(
        "--survey-tasks-per-chip-frame",
        type=float,
        default=2.91,
        help="tasks per chip-frame of the survey night's graph (bench_graph.py --exposures 500 --chips 62)",
    )
    args = ap.parse_args()
    nsci = args.exposures - 40
    try:
        night = SimulatedNight.load(args.dir)
        assert len(night.chips) == args.chips and len(night.all_files) == args.exposures
    except Exception:
        t = time.perf_counter()
        night = simulate_night(
            args.dir,
            chips=args.chips,
            amps=2,
            size="small",
            nbias=20,
            ndark=10,
            nflat=10,
            filters=("r",),
            nscience=nsci,
            seed=3,
            overwrite=True,
        )
        print(f"simulated {len(night.all_files)} files in {time.perf_counter() - t:.0f} s")
    chip_frames = len(night.all_files) * len(night.chips)

    # keep every stage's graph as the runner submits it (the runner itself is unchanged)
    graphs: dict[str, Any] = {}
    original = _stages.Runner.compute

    def compute(self: Any, stage: str, collections: Any) -> Any:
        if collections:
            graphs.setdefault(stage, {}).update(_stages.stage_graph(collections))
        return original(self, stage, collections)

    _stages.Runner.compute = compute  # type: ignore[method-assign]
    out = Path(tempfile.mkdtemp(prefix="ccdask-sched-"))
    try:
        cfg = ClusterConfig(workers=args.workers, threads_per_worker=args.threads, memory_limit="2GiB")
        from distributed import get_task_stream

        with open_client(cfg) as client:
            print(describe_client(client))
            slots = sum(client.nthreads().values())
            client.run(lambda: None)  # workers warm
            t = time.perf_counter()
            with get_task_stream(client=client) as ts:
                result = reduce(night.raw_dir, out, client=client)
            total = time.perf_counter() - t
            busy: dict[Any, float] = {}
            for rec in ts.data:
                for ss in rec.get("startstops", ()):
                    if ss["action"] == "compute":
                        busy[rec["key"]] = busy.get(rec["key"], 0.0) + ss["stop"] - ss["start"]
            null: dict[str, float] = {}
            for stage, g in graphs.items():
                dsk = null_graph(g)
                t0 = time.perf_counter()
                client.get(dsk, sinks(dsk), sync=True)
                null[stage] = time.perf_counter() - t0
    finally:
        _stages.Runner.compute = original  # type: ignore[method-assign]
        shutil.rmtree(out, ignore_errors=True)

    print(
        f"night: {len(night.all_files)} exposures x {len(night.chips)} small chips = {chip_frames} chip-frames; "
        f"{slots} worker threads; whole reduction {total:.1f} s"
    )
    print("| stage | tasks | wall (s) | busy (s) | idle per task (ms) | null graph (s) | null per task (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    totals = [0, 0.0, 0.0, 0.0]
    for stage, g in graphs.items():
        n = len(g)
        wall = result.stages[stage]["seconds"]
        b = sum(busy.get(k, 0.0) for k in g)
        idle = (wall * slots - b) / n
        print(
            f"| {stage} | {n} | {wall:.2f} | {b:.2f} | {idle * 1e3:.2f} | {null[stage]:.2f} | {null[stage] / n * 1e3:.2f} |"
        )
        totals = [totals[0] + n, totals[1] + wall, totals[2] + b, totals[3] + null[stage]]
    n, wall, b, nl = totals
    print(
        f"| **night** | {n} | {wall:.2f} | {b:.2f} | {(wall * slots - b) / n * 1e3:.2f} | {nl:.2f} | "
        f"{nl / n * 1e3:.2f} |"
    )
    per_task = nl / n
    survey_tasks = args.survey_chip_frames * args.survey_tasks_per_chip_frame
    print(
        f"tasks per chip-frame here: {n / chip_frames:.2f}; scheduler cost {per_task * 1e3:.2f} ms per task "
        f"(null graphs), {(wall * slots - b) / n * 1e3:.2f} ms idle thread time per task (real graphs)"
    )
    print(
        f"survey night: {args.survey_chip_frames} chip-frames x {args.survey_tasks_per_chip_frame:.2f} tasks = "
        f"{survey_tasks:.0f} tasks; scheduling budget {survey_tasks * per_task:.0f} s at the null graphs' rate "
        f"({survey_tasks * per_task / 60:.1f} min), the scheduler being one process whatever the workers"
    )


if __name__ == "__main__":
    main()
