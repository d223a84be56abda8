"""Gain and read noise from pairs of flats and biases: simulated truth, numpy truth, CLI."""

from __future__ import annotations

import argparse
import math

import dask
import numpy as np
import pytest

from ccdask.calibrate._gainpairs import gain_from_files, gain_from_pairs
from ccdask.catalog import Catalog
from ccdask.cli._gain import main, register
from ccdask.errors import ConfigError, ShapeMismatchError
from ccdask.io import open_frame


@pytest.fixture(scope="module")
def night(sim_night):
    """Two medium chips (1024 x 1024 data pixels, two amplifiers each): 512 x 1024 pixels per
    amplifier give a statistical error of sqrt(2 / 524288) = 0.2 % on the gain, so 3 % is
    more than ten sigma."""
    return sim_night(chips=2, amps=2, size="medium", nbias=2, ndark=0, nflat=2, filters=("r",), nscience=0, seed=11)


def _files(night):
    f, b = night.files["flat"], night.files["bias"]
    return f[0], f[1], b[0], b[1]


def test_gain_and_read_noise_within_3_percent_of_truth(night):
    tr = night.truth()
    results = gain_from_files(*_files(night))
    assert [r.chip for r in results] == ["CCD1", "CCD2"]
    for res in results:
        assert [a.amp for a in res.amplifiers] == ["A", "B"]
        for a in res.amplifiers:
            truth = tr.amp(res.chip, a.amp)
            g_err = a.gain / truth["gain"] - 1
            rn_err = a.read_noise / truth["rdnoise"] - 1
            print(
                f"{res.chip} {a.amp}: gain {a.gain:.4f} (truth {truth['gain']}, {g_err:+.2%}, "
                f"expected +/-{a.gain_err / a.gain:.2%}), read noise {a.read_noise:.3f} e- "
                f"(truth {truth['rdnoise']}, {rn_err:+.2%}), flat ratio {a.ratio:.3f}"
            )
            assert abs(g_err) < 0.03
            assert abs(rn_err) < 0.03
            assert a.gain_err / a.gain < 0.003  # as designed: ~0.2 %
            assert abs(g_err) < 5 * a.gain_err / a.gain  # consistent with the error
            assert a.npix_flat > 0.99 * 512 * 1024
            assert a.read_noise_adu == pytest.approx(a.read_noise / a.gain)
    assert results[0]["B"].gain == results[0].gains["B"]
    with pytest.raises(KeyError):
        results[0]["C"]


def test_lazy_arrays_and_line_offsets(night):
    f1, f2, b1, b2 = _files(night)
    entry = Catalog.scan([f1], strict=True).select(chip="CCD1").entries[0]
    frames = [open_frame(p, hdu=entry.hdu, chunks=(300, 500)) for p in (f1, f2, b1, b2)]
    res = gain_from_pairs(*frames, layout=entry.layout)
    ref = gain_from_pairs(*[f.compute() for f in frames], layout=entry.layout)
    assert res == ref
    truth = night.truth().amp("CCD1", "A")
    # the per-row bias level wanders from frame to frame: left in, it inflates the read noise
    raw = gain_from_pairs(*frames, layout=entry.layout, line_offsets=False)
    assert raw["A"].read_noise > 1.05 * truth["rdnoise"]
    assert abs(raw["A"].gain / truth["gain"] - 1) < 0.03  # the gain hardly cares


def test_section_selects_amplifiers(night):
    f1, f2, b1, b2 = _files(night)
    entry = Catalog.scan([f1], strict=True).select(chip="CCD1").entries[0]
    layout = entry.layout
    frames = [open_frame(p, hdu=entry.hdu) for p in (f1, f2, b1, b2)]
    a, b = layout.amplifiers
    ax = a.datasec.normalized().x
    only_a = gain_from_pairs(*frames, layout=layout, section=f"[{ax.start + 10}:{ax.start + 300},101:900]")
    assert [x.amp for x in only_a.amplifiers] == ["A"]
    assert only_a["A"].section == f"[{ax.start + 10}:{ax.start + 300},101:900]"
    assert abs(only_a["A"].gain / night.truth().amp("CCD1", "A")["gain"] - 1) < 0.03
    bx = b.datasec.normalized().x
    both = gain_from_pairs(*frames, layout=layout, section=f"[{ax.stop - 99}:{bx.start + 99},1:1024]")
    assert [x.amp for x in both.amplifiers] == ["A", "B"]
    assert all(x.npix_flat > 0.99 * 100 * 1024 for x in both.amplifiers)
    with pytest.raises(ConfigError, match="overlaps no amplifier"):
        gain_from_pairs(*frames, layout=layout, section="[1:20,1:100]")  # overscan only


def test_numpy_pairs_without_layout():
    """Known gain and read noise; PRNU of 2 % and flats 30 % apart in level."""
    rng = np.random.default_rng(0)
    shape = (400, 400)
    gain, rn_e, bias = 2.2, 4.0, 1000.0
    prnu = rng.normal(1.0, 0.02, shape)
    pattern = rng.normal(0.0, 2.0, shape)  # fixed bias structure, ADU

    def expose(level_e):
        e = rng.poisson(prnu * level_e) if level_e else 0.0
        return bias + pattern + (e + rng.normal(0, rn_e, shape)) / gain

    f1, f2, b1, b2 = expose(20000.0), expose(26000.0), expose(0.0), expose(0.0)
    res = gain_from_pairs(f1, f2, b1, b2)
    (a,) = res.amplifiers
    assert res.chip == "chip" and a.amp == "-" and a.section == "[1:400,1:400]"
    assert a.ratio == pytest.approx(20000 / 26000, rel=0.01)
    assert a.gain == pytest.approx(gain, rel=4 * a.gain_err / a.gain)
    assert a.read_noise == pytest.approx(rn_e, rel=4 * a.read_noise_err / a.read_noise)
    assert a.gain_err / a.gain == pytest.approx(math.sqrt(2 / 160000), rel=0.6)
    # cosmic rays and hot pixels are clipped away
    f1[::37, ::41] += 5000.0
    b2[::53, ::29] += 800.0
    dirty = gain_from_pairs(f1, f2, b1, b2).amplifiers[0]
    assert dirty.gain == pytest.approx(a.gain, rel=0.01)
    assert dirty.read_noise == pytest.approx(a.read_noise, rel=0.01)
    with pytest.raises(ShapeMismatchError):
        gain_from_pairs(f1, f2[:-1], b1, b2)
    with pytest.raises(ConfigError, match="not above the bias"):
        gain_from_pairs(b1, b2, b1, b2)


def test_cli_prints_every_chip_and_amplifier(night, capsys):
    files = [str(p) for p in _files(night)]
    tr = night.truth()
    with dask.config.set(scheduler="sync"):
        assert main(files) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["chip", "amp", "gain", "+/-"]
    rows = [line.split() for line in out[2:]]
    assert [(r[0], r[1]) for r in rows] == [("CCD1", "A"), ("CCD1", "B"), ("CCD2", "A"), ("CCD2", "B")]
    for r in rows:
        truth = tr.amp(r[0], r[1])
        assert abs(float(r[2]) / truth["gain"] - 1) < 0.03
        assert abs(float(r[4]) / truth["rdnoise"] - 1) < 0.03

    assert main([*files, "--hdu", "CCD2", "--section", "[40:500,1:1024]"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [("CCD2", "A", "[40:500,1:1024]")]

    # register() plugs into any argparse subparsers (the way cli.py wires it)
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gain", *files, "--hdu", "2", "--profile", "generic"])
    assert args.hdu == 2 and args.func(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["CCD2", "CCD2"]
    with pytest.raises(ConfigError, match="no image HDU"):
        main([*files, "--hdu", "CCD9"])
