"""Fringes as a stage of ``reduce``: a night simulated with fringes in ``i`` (known pattern and
amplitude per exposure, FITS on disk), reduced with ``fringe.filters = ["i"]``.

The references are independent of the stage: the injected truth (pattern, amplitudes, the sky
and stars without fringes), and the in-memory numpy fringe frame
(:func:`ccdask.night._fringe.fringe_frame`) of the same night's frames reduced without the
fringe correction, read back from their FITS files.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from astropy.io import fits

from ccdask import reduce
from ccdask.cache import MasterCache
from ccdask.calibrate._fringe import FringeFrame, fit_fringe_np, source_mask_np, subtract_fringe_np
from ccdask.catalog import Catalog
from ccdask.config import load_config
from ccdask.errors import CcdaskWarning, PlanError
from ccdask.night._fringe import fringe_frame
from ccdask.night._fringe_stage import _fit_round, _specs, calibrate_science, stack_fringe
from ccdask.night._plan import make_plan
from ccdask.night._stages import NightMasters, Runner, StageContext
from ccdask.simulate import simulate_night
from tests.helpers import no_compute, raising_scheduler
from tests.reliability.support import assert_same_outputs

AMPLITUDE = 40.0  # e-, the sky's photon noise is 25-45 e-
NIGHT = {"chips": 2, "nbias": 3, "ndark": 2, "nflat": 4, "filters": ("i", "r"), "nscience": 4, "seed": 6}
ON = {"fringe": {"filters": ["i"]}}
CHIPS = ("CCD1", "CCD2")


def _run(raw, out, config=None, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reduce(raw, out, config=config, client=kw.pop("client", "threads"), **kw)
    return result, [str(w.message) for w in caught if issubclass(w.category, CcdaskWarning)]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("fringe-reduce")
    sim = simulate_night(root / "night", fringe={"i": AMPLITUDE}, **NIGHT)
    on, on_warnings = _run(sim.raw_dir, root / "on", ON)
    off, _ = _run(sim.raw_dir, root / "off")
    return {"sim": sim, "root": root, "on": on, "off": off, "warnings": on_warnings}


def _frames(result, filt="i"):
    """``{(name, chip): (sci, var, dq, header)}`` of the reduced files of ``filt``."""
    out = {}
    for path in sorted(result.outputs):
        name = path.rsplit("/", 1)[-1].removesuffix(".fits")
        if f"_{filt}_" not in name:
            continue
        with fits.open(path) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    out[(name, h.header["CCDNAME"])] = (
                        h.data.astype(np.float32),
                        hdul["VAR", h.ver].data.astype(np.float32),
                        hdul["DQ", h.ver].data,
                        h.header,
                    )
    return out


def _master(result, chip):
    with fits.open(result.masters["fringe_i"]) as hdul:
        h = hdul[chip]
        return (
            h.data.astype(np.float32),
            hdul[f"{chip}_VAR"].data.astype(np.float32),
            hdul[f"{chip}_COUNT"].data,
            h.header,
        )


def test_fringe_frame_equals_the_in_memory_stack_of_the_reduced_frames(night):
    """The stage's fringe frame (out of core, tile by tile, cached, FITS product) is the numpy
    fringe frame of the frames the same night reduces to without the correction."""
    off = _frames(night["off"])
    for chip in CHIPS:
        names = sorted(n for n, c in off if c == chip)
        assert len(names) == NIGHT["nscience"]
        want = fringe_frame([off[(n, chip)][:3] for n in names])
        data, var, count, header = _master(night["on"], chip)
        assert header["MASTER"] == "fringe" and header["FILTER"] == "i" and header["NCOMBINE"] == len(names)
        assert header["BUNIT"] == "electron"
        np.testing.assert_array_equal(count, want.count)
        np.testing.assert_allclose(data, want.data, rtol=0, atol=1e-4 * AMPLITUDE, equal_nan=True)
        np.testing.assert_allclose(var, want.variance, rtol=1e-5, equal_nan=True)
        row = [m for m in night["on"].stages if m.startswith("fringe")]
        assert row == ["fringe-i"]


def test_fitted_scales_against_the_injected_amplitudes(night):
    truth = night["sim"].truth()
    on = _frames(night["on"])
    pulls = []
    for chip in CHIPS:
        pattern = truth.array(chip, "fringe_i").astype(np.float64)
        data, _, _, _ = _master(night["on"], chip)
        ok = np.isfinite(data)
        # the fringe frame is the true pattern times the frames' mean amplitude c (least squares)
        c = float(np.sum(data[ok] * pattern[ok]) / np.sum(pattern[ok] ** 2))
        for (name, ch), (_, _, _, header) in on.items():
            if ch != chip:
                continue
            amp = truth.frame(name)["fringe_amplitude"]
            got, err = header["FRNGSCL"] * c, header["FRNGSERR"] * c
            assert err < 0.03 * amp
            pulls.append((got - amp) / err)
    assert len(pulls) == 2 * NIGHT["nscience"]
    assert np.all(np.abs(pulls) < 3.0), pulls


def test_corrected_frames_at_the_photon_limit(night):
    """Residual against the true sky and stars over the propagated sigma, on the pixels the
    fringe frame covers from every frame: chi about 1 and no pattern left (its coefficient on
    the true pattern consistent with zero); uncorrected, the fringes stand out of the noise."""
    truth = night["sim"].truth()
    on, off = _frames(night["on"]), _frames(night["off"])
    for (name, chip), (sci, var, dq, header) in on.items():
        signal = truth.signal(chip, name)
        pattern = truth.array(chip, "fringe_i").astype(np.float64)
        _, _, count, _ = _master(night["on"], chip)
        use = (count == NIGHT["nscience"]) & ~source_mask_np(sci, dq)
        assert use.mean() > 0.5
        res = sci[use] - signal[use]
        chi = res / np.sqrt(var[use])
        before = (off[(name, chip)][0][use] - signal[use]) / np.sqrt(off[(name, chip)][1][use])
        assert np.std(before) > 1.2
        assert 0.95 < np.std(chi) < 1.05, (name, chip, np.std(chi))
        assert abs(float(np.mean(chi))) < 0.05
        p = pattern[use]
        left = float(np.sum(res * p) / np.sum(p * p))
        # its error: the noise of the residual, and the scale's own error times the pattern amplitude
        err = np.hypot(float(np.sqrt(np.sum(p * p * var[use]))) / float(np.sum(p * p)), header["FRNGSERR"] * AMPLITUDE)
        assert abs(left) < 3 * err, (name, chip, left, err)


def test_headers_and_variance(night):
    """FRNGSCL/FRNGSERR and HISTORY in each chip, the fringe master's key in the provenance, and
    VAR = VAR without the correction + s² var_F - 2 s var / (n norm) where the frame was stacked."""
    on, off = _frames(night["on"]), _frames(night["off"])
    store = MasterCache(night["root"] / "on" / "cache.zarr")
    for (name, chip), (_sci, var, dq, header) in on.items():
        history = "".join(str(h) for h in header["HISTORY"])  # astropy wraps long lines over several cards
        assert "fringe: i fringe frame " in history and "one of its inputs" in history
        s = header["FRNGSCL"]
        _data, var_f, count, mheader = _master(night["on"], chip)
        master = store.get(mheader["CACHEKEY"])
        assert master is not None and master.kind == "fringe"
        k = master.meta["inputs"].index(name)
        norm = master.meta["norms"][k]
        var0 = off[(name, chip)][1]
        ok = count > 0
        want = var0 + s * s * var_f - 2 * s * var0 / (np.maximum(count, 1) * norm)
        # float32 sums of values near 800 e-²
        np.testing.assert_allclose(var[ok], want[ok], rtol=2e-5, atol=1e-4 * float(np.median(var0)))
        np.testing.assert_array_equal(var[~ok], var0[~ok])
        np.testing.assert_array_equal(dq, off[(name, chip)][2])
        primary = fits.getheader(night["root"] / "on" / "reduced" / f"{name}.fits", 0)
        lines = "".join(str(h) for h in primary["HISTORY"])
        assert f"fringe master for {chip}: cache key {mheader['CACHEKEY']}" in lines
        assert "> fringe" in lines


def test_other_filters_untouched_and_manifest(night):
    on_r, off_r = _frames(night["on"], "r"), _frames(night["off"], "r")
    assert len(on_r) == 2 * NIGHT["nscience"]
    for key, (sci, var, dq, header) in on_r.items():
        assert "FRNGSCL" not in header
        for a, b in zip((sci, var, dq), off_r[key][:3], strict=True):
            np.testing.assert_array_equal(a, b)
    import json

    doc = json.loads(night["on"].manifest_path.read_text())
    rows = [r for r in doc["masters"] if r["kind"] == "fringe"]
    assert sorted(r["chip"] for r in rows) == list(CHIPS) and all(r["filter"] == "i" for r in rows)
    assert doc["parameters"]["fringe"]["filters"] == ["i"]


def test_static_frames_warn(night):
    """The simulator's frames do not move: the stars are masked in the same pixels of every
    frame, which the dither check reports per chip (and refuses with ``require_dither``)."""
    assert sum("do not move enough" in w for w in night["warnings"]) == len(CHIPS)
    assert any("filter 'i' on chip CCD1" in w for w in night["warnings"])


def test_rerun_reuses_the_fringe_frames_and_a_parameter_rebuilds_them(night, tmp_path):
    raw, cache = night["sim"].raw_dir, night["root"] / "on" / "cache.zarr"
    again, _ = _run(raw, night["root"] / "on", ON)
    rec = again.stages["fringe-i"]
    assert rec["cached"] == 2 and rec["built"] == 0 and rec["tasks"] == 0
    assert again.outputs == [] and sorted(again.skipped) == sorted(night["on"].outputs)
    before = {e.key for e in MasterCache(cache).entries() if e.kind == "fringe"}
    assert len(before) == 2
    changed, _ = _run(raw, tmp_path / "out", {"fringe": {"filters": ["i"], "nsigma": 2.5}}, cache=cache)
    rec = changed.stages["fringe-i"]
    assert rec["cached"] == 0 and rec["built"] == 2 and rec["tasks"] > 0
    assert changed.stages["bias"]["built"] == 0  # the other masters are not touched
    after = {e.key for e in MasterCache(cache).entries() if e.kind == "fringe"}
    assert before < after and len(after) == 4
    # the science frames name the new fringe frames, so they differ from the first run's
    for path in changed.outputs:
        if "_i_" in path:
            old = fits.getheader(path.replace(str(tmp_path / "out"), str(night["root"] / "on")), 0)["CCDKEY"]
            assert fits.getheader(path, 0)["CCDKEY"] != old


def test_off_keeps_the_keys_of_a_night_without_fringes(night, tmp_path):
    """With ``fringe.filters`` empty, the other fringe keys change nothing: every master is
    found in the cache of the default run (same keys), and the reduced frames carry its CCDKEY."""
    cache = night["root"] / "off" / "cache.zarr"
    other, _ = _run(night["sim"].raw_dir, tmp_path / "out", {"fringe": {"nsigma": 2.0, "clip": 2.0}}, cache=cache)
    assert not any(k.startswith("fringe") for k in other.stages)
    masters = {k: v for k, v in other.stages.items() if "built" in v}
    assert len(masters) == 4 and all(v["built"] == 0 and v["cached"] == 2 for v in masters.values())
    base = night["off"]
    for a, b in zip(sorted(base.outputs), sorted(other.outputs), strict=True):
        assert fits.getheader(a, 0)["CCDKEY"] == fits.getheader(b, 0)["CCDKEY"]


def test_too_few_frames_is_a_plan_error_before_computing(night, tmp_path):
    config = {"fringe": {"filters": ["i"], "min_frames": NIGHT["nscience"] + 1}}
    with pytest.raises(PlanError, match=r"fringe frame of filter 'i' on chip CCD1: only 4 science frame\(s\)"):
        reduce(night["sim"].raw_dir, tmp_path / "out", config=config, client=raising_scheduler)
    assert not (tmp_path / "out").exists()


def test_require_dither_refuses(night, tmp_path):
    config = {"fringe": {"filters": ["i"], "require_dither": True}}
    with pytest.raises(PlanError, match=r"filter 'i' on chip CCD1: the frames do not move enough.*require_dither"):
        reduce(
            night["sim"].raw_dir,
            tmp_path / "out",
            config=config,
            client="threads",
            cache=night["root"] / "off" / "cache.zarr",
        )


def test_graph_builders_are_lazy(night, tmp_path):
    """Building step 1 (calibration tasks), the stacks and a fit round computes nothing; the
    graph then computes the numpy fringe frame of the same calibrated frames."""
    cfg = load_config({**ON, "bias": {"enabled": False}, "dark": {"mode": "none"}, "flat": {"enabled": False}})
    plan = make_plan(Catalog.scan(night["sim"].raw_dir), cfg)
    ctx = StageContext(cfg, MasterCache(tmp_path / "cache.zarr"), Runner("sync", False, lambda _m: None), tmp_path)
    by_chip = {"CCD2": tuple(e for e in plan.chips["CCD2"].science if e.filter == "i")}
    with no_compute():
        specs = _specs(plan, ctx, NightMasters(), "i", by_chip)
        cal = calibrate_science(specs, cfg, tmp_path / "scratch")
    infos = ctx.runner.compute("fringe-i", cal.tasks)
    skies = [i["sky"] for i in infos]
    rows = cal.rows["CCD2"]
    with no_compute():
        lazy = stack_fringe(rows, cal.tiles["CCD2"], skies, [1.0] * len(rows), cfg, label="t")
        fits_ = _fit_round(cal, {"CCD2": lazy}, {"CCD2": [1.0] * len(rows)}, cfg, "i")
    import zarr

    frames = [tuple(np.asarray(zarr.open_array(p[k], mode="r")[...]) for k in ("sci", "var", "dq")) for _, p in rows]
    want = fringe_frame(frames, iterations=1)
    np.testing.assert_allclose(lazy.data.compute(scheduler="sync"), want.data, atol=1e-4 * AMPLITUDE, equal_nan=True)
    scales = [r["scale"] for r in ctx.runner.compute("fringe-i", fits_)]
    assert len(scales) == len(rows) and all(s > 0 for s in scales)
    cal.cleanup()


def test_science_graph_with_fringes_is_lazy(night, tmp_path):
    """The science graph of a night with fringe frames (read lazily from the cache) computes
    nothing while it is built, and each chip-frame of ``i`` carries its fringe correction."""
    from ccdask.night._science import science_graph

    cfg = load_config({**ON, "bias": {"enabled": False}, "dark": {"mode": "none"}, "flat": {"enabled": False}})
    plan = make_plan(Catalog.scan(night["sim"].raw_dir), cfg)
    store = MasterCache(night["root"] / "on" / "cache.zarr")
    fringes = {c: store.get(fits.getheader(night["on"].masters["fringe_i"], c)["CACHEKEY"]) for c in CHIPS}
    with no_compute():
        graph = science_graph(plan, cfg, tmp_path / "reduced", NightMasters(fringes={"i": fringes}), thumb_factor=4)
    assert len(graph.tasks) == 2 * NIGHT["nscience"] and not (tmp_path / "reduced").exists()
    layers = {k: v for t in graph.tasks for k, v in t.dask.items() if str(k).startswith("reduce-")}
    uses = [task.func.keywords["fringe"] for task in layers.values()]
    assert sum(u is not None for u in uses) == 2 * NIGHT["nscience"]
    assert {u.index for u in uses if u is not None} == set(range(NIGHT["nscience"]))


def test_external_fringe_frames(night, tmp_path):
    """``fringe.files``: the fringe frames read from a file (here the first run's product) and
    used as they are: each chip's scale and correction are those of the numpy fit and
    subtraction of the frame reduced without fringes against the file's frame (not one of its
    inputs, so without the own-noise terms)."""
    path = night["on"].masters["fringe_i"]
    config = {"fringe": {"filters": ["i"], "files": [f"i={path}"]}}
    ext, _ = _run(night["sim"].raw_dir, tmp_path / "out", config, cache=night["root"] / "off" / "cache.zarr")
    assert ext.stages["fringe-i"]["external"] == 2 and ext.stages["fringe-i"]["tasks"] == 0
    got, off = _frames(ext), _frames(night["off"])
    assert len(got) == 2 * NIGHT["nscience"]
    for (name, chip), (sci, var, _dq, header) in got.items():
        data, var_f, count, _ = _master(night["on"], chip)
        frame = FringeFrame(data, var_f, count, NIGHT["nscience"])
        sci0, var0, dq0, _ = off[(name, chip)]
        fit = fit_fringe_np(sci0, var0, dq0, frame, index=None)
        assert header["FRNGSCL"] == pytest.approx(fit.scale, abs=2e-6)
        assert header["FRNGSERR"] == pytest.approx(fit.scale_err, abs=2e-6)
        want_sci, want_var = subtract_fringe_np(sci0, var0, frame, fit)
        np.testing.assert_allclose(sci, want_sci, rtol=0, atol=1e-3)
        np.testing.assert_allclose(var, want_var, rtol=1e-6)
        assert "not one of its inputs" in "".join(str(h) for h in header["HISTORY"])


def test_external_file_without_a_chip_is_a_plan_error(night, tmp_path):
    one = tmp_path / "fringe_ccd1.fits"
    with fits.open(night["on"].masters["fringe_i"]) as hdul:
        fits.HDUList([fits.PrimaryHDU(), hdul["CCD1"].copy()]).writeto(one)
    config = {"fringe": {"filters": ["i"], "files": [f"i={one}"]}}
    with pytest.raises(PlanError, match=r"fringe_ccd1.fits: no extension 'CCD2' for the science frames of chip CCD2"):
        reduce(night["sim"].raw_dir, tmp_path / "out", config=config, client=raising_scheduler)


@pytest.mark.slow
def test_local_cluster_equals_threads(night, tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=120)
        result, _ = _run(night["sim"].raw_dir, tmp_path / "out", ON, client=client)
    assert result.stages["fringe-i"]["built"] == 2
    assert assert_same_outputs(night["root"] / "on", tmp_path / "out") > 40


def test_fringe_frame_with_crosstalk_correction(tmp_path):
    """With crosstalk corrected, the fringe stage calibrates its frames as the science stage
    does: its fringe frame is the in-memory stack of the frames reduced without the stage."""
    xt = tmp_path / "xt.toml"
    terms = {("A", "B"): 4.0e-4, ("B", "A"): -2.5e-4}
    xt.write_text(
        "".join(
            f"[[crosstalk]]\nsource = '{s}'\nvictim = '{v}'\nlinear = {c!r}\nflip = true\n\n"
            for (s, v), c in terms.items()
        )
    )
    sim = simulate_night(
        tmp_path / "night",
        chips=1,
        nbias=3,
        ndark=0,
        nflat=3,
        filters=("i",),
        nscience=3,
        seed=8,
        fringe={"i": AMPLITUDE},
        crosstalk=terms,
    )
    base = {"crosstalk": {"file": str(xt)}}
    off, _ = _run(sim.raw_dir, tmp_path / "off", base)
    on, _ = _run(sim.raw_dir, tmp_path / "on", {**base, **ON}, cache=tmp_path / "off" / "cache.zarr")
    assert on.stages["bias"]["built"] == 0 and on.stages["fringe-i"]["built"] == 1
    frames = _frames(off)
    assert all("crosstalk: " in "".join(str(h) for h in f[3]["HISTORY"]) for f in frames.values())
    want = fringe_frame([frames[k][:3] for k in sorted(frames)])
    data, var_f, count, _ = _master(on, "CCD1")
    np.testing.assert_array_equal(count, want.count)
    np.testing.assert_allclose(data, want.data, rtol=0, atol=1e-4 * AMPLITUDE, equal_nan=True)
    np.testing.assert_allclose(var_f, want.variance, rtol=1e-5, equal_nan=True)


def test_dithered_night_covers_every_pixel_and_corrects_it(night, tmp_path):
    """With telescope dithers (``simulate_night(dither=)``: each science frame's stars shifted by
    its own offset, recorded in the truth) every pixel is free of sources in some frame, so the
    fringe frame covers the whole chip, the dither check stays quiet, and every pixel but the
    frame's own sources is corrected to the photon limit against the shifted truth. The static
    night of the fixture leaves holes (so this test can tell the two apart)."""
    assert not any("dither" in rec for rec in night["sim"].truth().meta["frames"])
    dither = 20.0
    sim = simulate_night(tmp_path / "night", fringe={"i": AMPLITUDE}, dither=dither, **{**NIGHT, "chips": 1})
    truth = sim.truth()
    offsets = [rec["dither"] for rec in truth.meta["frames"] if rec["kind"] == "science"]
    assert len(offsets) == NIGHT["nscience"] * len(NIGHT["filters"])
    assert all(abs(v) <= dither for off in offsets for v in off) and len({tuple(o) for o in offsets}) == len(offsets)
    result, caught = _run(sim.raw_dir, tmp_path / "out", ON)
    assert not [w for w in caught if "do not move enough" in w]
    _, _, static_count, _ = _master(night["on"], "CCD1")
    assert (static_count == 0).mean() > 0.01  # the static night: holes under the stars
    _, _, count, _ = _master(result, "CCD1")
    frames = _frames(result)
    # what no dither moves: the chip's defects, flagged in every frame
    defects = np.logical_and.reduce([dq != 0 for (_, _, dq, _) in frames.values()])
    # holes left: the brightest stars' masks (wider than the dithers) and the chip's edges;
    # measured 0.3 % of the chip, against 10.5 % in the static night
    assert ((count == 0) & ~defects).mean() < 0.1 * (static_count == 0).mean()
    pattern = truth.array("CCD1", "fringe_i").astype(np.float64)
    for (name, chip), (sci, var, dq, header) in frames.items():
        signal = truth.signal(chip, name)  # the stars where this frame's dither put them
        use = (count > 0) & ~source_mask_np(sci, dq)
        assert use.mean() > 0.8  # all but the frame's own sources (13 %)
        res = sci[use] - signal[use]
        chi = res / np.sqrt(var[use])
        assert 0.95 < np.std(chi) < 1.05, (name, np.std(chi))
        p = pattern[use]
        left = float(np.sum(res * p) / np.sum(p * p))
        err = np.hypot(float(np.sqrt(np.sum(p * p * var[use]))) / float(np.sum(p * p)), header["FRNGSERR"] * AMPLITUDE)
        assert abs(left) < 3 * err, (name, left, err)
