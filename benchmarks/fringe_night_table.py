"""The fringe table of docs/signatures.md ("The fringe stage of reduce"): the night of
tests/night/test_fringe_reduce.py reduced with and without ``fringe.filters = ["i"]``, recovered
amplitudes, chi before and after and the pattern left, against the injected truth.

    .venv/bin/python benchmarks/fringe_night_table.py   (writes under ./fringe-night-table)
"""

import warnings

import numpy as np
from astropy.io import fits

from ccdask import reduce
from ccdask.calibrate._fringe import source_mask_np
from ccdask.simulate import simulate_night

warnings.simplefilter("ignore")
NIGHT = {"chips": 2, "nbias": 3, "ndark": 2, "nflat": 4, "filters": ("i", "r"), "nscience": 4, "seed": 6}
sim = simulate_night("fringe-night-table/night", fringe={"i": 40.0}, **NIGHT)
on = reduce(sim.raw_dir, "fringe-night-table/on", config={"fringe": {"filters": ["i"]}}, client="threads")
off = reduce(sim.raw_dir, "fringe-night-table/off", client="threads")
truth = sim.truth()


def load(p, chip):
    with fits.open(p) as h:
        for x in h:
            if x.name == "SCI" and x.header["CCDNAME"] == chip:
                return x.data.astype(np.float32), h["VAR", x.ver].data.astype(np.float32), h["DQ", x.ver].data, x.header


print("| frame | chip | injected (e-) | recovered (e-) | pull | chi before | chi after | pattern left (e-) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for chip in ("CCD1", "CCD2"):
    with fits.open(on.masters["fringe_i"]) as h:
        F = h[chip].data.astype(np.float64)
        count = h[f"{chip}_COUNT"].data
    pat = truth.array(chip, "fringe_i").astype(np.float64)
    ok = np.isfinite(F)
    c = float(np.sum(F[ok] * pat[ok]) / np.sum(pat[ok] ** 2))
    for p_on, p_off in zip(
        sorted(o for o in on.outputs if "_i_" in o), sorted(o for o in off.outputs if "_i_" in o), strict=True
    ):
        name = p_on.rsplit("/", 1)[-1][:-5]
        sci, var, dq, hd = load(p_on, chip)
        sci0, var0, _, _ = load(p_off, chip)
        sig = truth.signal(chip, name)
        use = (count == 4) & ~source_mask_np(sci, dq)
        amp = truth.frame(name)["fringe_amplitude"]
        got, err = hd["FRNGSCL"] * c, hd["FRNGSERR"] * c
        b = np.std((sci0[use] - sig[use]) / np.sqrt(var0[use]))
        a = np.std((sci[use] - sig[use]) / np.sqrt(var[use]))
        pp = pat[use]
        res = sci[use] - sig[use]
        left = float(np.sum(res * pp) / np.sum(pp * pp))
        lerr = float(np.hypot(np.sqrt(np.sum(pp * pp * var[use])) / np.sum(pp * pp), hd["FRNGSERR"] * 40.0))
        print(
            f"| {name} | {chip} | {amp:.2f} | {got:.2f} ± {err:.2f} | {(got - amp) / err:+.1f} | {b:.3f} | {a:.3f} | {left:+.2f} ± {lerr:.2f} |"
        )
    print(
        f"c({chip}) = {c:.2f}, covered by all 4 frames: {np.mean(count == 4):.3f}, by none: {np.mean(count == 0):.4f}"
    )
