"""The zarr master cache: keys, atomic writes, lazy verified reads, damage, concurrency, CLI.

Every test uses a real zarr v3 store in ``tmp_path``; masters are small (a few hundred pixels a
side) except where a cluster or a killed process is involved.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from ccdask.cache._store import (
    CacheError,
    CacheKeyError,
    MasterCache,
    input_identity,
    master_key,
)
from ccdask.cache._versions import versions_of
from ccdask.cli._cache import register, run
from ccdask.errors import CcdaskWarning
from ccdask.frame import Master
from tests.helpers import no_compute

KEY = "0123456789abcdef01234567"
KEY2 = "fedcba9876543210fedcba98"


def _identities():
    return [
        {
            "path": f"/raw/b{i}.fits",
            "hdu": 1,
            "size": 2880 * (10 + i),
            "mtime_ns": 10**18 + i,
            "header": f"SIMPLE  =                    T\nOBJECT  = 'bias {i}'",
        }
        for i in range(4)
    ]


def _params():
    return {"method": "mean", "clip": "sigma", "sigma": 3.0, "maxiters": 5, "upstream": {}}


def _master(
    shape=(250, 190),
    chunks=(128, 96),
    *,
    kind="bias",
    chip="ccd1",
    seed=0,
    filt=None,
    variance=True,
    count=True,
    meta=None,
):
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 5.0, shape).astype(np.float32)
    data[3, 4] = np.nan
    var = rng.uniform(1.0, 2.0, shape).astype(np.float32)
    cnt = rng.integers(0, 12, shape).astype(np.int16)
    return Master(
        kind=kind,
        chip=chip,
        data=da.from_array(data, chunks=chunks),
        variance=da.from_array(var, chunks=chunks) if variance else None,
        count=da.from_array(cnt, chunks=chunks) if count else None,
        ncombine=11,
        filter=filt,
        exptime=None,
        meta=meta if meta is not None else {"inputs": ["/raw/b0.fits"], "params": _params()},
    )


def _chunk_files(entry: Path, name="data"):
    return sorted(p for p in (entry / name / "c").rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------- keys


def test_key_is_stable_and_ignores_input_order():
    ids = _identities()
    key = master_key("bias", ids, _params(), chip="ccd1")
    assert len(key) == 24 and int(key, 16) >= 0
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    params = dict(reversed(list(_params().items())))
    params["sigma"] = np.float64(3.0)  # numpy scalars hash like the Python value
    params["maxiters"] = np.int32(5)
    assert master_key("bias", shuffled, params, chip="ccd1") == key
    assert master_key("bias", tuple(ids), _params(), chip="ccd1", algorithm_version=dict(versions_of("bias"))) == key


@pytest.mark.parametrize(
    "change",
    [
        "mtime",
        "size",
        "header",
        "path",
        "hdu",
        "param",
        "upstream",
        "version",
        "chip",
        "kind",
        "drop-input",
    ],
)
def test_key_changes_with_anything_that_matters(change):
    ids, params, chip, kind, version = _identities(), _params(), "ccd1", "bias", None
    before = master_key(kind, ids, params, chip=chip, algorithm_version=version)
    if change == "mtime":
        ids[2]["mtime_ns"] += 1
    elif change == "size":
        ids[0]["size"] += 2880
    elif change == "header":
        ids[1]["header"] = ids[1]["header"].replace("bias 1", "bias 9")
    elif change == "path":
        ids[3]["path"] = "/raw/other.fits"
    elif change == "hdu":
        ids[3]["hdu"] = 2
    elif change == "param":
        params["sigma"] = 3.0000001
    elif change == "upstream":
        params["upstream"] = {"bias": KEY}
    elif change == "version":
        version = {**versions_of("bias"), "combine": 99}
    elif change == "chip":
        chip = "ccd2"
    elif change == "kind":
        kind = "dark"
    elif change == "drop-input":
        ids = ids[1:]
    assert master_key(kind, ids, params, chip=chip, algorithm_version=version) != before


def test_key_refuses_what_has_no_canonical_json():
    with pytest.raises(CacheKeyError, match=r"params\['clip'\]\['fn'\].*not JSON-able"):
        master_key("bias", _identities(), {"clip": {"fn": print}}, chip="c")
    with pytest.raises(CacheKeyError, match="not a str"):
        master_key("bias", _identities(), {1: 2}, chip="c")
    bad = _identities()
    del bad[1]["mtime_ns"]
    with pytest.raises(CacheKeyError, match=r"inputs\[1\].*b1.fits.*mtime_ns"):
        master_key("bias", bad, {}, chip="c")
    with pytest.raises(CacheKeyError, match="not a cache key"):
        MasterCache("x").get("../etc")
    assert isinstance(CacheKeyError("x"), ValueError)


def test_input_identity_follows_the_file(tmp_path):
    raw = tmp_path / "a.fits"
    raw.write_bytes(b"\0" * 2880)
    ident = input_identity(raw, 0, "SIMPLE  = T")
    assert ident["size"] == 2880 and ident["path"] == str(raw)
    key = master_key("bias", [ident], {}, chip="c")
    os.utime(raw, ns=(ident["mtime_ns"] + 10**9, ident["mtime_ns"] + 10**9))
    assert master_key("bias", [input_identity(raw, 0, "SIMPLE  = T")], {}, chip="c") != key


# ---------------------------------------------------------------------------- round trip


def test_put_get_round_trip_is_bit_exact_and_lazy(tmp_path):
    cache = MasterCache(tmp_path / "cache.zarr", chunks=(128, 96))
    assert cache.get(KEY) is None  # no cache folder at all yet
    m = _master(filt="g")
    with dask.config.set(scheduler="sync"):
        put = cache.put(KEY, m)
    want = dask.compute(m.data, m.variance, m.count, scheduler="sync")

    with no_compute():
        got = cache.get(KEY)
        assert got is not None and isinstance(got.data, da.Array)
    for result in (put, got):
        arrays = dask.compute(result.data, result.variance, result.count, scheduler="sync")
        for a, b in zip(arrays, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)  # NaN included
        assert (result.kind, result.chip, result.filter, result.ncombine) == (
            "bias",
            "ccd1",
            "g",
            11,
        )
        assert result.meta["cache_key"] == KEY and result.meta["params"] == _params()
    assert got.data.chunks == ((128, 122), (96, 94))  # stored like the master

    (entry,) = cache.entries()
    assert (entry.key, entry.kind, entry.chip, entry.filter, entry.shape) == (
        KEY,
        "bias",
        "ccd1",
        "g",
        (250, 190),
    )
    assert entry.ncombine == 11 and entry.size > 0 and entry.problem is None
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]
    attrs = json.loads((cache.root / KEY / "zarr.json").read_text())["attributes"]
    assert attrs["created"].endswith("+00:00") and attrs["arrays"]["count"]["dtype"] == "int16"


def test_optional_arrays_numpy_input_and_chunk_choice(tmp_path):
    cache = MasterCache(tmp_path / "c")
    data = np.arange(300 * 200, dtype=np.float64).reshape(300, 200)
    m = Master("dark", "ccd2", data, None, None, 3, exptime=30.0)  # numpy, float64
    got = cache.put(KEY, m, scheduler="sync")
    assert got.variance is None and got.count is None and got.exptime == 30.0
    assert got.data.dtype == np.float32 and got.data.chunks == ((300,), (200,))
    np.testing.assert_array_equal(got.data.compute(scheduler="sync"), data.astype(np.float32))
    irregular = da.from_array(data, chunks=((100, 150, 50), (200,)))
    got = cache.put(KEY2, Master("dark", "ccd2", irregular, None, None, 3), scheduler="sync")
    assert got.data.chunks == ((300,), (200,))  # irregular dask chunks: a fixed grid instead


def test_put_refuses_bad_meta_and_foreign_folders(tmp_path):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    with pytest.raises(CacheKeyError, match=r"master.meta\['obj'\]"):
        cache.put(KEY, _master(meta={"obj": object()}))
    assert not (tmp_path / "c").exists()  # refused before writing anything
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CacheError, match="not a ccdask master cache"):
        MasterCache(foreign).put(KEY, _master())
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]


def test_store_graph_puts_several_masters_in_one_compute(tmp_path):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    todo = {KEY: _master(kind="bias", seed=1), KEY2: _master(kind="flat", filt="r", seed=2)}
    pending = [cache.store_graph(k, m) for k, m in todo.items()]
    assert all(p.writes.name.startswith("cache-put-") for p in pending)
    assert cache.entries() == []  # nothing visible before finalize
    results = dask.compute(*(p.writes for p in pending), scheduler="sync")
    done = {p.key: p.finalize(r) for p, r in zip(pending, results, strict=True)}
    for key, m in todo.items():
        np.testing.assert_array_equal(done[key].data.compute(), m.data.compute())
    assert [e.kind for e in cache.entries()] == ["bias", "flat"]
    with pytest.raises(CacheError, match="already finalized"):
        pending[0].finalize(results[0])
    many = cache.put_many({KEY: todo[KEY]}, scheduler="sync")  # existing key: theirs is kept
    assert many[KEY].meta["cache_key"] == KEY


# ------------------------------------------------------------------------------ atomicity


def _explode(block, block_id=None):
    if block_id == (1, 1):
        raise RuntimeError("boom in chunk (1, 1)")
    return block


def test_failed_put_leaves_no_entry(tmp_path):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    m = _master()
    bad = Master("bias", "ccd1", m.data.map_blocks(_explode, dtype=np.float32), m.variance, None, 11)
    with pytest.raises(RuntimeError, match="boom"):
        cache.put(KEY, bad, scheduler="sync")
    assert cache.get(KEY) is None and KEY not in cache
    assert os.listdir(cache.root) == ["zarr.json"]  # the temporary folder is gone too

    with cache.store_graph(KEY, m) as pending:  # a put that never finishes
        assert pending.tmp.is_dir()
        assert cache.get(KEY) is None and cache.entries() == []
    assert not pending.tmp.exists()  # the context manager aborted it


_KILLED_PUT = textwrap.dedent(
    """
    import sys, time
    import dask.array as da, numpy as np
    from ccdask.cache._store import MasterCache
    from ccdask.frame import Master

    calls = []

    def slow(block):
        calls.append(block.size)
        if sum(n > 0 for n in calls) > 1:  # the first chunk gets written, then the writer hangs
            time.sleep(120)
        return block

    data = da.zeros((256, 256), chunks=(128, 128), dtype="f4").map_blocks(slow, dtype="f4")
    MasterCache(sys.argv[1], chunks=(128, 128)).put(sys.argv[2], Master("bias", "c1", data, None, None, 1),
                                 scheduler="sync")
    """
)


def test_killed_put_leaves_a_tmp_folder_that_readers_ignore(tmp_path):
    root = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PUT, str(root), KEY])
    try:
        deadline = time.monotonic() + 20
        while not list(root.glob(".tmp-*/data/c/*/*")):
            assert proc.poll() is None and time.monotonic() < deadline, "writer never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cache = MasterCache(root)
    (tmp,) = root.glob(".tmp-*")
    assert cache.get(KEY) is None and cache.entries() == []
    assert cache.sweep() == 0 and tmp.exists()  # young: might still be someone's write
    old = time.time() - 7200
    for path in [tmp, *tmp.rglob("*")]:
        os.utime(path, (old, old))
    cache.put(KEY2, _master(), scheduler="sync")  # a later put sweeps it
    assert not tmp.exists() and cache.get(KEY2) is not None


def test_sweep_spares_a_live_writer(tmp_path):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    pending = cache.store_graph(KEY, _master())
    assert cache.sweep(max_age=0) == 0 and pending.tmp.exists()  # owner (us) is alive
    written = dask.compute(pending.writes, scheduler="sync")[0]
    assert pending.finalize(written).ncombine == 11


# ---------------------------------------------------------------------------- corruption


def _damage(entry: Path, how: str) -> str:
    chunk = _chunk_files(entry)[1]
    if how == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:-7])
        return "chunk c/0/1 truncated"
    if how == "delete":
        chunk.unlink()
        return "chunk c/0/1 is missing"
    if how == "flip":
        raw = bytearray(chunk.read_bytes())
        raw[len(raw) // 2] ^= 0x55
        chunk.write_bytes(bytes(raw))
        return "chunk c/0/1 fails its checksum"
    if how == "edit-attrs":
        doc = json.loads((entry / "zarr.json").read_text())
        doc["attributes"]["ncombine"] = 99
        (entry / "zarr.json").write_text(json.dumps(doc))
        return "attributes do not match their checksum"
    if how == "edit-array-meta":
        path = entry / "variance" / "zarr.json"
        doc = json.loads(path.read_text())
        doc["fill_value"] = 0.0
        path.write_text(json.dumps(doc))
        return "array 'variance': zarr.json does not match"
    if how == "garbage-meta":
        (entry / "zarr.json").write_bytes(b"\x00{not json")
        return "unreadable"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncate", "delete", "flip", "edit-attrs", "edit-array-meta", "garbage-meta"])
def test_damaged_entry_is_reported_moved_aside_and_rebuilt(tmp_path, how):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    m = _master(kind="flat", chip="ccd3", filt="g")
    cache.put(KEY, m, scheduler="sync")
    what = _damage(cache.root / KEY, how)
    kind_chip = r"\(\?|\(flat master, chip ccd3\)" if how == "garbage-meta" else r"\(flat master, chip ccd3\)"
    with pytest.warns(CcdaskWarning, match=rf"{KEY} ({kind_chip}).*{what}") as record:
        assert cache.get(KEY) is None
    assert "rebuilt" in str(record[0].message)
    assert KEY not in cache and not (cache.root / KEY).exists()
    (aside,) = cache.root.glob(f".damaged-{KEY}-*")
    assert cache.entries() == []
    again = cache.put(KEY, m, scheduler="sync")  # the caller rebuilds
    np.testing.assert_array_equal(again.data.compute(), m.data.compute())
    assert cache.get(KEY) is not None
    assert aside.exists()  # kept a day for inspection; `clear` removes it
    cache.clear()
    assert sorted(os.listdir(cache.root)) == ["zarr.json"]


@pytest.mark.parametrize("how", ["truncate", "delete", "edit-attrs"])
def test_cheap_verification_still_catches_missing_truncated_and_edited(tmp_path, how):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    cache.put(KEY, _master(), scheduler="sync")
    _damage(cache.root / KEY, how)
    with pytest.warns(CcdaskWarning, match=KEY):
        assert cache.get(KEY, verify=False) is None


# --------------------------------------------------------------------------- concurrency


def test_concurrent_puts_of_one_key_end_with_one_valid_entry(tmp_path):
    cache = MasterCache(tmp_path / "c", chunks=(128, 96))
    barrier = threading.Barrier(2, timeout=20)
    m = _master()

    def together(block, block_id=None):
        if block_id == (0, 0):
            barrier.wait()  # both writers are mid-computation: both will try to rename
        return block

    def put(seed):
        mine = Master(
            "bias",
            "ccd1",
            m.data.map_blocks(together, dtype=np.float32),
            m.variance,
            m.count,
            11,
            meta={"writer": seed},
        )
        return cache.put(KEY, mine, scheduler="sync")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(put, [1, 2]))
    assert {r.meta["writer"] for r in results} in ({1}, {2})  # both got the winner's entry
    assert [e.key for e in cache.entries()] == [KEY]
    assert sorted(os.listdir(cache.root)) == [KEY, "zarr.json"]
    got = cache.get(KEY)
    np.testing.assert_array_equal(got.data.compute(), m.data.compute())


def _ramp(block, block_info=None):
    (y0, _), (x0, _) = block_info[None]["array-location"]
    yy, xx = np.mgrid[0 : block.shape[0], 0 : block.shape[1]]
    return (block + (y0 + yy) * 1000.0 + (x0 + xx)).astype(np.float32)


@pytest.mark.slow
def test_put_on_a_process_cluster_writes_from_the_workers(tmp_path):
    distributed = pytest.importorskip("distributed")
    cache = MasterCache(tmp_path / "c", chunks=(256, 192))
    data = da.zeros((512, 384), chunks=(256, 192), dtype=np.float32).map_blocks(_ramp, dtype=np.float32)
    count = da.full((512, 384), 7, chunks=(256, 192), dtype=np.int16)
    m = Master("bias", "ccd1", data, data * 0.5, count, 7)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        workers = set(client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as stream:
            put = cache.put(KEY, m)
        ran = {t["worker"] for t in stream.data if "cache-put-bias-ccd1" in str(t["key"])}
        assert ran and ran <= workers
        got = cache.get(KEY)
        back = client.compute([got.data, got.variance, got.count], sync=True)
        assert put.meta["cache_key"] == KEY
    yy, xx = np.mgrid[0:512, 0:384]
    want = (yy * 1000.0 + xx).astype(np.float32)
    np.testing.assert_array_equal(back[0], want)
    np.testing.assert_array_equal(back[1], want * np.float32(0.5))
    np.testing.assert_array_equal(back[2], np.full((512, 384), 7, np.int16))


# -------------------------------------------------------------------------------- command


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="ccdask")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cache", *argv])
    assert args.func is run  # what cli.main will call
    return run(args)


def test_cache_ls_and_clear_command(tmp_path, capsys):
    out = tmp_path / "night"
    cache = MasterCache(out / "cache.zarr", chunks=(128, 96))
    cache.put(KEY, _master(kind="bias"), scheduler="sync")
    cache.put(KEY2, _master(kind="flat", filt="g", chip="ccd2"), scheduler="sync")

    assert _cli("ls", "--cache", str(out)) == 0  # an output folder holding cache.zarr
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["KEY", "KIND", "CHIP", "FILTER", "SHAPE"]
    assert KEY in lines[1] and "bias" in lines[1] and "250x190" in lines[1]
    assert KEY2 in lines[2] and " flat " in lines[2] and " g " in lines[2]
    assert lines[-1].startswith("2 master(s)")

    assert _cli("ls", "--cache", str(cache.root), "--kind", "flat") == 0
    assert KEY not in capsys.readouterr().out

    assert _cli("clear", "--cache", str(cache.root), "--kind", "bias") == 0
    assert "removed 1 master(s)" in capsys.readouterr().out
    assert [e.key for e in cache.entries()] == [KEY2]

    assert _cli("clear", "--cache", str(cache.root), "--older-than", "1") == 0
    assert "removed 0 master(s)" in capsys.readouterr().out
    old = time.time() - 3 * 86400
    os.utime(cache.root / KEY2, (old, old))  # last used three days ago
    assert _cli("ls", "--cache", str(cache.root), "--older-than", "2") == 0
    assert KEY2 in capsys.readouterr().out
    assert _cli("clear", "--cache", str(cache.root), "--older-than", "2") == 0
    assert "removed 1 master(s)" in capsys.readouterr().out
    assert cache.entries() == []

    with pytest.raises(CacheError, match="no ccdask master cache"):
        _cli("ls", "--cache", str(tmp_path))


def test_xarray_opens_a_cached_master(tmp_path):
    """Masters carry zarr ``dimension_names`` (y, x): ``xarray.open_zarr`` opens an entry as a
    Dataset of its arrays, equal to what was stored."""
    xr = pytest.importorskip("xarray")
    cache = MasterCache(tmp_path / "cache.zarr", chunks=(128, 96))
    m = _master(filt="r")
    with dask.config.set(scheduler="sync"):
        cache.put(KEY, m)
    want = dask.compute(m.data, m.variance, m.count, scheduler="sync")
    ds = xr.open_zarr(cache.root, group=KEY, consolidated=False, mask_and_scale=False)
    assert set(ds.data_vars) == {"data", "variance", "count"}
    for name, expected in zip(("data", "variance", "count"), want, strict=True):
        assert ds[name].dims == ("y", "x")
        got = ds[name].values
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert ds.attrs["kind"] == "bias" and ds.attrs["filter"] == "r"
    assert cache.get(KEY) is not None  # the entry still verifies
