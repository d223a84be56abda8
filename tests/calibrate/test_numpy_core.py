"""Numpy core, dask lifting: each step's numpy form equals its dask form computed on awkward
chunks, the per-chip chain of the night (:func:`process_in_memory`) equals :func:`process`
computed, and builds no dask graph at all.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from ccdask import dq as DQ
from ccdask.calibrate import OverscanConfig, ProcessConfig, process, process_in_memory
from ccdask.calibrate._arith import (
    apply_gain,
    apply_gain_np,
    divide_flat,
    divide_flat_np,
    initial_variance,
    initial_variance_np,
    read_noise_from_overscan,
    read_noise_from_overscan_np,
    subtract_bias,
    subtract_bias_np,
    subtract_dark,
    subtract_dark_np,
)
from ccdask.calibrate._assemble import assemble, assemble_np
from ccdask.calibrate._cosmics import CosmicConfig, detect_cosmics, detect_cosmics_np
from ccdask.calibrate._masks import (
    MaskConfig,
    build_dq,
    build_dq_np,
    grow_mask,
    grow_mask_np,
    interpolate_bad,
    interpolate_bad_np,
    saturation_mask,
    saturation_mask_np,
)
from ccdask.calibrate._overscan import (
    overscan_stats,
    overscan_stats_np,
    subtract_overscan,
    subtract_overscan_np,
)
from ccdask.calibrate._process import ChipMasters
from ccdask.frame import Master
from ccdask.profiles._layout import Amplifier, ChipLayout
from ccdask.sections import Section
from tests.helpers import no_compute

CHUNKS = [(7, 13), (23, 41), (60, 9)]
SAT = 30000.0


def _amp(name, datasec, ccdsec, biassec, **kw):
    return Amplifier(name, Section.parse(datasec), Section.parse(ccdsec), Section.parse(biassec), **kw)


# Two amplifiers with both overscans between the data (A data | A over | B over | B data), B read
# out right to left; and one amplifier with a parallel overscan above its data.
SERIAL = ChipLayout(
    "S",
    (60, 100),
    (
        _amp("A", "[1:40,1:60]", "[1:40,1:60]", "[43:50,1:60]", gain=1.5, rdnoise=3.0, saturate=SAT),
        _amp("B", "[100:61,1:60]", "[41:80,1:60]", "[51:58,1:60]", gain=2.0, rdnoise=4.0, saturate=SAT),
    ),
)
PARALLEL = ChipLayout(
    "P", (70, 50), (_amp("A", "[1:50,1:60]", "[1:50,1:60]", "[1:50,63:70]", gain=1.2, rdnoise=2.5, saturate=SAT),)
)


def _raw(layout, seed=1):
    rng = np.random.default_rng(seed)
    ny, nx = layout.raw_shape
    raw = rng.normal(1000.0, 5.0, (ny, nx)) + np.linspace(0, 20, ny)[:, None]
    y, x = np.mgrid[:ny, :nx]
    raw += 300.0 * np.exp(-((y - 20) ** 2 + (x - 15) ** 2) / 30.0)  # a star
    raw[5, 7] = 4.0e4  # saturated
    raw[30, 25] += 3000.0  # a cosmic-ray hit
    raw[40, 18:20] += 2500.0
    a = layout.amplifiers[0]
    raw[a.biassec.slices][2, 3] = np.nan  # a bad overscan pixel
    return raw.astype(np.float32)


def _dask(arr, chunks):
    return da.from_array(arr, chunks=chunks)


@pytest.mark.parametrize("layout", [SERIAL, PARALLEL], ids=["serial", "parallel"])
@pytest.mark.parametrize("chunks", CHUNKS)
@pytest.mark.parametrize(
    "config", [OverscanConfig(), OverscanConfig(method="mean", model="legendre", order=2, skip_start=1)]
)
def test_overscan_np_equals_dask(layout, chunks, config):
    raw = _raw(layout)
    lazy = subtract_overscan(_dask(raw, chunks), layout, config)
    np.testing.assert_array_equal(lazy.compute(), subtract_overscan_np(raw, layout, config))
    st, st_np = overscan_stats(_dask(raw, chunks), layout, config), overscan_stats_np(raw, layout, config)
    for amp in st:
        np.testing.assert_allclose(float(st[amp].level), float(st_np[amp].level), rtol=1e-14)
        assert float(st[amp].noise) == float(st_np[amp].noise)
    rn, rn_np = (
        read_noise_from_overscan(_dask(raw, chunks), layout, config),
        read_noise_from_overscan_np(raw, layout, config),
    )
    assert {k: float(v) for k, v in rn.items()} == {k: float(v) for k, v in rn_np.items()}


@pytest.mark.parametrize("layout", [SERIAL, PARALLEL], ids=["serial", "parallel"])
@pytest.mark.parametrize("chunks", CHUNKS)
def test_trim_gain_variance_saturation_np_equal_dask(layout, chunks):
    raw = _raw(layout)
    trimmed = assemble_np(raw, layout)
    np.testing.assert_array_equal(assemble(_dask(raw, chunks), layout).compute(), trimmed)
    e = apply_gain_np(trimmed, layout)
    np.testing.assert_array_equal(apply_gain(_dask(trimmed, chunks), layout).compute(), e)
    np.testing.assert_array_equal(initial_variance(_dask(e, chunks), layout).compute(), initial_variance_np(e, layout))
    for grow in (0, 2):
        np.testing.assert_array_equal(
            saturation_mask(_dask(raw, chunks), layout, grow=grow).compute(), saturation_mask_np(raw, layout, grow=grow)
        )
    # and the numpy forms against the arithmetic written out here
    expected = np.empty(layout.trimmed_shape)
    for a in layout.amplifiers:
        expected[a.ccdsec.slices] = raw[a.datasec.slices].astype(np.float64) * a.gain
    np.testing.assert_allclose(e, expected, rtol=1e-6)


@pytest.mark.parametrize("chunks", CHUNKS)
def test_master_corrections_np_equal_dask(chunks):
    rng = np.random.default_rng(3)
    shape = (60, 80)
    sci = rng.normal(500, 20, shape).astype(np.float32)
    var = rng.uniform(10, 30, shape).astype(np.float32)
    b, bv = rng.normal(5, 1, shape).astype(np.float32), rng.uniform(0, 1, shape).astype(np.float32)
    d, dv = rng.uniform(0, 0.2, shape).astype(np.float32), rng.uniform(0, 0.01, shape).astype(np.float32)
    f = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    f[3, 4] = 0.01
    fv = rng.uniform(0, 1e-4, shape).astype(np.float32)

    def master(kind, data, v):
        return Master(kind=kind, chip="c", data=_dask(data, chunks), variance=_dask(v, chunks), count=None, ncombine=3)

    s1, v1 = subtract_bias(_dask(sci, chunks), _dask(var, chunks), master("bias", b, bv))
    s2, v2 = subtract_bias_np(sci, var, b, bv)
    np.testing.assert_array_equal(s1.compute(), s2)
    np.testing.assert_array_equal(v1.compute(), v2)
    s1, v1 = subtract_dark(s1, v1, master("dark", d, dv), 300.0)
    s2, v2 = subtract_dark_np(s2, v2, d, dv, 300.0)
    np.testing.assert_array_equal(s1.compute(), s2)
    np.testing.assert_array_equal(v1.compute(), v2)
    s1, v1, low1 = divide_flat(s1, v1, master("flat", f, fv), min_value=0.1)
    s2, v2, low2 = divide_flat_np(s2, v2, f, fv, 0.1)
    np.testing.assert_array_equal(s1.compute(), s2)
    np.testing.assert_array_equal(v1.compute(), v2)
    np.testing.assert_array_equal(low1.compute(), low2)
    assert low2[3, 4] and low2.sum() == 1


@pytest.mark.parametrize("chunks", CHUNKS)
def test_masks_and_cosmics_np_equal_dask(chunks):
    rng = np.random.default_rng(4)
    shape = (60, 80)
    sci = rng.normal(200, 10, shape).astype(np.float32)
    sci[10, 10] += 5000
    sci[44, 60:62] += 4000
    var = np.full(shape, 100.0, np.float32)
    bad = np.zeros(shape, bool)
    bad[20, 5:9] = True
    sat = np.zeros(shape, bool)
    sat[50, 50] = True
    for grow in (0, 1, 3):
        np.testing.assert_array_equal(grow_mask(_dask(sat, chunks), grow).compute(), grow_mask_np(sat, grow))
    dqa = build_dq_np(bad=bad, saturated=sat, nodata=~np.isfinite(sci))
    np.testing.assert_array_equal(
        build_dq(
            bad=_dask(bad, chunks), saturated=_dask(sat, chunks), nodata=~da.isfinite(_dask(sci, chunks))
        ).compute(),
        dqa,
    )
    assert dqa[20, 5] == DQ.BAD and dqa[50, 50] == DQ.SATURATED
    fixed, done = interpolate_bad_np(sci, bad, 5)
    lf, ld = interpolate_bad(_dask(sci, chunks), _dask(bad, chunks), 5)
    np.testing.assert_array_equal(lf.compute(), fixed)
    np.testing.assert_array_equal(ld.compute(), done)
    assert done[20, 5:9].all()
    for cfg in (CosmicConfig(method="median", size=5, threshold=5.0), CosmicConfig()):
        m1, c1 = detect_cosmics(
            _dask(sci, chunks),
            _dask(var, chunks),
            read_noise=3.0,
            mask=_dask(bad, chunks),
            saturation=_dask(sat, chunks),
            config=cfg,
        )
        m2, c2 = detect_cosmics_np(sci, var, read_noise=3.0, mask=bad, saturation=sat, config=cfg)
        np.testing.assert_array_equal(m1.compute(), m2)
        np.testing.assert_array_equal(c1.compute(), c2)
        assert m2[10, 10] and m2[44, 60] and not m2[20, 5]


def _chip_masters(layout, rng):
    shape = layout.trimmed_shape
    bias = rng.normal(3, 0.5, shape).astype(np.float32), rng.uniform(0, 0.1, shape).astype(np.float32)
    dark = rng.uniform(0, 0.05, shape).astype(np.float32), rng.uniform(0, 1e-4, shape).astype(np.float32)
    flat = rng.uniform(0.95, 1.05, shape).astype(np.float32), rng.uniform(0, 1e-5, shape).astype(np.float32)
    bad = np.zeros(shape, bool)
    bad[12, 30:33] = True
    return {
        "bias": bias,
        "dark": dark,
        "flat": flat,
        "bad": bad,
        "bias_label": "bias S",
        "dark_label": "dark S",
        "flat_label": "flat V S",
    }


CONFIGS = [
    ProcessConfig(),
    ProcessConfig(
        read_noise="overscan",
        overscan=OverscanConfig(model="legendre", order=3),
        masks=MaskConfig(interpolate=True, saturation_grow=1),
        cosmics=CosmicConfig(method="median", size=5, threshold=6.0),
    ),
]


@pytest.mark.parametrize("layout", [SERIAL, PARALLEL], ids=["serial", "parallel"])
@pytest.mark.parametrize("role", ["science", "flat"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["defaults", "overscan-noise-interp-median"])
def test_process_in_memory_equals_process(layout, role, cfg):
    rng = np.random.default_rng(9)
    raw = _raw(layout)
    mem = _chip_masters(layout, rng)
    sci, var, dqa, history = process_in_memory(raw, mem, cfg, layout=layout, exptime=120.0, name="x", role=role)
    assert all(isinstance(a, np.ndarray) for a in (sci, var, dqa))

    def master(kind):
        data, v = mem[kind]
        return Master(
            kind=kind,
            chip=layout.name,
            data=_dask(data, (17, 29)),
            variance=_dask(v, (17, 29)),
            count=None,
            ncombine=5,
            meta={"label": mem[f"{kind}_label"]},
        )

    cm = ChipMasters(bias=master("bias"), dark=master("dark"), flat=master("flat"), bad=_dask(mem["bad"], (17, 29)))
    with no_compute():
        frame = process(_dask(raw, (13, 31)), cm, cfg, layout=layout, exptime=120.0, name="x", role=role)
    np.testing.assert_array_equal(frame.sci.compute(), sci)
    np.testing.assert_array_equal(frame.var.compute(), var)
    np.testing.assert_array_equal(frame.dq.compute(), dqa)
    assert history[: len(frame.history)] == frame.history
    over = history[len(frame.history) :]
    assert [h.split(":")[0] for h in over] == [f"overscan {a.name}" for a in layout.amplifiers]
    if role == "science":
        assert dqa[5, 7] & DQ.SATURATED and sum("cosmics" in h for h in history) == 1
    else:
        assert np.isnan(sci[5, 7])  # saturated pixels of a flat are left out of its stack


def test_process_in_memory_builds_no_graph(monkeypatch):
    layout = SERIAL
    raw = _raw(layout)
    mem = _chip_masters(layout, np.random.default_rng(2))

    def no_dask_array(cls, *args, **kwargs):
        raise AssertionError("a dask array was built inside the per-chip task")

    monkeypatch.setattr(da.Array, "__new__", staticmethod(no_dask_array))
    with no_compute():
        sci, var, _dq, _ = process_in_memory(raw, mem, CONFIGS[1], layout=layout, exptime=60.0, role="science")
    assert sci.shape == layout.trimmed_shape and np.isfinite(var).all()
    # the guard is live: building a dask array now fails
    with pytest.raises(AssertionError, match="dask array was built"):
        da.zeros((2, 2))
