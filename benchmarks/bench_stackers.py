"""Stacking speed and memory against the other stackers, on the same files in one run.

Frames: ``--frames`` (default 24) uint16 frames of ``--shape`` (default 4096 × 2048), written once
by ``bench_combine.make_frames`` (bias-like, 0.05 % cosmic rays) into ``--dir``.

Rows, each the best of ``--repeat`` runs (round-robin: every tool once per round), warm page cache:

* the read floor: every byte of every file once through a raw big-endian int16 memmap, in process;
* ``ccdask.combine`` in process (threaded scheduler), for each rejection kind;
* ``ccdask combine`` as a whole process (``python -m ccdask combine``: import, graph, compute,
  write);
* IRAF ``imcombine`` as a whole process (``irafcl -f script``, ``outtype=real``), for the same
  kinds with the same parameters, when ``irafcl`` is installed;
* Siril ``stack seq rej s 3 3 -nonorm`` as a whole process (``siril-cli -s script``) on its sequence
  of the same files (``convert``, timed once on its own row), with ``sigclip``, when ``siril-cli``
  is installed: Siril's sigma clipping about the median, mean of the survivors;
* ``ccdproc.combine`` (sigma clipping once, mean/std) once, only with ``--ccdproc``;
* with ``--profile``: CPU seconds of one thread per stage of the in-process sigclip (read floor,
  decode into the band buffer, the kernel without and with rejection, the tile tasks);
* with ``--memory``: peak RSS of the ``ccdask combine`` process tree for 12 and for 48 frames
  (the frames are written up to 48), sampled every 10 ms.

Usage::

    .venv/bin/python benchmarks/bench_stackers.py [--frames 24] [--shape 4096 2048] [--repeat 3]
        [--kinds sigclip ccdclip ...] [--ccdproc] [--memory] [--profile]
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

from bench_combine import make_frames, peak_rss_of, warm  # noqa: E402

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


#: Siril's sigma clipping 3/3 about the median, mean of the survivors, no normalisation.
SIRIL_STACK = "stack seq rej s 3 3 -nonorm -out=siril_out"


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


def siril_process(seq: Path, lines: list[str]) -> float:
    """Seconds of one ``siril-cli`` process running the script ``lines`` in the folder ``seq``."""
    script = seq.parent / "run.ssf"
    script.write_text("requires 1.0.0\n" + "".join(f"{line}\n" for line in lines))
    env = {**os.environ, "HOME": str(seq.parent)}
    t0 = time.perf_counter()
    proc = subprocess.run(["siril-cli", "-d", str(seq), "-s", str(script)], cwd=seq, env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode != 0 or "Script execution finished successfully" not in text:
        raise RuntimeError(f"siril-cli failed:\n{text}")
    return elapsed


def memory_rows(paths: list[Path], work: Path) -> list[tuple[int, float, float]]:
    """``(frames, peak RSS MiB, wall s)`` of ``ccdask combine --reject sigclip`` on 12 and 48 frames."""
    rows = []
    for n in (12, 48):
        argv = [sys.executable, "-m", "ccdask", "combine", *map(str, paths[:n]), "-o", str(work / f"mem{n}.fits")]
        peak, wall, rc = peak_rss_of([*argv, "--overwrite", "--reject", "sigclip"])
        if rc:
            raise RuntimeError(f"ccdask combine on {n} frames failed ({rc})")
        rows.append((n, peak / 2**20, wall))
    return rows


def profile_rows(paths: list[Path]) -> list[tuple[str, float]]:
    """CPU seconds of one thread for the stages of the in-process sigclip over the whole stack:
    the read floor, the ``pread`` of every tile's stored values and their decode, band by band,
    into the band buffer, the kernel on those bands (no rejection, then sigclip), and the tile tasks themselves
    (read + decode + sigclip)."""
    import importlib

    from ccdask.combine import CombineConfig, combine_block
    from ccdask.io import image_source

    stack_mod = importlib.import_module("ccdask.combine._stack")
    sources = [image_source(p) for p in paths]
    ny, nx = sources[0].shape
    band = stack_mod.band_rows(len(sources), nx)
    ty, _ = stack_mod.tile_shape(len(sources), (ny, nx))
    tile = np.empty((ty, nx), np.uint16)
    stored = tile[:band]
    buf = np.empty((len(sources), band, nx), np.float32)
    whole = slice(0, nx)
    clock = time.thread_time
    rows: list[tuple[str, float]] = []
    t0 = clock()
    total = 0
    for src in sources:
        raw = src.stored_pixels()
        assert raw is not None
        total += int(raw.sum(dtype=np.int64) & 1)
    rows.append(("read floor (one thread)", clock() - t0 + 0 * total))
    t0 = clock()
    for y in range(0, ny, ty):
        for src in sources:
            src.read_stored_into(slice(y, min(y + ty, ny)), whole, tile[: min(ty, ny - y)])
    rows.append((f"pread of every tile's stored values ({ty} rows, one call per frame)", clock() - t0))
    view = stored.view(">i2")
    t0 = clock()
    for _ in range(0, ny - band + 1, band):  # the last band's values, decoded as often as there are bands
        for i, src in enumerate(sources):
            src.decode_into(view, buf[i])
    rows.append(("decode of every band into the band buffer", clock() - t0))
    for clip in ("none", "sigclip"):
        cfg = CombineConfig(clip=clip)
        combine_block(buf, cfg)
        t0 = clock()
        for _ in range(0, ny - band + 1, band):
            combine_block(buf, cfg)
        rows.append((f"kernel, clip={clip}, on the bands", clock() - t0))
    cfg = CombineConfig(clip="sigclip")
    t0 = clock()
    for y in range(0, ny, ty):
        stack_mod._tile_from_sources(sources, slice(y, min(y + ty, ny)), whole, None, cfg, False)
    rows.append(("tile tasks, sigclip (pread + decode + kernel)", clock() - t0))
    return rows


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
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    shape = (args.shape[0], args.shape[1])
    made = make_frames(args.dir, max(args.frames, 48 if args.memory else 0), shape)
    paths = made[: args.frames]
    warm(paths)
    have_iraf = shutil.which("irafcl") is not None
    have_siril = shutil.which("siril-cli") is not None and "sigclip" in args.kinds
    best: dict[str, float] = {}

    def keep(label: str, seconds: float) -> None:
        best[label] = min(best.get(label, np.inf), seconds)

    ccdask_inprocess(paths[:2], {"clip": "sigclip"})  # compile the kernels once
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seq = work / "siril"
        seq.mkdir()
        for p in paths:  # Siril's convert takes every image of its folder
            os.symlink(p, seq / p.name)
        if have_siril:
            best["Siril convert (once, to its sequence)"] = siril_process(seq, ["convert seq"])
        for _ in range(args.repeat):
            keep("read floor", read_floor(paths))
            for kind in args.kinds:
                options, params = KINDS[kind]
                keep(f"ccdask.combine {kind} (in process)", ccdask_inprocess(paths, options))
                keep(f"ccdask combine --reject {kind} (process)", ccdask_process(paths, options, work / "m.fits"))
                if have_iraf:
                    keep(f"IRAF imcombine reject={params['reject']} (irafcl)", iraf_process(paths, params, work))
                if have_siril and kind == "sigclip":
                    keep("Siril stack rej s 3 3 -nonorm (siril-cli)", siril_process(seq, [SIRIL_STACK]))
        if args.ccdproc:
            best["ccdproc.combine sigma_clip (once)"] = ccdproc_once(paths)
        memory = memory_rows(made, work) if args.memory else []
        profile = profile_rows(paths) if args.profile else []
    load = os.getloadavg()
    print(
        f"\n{args.frames} frames of {shape[0]} x {shape[1]} uint16, best of {args.repeat}, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
    )
    print("| what | seconds | × read floor |")
    print("| --- | ---: | ---: |")
    floor = best["read floor"]
    for label, seconds in best.items():
        print(f"| {label} | {seconds:.2f} | {seconds / floor:.1f} |")
    if profile:
        print("\n| stage (CPU seconds of one thread, whole stack) | seconds |")
        print("| --- | ---: |")
        for label, seconds in profile:
            print(f"| {label} | {seconds:.2f} |")
    if memory:
        print("\n| frames | peak RSS of `ccdask combine` (MiB) | wall (s) | × 12-frame peak |")
        print("| ---: | ---: | ---: | ---: |")
        for n, peak, wall in memory:
            print(f"| {n} | {peak:.0f} | {wall:.1f} | {peak / memory[0][1]:.2f} |")


if __name__ == "__main__":
    main()
