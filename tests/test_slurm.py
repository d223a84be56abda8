"""Dask workers submitted as SLURM batch jobs, on a real SLURM.

CI starts a single-node SLURM (partition ``debug``) with ``.ci/slurm/install.sh`` and
``.ci/slurm/start.sh``. Where no SLURM is usable these tests are skipped, with the reason in
pytest's summary; with ``CCDASK_REQUIRE_SLURM=1`` (set by CI once SLURM is up) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import pytest

from ccdask.cluster import ClusterConfig, SlurmConfig, describe_client, open_client
from ccdask.errors import CcdaskError

PARTITION = os.environ.get("CCDASK_SLURM_PARTITION", "debug")
USABLE = {"idle", "mixed"}


def _slurm_unusable() -> str | None:
    """Why SLURM cannot run these tests here, or None when partition PARTITION is idle."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return (
            "SLURM is not installed (sinfo/sbatch not on PATH); run .ci/slurm/install.sh and .ci/slurm/start.sh as root"
        )
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%a %T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    if done.returncode != 0:
        return f"sinfo failed (is slurmctld running? .ci/slurm/start.sh): {done.stderr.strip()}"
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    if not rows:
        return f"SLURM has no partition {PARTITION!r}"
    states = {state.rstrip("*~#") for _, state in rows}
    if not any(avail == "up" for avail, _ in rows) or not states & USABLE:
        return f"partition {PARTITION!r} is not idle: {done.stdout.strip()!r}"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = _slurm_unusable()
    if reason is None:
        return
    if os.environ.get("CCDASK_REQUIRE_SLURM") == "1":
        pytest.fail(f"CCDASK_REQUIRE_SLURM=1 but SLURM is unusable: {reason}")
    print(f"\nskipping the SLURM tests: {reason}")
    pytest.skip(f"no usable SLURM: {reason}")


def _slurm_config(tmp_path: Path, **changes) -> ClusterConfig:
    options = {
        "queue": PARTITION,
        "jobs": 2,
        "cores": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "interface": "lo",  # one node: the scheduler and the workers talk over loopback
        "log_directory": str(tmp_path / "slurm-logs"),
        "local_directory": str(tmp_path / "worker-space"),
        "min_workers": 2,
        "startup_timeout": 120.0,
    }
    options.update(changes)
    return ClusterConfig(slurm=SlurmConfig(**options))


def _squeue(ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` of the given jobs that SLURM lists (pending, running, completing)."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True, timeout=20, check=False
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _graph() -> da.Array:
    rng = da.random.default_rng(7)
    x = rng.standard_normal((400, 300), chunks=(100, 100), dtype=np.float32)
    return (x - x.mean(axis=0)).std(axis=1) + x.sum()


def test_workers_run_as_slurm_jobs(slurm: None, tmp_path: Path) -> None:
    expected = _graph().compute(scheduler="threads")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    t0 = time.perf_counter()
    with open_client(_slurm_config(tmp_path)) as client:
        startup = time.perf_counter() - t0
        # Each worker runs inside a batch job: SLURM set its job id in the environment.
        job_of_worker = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        ids = sorted(job_of_worker.values())
        assert len(job_of_worker) == 2 and None not in ids and len(set(ids)) == 2, job_of_worker
        assert _squeue(ids) == dict.fromkeys(ids, "RUNNING")
        executables = client.run(lambda: sys.executable)
        assert set(executables.values()) == {sys.executable}
        result = client.compute(_graph()).result()
        text = describe_client(client)
    assert result.dtype == expected.dtype
    assert result.tobytes() == expected.tobytes(), "SLURM result differs from the local one"
    assert text.startswith("SLURMCluster at tcp://127.0.0.1:")
    assert f"(SLURM jobs {ids[0]}, {ids[1]}): 2 workers, 2 threads" in text
    assert client.status == "closed"
    print(f"\n2 SLURM workers joined in {startup:.1f} s; {text}")
    # The jobs were cancelled on exit: SLURM forgets them within seconds.
    deadline = time.monotonic() + 30
    while _squeue(ids) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _squeue(ids), f"jobs still listed after open_client exited: {_squeue(ids)}"
    left = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    assert not left, f"child processes left: {left}"
    logs = sorted(p.name for p in (tmp_path / "slurm-logs").iterdir())
    assert logs == sorted(f"dask-worker-{i}.{ext}" for i in ids for ext in ("err", "out"))


def test_refused_submission_fails_at_once(slurm: None, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with (
        pytest.raises(
            CcdaskError,
            match=r"SLURM refuses the dask worker job for 'no-such-q'"
            r".*[Ii]nvalid partition",
        ),
        open_client(_slurm_config(tmp_path, queue="no-such-q")),
    ):
        pass
    assert time.perf_counter() - t0 < 30


def test_jobs_that_die_are_reported(slurm: None, tmp_path: Path) -> None:
    # A Python that does not exist on the node: the jobs start and end at once.
    config = _slurm_config(tmp_path, python=str(tmp_path / "no-python"), startup_timeout=60.0)
    t0 = time.perf_counter()
    message = (
        rf"every SLURM job submitted to '{PARTITION}' \(ids \d+, \d+\) ended before 2 "
        r"dask worker\(s\) joined; see the job logs in "
    )
    with pytest.raises(CcdaskError, match=message), open_client(config):
        pass
    assert time.perf_counter() - t0 < 30, "dead jobs should be noticed long before the timeout"
    assert "no-python" in "".join(p.read_text() for p in (tmp_path / "slurm-logs").glob("*.err"))


def _arrays(path: Path) -> list[np.ndarray]:
    from astropy.io import fits

    with fits.open(path) as h:
        return [x.data.copy() for x in h if x.data is not None]


def test_reduce_on_slurm_equals_local_run(slurm, tmp_path, monkeypatch):
    """``ccdask reduce --slurm`` on a small simulated night: bitwise the threaded run's outputs."""
    from ccdask.cli import main
    from ccdask.night._reduce import reduce
    from ccdask.simulate._night import simulate_night

    night = simulate_night(
        tmp_path / "night", chips=2, amps=2, size="small", nbias=3, ndark=2, nflat=2, filters=("g",), nscience=1, seed=5
    )
    local = reduce(night.raw_dir, tmp_path / "local", client="threads")
    monkeypatch.chdir(tmp_path)  # sbatch writes its job logs to the working directory
    code = main(
        [
            "reduce",
            str(night.raw_dir),
            "--out",
            str(tmp_path / "slurm"),
            "--slurm",
            "--slurm-queue",
            PARTITION,
            "--slurm-jobs",
            "2",
            "--slurm-cores",
            "1",
            "--slurm-memory",
            "2GB",
            "--slurm-walltime",
            "00:10:00",
        ]
    )
    assert code == 0
    outputs = [*sorted(Path(p).name for p in local.outputs), "bias.fits", "dark.fits", "flat_g.fits"]
    for name in outputs:
        sub = "reduced" if not name.startswith(("bias", "dark", "flat")) else "masters"
        a = _arrays(tmp_path / "local" / sub / name)
        b = _arrays(tmp_path / "slurm" / sub / name)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.tobytes() == y.tobytes(), f"{sub}/{name} differs between SLURM and the local run"
