"""Reliability while running: determinism across schedulers, workers, chunks and memory
budgets; a worker process killed mid-task; the whole run SIGKILLed mid-way and resumed; a
damaged master cache.

Every run is compared with the clean threaded reduction of the same raw files (the
``reference`` fixture): SCI/VAR/DQ of every reduced frame and data/COUNT/VAR of every master
must be bitwise equal, and so must the header cards (but astropy's checksum time stamps).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed import Client, LocalCluster, WorkerPlugin, get_task_stream

from ccdask.cache._store import MasterCache
from ccdask.cli._main import EXIT_OK, main
from ccdask.errors import CcdaskWarning
from ccdask.night._reduce import reduce

from .support import (
    assert_complete_fits,
    assert_same_outputs,
    make_night,
)

pytestmark = pytest.mark.filterwarnings("ignore:resource_tracker:UserWarning")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as a user's LocalCluster would be."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL
        ) as cl,
        Client(cl, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=120)
        yield cl, client


# ------------------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_two_worker_processes_equal_threads(night, reference, cluster, tmp_path):
    _, client = cluster
    with get_task_stream(client=client) as ts:
        result = reduce(night.raw_dir, tmp_path / "out", client=client)
    assert len({t["worker"] for t in ts.data}) == 2, "both workers should have taken part"
    assert result.stages["bias"]["built"] == 2
    assert assert_same_outputs(reference[0], tmp_path / "out") > 20


def test_sync_scheduler_equals_threads(night, reference, tmp_path):
    reduce(night.raw_dir, tmp_path / "out", client="sync")
    assert_same_outputs(reference[0], tmp_path / "out")


MEMORY = {"memory_per_task": "1 MiB"}  # the smallest budget: more, shorter stacking tiles


@pytest.mark.slow
def test_memory_budget_does_not_change_a_bit(night, reference, cluster, tmp_path):
    _, client = cluster
    cfg = {"bias": {"combine": MEMORY}, "dark": {"combine": MEMORY}, "flat": {"combine": MEMORY}}
    result = reduce(night.raw_dir, tmp_path / "out", client=client, config=cfg)
    assert result.stages["bias"]["tasks"] > reference[1].stages["bias"]["tasks"], (
        "the budget should have cut the stacks into more tiles"
    )
    # parameters are in the headers (HISTORY, cache keys), so compare the pixels
    assert_same_outputs(reference[0], tmp_path / "out", headers=False)


@pytest.mark.slow
def test_chunk_size_does_not_change_a_bit(tmp_path):
    """Chunks only differ on frames larger than the smallest chunk (0.25 MiB): one 1024 x 1024
    chip. The slow masks/cosmics/QA steps are off; they are chunk-free (one task per chip)."""
    night = make_night(
        tmp_path / "night", chips=1, amps=1, size="medium", nbias=3, ndark=2, nflat=2, filters=("g",), nscience=1
    )
    base = {"cosmics": {"method": "none"}, "output": {"qa": False}, "masks": {"low": False}}
    small = {
        **base,
        "chunk_mb": 0.25,
        "bias": {"combine": MEMORY},
        "dark": {"combine": MEMORY},
        "flat": {"combine": MEMORY},
    }
    a = reduce(night.raw_dir, tmp_path / "a", client="threads", config=base)
    b = reduce(night.raw_dir, tmp_path / "b", client="threads", config=small)
    assert b.stages["bias"]["tasks"] > 2 * a.stages["bias"]["tasks"]
    assert_same_outputs(tmp_path / "a", tmp_path / "b", headers=False)


# ------------------------------------------------------------------------------ lost worker
class KillWorkerOnce(WorkerPlugin):
    """SIGKILLs the worker process that starts executing a task of a group, once per group
    (a marker file per group makes the restarted worker spare it)."""

    name = "ccdask-test-kill-once"

    def __init__(self, marker_dir: str, groups: tuple[str, ...]):
        self.marker_dir = marker_dir
        self.groups = groups

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing":
            return
        from dask.utils import key_split

        group = key_split(key)
        for g in self.groups:
            if group == g or group.startswith(g + "-"):
                try:
                    fd = os.open(os.path.join(self.marker_dir, f"killed-{g}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    continue
                os.write(fd, f"{os.getpid()} {key}".encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_lost_worker_changes_nothing(night, reference, cluster, tmp_path):
    """One worker process is SIGKILLed while it stacks a bias tile, and again (the other one
    or its replacement) while it reduces a science chip: the nanny restarts it, the scheduler
    reruns its tasks, and the outputs are bitwise those of the clean run."""
    _cl, client = cluster
    pids = set(client.run(os.getpid).values())
    markers = tmp_path / "markers"
    markers.mkdir()
    client.register_plugin(KillWorkerOnce(str(markers), ("combine-bias", "reduce")))
    try:
        result = reduce(night.raw_dir, tmp_path / "out", client=client)
    finally:
        client.unregister_worker_plugin(KillWorkerOnce.name)
    killed = {p.name: int(p.read_text().split()[0]) for p in markers.iterdir()}
    assert set(killed) == {"killed-combine-bias", "killed-reduce"}
    assert killed["killed-combine-bias"] in pids  # one of the original workers
    client.wait_for_workers(2, timeout=120)
    assert not set(killed.values()) & set(client.run(os.getpid).values())  # replaced
    assert len(result.outputs) == 2
    assert not list((tmp_path / "out").rglob(".tmp-*.part"))
    assert_same_outputs(reference[0], tmp_path / "out")


@pytest.mark.slow
def test_one_worker_equals_threads(night, reference, cluster, tmp_path):
    """Last in the module: retires one of the two workers."""
    _cl, client = cluster
    client.wait_for_workers(2, timeout=120)
    first = sorted(client.scheduler_info()["workers"])[0]
    client.retire_workers([first], close_workers=True)
    deadline = time.monotonic() + 60
    while len(client.scheduler_info()["workers"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(client.scheduler_info()["workers"]) == 1
    with get_task_stream(client=client) as ts:
        reduce(night.raw_dir, tmp_path / "out", client=client)
    assert len({t["worker"] for t in ts.data}) == 1
    assert_same_outputs(reference[0], tmp_path / "out")


# ------------------------------------------------------------------------------ killed run
def _cache_entries(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*") if p.is_dir() and not p.name.startswith(".")] if cache.is_dir() else []


def _finished(out: Path) -> list[Path]:
    return (
        [p for sub in ("reduced", "masters") for p in (out / sub).glob("*") if not p.name.startswith(".tmp-")]
        if out.is_dir()
        else []
    )


def _run_and_kill(raw: Path, out: Path, log: Path, when) -> tuple[bool, float]:
    """Start ``ccdask reduce`` in its own process group and SIGKILL the whole group as soon as
    ``when(out)`` holds. Returns (killed before the end, seconds)."""
    exe = Path(sys.executable).with_name("ccdask")
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [str(exe), "reduce", str(raw), "--out", str(out), "--workers", "1"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tree: set[int] = set()
    try:
        while proc.poll() is None and time.monotonic() - t0 < 240:
            tree |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            if when(out):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    except psutil.NoSuchProcess:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    killed = proc.returncode == -signal.SIGKILL
    # the workers went with it (they are in the run's process group)
    deadline = time.monotonic() + 30
    while any(map(_alive, tree)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if _alive(p)], "worker processes outlived the killed run"
    return killed, time.monotonic() - t0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_nothing_partial(out: Path) -> int:
    """Only whole files under final names; unfinished work only under .tmp- names."""
    done = _finished(out)
    for p in done:
        assert p.suffix == ".fits" and p.is_file(), p
        assert_complete_fits(p)
    cache = MasterCache(out / "cache.zarr")
    for entry in _cache_entries(out / "cache.zarr"):
        assert cache.get(entry.name) is not None, entry  # verifies every chunk (a warning = error)
    return len(done)


def _created(cache: Path) -> dict[str, str]:
    """Cache entry -> its creation stamp (a rebuilt entry gets a new one)."""
    return {e.name: json.loads((e / "zarr.json").read_text())["attributes"]["created"] for e in _cache_entries(cache)}


@pytest.mark.slow
def test_killed_run_leaves_no_partial_output_and_resumes(night, reference, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    # 1: killed as soon as the first master is in the cache (stacking of the rest under way)
    killed, _ = _run_and_kill(night.raw_dir, out, log, lambda o: bool(_cache_entries(o / "cache.zarr")))
    assert killed, log.read_text()
    _assert_nothing_partial(out)
    assert not (out / "manifest.json").exists()
    first = _created(out / "cache.zarr")
    assert first
    # 2: resumed, and killed again when the first reduced frame or master file is in place
    _run_and_kill(night.raw_dir, out, log, lambda o: bool(_finished(o)))
    _assert_nothing_partial(out)
    finished_reduced = sorted(p.name for p in (out / "reduced").glob("*.fits"))
    # 3: a clean rerun completes (exit 0), reusing what was finished
    assert main(["reduce", str(night.raw_dir), "--out", str(out), "--workers", "1"]) == EXIT_OK
    man = json.loads((out / "manifest.json").read_text())
    assert all(man["timings"][s]["built"] == 0 for s in ("bias", "dark", "flat-g", "flat-r")), (
        "every master was finished by the killed runs and must come from the cache"
    )
    created = _created(out / "cache.zarr")
    assert {k: created[k] for k in first} == first, "masters of the first run were rebuilt"
    assert sorted(Path(p).name for p in man["outputs"]["skipped"]) == finished_reduced
    assert len(man["outputs"]["skipped"]) + len(man["outputs"]["reduced"]) == 2
    assert not list(out.rglob(".tmp-*.part")) and not list((out / "reduced").glob(".tmp-*"))
    assert not [p for p in (out / ".scratch").rglob("*") if p.is_file()]
    assert_same_outputs(reference[0], out)


# ------------------------------------------------------------------------------ cache damage
def _entry_of(cache: Path, kind: str, chip: str, filt: str | None = None) -> Path:
    for e in _cache_entries(cache):
        attrs = json.loads((e / "zarr.json").read_text())["attributes"]
        if (attrs["kind"], attrs["chip"], attrs.get("filter")) == (kind, chip, filt):
            return e
    raise AssertionError(f"no {kind} {chip} {filt} master in {cache}")


@pytest.mark.slow
def test_damaged_cache_is_detected_and_rebuilt(night, reference, tmp_path):
    cache = tmp_path / "cache.zarr"
    shutil.copytree(reference[0] / "cache.zarr", cache)
    # a truncated chunk of a bias master
    bias = _entry_of(cache, "bias", "CCD1")
    chunk = next(p for p in (bias / "data").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    # edited attributes of a flat master (the checksum of the attributes no longer matches)
    flat = _entry_of(cache, "flat", "CCD2", "r")
    doc = json.loads((flat / "zarr.json").read_text())
    doc["attributes"]["ncombine"] += 1
    (flat / "zarr.json").write_text(json.dumps(doc))
    with pytest.warns(CcdaskWarning, match="is damaged") as record:
        result = reduce(night.raw_dir, tmp_path / "out", client="threads", cache=cache)
    damaged = [str(w.message) for w in record if "is damaged" in str(w.message)]
    assert len(damaged) == 2
    assert any(bias.name in m and "bias master, chip CCD1" in m for m in damaged)
    assert any(flat.name in m and "flat master, chip CCD2" in m for m in damaged)
    assert (result.stages["bias"]["built"], result.stages["bias"]["cached"]) == (1, 1)
    assert (result.stages["dark"]["built"], result.stages["dark"]["cached"]) == (0, 2)
    # flats of a filter share one focal-plane normalisation: both chips of r are rebuilt
    assert (result.stages["flat-r"]["built"], result.stages["flat-r"]["cached"]) == (2, 0)
    assert (result.stages["flat-g"]["built"], result.stages["flat-g"]["cached"]) == (0, 2)
    assert len(list(cache.glob(".damaged-*"))) == 2
    assert_same_outputs(reference[0], tmp_path / "out")
    # and the rebuilt entries are whole again: a third run finds everything
    again = reduce(night.raw_dir, tmp_path / "out2", client="threads", cache=cache)
    assert all(again.stages[s]["built"] == 0 for s in ("bias", "dark", "flat-g", "flat-r"))
