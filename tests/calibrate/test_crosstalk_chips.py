"""Crosstalk between chips of one controller: injected by the simulator (known truth), measured
by ``ccdask crosstalk --inter-chip``, corrected per chip from the other chips' amplifiers only."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from ccdask.calibrate import CosmicConfig, ProcessConfig, process, process_in_memory
from ccdask.calibrate._crosstalk import (
    CrosstalkInputs,
    correct_crosstalk,
    correct_crosstalk_np,
    load_crosstalk,
    measure_crosstalk_files,
    read_source_amp,
    source_amp,
)
from ccdask.catalog import Catalog
from ccdask.cli._main import main as cli_main
from ccdask.errors import ConfigError, ShapeMismatchError
from ccdask.simulate import simulate_night

INTRA = {("A", "B"): 5.0e-4}
INTER = {
    (("CCD1", "A"), ("CCD2", "A")): 3.0e-4,  # same readout direction: columns pair as they are
    (("CCD1", "B"), ("CCD2", "A")): -2.0e-4,  # opposite directions: mirrored
    (("CCD2", "B"), ("CCD1", "A")): 4.0e-4,
}
NIGHT = {"chips": 2, "size": "medium", "nbias": 0, "ndark": 0, "nflat": 0, "filters": ("r",), "nscience": 2, "seed": 5}


def _truth_of(f):
    """The injected coefficient of a measured pair (0 for pairs nothing was injected into)."""
    if f.source_chip is None:
        return INTRA.get((f.source, f.victim), 0.0)
    return INTER.get(((f.source_chip, f.source), (f.chip, f.victim)), 0.0)


def _table_text(inter=INTER, intra=INTRA):
    text = "".join(f'[[crosstalk]]\nsource = "{s}"\nvictim = "{v}"\nlinear = {c!r}\n\n' for (s, v), c in intra.items())
    text += "".join(
        f'[[crosstalk]]\nchip = "{vc}"\nsource_chip = "{sc}"\nsource = "{sa}"\nvictim = "{va}"\nlinear = {c!r}\n\n'
        for ((sc, sa), (vc, va)), c in inter.items()
    )
    return text


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """A night with intra- and inter-chip crosstalk and its twin without (same photons and noise)."""
    root = tmp_path_factory.mktemp("xtalk-chips")
    marked = simulate_night(root / "xt", crosstalk=INTRA, crosstalk_chips=INTER, **NIGHT)
    clean = simulate_night(root / "clean", **NIGHT)
    table = root / "true.toml"
    table.write_text(_table_text())
    return marked, clean, table


@pytest.fixture(scope="module")
def measured(nights):
    return measure_crosstalk_files(nights[0].files["science"], inter_chip=True)


def _chips(path):
    """chip -> (raw, layout, reader) of one raw file."""
    out = {}
    with fits.open(path) as hdul:
        for e in Catalog.scan([str(path)]).entries:
            out[e.chip] = (hdul[e.hdu].data.astype(np.float32), e.layout, e.source)
    return out


def test_truth_records_the_inter_chip_terms(nights):
    meta = nights[0].truth().meta
    got = {
        ((t["source_chip"], t["source"]), (t["victim_chip"], t["victim"])): t["linear"] for t in meta["crosstalk_chips"]
    }
    assert got == INTER
    assert "crosstalk_chips" not in nights[1].truth().meta


def test_inter_chip_coefficients_are_recovered_within_their_errors(measured):
    inter = [f for f in measured if f.source_chip is not None]
    assert len(inter) == 8  # every ordered amplifier pair of two different chips
    for f in measured:
        truth = _truth_of(f)
        if truth:
            assert f.linear_err < 0.1 * abs(truth), f  # a meaningful measurement
            assert abs(f.linear - truth) < 3 * f.linear_err, (f, truth)
        else:  # nothing injected: consistent with zero
            assert abs(f.linear) < 3.5 * f.linear_err, f
    flips = {(f.source_chip, f.source, f.chip, f.victim): f.flip for f in inter}
    assert flips[("CCD1", "A", "CCD2", "A")] is False and flips[("CCD1", "B", "CCD2", "A")] is True


def test_correction_from_the_other_chips_amplifiers_gives_back_the_clean_frames(nights):
    marked, clean, table_path = nights
    table = load_crosstalk(table_path)
    for path, ref_path in zip(marked.files["science"], clean.files["science"], strict=True):
        chips, refs = _chips(path), _chips(ref_path)
        for chip, (raw, layout, _reader) in chips.items():
            # the source amplifiers of the other chip, read from the file alone (their columns only)
            sources = [read_source_amp(chips[c][2], chips[c][1], a) for c, a in table.source_amps(chip)]
            assert [s.key for s in sources] == list(table.source_amps(chip))
            corrected = correct_crosstalk_np(raw, layout, CrosstalkInputs(table, tuple(sources)))
            diff = corrected.astype(np.float64) - refs[chip][0]
            # left: the rounding of the injected ghosts (0.5 ADU each, two ghosts on CCD1 A) and
            # second-order terms (sources carrying their own chip's crosstalk), < 0.05 ADU here
            assert np.abs(diff).max() <= 1.05
            assert float(np.abs(diff).mean()) < 0.3
            assert np.abs(raw.astype(np.float64) - refs[chip][0]).max() > 10  # the ghosts were there


def test_reading_only_the_source_columns_equals_slicing_the_chip(nights):
    path = nights[0].files["science"][0]
    chips = _chips(path)
    raw, layout, reader = chips["CCD1"]
    for amp in ("A", "B"):
        np.testing.assert_array_equal(read_source_amp(reader, layout, amp).pixels, source_amp(raw, layout, amp).pixels)
    a = source_amp(raw, layout, "B")
    assert a.pixels.shape == (layout.raw_shape[0], 512 + 32)  # data columns then the serial overscan


def test_dask_equals_numpy_on_awkward_chunks_and_builds_lazily(nights):
    marked, _, table_path = nights
    table = load_crosstalk(table_path)
    chips = _chips(marked.files["science"][1])
    raw, layout, _ = chips["CCD1"]
    src_raw, src_layout, _ = chips["CCD2"]
    expected = correct_crosstalk_np(raw, layout, table, [source_amp(src_raw, src_layout, "B")])
    for chunks, src_chunks in (((100, 300), (77, 1088)), ((1024, 1088), (333, 64)), ((333, 64), (1024, 1088))):
        lazy_src = source_amp(da.from_array(src_raw, chunks=src_chunks), src_layout, "B")
        got = correct_crosstalk(da.from_array(raw, chunks=chunks), layout, table, [lazy_src]).compute()
        np.testing.assert_array_equal(got, expected)

    def boom():
        raise AssertionError("computed while building the graph")

    lazy_raw = da.from_delayed(dask.delayed(boom)(), shape=raw.shape, dtype=np.float32)
    lazy_other = da.from_delayed(dask.delayed(boom)(), shape=src_raw.shape, dtype=np.float32)
    built = correct_crosstalk(lazy_raw, layout, table, [source_amp(lazy_other, src_layout, "B")])
    assert built.shape == raw.shape  # built, nothing computed


def test_the_chain_takes_the_source_amplifiers(nights):
    marked, clean, table_path = nights
    table = load_crosstalk(table_path)
    chips, refs = _chips(marked.files["science"][0]), _chips(clean.files["science"][0])
    raw, layout, _ = chips["CCD1"]
    src = [source_amp(chips["CCD2"][0], chips["CCD2"][1], "B")]
    cfg = ProcessConfig(cosmics=CosmicConfig(method="none"))
    sci, _v, _d, history = process_in_memory(
        raw, {}, cfg, layout=layout, exptime=60.0, crosstalk=CrosstalkInputs(table, tuple(src))
    )
    ref = process_in_memory(refs["CCD1"][0], {}, cfg, layout=layout, exptime=60.0)[0]
    assert any(h.startswith("crosstalk: true.toml: ") and "CCD2:B->A 0.0004" in h for h in history)
    assert float(np.abs(sci - ref).max()) < 1.05 * max(a.gain for a in layout.amplifiers) + 0.01
    lazy_src = [source_amp(da.from_array(chips["CCD2"][0], chunks=(200, 1088)), chips["CCD2"][1], "B")]
    frame = process(
        da.from_array(raw, chunks=(256, 1088)),
        None,
        cfg,
        layout=layout,
        exptime=60.0,
        crosstalk=CrosstalkInputs(table, tuple(lazy_src)),
    )
    np.testing.assert_array_equal(frame.sci.compute(), sci)


def test_bad_inter_chip_tables_fail_clearly(nights, tmp_path):
    marked, _, _ = nights
    chips = _chips(marked.files["science"][0])
    layouts = {c: lay for c, (_r, lay, _s) in chips.items()}
    raw, layout, _ = chips["CCD1"]
    cases = {
        "nochip.toml": (
            "chip = 'CCD1'\nsource_chip = 'CCD7'\nsource = 'A'\nvictim = 'A'",
            r"nochip\.toml.*chip 'CCD7'",
        ),
        "noamp.toml": (
            "chip = 'CCD1'\nsource_chip = 'CCD2'\nsource = 'Q'\nvictim = 'A'",
            r"noamp\.toml.*amplifier 'Q'",
        ),
        "novictim.toml": ("chip = 'CCD9'\nsource_chip = 'CCD2'\nsource = 'A'\nvictim = 'A'", r"novictim\.toml.*'CCD9'"),
    }
    for name, (body, match) in cases.items():
        path = tmp_path / name
        path.write_text(f"[[crosstalk]]\n{body}\nlinear = 1e-4\n")
        with pytest.raises(ConfigError, match=match):
            load_crosstalk(path).check(layouts)
    lonely = tmp_path / "lonely.toml"
    lonely.write_text("[[crosstalk]]\nsource_chip = 'CCD2'\nsource = 'A'\nvictim = 'A'\nlinear = 1e-4\n")
    with pytest.raises(ConfigError, match=r"lonely\.toml.*needs chip"):
        load_crosstalk(lonely)
    good = tmp_path / "good.toml"
    good.write_text("[[crosstalk]]\nchip = 'CCD1'\nsource_chip = 'CCD2'\nsource = 'B'\nvictim = 'A'\nlinear = 1e-4\n")
    with pytest.raises(ConfigError, match=r"good\.toml: chip CCD1 has crosstalk from amplifier B of chip CCD2"):
        correct_crosstalk_np(raw, layout, load_crosstalk(good))  # the source's pixels were not given
    short = source_amp(chips["CCD2"][0], chips["CCD2"][1], "B")
    short = type(short)(short.chip, short.amp, short.pixels[:-1])
    with pytest.raises(ShapeMismatchError, match="raw rows"):
        correct_crosstalk_np(raw, layout, load_crosstalk(good), [short])
    # an old intra-chip file still parses, its terms all within a chip
    old = tmp_path / "old.toml"
    old.write_text("[[crosstalk]]\nchip = 'CCD1'\nsource = 'A'\nvictim = 'B'\nlinear = 1e-4\n")
    assert not load_crosstalk(old).has_inter


def test_simulator_rejects_bad_inter_chip_terms(tmp_path):
    with pytest.raises(ConfigError, match="crosstalk_chips"):
        simulate_night(tmp_path / "a", chips=2, crosstalk_chips={(("CCD1", "A"), ("CCD1", "B")): 1e-4})
    with pytest.raises(ConfigError, match="crosstalk_chips"):
        simulate_night(tmp_path / "b", chips=2, crosstalk_chips={(("CCD1", "A"), ("CCD3", "B")): 1e-4})


def test_cli_measures_and_writes_inter_chip_pairs(nights, tmp_path, capsys):
    out = tmp_path / "xt.toml"
    files = [str(p) for p in nights[0].files["science"]]
    assert cli_main(["crosstalk", *files, "--inter-chip", "--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CCD1:A" in text and "CCD2:A" in text and "wrote" in text
    table = load_crosstalk(out)
    inter = {((t.source_chip, t.source), (t.chip, t.victim)): t.linear for t in table.terms if t.inter}
    assert set(INTER) <= set(inter)  # every injected pair is written; pairs consistent with zero mostly not
    for pair, c in INTER.items():
        assert abs(inter[pair] - c) < 0.15 * abs(c)
    assert len(inter) <= len(INTER) + 1


def test_a_chip_frame_task_reads_only_the_named_source_amplifiers(nights):
    from ccdask.config import ReduceConfig
    from ccdask.night._crosstalk import night_crosstalk

    marked, _, table_path = nights
    entries = Catalog.scan([str(p) for p in marked.files["science"]]).entries
    night = night_crosstalk(entries, ReduceConfig.from_dict({"crosstalk": {"file": str(table_path)}}))
    assert night is not None
    per_amp = 1024 * (512 + 32)  # every raw row of one amplifier's data and serial overscan columns
    for e in entries:
        task = night.for_entry(e)
        loaded = task.load()
        assert [s.key for s in loaded.sources] == list(loaded.table.source_amps(e.chip))
        assert task.extra_pixels == sum(s.pixels.size for s in loaded.sources)
        assert task.extra_pixels == {"CCD1": 1, "CCD2": 2}[e.chip] * per_amp  # beside its own 1024 x 1088
