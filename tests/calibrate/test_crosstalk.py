"""Crosstalk: injected by the simulator, measured by ``ccdask crosstalk``, corrected in the chain."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import CosmicConfig, ProcessConfig, process, process_in_memory
from ccdask.calibrate._crosstalk import (
    CrosstalkConfig,
    correct_crosstalk,
    correct_crosstalk_np,
    load_crosstalk,
    measure_crosstalk,
    measure_crosstalk_files,
    write_crosstalk,
)
from ccdask.catalog import Catalog
from ccdask.cli._main import main as cli_main
from ccdask.errors import ConfigError
from ccdask.simulate import simulate_night

TRUE = {("A", "B"): 5.0e-4, ("B", "A"): -3.0e-4}
NIGHT = {"chips": 1, "size": "medium", "nbias": 0, "ndark": 0, "nflat": 0, "filters": ("r",), "nscience": 2, "seed": 5}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """A night with crosstalk and its twin without (same seed, same photons and noise)."""
    root = tmp_path_factory.mktemp("xtalk")
    with_xt = simulate_night(root / "xt", crosstalk=TRUE, **NIGHT)
    clean = simulate_night(root / "clean", **NIGHT)
    return with_xt, clean


def _raws(paths):
    return [fits.getdata(p, 1) for p in paths]


def _layout(path):
    return Catalog.scan([str(path)]).entries[0].layout


def test_truth_records_the_injected_matrix(nights):
    meta = nights[0].truth().meta
    assert {(t["source"], t["victim"]): t["linear"] for t in meta["crosstalk"]} == TRUE
    assert "crosstalk" not in nights[1].truth().meta


def test_measured_coefficients_recover_the_injected_ones(nights):
    fits_list = measure_crosstalk_files(nights[0].files["science"])
    assert len(fits_list) == 2
    for f in fits_list:
        truth = TRUE[(f.source, f.victim)]
        assert f.flip  # the two amplifiers read towards opposite ends
        assert f.linear_err < 0.05 * abs(truth)  # a meaningful measurement
        assert abs(f.linear - truth) < 3 * f.linear_err, (f, truth)


def test_clean_night_measures_no_crosstalk(nights):
    for f in measure_crosstalk_files(nights[1].files["science"]):
        assert abs(f.linear) < 3 * f.linear_err, f


def test_correction_with_the_true_matrix_gives_back_the_clean_frame(nights, tmp_path):
    xt, clean = nights
    path = tmp_path / "true.toml"
    path.write_text(
        "\n".join(f'[[crosstalk]]\nsource = "{s}"\nvictim = "{v}"\nlinear = {c!r}\n' for (s, v), c in TRUE.items())
    )
    table = load_crosstalk(path)
    layout = _layout(xt.files["science"][0])
    for raw, ref in zip(_raws(xt.files["science"]), _raws(clean.files["science"]), strict=True):
        corrected = correct_crosstalk_np(raw, layout, table)
        diff = corrected.astype(np.float64) - ref
        # what is left: the rounding of the injected ghost (0.5 ADU) and the second-order term
        # (the source itself carries the victim's crosstalk): |c_AB c_BA| 65535 < 0.01 ADU
        assert np.abs(diff).max() <= 0.51
        assert np.abs(raw.astype(np.float64) - ref).max() > 20  # the ghosts were there


def test_measured_correction_leaves_ghosts_at_the_noise(nights, tmp_path):
    xt, _ = nights
    fits_list = measure_crosstalk_files(xt.files["science"])
    path = write_crosstalk(tmp_path / "measured.toml", fits_list)
    table = load_crosstalk(path)
    layout = _layout(xt.files["science"][0])
    corrected = [correct_crosstalk_np(r, layout, table) for r in _raws(xt.files["science"])]
    for f in measure_crosstalk(corrected, layout):
        assert abs(f.linear) < 3 * f.linear_err, f


def test_dask_form_equals_numpy_for_any_chunking_and_is_lazy(nights, tmp_path):
    xt, _ = nights
    path = tmp_path / "c.toml"
    path.write_text('[[crosstalk]]\nsource = "A"\nvictim = "B"\nlinear = 5e-4\nquadratic = 1e-9\n')
    table = load_crosstalk(path)
    layout = _layout(xt.files["science"][0])
    raw = _raws(xt.files["science"])[:1][0]
    expected = correct_crosstalk_np(raw, layout, table)
    for chunks in ((100, 300), (1024, 1088), (333, 64)):
        got = correct_crosstalk(da.from_array(raw, chunks=chunks), layout, table).compute()
        np.testing.assert_array_equal(got, expected)

    def boom():
        raise AssertionError("computed while building the graph")

    lazy = da.from_delayed(dask.delayed(boom)(), shape=raw.shape, dtype=raw.dtype)
    correct_crosstalk(lazy, layout, table)  # builds, does not compute


def test_chain_applies_it_only_when_configured(nights, tmp_path):
    xt, _ = nights
    path = tmp_path / "c.toml"
    path.write_text('[[crosstalk]]\nchip = "CCD1"\nsource = "B"\nvictim = "A"\nlinear = -3e-4\n')
    layout = _layout(xt.files["science"][0])
    raw = _raws(xt.files["science"])[0]
    no_cr = CosmicConfig(method="none")  # cosmic-ray cleaning looks across the amplifier boundary
    plain = process_in_memory(raw, {}, ProcessConfig(cosmics=no_cr), layout=layout, exptime=60.0)
    cfg = ProcessConfig(crosstalk=CrosstalkConfig(file=str(path)), cosmics=no_cr)
    sci, _var, _dq, history = process_in_memory(raw, {}, cfg, layout=layout, exptime=60.0)
    assert not any(h.startswith("crosstalk") for h in plain[3])
    assert any(h.startswith("crosstalk: c.toml: B->A -0.0003") for h in history)
    # only amplifier A (the victim, trimmed columns 0..511) changes, by the ghost times its gain
    gain_a = layout.amplifiers[0].gain
    expected = correct_crosstalk_np(raw, layout, load_crosstalk(path))
    assert np.array_equal(sci[:, 512:], plain[0][:, 512:])
    delta = (plain[0][:, :512] - sci[:, :512]).astype(np.float64)
    np.testing.assert_allclose(delta, gain_a * (raw.astype(np.float64) - expected)[:, 32:544], atol=0.02)
    lazy = process(da.from_array(raw, chunks=(256, 1088)), None, cfg, layout=layout, exptime=60.0)
    np.testing.assert_array_equal(lazy.sci.compute(), sci)
    assert lazy.history == history[: len(lazy.history)]


def test_bad_tables_fail_clearly(tmp_path, nights):
    layout = _layout(nights[0].files["science"][0])
    bad = tmp_path / "bad.toml"
    bad.write_text("[[crosstalk]]\nsource = 'A'\nvictim = 'B'\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*no 'linear'"):
        load_crosstalk(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[[crosstalk]]\nchip = 'CCD1'\nsource = 'A'\nvictim = 'C'\nlinear = 1e-4\n")
    with pytest.raises(ConfigError, match=r"wrong\.toml.*amplifier 'C'"):
        correct_crosstalk_np(np.zeros(layout.raw_shape), layout, load_crosstalk(wrong))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_crosstalk(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="crosstalk"):
        simulate_night(tmp_path / "n", chips=1, crosstalk={("A", "A"): 1e-4})


def test_cli_prints_and_writes_the_coefficients(nights, tmp_path, capsys):
    out = tmp_path / "xt.toml"
    assert cli_main(["crosstalk", *map(str, nights[0].files["science"]), "--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CCD1" in text and "wrote" in text
    table = load_crosstalk(out)
    got = {(t.source, t.victim): t.linear for t in table.terms}
    for pair, c in TRUE.items():
        assert abs(got[pair] - c) < 0.1 * abs(c)
