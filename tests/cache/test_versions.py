"""The version table: bumping one entry invalidates exactly the cached masters that code made."""

from __future__ import annotations

import json

import pytest

from ccdask import reduce
from ccdask.cache import KIND_VERSIONS, STEP_VERSIONS, master_key, versions_of
from ccdask.combine import ALGORITHM_VERSION


@pytest.fixture(scope="module")
def night(sim_night):
    return sim_night(chips=1, amps=2, size="small", nbias=3, ndark=2, nflat=2, filters=("g",), nscience=1, seed=3)


def _run(night, tmp_path, cache, name):
    out = tmp_path / name
    reduce(night.raw_dir, out, cache=cache, client="threads")
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    return {stage: (t["built"], t["cached"]) for stage, t in timings.items() if isinstance(t, dict) and "built" in t}


def test_table_feeds_every_key():
    assert STEP_VERSIONS["combine"] == ALGORITHM_VERSION
    for kind in ("bias", "dark", "flat"):
        assert versions_of(kind) == {
            "calibrate": STEP_VERSIONS["calibrate"],
            "combine": ALGORITHM_VERSION,
            kind: KIND_VERSIONS[kind],
        }
    ident = {"path": "/raw/b.fits", "hdu": 0, "size": 1, "mtime_ns": 1, "header": "X"}
    assert master_key("bias", [ident], {}, chip="c") == master_key(
        "bias", [ident], {}, chip="c", algorithm_version=dict(versions_of("bias"))
    )


@pytest.mark.parametrize(
    ("table", "entry", "rebuilt"),
    [
        ("kind", "flat", {"flat-g"}),
        ("kind", "dark", {"dark", "flat-g"}),  # the flat is dark-subtracted: its key carries the dark's
        ("kind", "bias", {"bias", "dark", "flat-g"}),
        ("step", "combine", {"bias", "dark", "flat-g"}),
    ],
)
def test_a_version_change_invalidates_exactly_the_masters_it_affects(
    night, tmp_path, monkeypatch, table, entry, rebuilt
):
    cache = tmp_path / "cache"
    first = _run(night, tmp_path, cache, "first")
    assert first and all(built > 0 and cached == 0 for built, cached in first.values()), first
    again = _run(night, tmp_path, cache, "again")
    assert all(built == 0 for built, _ in again.values()), again
    target = KIND_VERSIONS if table == "kind" else STEP_VERSIONS
    monkeypatch.setitem(target, entry, target[entry] + 1)
    bumped = _run(night, tmp_path, cache, "bumped")
    # a master's key carries the keys of the masters that calibrated its frames (dark <- bias,
    # flat <- bias, dark): a rebuild cascades downstream and never upstream
    assert {stage for stage, (built, _) in bumped.items() if built} == rebuilt, bumped
    assert all(cached == 0 for stage, (_, cached) in bumped.items() if stage in rebuilt)
