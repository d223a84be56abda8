"""Bleed trails: injected by the simulator (charge above the full well spills along the columns),
flagged with DQ bit 32 from the raw frames on disk, the same in numpy and dask on any chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from ccdask import dq as DQ
from ccdask.calibrate import CosmicConfig, MaskConfig, ProcessConfig, process, process_in_memory
from ccdask.calibrate._bleed import bleed_mask, bleed_mask_np, column_runs_np
from ccdask.calibrate._masks import saturation_mask_np
from ccdask.catalog import Catalog
from ccdask.errors import ConfigError
from ccdask.simulate import simulate_night
from tests.helpers import no_compute

NIGHT = {
    "chips": 1,
    "nbias": 0,
    "ndark": 0,
    "nflat": 0,
    "filters": ("r",),
    "nscience": 2,
    "seed": 3,
    "science_exptime": (300.0,),
}
FULL_WELL = 0.6  # of the range below SATURATE: the trails read near 0.6 x saturate, below it
LENGTH = 10


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("bleed")
    return simulate_night(root / "bleed", full_well=FULL_WELL, **NIGHT), simulate_night(root / "clip", **NIGHT)


def _frames(night):
    for path in night.files["science"]:
        entry = Catalog.scan([str(path)]).entries[0]
        yield path.name.removesuffix(".fits"), fits.getdata(path, 1), entry.layout


def test_column_runs_against_a_loop():
    rng = np.random.default_rng(1)
    cand = rng.uniform(size=(60, 9)) < 0.8
    want = np.zeros_like(cand)
    for x in range(cand.shape[1]):
        y = 0
        while y < cand.shape[0]:
            if cand[y, x]:
                end = y
                while end < cand.shape[0] and cand[end, x]:
                    end += 1
                if end - y >= 5:
                    want[y:end, x] = True
                y = end
            else:
                y += 1
    assert want.any() and (cand & ~want).any()
    np.testing.assert_array_equal(column_runs_np(cand, 5), want)


def test_truth_records_the_trails(nights):
    bled, clipped = nights
    truth = bled.truth()
    assert set(truth.meta["bleed"]["full_well_e"]["CCD1"]) == {"A", "B"}
    assert "bleed" not in clipped.truth().meta
    total = sum(int(truth.array("CCD1", f"{name}/bleed").sum()) for name, _, _ in _frames(bled))
    assert total > 200  # the 300 s frames hold saturated stars with trails


def test_trails_are_flagged_and_nothing_else(nights):
    bled, clipped = nights
    truth = bled.truth()
    for name, raw, layout in _frames(bled):
        trail = truth.array("CCD1", f"{name}/bleed")
        full = truth.array("CCD1", f"{name}/full_well")
        # the trails read below SATURATE: the saturation mask misses them all
        assert not (saturation_mask_np(raw, layout) & trail).any()
        flagged = bleed_mask_np(raw, layout, level=0.5, length=LENGTH, grow=0)
        # every column run of full-well pixels (core and filled trail) longer than the trail length
        # (with 2 pixels to spare for the noise at its ends) is flagged entirely
        runs = column_runs_np(full, LENGTH + 2)
        assert runs.sum() > 50
        assert flagged[runs].all()
        # every flagged pixel lies in a column of full-well pixels, within 3 rows of one (the
        # star's wings above the level next to its core)
        near = ndimage.binary_dilation(full, structure=np.ones((7, 1), bool))
        assert not (flagged & ~near).any()
        # grown by 1, the partly filled end pixels of those trails are flagged too
        grown = bleed_mask_np(raw, layout, level=0.5, length=LENGTH, grow=1)
        long_trail = trail & ndimage.binary_dilation(runs, structure=np.ones((3, 1), bool))
        assert long_trail.sum() > 20 and grown[long_trail].all()
    # without bleeding (pixels clip at SATURATE) the stars' cores are shorter than a trail
    for _, raw, layout in _frames(clipped):
        assert saturation_mask_np(raw, layout).any()
        assert not bleed_mask_np(raw, layout, level=0.5, length=LENGTH, grow=1).any()


@pytest.mark.parametrize("chunks", [(7, 13), (50, 400), (33, 29)])
def test_dask_form_equals_numpy_for_awkward_chunks(nights, chunks):
    _, raw, layout = next(_frames(nights[0]))
    want = bleed_mask_np(raw, layout, level=0.5, length=LENGTH, grow=2)
    with no_compute():
        lazy = bleed_mask(da.from_array(raw, chunks=chunks), layout, level=0.5, length=LENGTH, grow=2)
    assert want.any()
    np.testing.assert_array_equal(lazy.compute(), want)


def test_chain_sets_bit_32_in_both_forms(nights):
    bled, _ = nights
    _, raw, layout = next(_frames(bled))
    masks = MaskConfig(bleed=True, bleed_length=LENGTH, bleed_grow=1)
    cfg = ProcessConfig(masks=masks, cosmics=CosmicConfig(method="none"))
    _, _, dqa, history = process_in_memory(raw, {}, cfg, layout=layout, exptime=300.0)
    want = bleed_mask_np(raw, layout, level=0.5, length=LENGTH, grow=1)
    np.testing.assert_array_equal((dqa & DQ.BLEED) != 0, want)
    assert any(h.startswith("bleed trails:") for h in history)
    with no_compute():
        frame = process(da.from_array(raw, chunks=(41, 57)), None, cfg, layout=layout, exptime=300.0)
    np.testing.assert_array_equal(frame.dq.compute(), dqa)
    assert DQ.describe(DQ.BLEED | DQ.SATURATED) == ["saturated", "bleed trail"]
    # off by default: no bit 32
    _, _, plain, hist = process_in_memory(
        raw, {}, ProcessConfig(cosmics=CosmicConfig(method="none")), layout=layout, exptime=300.0
    )
    assert not (plain & DQ.BLEED).any() and not any(h.startswith("bleed") for h in hist)
    # a flat's trails are blanked like its saturated pixels
    fsci, _, _, _ = process_in_memory(raw, {}, cfg, layout=layout, exptime=300.0, role="flat")
    assert np.isnan(fsci[want]).all()


def test_bad_parameters(tmp_path):
    with pytest.raises(ConfigError, match="bleed_length"):
        MaskConfig(bleed_length=1)
    with pytest.raises(ConfigError, match="bleed_level"):
        MaskConfig(bleed_level=1.5)
    with pytest.raises(ConfigError, match="full_well"):
        simulate_night(tmp_path / "n", full_well=2.0)
    assert not (tmp_path / "n").exists()
