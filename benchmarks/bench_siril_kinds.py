"""Siril's rejection kinds: ccdask against Siril (``siril-cli``) on the same files in one run.

Frames: ``--frames`` (default 24) uint16 frames of ``--shape`` (default 2048 × 1024), written once
by ``bench_combine.make_frames`` (bias-like, 0.05 % cosmic rays) into ``--dir``.

Rows, each the best of ``--repeat`` runs (round-robin), warm page cache:

* the read floor: every byte of every file once through a raw big-endian int16 memmap, in process;
* ``ccdask.combine`` in process (threaded scheduler) and ``ccdask combine`` as a whole process
  (``python -m ccdask combine``: import, graph, compute, write) for ``winsorized``,
  ``linearfit`` and ``gesd``;
* Siril's ``stack <seq> rej w|l|g ... -nonorm`` as a whole process (``siril-cli -s script``) on
  the sequence its ``convert`` made from the same files once (the convert time is its own row);
  ``rej s`` (Siril's sigma clipping) is timed too, against ccdask's ``sigma`` with median
  center and sample spread (``center=median, spread=std``: the same kind of work, not the same
  rule; tests/combine/test_siril.py says how they differ).

The parameters are the same in both tools: 3/3 sigmas, GESD fraction 0.3 and significance 0.05.

Usage::

    .venv/bin/python benchmarks/bench_siril_kinds.py [--frames 24] [--shape 2048 1024] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_combine import make_frames, warm  # noqa: E402
from bench_stackers import ccdask_inprocess, read_floor  # noqa: E402
from bench_stackers import siril_process as siril  # noqa: E402

#: (ccdask options, ccdask CLI flags, Siril's ``rej`` arguments).
KINDS: dict[str, tuple[dict[str, object], list[str], str]] = {
    "winsorized": ({"clip": "winsorized"}, ["--reject", "winsorized"], "w 3 3"),
    "linearfit": ({"clip": "linearfit"}, ["--reject", "linearfit"], "l 3 3"),
    "gesd": ({"clip": "gesd", "gesd_fraction": 0.3, "gesd_alpha": 0.05}, ["--reject", "gesd"], "g 0.3 0.05"),
    "sigma": (
        {"clip": "sigma", "center": "median", "spread": "std", "maxiters": None},
        ["--reject", "sigma", "--center", "median", "--spread", "std", "--maxiters", "0"],
        "s 3 3",
    ),
}


def ccdask_process(paths: list[Path], flags: list[str], out: Path) -> float:
    argv = [sys.executable, "-m", "ccdask", "combine", *map(str, paths), "-o", str(out), "--overwrite", *flags]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=HERE / "_data" / "combine")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--shape", type=int, nargs=2, default=(2048, 1024))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = ap.parse_args()
    shape = (args.shape[0], args.shape[1])
    paths = make_frames(args.dir, args.frames, shape)
    warm(paths)
    have_siril = shutil.which("siril-cli") is not None
    best: dict[str, float] = {}

    def keep(label: str, seconds: float) -> None:
        best[label] = min(best.get(label, np.inf), seconds)

    for kind in args.kinds:  # compile (or load) the kernels once
        ccdask_inprocess(paths[:3], KINDS[kind][0])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seq = work / "siril"
        seq.mkdir()
        for p in paths:  # Siril's convert takes every image of its folder
            os.symlink(p, seq / p.name)
        if have_siril:
            # (FITS that need no conversion become links to the same files in Siril 1.0)
            best["Siril convert (once, to its sequence)"] = siril(seq, ["convert seq"])
        for _ in range(args.repeat):
            keep("read floor", read_floor(paths))
            for kind in args.kinds:
                options, flags, rej = KINDS[kind]
                keep(f"`ccdask.combine` {kind} (in process)", ccdask_inprocess(paths, options))
                keep(f"`ccdask combine --reject {kind}` (process)", ccdask_process(paths, flags, work / "m.fits"))
                if have_siril:
                    keep(
                        f"Siril `stack rej {rej} -nonorm` (process)",
                        siril(seq, [f"stack seq rej {rej} -nonorm -out=r"]),
                    )
    load = os.getloadavg()[0]
    print(f"\n{args.frames} frames of {shape[0]} x {shape[1]} uint16, best of {args.repeat}, load {load:.1f}")
    print("| what | seconds | × read floor |")
    print("| --- | ---: | ---: |")
    floor = best["read floor"]
    for label, seconds in best.items():
        print(f"| {label} | {seconds:.2f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()
