"""Execution backends: an embedded LocalCluster, an existing scheduler by address or file.

Everything here is real: worker processes, a ``dask scheduler`` and a ``dask worker`` started as
subprocesses. The SLURM backend is tested in ``test_slurm.py``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing.resource_tracker
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import pytest
from distributed import Client

from ccdask.cluster import ClusterConfig, SlurmConfig, describe_client, open_client
from ccdask.errors import CcdaskError, ConfigError

DASK = str(Path(sys.executable).with_name("dask"))


def _graph() -> da.Array:
    """A small graph with reductions across chunks (results depend on combining order)."""
    rng = da.random.default_rng(2024)
    x = rng.standard_normal((600, 500), chunks=(150, 125), dtype=np.float32)
    return (x * x.mean(axis=0) - x.std(axis=1)[:, None]).sum(axis=1)


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    return _graph().compute(scheduler="threads")


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _wait_children_gone(before: set[int], timeout: float = 10.0) -> set[int]:
    """Child processes not in ``before`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        extra = _children() - before
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def _no_default_client() -> bool:
    from distributed.client import _get_global_client

    return _get_global_client() is None


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory):
    """A real ``dask scheduler`` and one ``dask worker`` process, joined by a scheduler file."""
    folder = tmp_path_factory.mktemp("scheduler")
    scheduler_file = folder / "scheduler.json"
    logs = [open(folder / "scheduler.log", "wb"), open(folder / "worker.log", "wb")]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--scheduler-file",
                str(scheduler_file),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [
                DASK,
                "worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--memory-limit",
                "1GiB",
                "--no-dashboard",
                "--name",
                "external-worker",
            ],
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None:
            if scheduler_file.exists():
                with contextlib.suppress(ValueError, KeyError):  # not yet complete
                    address = json.loads(scheduler_file.read_text())["address"]
            for p in procs:
                if p.poll() is not None:
                    pytest.fail(f"{p.args[1]} exited with {p.returncode}; see {folder}")
            if address is None:
                assert time.monotonic() < deadline, f"no scheduler file after 60 s; see {folder}"
                time.sleep(0.1)
        yield {"address": address, "file": str(scheduler_file), "procs": procs}
    finally:
        for p in reversed(procs):  # the worker first, while its scheduler still answers
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def test_local_cluster_matches_threaded(expected: np.ndarray) -> None:
    config = ClusterConfig(workers=2, threads_per_worker=1, memory_limit="1GiB")
    with open_client(config) as client:
        assert _no_default_client(), "open_client must not install a global default client"
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert len(workers) == 2
        assert all(w["nthreads"] == 1 for w in workers)
        assert all(w["memory_limit"] == 2**30 for w in workers)
        # Worker processes, not threads of this process.
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        assert len(pids) == 2 and psutil.Process().pid not in pids
        result = client.compute(_graph()).result()
        text = describe_client(client)
    assert result.dtype == expected.dtype
    assert result.tobytes() == expected.tobytes()
    assert text.startswith("LocalCluster at tcp://127.0.0.1:")
    assert "2 workers, 2 threads, memory limit 1.00 GiB per worker" in text
    assert "dashboard http://" in text
    assert client.status == "closed"


def test_no_processes_left_even_on_error() -> None:
    # multiprocessing's resource tracker is one helper per interpreter, shared by every later
    # cluster: start it now so that it belongs to the "before" picture.
    multiprocessing.resource_tracker.ensure_running()
    before = _children()
    scheduler_setting = dask.config.get("scheduler", None)
    seen: set[int] = set()
    config = ClusterConfig(workers=1, memory_limit="0")
    with pytest.raises(RuntimeError, match="boom"), open_client(config) as client:
        seen = _children() - before
        cluster = client.cluster
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert ": 1 worker, 1 thread, no memory limit; dashboard http" in describe_client(client)
        assert dask.config.get("scheduler", None) == scheduler_setting
        raise RuntimeError("boom")
    assert seen, "the embedded worker should be a child process"
    assert cluster.status.name == "closed"
    assert client.status == "closed"
    left = _wait_children_gone(before)
    assert not left, f"processes left after open_client exited: {left}"
    assert dask.config.get("scheduler", None) == scheduler_setting


def test_existing_scheduler_by_address(external: dict, expected: np.ndarray) -> None:
    with open_client(ClusterConfig(scheduler=external["address"])) as client:
        assert _no_default_client()
        result = client.compute(_graph()).result()
        text = describe_client(client)
    assert result.tobytes() == expected.tobytes()
    assert text.startswith(f"scheduler {external['address']}: 1 worker, 1 thread")
    assert "memory limit 1.00 GiB per worker" in text
    assert all(p.poll() is None for p in external["procs"]), "the external cluster must stay up"


def test_existing_scheduler_by_file(external: dict, expected: np.ndarray) -> None:
    with open_client(ClusterConfig(scheduler_file=external["file"])) as client:
        names = [w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        assert names == ["external-worker"]
        result = client.compute(_graph()).result()
    assert result.tobytes() == expected.tobytes()
    assert client.status == "closed"
    assert all(p.poll() is None for p in external["procs"])


def test_client_passthrough_is_not_closed(external: dict) -> None:
    mine = Client(external["address"], set_as_default=False)
    try:
        with open_client(ClusterConfig(workers=3), client=mine) as client:
            assert client is mine
            assert client.submit(pow, 2, 10).result() == 1024
        assert mine.status == "running"
        assert mine.submit(pow, 3, 2).result() == 9
    finally:
        mine.close()


def test_missing_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    config = ClusterConfig(scheduler_file=str(path), timeout=0.5)
    message = r"did not appear within 0.5 s.*dask scheduler --scheduler-file"
    with pytest.raises(CcdaskError, match=message), open_client(config):
        pass


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler() -> None:
    port = _unused_port()
    before = _children()
    config = ClusterConfig(scheduler=f"tcp://127.0.0.1:{port}", timeout=1)
    message = re.escape(f"cannot connect to the dask scheduler at 'tcp://127.0.0.1:{port}' within 1 s")
    with pytest.raises(CcdaskError, match=message), open_client(config):
        pass
    assert not _wait_children_gone(before)


def test_stale_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"address": f"tcp://127.0.0.1:{_unused_port()}"}))
    config = ClusterConfig(scheduler_file=str(path), timeout=1)
    message = rf"\(from {re.escape(str(path))}\) within 1 s.*left over from a scheduler"
    with pytest.raises(CcdaskError, match=message), open_client(config):
        pass


def test_scheduler_without_workers() -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        config = ClusterConfig(scheduler=empty.scheduler_address, timeout=0.5)
        message = re.escape(
            f"the dask scheduler at '{empty.scheduler_address}' has no worker "
            "after 0.5 s; start some with 'dask worker "
        )
        with pytest.raises(CcdaskError, match=message), open_client(config):
            pass
        assert not empty.scheduler.clients.keys() - {"fire-and-forget"}, "client left open"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"scheduler": "tcp://a:1", "scheduler_file": "s.json"},
            "choose one backend, not scheduler='tcp://a:1' and scheduler_file='s.json'",
        ),
        (
            {"scheduler": "tcp://a:1", "slurm": SlurmConfig()},
            "choose one backend, not scheduler='tcp://a:1' and slurm=SlurmConfig",
        ),
        (
            {"workers": 4, "scheduler": "tcp://a:1"},
            "workers=4 applies to the embedded LocalCluster only and conflicts with scheduler=",
        ),
        (
            {"memory_limit": "8GiB", "slurm": SlurmConfig(queue="q")},
            "memory_limit='8GiB' .* conflicts with slurm=SlurmConfig\\(queue='q'.*slurm.memory",
        ),
        (
            {"dashboard_address": ":8787", "scheduler_file": "s.json"},
            "dashboard_address=':8787' conflicts with scheduler_file='s.json'",
        ),
        ({"workers": 0}, "ClusterConfig.workers = 0 is invalid"),
        ({"threads_per_worker": -1}, "threads_per_worker = -1 is invalid"),
        ({"memory_limit": "plenty"}, "memory_limit = 'plenty' is invalid: 'auto' or a size"),
        ({"dashboard_address": "8787"}, "dashboard_address = '8787' is invalid"),
        ({"scheduler": " "}, "scheduler = ' ' is invalid"),
        ({"timeout": 0}, "timeout = 0 is invalid"),
        ({"workers": "2"}, "workers = '2': expected an integer"),
    ],
)
def test_cluster_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClusterConfig(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"jobs": 0}, "SlurmConfig.jobs = 0 is invalid"),
        ({"cores": 1, "processes": 2}, "processes=2 is more than cores=1"),
        ({"jobs": 2, "min_workers": 3}, "min_workers=3 is more than the jobs \\* processes"),
        ({"memory": "0"}, "memory = '0' is invalid"),
        ({"walltime": "1 hour"}, "walltime = '1 hour' is invalid"),
        ({"queue": "de bug"}, "queue = 'de bug' is invalid"),
    ],
)
def test_slurm_config_errors(options: dict, message: str) -> None:
    # checks needing processes wait until it is resolved from dask-jobqueue's configuration
    with pytest.raises(ConfigError, match=message):
        SlurmConfig(**options).resolved()


def test_config_round_trip_and_backend() -> None:
    assert ClusterConfig().backend == "local"
    assert ClusterConfig(scheduler="tcp://h:8786").backend == "scheduler"
    assert ClusterConfig(scheduler_file="f.json").backend == "scheduler_file"
    config = ClusterConfig.from_dict({"slurm": {"queue": "debug", "jobs": 3, "job_extra_directives": ["--qos=short"]}})
    assert config.backend == "slurm"
    assert config.slurm == SlurmConfig(queue="debug", jobs=3, job_extra_directives=("--qos=short",))
    assert config.slurm.workers == 3
    assert ClusterConfig.from_dict(config.to_dict()) == config
    assert ClusterConfig.from_dict({"slurm": {}}).slurm == SlurmConfig()
    with pytest.raises(ConfigError, match=r"slurm\.SlurmConfig: unknown option.*'queues'"):
        ClusterConfig.from_dict({"slurm": {"queues": "debug"}})


def test_wrong_argument_types() -> None:
    with pytest.raises(ConfigError, match="config must be a ClusterConfig"), open_client({"workers": 2}):  # type: ignore[arg-type]
        pass
    with (
        pytest.raises(ConfigError, match=r"client must be a distributed\.Client"),
        open_client(client="tcp://127.0.0.1:8786"),
    ):
        pass
