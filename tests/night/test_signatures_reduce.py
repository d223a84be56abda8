"""A whole night with crosstalk and nonlinearity injected, reduced by ``reduce`` with both
corrections enabled in its configuration: the same as the night simulated without them."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from ccdask import reduce
from ccdask.simulate import simulate_night

BETA = -5.0e-7
XT = {("A", "B"): 4.0e-4, ("B", "A"): -2.5e-4}
NIGHT = {"chips": 2, "nbias": 3, "ndark": 2, "nflat": 3, "filters": ("r",), "nscience": 2, "seed": 21}


def _tables(root):
    xt = root / "xt.toml"
    xt.write_text(
        "".join(
            f"[[crosstalk]]\nsource = '{s}'\nvictim = '{v}'\nlinear = {c!r}\nflip = true\n\n"
            for (s, v), c in XT.items()
        )
    )
    nl = root / "nl.toml"
    # the series of the inverse of m = t + beta t²: t = m - beta m² + 2 beta² m³ - 5 beta³ m⁴
    series = [-BETA, 2 * BETA**2, -5 * BETA**3]
    nl.write_text("".join(f"[[linearity]]\namp = '{a}'\ncoefficients = {series!r}\n\n" for a in ("A", "B")))
    return xt, nl


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("signatures")
    xt, nl = _tables(root)
    plain = simulate_night(root / "plain", **NIGHT)
    marked = simulate_night(root / "marked", crosstalk=XT, nonlinearity=BETA, **NIGHT)
    config = {"crosstalk": {"file": str(xt)}, "linearity": {"file": str(nl)}}
    return {
        "plain": reduce(plain.raw_dir, root / "out-plain", client="threads"),
        "corrected": reduce(marked.raw_dir, root / "out-corrected", config=config, client="threads"),
        "uncorrected": reduce(marked.raw_dir, root / "out-uncorrected", client="threads"),
    }


def _sci(result):
    out = {}
    for path in sorted(result.outputs):
        with fits.open(path) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    out[(path.rsplit("/", 1)[-1], h.header["CCDNAME"])] = (
                        h.data.astype(np.float64),
                        hdul["VAR", h.ver].data.astype(np.float64),
                        hdul["DQ", h.ver].data,
                        h.header,
                    )
    return out


def test_corrected_night_equals_the_night_without_signatures(nights):
    plain, corrected, uncorrected = (_sci(nights[k]) for k in ("plain", "corrected", "uncorrected"))
    assert plain.keys() == corrected.keys() and len(plain) == 4
    for key, (sci, var, dq, _) in plain.items():
        good = (dq == 0) & (corrected[key][2] == 0)
        noise = float(np.median(np.sqrt(var[good])))
        diff = corrected[key][0][good] - sci[good]
        raw = uncorrected[key][0][good] - sci[good]
        # what is left: the rounding of the two nights' raw values and of the injected ghosts
        # (about 0.4 ADU rms each), far below the photon noise of the sky
        assert abs(float(np.median(diff))) < 0.02 * noise
        assert float(np.std(diff)) < 0.1 * noise
        # uncorrected, the stars are nonlinear and leave ghosts on the other amplifier
        assert float(np.std(raw)) > noise
        bright = good & (sci > 20000.0)  # star pixels, e-
        assert bright.sum() > 50
        rel = corrected[key][0][bright] / sci[bright] - 1.0
        rel_raw = uncorrected[key][0][bright] / sci[bright] - 1.0
        assert abs(float(np.median(rel))) < 1e-3 < 5e-3 < abs(float(np.median(rel_raw)))


def test_history_records_both_corrections(nights):
    for _, _, _, header in _sci(nights["corrected"]).values():
        history = "\n".join(str(h) for h in header["HISTORY"])
        assert "crosstalk: " in history and "xt.toml" in history
        assert "linearity: " in history and "nl.toml" in history
    for _, _, _, header in _sci(nights["uncorrected"]).values():
        assert "crosstalk" not in "\n".join(str(h) for h in header["HISTORY"])
