"""Cost of the signature corrections and masks against the overscan subtraction of the same frame.

    .venv/bin/python benchmarks/bench_signatures.py --repeat 7

One raw 4096 x 2048 chip with two amplifiers (SIMCAM layout: 32 overscan columns each side),
uint16 values, with 40 bleed trails of 200 rows at 0.8 x SATURATE; the numpy forms (and the dask
bleed mask, threaded, in chunks of 512 whole rows) run round-robin and the best time of each is
kept. Ratios are to ``subtract_overscan_np`` (median collapse, no model) on the same frame in the
same run. The fringe subtraction works on the trimmed 4096 x 2048 chip. The inter-chip crosstalk
correction adds two terms from both amplifiers of a second chip of the same shape, handed over as
``SourceAmp`` strips; reading those strips from a FITS file on disk (``read_source_amp``, only the
amplifiers' data and overscan columns) is timed against reading the whole chip.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
from astropy.io import fits

from ccdask.calibrate._bleed import bleed_mask, bleed_mask_np
from ccdask.calibrate._crosstalk import CrosstalkInputs, correct_crosstalk_np, parse_crosstalk, read_source_amp
from ccdask.calibrate._fringe import FringeFit, FringeFrame, subtract_fringe_np
from ccdask.calibrate._linearity import correct_linearity_np, parse_linearity
from ccdask.calibrate._masks import saturation_mask_np
from ccdask.calibrate._overscan import subtract_overscan_np
from ccdask.io import image_source
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.sections import Section


def _layout(ny: int, nx: int, nover: int, name: str = "CCD1") -> ChipLayout:
    w = nx // 2
    shape = (ny, nx + 2 * nover)

    def sec(text: str) -> Section:
        return Section.parse(text).resolve(shape)

    a = Amplifier(
        "A",
        sec(f"[{nover + 1}:{nover + w},1:{ny}]"),
        sec(f"[1:{w},1:{ny}]"),
        biassec=sec(f"[1:{nover},1:{ny}]"),
        gain=1.5,
        saturate=65000.0,
    )
    b = Amplifier(
        "B",
        sec(f"[{nover + w + 1}:{nover + nx},1:{ny}]"),
        sec(f"[{w + 1}:{nx},1:{ny}]"),
        biassec=sec(f"[{nover + nx + 1}:{nx + 2 * nover},1:{ny}]"),
        gain=1.6,
        saturate=65000.0,
    )
    return ChipLayout(name, shape, (a, b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    ny, nx, nover = 4096, 2048, 32
    layout = _layout(ny, nx, nover)
    rng = np.random.default_rng(1)
    raw = rng.normal(1500.0, 5.0, layout.raw_shape)
    raw[:, nover : nover + nx] += rng.poisson(800.0, (ny, nx))
    for _ in range(40):  # bleed trails
        y0, x0 = int(rng.integers(0, ny - 200)), nover + int(rng.integers(0, nx))
        raw[y0 : y0 + 200, x0] = 52000.0
    raw = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    lazy_raw = da.from_array(raw, chunks=(512, raw.shape[1]))
    trimmed = (ny, nx)
    fringe = FringeFrame(
        rng.normal(0.0, 40.0, trimmed).astype(np.float32),
        np.full(trimmed, 300.0, np.float32),
        np.full(trimmed, 5, np.int16),
        5,
        (1.0,) * 5,
    )
    fit = FringeFit(0.9, 0.01, 800.0, nx * ny, 1.0)
    sci = rng.normal(800.0, 30.0, trimmed).astype(np.float32)
    var = np.full(trimmed, 900.0, np.float32)
    xt = parse_crosstalk(
        {"crosstalk": [{"source": "A", "victim": "B", "linear": 4e-4}, {"source": "B", "victim": "A", "linear": -3e-4}]}
    )
    xtq = parse_crosstalk(
        {
            "crosstalk": [
                {"source": "A", "victim": "B", "linear": 4e-4, "quadratic": 1e-10},
                {"source": "B", "victim": "A", "linear": -3e-4, "quadratic": 1e-10},
            ]
        }
    )
    poly = parse_linearity(
        {"linearity": [{"amp": "A", "coefficients": [5e-7, 1e-12]}, {"amp": "B", "coefficients": [5e-7]}]}
    )
    grid = np.linspace(0, 66000, 200)
    table = parse_linearity(
        {"linearity": [{"amp": n, "measured": grid.tolist(), "true": (grid + 5e-7 * grid**2).tolist()} for n in "AB"]}
    )
    sub = subtract_overscan_np(raw, layout)
    other = _layout(ny, nx, nover, "CCD2")
    inter = parse_crosstalk(
        {
            "crosstalk": [
                {"source": "A", "victim": "B", "linear": 4e-4},
                {"source": "B", "victim": "A", "linear": -3e-4},
                {"chip": "CCD1", "source_chip": "CCD2", "source": "A", "victim": "A", "linear": 3e-5},
                {"chip": "CCD1", "source_chip": "CCD2", "source": "B", "victim": "A", "linear": 4e-5},
            ]
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-xtalk-"))
    path = tmp / "two_chips.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(raw), fits.ImageHDU(raw[::-1].copy())]).writeto(path)
    reader = image_source(str(path), 2)
    sources = tuple(read_source_amp(reader, other, amp) for amp in ("A", "B"))
    extra = sum(src.pixels.size for src in sources)
    print(
        f"inter-chip: the task holds {extra} source-amplifier pixels beside the chip's {raw.size} ({extra / raw.size:.2f}x)"
    )
    methods = {
        "subtract_overscan_np (reference)": lambda: subtract_overscan_np(raw, layout),
        "correct_crosstalk_np, 2 linear terms": lambda: correct_crosstalk_np(raw, layout, xt),
        "correct_crosstalk_np, 2 quadratic terms": lambda: correct_crosstalk_np(raw, layout, xtq),
        "correct_crosstalk_np, 2 terms + 2 from another chip": lambda: correct_crosstalk_np(
            raw, layout, CrosstalkInputs(inter, sources)
        ),
        "read_source_amp x2 (both amplifiers of the other chip)": lambda: [
            read_source_amp(reader, other, amp) for amp in ("A", "B")
        ],
        "ImageSource.read of the whole other chip": lambda: reader.read(slice(None), slice(None)),
        "correct_linearity_np, polynomial": lambda: correct_linearity_np(sub, layout, poly),
        "correct_linearity_np, 200-point table": lambda: correct_linearity_np(sub, layout, table),
        "saturation_mask_np (for comparison)": lambda: saturation_mask_np(raw, layout),
        "bleed_mask_np, length 10, grow 1": lambda: bleed_mask_np(raw, layout, level=0.5, length=10, grow=1),
        "bleed_mask (dask, threads), length 10, grow 1": lambda: bleed_mask(
            lazy_raw, layout, level=0.5, length=10, grow=1
        ).compute(scheduler="threads"),
        "subtract_fringe_np": lambda: subtract_fringe_np(sci, var, fringe, fit),
    }
    best = {k: float("inf") for k in methods}
    for fn in methods.values():  # warm up
        fn()
    for _ in range(args.repeat):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = best["subtract_overscan_np (reference)"]
    print("| step | best time (ms) | vs overscan |\n| --- | ---: | ---: |")
    for name, t in best.items():
        print(f"| {name} | {1e3 * t:.1f} | {t / ref:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
