"""Cost of the fringe stage of ``reduce`` against the science stage of the same night, same run.

    .venv/bin/python benchmarks/bench_fringe.py --repeat 3

A simulated night of one ``medium`` chip (1024 x 1024 data pixels, two amplifiers), seed 3,
3 biases, 2 darks, 3 flats and ``--nscience`` science frames in ``i`` with fringes of 40 e-.
The masters are built once into a shared cache; then, round-robin, ``--repeat`` times: the
night reduced without the fringe stage (science stage only, masters from the cache) and with
``fringe.filters = ["i"]`` (the fringe frame removed from the cache first, so it is rebuilt:
calibrate, two stacks, one fit round, cache write; then the science stage with the fit and the
subtraction per chip). The best time of each stage is kept; the ratios are to the science stage
without fringes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

from ccdask import reduce
from ccdask.cache import MasterCache
from ccdask.simulate import simulate_night


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--nscience", type=int, default=6)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the simulator does not dither: the dither check warns
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        night = simulate_night(
            root / "night",
            chips=1,
            size="medium",
            nbias=3,
            ndark=2,
            nflat=3,
            filters=("i",),
            nscience=args.nscience,
            seed=3,
            fringe={"i": 40.0},
        )
        cache = root / "cache.zarr"
        reduce(night.raw_dir, root / "warm", client="threads", cache=cache)
        on = {"fringe": {"filters": ["i"]}}
        best: dict[str, float] = {}
        tasks: dict[str, int] = {}
        for i in range(args.repeat):
            for label, config in (("off", None), ("on", on)):
                store = MasterCache(cache)
                for e in store.entries():
                    if e.kind == "fringe":
                        store.remove(e.key)
                out = root / f"{label}-{i}"
                result = reduce(night.raw_dir, out, client="threads", cache=cache, config=config)
                for stage, rec in result.stages.items():
                    if stage in ("science", "fringe-i"):
                        name = f"{stage} ({label})"
                        best[name] = min(best.get(name, float("inf")), rec["seconds"])
                        tasks[name] = rec["tasks"]
                shutil.rmtree(out)
        ref = best["science (off)"]
        print(f"one medium chip, {args.nscience} science frames in i, best of {args.repeat}")
        print("| stage | tasks | best time (s) | vs science without fringes |")
        print("| --- | ---: | ---: | ---: |")
        for name in ("science (off)", "fringe-i (on)", "science (on)"):
            print(f"| {name} | {tasks[name]} | {best[name]:.2f} | {best[name] / ref:.2f} |")


if __name__ == "__main__":
    main()
