"""Whole-process times of the command line: start-up, the catalogue, and a rerun with nothing to do.

Each command runs ``--repeat`` times as a fresh process (what a user waits for); the median is
reported, with the interpreter's own start-up (``python -c pass``) as the reference measured in
the same run. The rerun is timed over a simulated three-chip ``small`` night reduced once on an
embedded LocalCluster (that first run is timed too: the rerun's other reference), then over
the same night with the read noise removed from its headers (measured in the biases by the
first run, recorded in the cache, taken from there by the reruns).

    .venv/bin/python benchmarks/bench_cli.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def timed(cmd: list[str], repeat: int, cwd: str | None = None) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--real", default=str(REAL), help="folder of real frames for `ccdask catalog`")
    args = ap.parse_args()
    py = sys.executable
    ccdask = [py, "-m", "ccdask"]
    rows: dict[str, list[float]] = {}
    rows["python -c pass (reference)"] = timed([py, "-c", "pass"], args.repeat)
    rows["ccdask --version"] = timed([*ccdask, "--version"], args.repeat)
    rows["ccdask --help"] = timed([*ccdask, "--help"], args.repeat)
    rows["ccdask reduce --help"] = timed([*ccdask, "reduce", "--help"], args.repeat)
    if Path(args.real).is_dir():
        rows[f"ccdask catalog {args.real}"] = timed([*ccdask, "catalog", args.real], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        from ccdask.simulate._night import simulate_night

        night = simulate_night(Path(tmp) / "night", chips=3, size="small", seed=1)
        out = Path(tmp) / "out"
        reduce = [*ccdask, "reduce", str(night.raw_dir), "--out", str(out)]
        rows["ccdask reduce, first run (3 chips, small)"] = timed(reduce, 1)
        rows["ccdask reduce, rerun with nothing to do"] = timed(reduce, args.repeat)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["cluster_started"] is False, "the rerun started a cluster"
        # the same night with no read noise in the headers: measured in the biases, then recorded
        from astropy.io import fits

        for path in night.raw_dir.glob("*.fits"):
            with fits.open(path, mode="update") as hdul:
                for hdu in hdul:
                    for key in [k for k in hdu.header if k.startswith("RDNOISE")]:
                        del hdu.header[key]
        out2 = Path(tmp) / "out-no-rdnoise"
        reduce = [*ccdask, "reduce", str(night.raw_dir), "--out", str(out2)]
        rows["ccdask reduce, first run, headers without read noise"] = timed(reduce, 1)
        rows["ccdask reduce, rerun, headers without read noise"] = timed(reduce, args.repeat)
        manifest = json.loads((out2 / "manifest.json").read_text())
        assert manifest["cluster_started"] is False, "the rerun started a cluster"
        assert manifest["read_noise"], "nothing was measured: the headers still had a read noise"
    ref = statistics.median(rows["python -c pass (reference)"])
    print(f"{'command':<60} {'median s':>9} {'min s':>7} {'x python':>9}")
    for name, ts in rows.items():
        med = statistics.median(ts)
        print(f"{name:<60} {med:9.3f} {min(ts):7.3f} {med / ref:9.1f}")


if __name__ == "__main__":
    main()
