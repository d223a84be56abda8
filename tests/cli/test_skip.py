"""``ccdask reduce --skip bias,dark,flat``: nights without some calibrations.

``--skip`` sets ``bias.enabled = false``, ``dark.mode = "none"`` and ``flat.enabled = false``
over the ``--config`` file; the plan errors that suggest it name an option that exists and
works; an unknown name is a usage error (exit 2) naming the valid ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdask.cli._main import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main
from ccdask.night._reduce import reduce
from ccdask.simulate._night import simulate_night
from tests.reliability.support import assert_same_outputs

NO_QA = {"output": {"qa": False}}


@pytest.fixture(scope="module")
def small_night(tmp_path_factory):
    """One chip, two amplifiers, 192 x 160 pixels; 3 biases, 2 darks, 2 g flats, 1 g science."""
    return simulate_night(
        tmp_path_factory.mktemp("skip-night"),
        chips=1,
        amps=2,
        size="small",
        nbias=3,
        ndark=2,
        nflat=2,
        filters=("g",),
        nscience=1,
        seed=5,
    )


def _planes(path: Path) -> dict[tuple[str, int], np.ndarray]:
    with fits.open(path) as hdul:
        return {(h.name, h.ver): h.data.copy() for h in hdul if h.data is not None}


def _parameters(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["parameters"]


def test_skip_flat_applies_no_flat(small_night, tmp_path, capsys):
    raw = small_night.raw_dir
    cfg = tmp_path / "night.toml"  # asks for the flat: --skip wins; its other settings stay
    cfg.write_text("[flat]\nenabled = true\n[output]\nqa = false\n")
    out = tmp_path / "cli"
    assert (
        main(["reduce", str(raw), "--out", str(out), "--config", str(cfg), "--skip", "flat", "--workers", "1"])
        == EXIT_OK
    )
    assert "skipped calibrations (--skip): flat (flat.enabled = false)" in capsys.readouterr().out
    params = _parameters(out)
    assert params["flat"]["enabled"] is False
    assert params["bias"]["enabled"] is True and params["dark"]["mode"] == "scale"
    assert params["output"]["qa"] is False, "the --config file must still be read"
    assert not list((out / "masters").glob("flat_*.fits"))

    # the same as the configuration key, bit for bit
    by_key = tmp_path / "by-key"
    reduce(raw, by_key, config={"flat": {"enabled": False}, **NO_QA}, client="threads")
    assert assert_same_outputs(out, by_key) > 0

    # an eager numpy check against the full reduction: the skipped run is the full one times
    # the flat master (where neither run flags the pixel), so no flat was divided out
    full = tmp_path / "full"
    reduce(raw, full, config=NO_QA, client="threads")
    name = "reduced/science_g_000.fits"
    skip, done = _planes(out / name), _planes(full / name)
    with fits.open(full / "masters" / "flat_g.fits") as hdul:
        flat = hdul["CCD1"].data.astype(np.float64)
    good = (skip[("DQ", 1)] == 0) & (done[("DQ", 1)] == 0) & (flat > 0.1)
    assert good.mean() > 0.9
    assert np.std(flat[good]) > 0.01, "the flat must differ from 1 for this check to mean anything"
    np.testing.assert_allclose(skip[("SCI", 1)][good], done[("SCI", 1)][good] * flat[good], rtol=1e-4, atol=1e-3)
    assert not np.allclose(skip[("SCI", 1)][good], done[("SCI", 1)][good], rtol=1e-3)


def test_skip_is_repeatable_and_the_plan_errors_name_it(small_night, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(small_night.raw_dir, raw)
    for p in [*raw.glob("bias_*.fits"), *raw.glob("flat_*.fits")]:
        p.unlink()
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["reduce", str(raw), "--out", str(out)]) == EXIT_INPUT
    assert "ccdask reduce --skip bias" in capsys.readouterr().err
    assert main(["reduce", str(raw), "--out", str(out), "--skip", "bias"]) == EXIT_INPUT
    assert "ccdask reduce --skip flat" in capsys.readouterr().err
    assert not out.exists(), "a failed plan must not create the output folder"

    argv = [
        "reduce",
        str(raw),
        "--out",
        str(out),
        "--skip",
        "bias",
        "--skip",
        "flat, dark",
        "--skip",
        "flat",
        "--workers",
        "1",
    ]
    assert main(argv) == EXIT_OK
    assert (
        "skipped calibrations (--skip): bias (bias.enabled = false), dark (dark.mode = "
        '"none"), flat (flat.enabled = false)'
    ) in capsys.readouterr().out
    params = _parameters(out)
    assert (params["bias"]["enabled"], params["dark"]["mode"], params["flat"]["enabled"]) == (False, "none", False)
    assert not list((out / "masters").glob("*.fits"))
    assert list((out / "reduced").glob("*.fits")) == [out / "reduced" / "science_g_000.fits"]


@pytest.mark.parametrize("value", ["bogus", "flat,bogus", "Flat", ","])
def test_unknown_skip_is_a_usage_error(small_night, tmp_path, capsys, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["reduce", str(small_night.raw_dir), "--out", str(out), "--skip", value])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --skip" in err and "choose from bias, dark, flat" in err, err
    if value != ",":
        assert repr(value.split(",")[-1]) in err
    assert not out.exists()
