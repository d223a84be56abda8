"""Stacking speed against the other stackers, on the same files in one run.

Frames: ``--frames`` (default 24) uint16 frames of ``--shape`` (default 4096 × 2048), written once
by ``bench_combine.make_frames`` (bias-like, 0.05 % cosmic rays) into ``--dir``.

Rows, each the best of ``--repeat`` runs (round-robin), warm page cache:

* the read floor: every byte of every file once through a raw big-endian int16 memmap, in process;
* ``ccdask.combine`` in process (threaded scheduler), for each rejection kind;
* ``ccdask combine`` as a whole process (``python -m ccdask combine``: import, graph, compute,
  write);
* IRAF ``imcombine`` as a whole process (``irafcl -f script``, ``outtype=real``), for the same
  kinds with the same parameters, when ``irafcl`` is installed;
* ``ccdproc.combine`` (sigma clipping once, mean/std) once, only with ``--ccdproc`` (it takes
  minutes and several GB on the full size).

Siril is not run: its ``stack`` works on a sequence converted from the FITS files and its
rejection kinds (winsorized, linear fit, GESD) are not in ccdask yet, so no same-work row exists.

Usage::

    .venv/bin/python benchmarks/bench_stackers.py [--frames 24] [--shape 4096 2048] [--repeat 3]
        [--kinds sigclip ccdclip ...] [--ccdproc]
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

#: The same rejection in both tools: (ccdask options, IRAF imcombine parameters).
KINDS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "none": ({"clip": "none"}, {"reject": "none"}),
    "sigclip": ({"clip": "sigclip"}, {"reject": "sigclip", "lsigma": 3.0, "hsigma": 3.0}),
    "avsigclip": ({"clip": "avsigclip"}, {"reject": "avsigclip", "lsigma": 3.0, "hsigma": 3.0}),
    "ccdclip": (
        {"clip": "ccdclip", "rdnoise": 5.0, "gain": 1.0},
        {"reject": "ccdclip", "rdnoise": "5.", "gain": "1.", "lsigma": 3.0, "hsigma": 3.0},
    ),
    "crreject": (
        {"clip": "crreject", "rdnoise": 5.0, "gain": 1.0},
        {"reject": "crreject", "rdnoise": "5.", "gain": "1.", "hsigma": 3.0},
    ),
    "pclip": ({"clip": "pclip"}, {"reject": "pclip", "pclip": -0.5, "lsigma": 3.0, "hsigma": 3.0}),
    "extrema": ({"clip": "extrema"}, {"reject": "minmax", "nlow": 1, "nhigh": 1}),
}


def read_floor(paths: list[Path]) -> float:
    """Seconds to touch every byte once: a raw big-endian int16 memmap of each data unit, summed."""
    from astropy.io import fits

    t0 = time.perf_counter()
    total = 0
    for p in paths:
        with fits.open(p, memmap=False, do_not_scale_image_data=True) as hdul:
            offset = hdul[0]._data_offset
            shape = hdul[0].shape
        mm = np.memmap(p, dtype=">i2", mode="r", offset=offset, shape=shape)
        total += int(mm.sum(dtype=np.int64) & 1)
    return time.perf_counter() - t0 + 0 * total


def ccdask_inprocess(paths: list[Path], options: dict[str, object]) -> float:
    from ccdask.combine import combine

    t0 = time.perf_counter()
    combine(paths, **options).compute(scheduler="threads")
    return time.perf_counter() - t0


def ccdask_process(paths: list[Path], options: dict[str, object], out: Path) -> float:
    argv = [sys.executable, "-m", "ccdask", "combine", *map(str, paths), "-o", str(out), "--overwrite"]
    argv += ["--reject", str(options["clip"])]
    for key in ("rdnoise", "gain"):
        if key in options:
            argv += [f"--{key}", str(options[key])]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def iraf_process(paths: list[Path], params: dict[str, object], work: Path) -> float:
    listfile = work / "in.lst"
    listfile.write_text("".join(f"{p}\n" for p in paths))
    out = work / "iraf_out.fits"
    out.unlink(missing_ok=True)
    args = {"combine": "average", "outtype": "real", "logfile": "", **params}
    call = ", ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in args.items())
    script = work / "combine.cl"
    script.write_text(f'images\nimmatch\nimcombine ("@{listfile}", "{out}", {call})\nlogout\n')
    env = {**os.environ, "USER": os.environ.get("USER", "ccdask"), "HOME": str(work)}
    t0 = time.perf_counter()
    proc = subprocess.run(["irafcl", "-f", str(script)], cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"imcombine failed:\n{proc.stdout}{proc.stderr}")
    return elapsed


def ccdproc_once(paths: list[Path]) -> float:
    import warnings

    import ccdproc

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ccdproc.combine([str(p) for p in paths], method="average", sigma_clip=True, unit="adu")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=HERE / "_data" / "combine")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--shape", type=int, nargs=2, default=(4096, 2048))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--ccdproc", action="store_true")
    args = ap.parse_args()
    shape = (args.shape[0], args.shape[1])
    paths = make_frames(args.dir, args.frames, shape)
    warm(paths)
    have_iraf = shutil.which("irafcl") is not None
    best: dict[str, float] = {}

    def keep(label: str, seconds: float) -> None:
        best[label] = min(best.get(label, np.inf), seconds)

    ccdask_inprocess(paths[:2], {"clip": "sigclip"})  # compile the kernels once
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.repeat):
            keep("read floor", read_floor(paths))
            for kind in args.kinds:
                options, params = KINDS[kind]
                keep(f"ccdask.combine {kind} (in process)", ccdask_inprocess(paths, options))
                keep(f"ccdask combine --reject {kind} (process)", ccdask_process(paths, options, work / "m.fits"))
                if have_iraf:
                    keep(f"IRAF imcombine reject={params['reject']} (irafcl)", iraf_process(paths, params, work))
        if args.ccdproc:
            best["ccdproc.combine sigma_clip (once)"] = ccdproc_once(paths)
    load = os.getloadavg()[0]
    print(f"\n{args.frames} frames of {shape[0]} x {shape[1]} uint16, best of {args.repeat}, load {load:.1f}")
    print("| what | seconds | × read floor |")
    print("| --- | ---: | ---: |")
    floor = best["read floor"]
    for label, seconds in best.items():
        print(f"| {label} | {seconds:.2f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()
