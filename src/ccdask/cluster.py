"""Where the computation runs: a context manager that gives a ``distributed.Client``.

Four backends, exactly one per :class:`ClusterConfig`:

``local`` (the default)
    An embedded :class:`distributed.LocalCluster` of worker *processes* (one thread each by
    default, a memory limit per worker), started on entry and shut down on exit.
``scheduler``
    An existing scheduler reached by its address (``tcp://host:8786``).
``scheduler_file``
    An existing scheduler found through the JSON file it wrote
    (``dask scheduler --scheduler-file F``); the usual way inside a batch job.
``slurm``
    A scheduler in this process and workers submitted as SLURM batch jobs through
    :class:`dask_jobqueue.SLURMCluster`; the jobs are cancelled on exit.

:func:`open_client` never installs a global default client (every client is created with
``set_as_default=False``), and whatever it starts it stops, also when the body raises. The
library prints nothing; :func:`describe_client` returns a one-line summary for the caller to show.

>>> with open_client(ClusterConfig(workers=2)) as client:  # doctest: +SKIP
...     print(describe_client(client))
...     total = client.compute(array.sum()).result()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import CcdaskError, ConfigError
from .utils._options import ConfigBase, option

__all__ = ["ClusterConfig", "LazyClient", "SlurmConfig", "describe_client", "open_client"]

# SLURM time limits: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.
_WALLTIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")
# A dashboard address: ":PORT" or "HOST:PORT" (port 0 picks a free port).
_DASHBOARD = re.compile(r"^[\w.\-\[\]]*:\d{1,5}$")
_UNLIMITED_MEMORY = 0


def _is_size(value: str, minimum: int = 0) -> bool:
    """True when ``value`` parses as a byte size (``"2GiB"``, ``"500MB"``) of at least ``minimum``."""
    from dask.utils import parse_bytes

    try:
        return parse_bytes(value) >= minimum
    except (ValueError, TypeError):
        return False


def _positive(value: int) -> bool:
    return value >= 1


def _non_blank(value: str) -> bool:
    return bool(value.strip()) and not any(c.isspace() for c in value)


@dataclass(frozen=True)
class SlurmConfig(ConfigBase):
    """Dask workers as SLURM batch jobs, through :class:`dask_jobqueue.SLURMCluster`.

    Each job runs ``processes`` dask worker processes sharing ``cores`` cores and ``memory``
    (so each worker gets ``cores // processes`` threads and ``memory / processes`` of memory,
    which is also its dask memory limit). Options left at ``None`` come from dask-jobqueue's
    own configuration (``jobqueue.slurm`` in dask's configuration, e.g.
    ``~/.config/dask/jobqueue.yaml``: ``cores``, ``memory``, ``processes``, ``walltime``,
    ``queue``, ``account``, ``interface``, ``python``, ``log-directory``, ``local-directory``,
    ``job-extra-directives``, ``job-script-prologue``), then from ccdask's fallbacks (1 core,
    4GB, 1 process, dask-jobqueue's walltime) or the site's SLURM defaults. So ``ccdask reduce
    --slurm`` alone submits the jobs that configuration describes.
    """

    queue: str | None = option(
        None,
        "SLURM partition the worker jobs go to (sbatch -p); None: the site's default",
        check=_non_blank,
        why="a partition name without spaces",
    )
    jobs: int = option(1, "number of SLURM jobs to submit", check=_positive, why="at least one job")
    cores: int | None = option(
        None,
        "cores per job (sbatch --cpus-per-task); None: jobqueue.slurm.cores, else 1",
        check=_positive,
        why="at least one core",
    )
    processes: int | None = option(
        None,
        "dask worker processes per job; they share the job's cores; None: jobqueue.slurm.processes, else 1",
        check=_positive,
        why="at least one process",
    )
    memory: str | None = option(
        None,
        "memory per job (sbatch --mem), shared by its worker processes; None: jobqueue.slurm.memory, else 4GB",
        check=lambda v: _is_size(v, minimum=1),
        why="a size such as '4GB' or '8GiB'",
    )
    walltime: str | None = option(
        None,
        "time limit of each job (sbatch -t); None: jobqueue.slurm.walltime (dask-jobqueue's default 00:30:00)",
        check=lambda v: bool(_WALLTIME.match(v)),
        why="a SLURM time such as '30', '01:00:00' or '1-00:00:00'",
    )
    account: str | None = option(
        None, "account charged for the jobs (sbatch -A)", check=_non_blank, why="an account name without spaces"
    )
    interface: str | None = option(
        None,
        "network interface the scheduler and workers listen on ('ib0', 'eth0'; 'lo' "
        "on a single node); None: the host's default address",
        check=_non_blank,
        why="an interface name such as 'eth0'",
    )
    job_extra_directives: tuple[str, ...] = option(
        (), "extra sbatch options, one per item, e.g. ('--qos=short', '--constraint=haswell')"
    )
    job_script_prologue: tuple[str, ...] = option(
        (),
        "shell lines run in each job before the worker starts, e.g. "
        "('module load python', 'source ~/venv/bin/activate')",
    )
    python: str | None = option(
        None,
        "Python executable on the compute nodes; None: the one running ccdask",
        check=_non_blank,
        why="a path without spaces",
    )
    log_directory: str | None = option(
        None,
        "directory for the jobs' stdout/stderr files; None: slurm-<jobid>.out in the directory ccdask was started from",
        check=lambda v: bool(v.strip()),
        why="a directory path",
    )
    local_directory: str | None = option(
        None,
        "workers' scratch directory on the compute nodes (spilled data); None: dask's temporary directory",
        check=lambda v: bool(v.strip()),
        why="a directory path",
    )
    min_workers: int = option(
        1,
        "workers that must have joined before work starts (others join as their jobs start); at most jobs * processes",
        check=_positive,
        why="at least one worker",
    )
    startup_timeout: float = option(
        600.0,
        "seconds to wait for min_workers to join (queue wait included)",
        check=lambda v: v > 0,
        why="a positive number of seconds",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.processes is None or self.cores is None:
            return  # checked once resolved (see resolved())
        if self.processes > self.cores:
            raise ConfigError(
                f"SlurmConfig: processes={self.processes} is more than cores={self.cores}; "
                "each worker process needs at least one core"
            )
        if self.min_workers > self.jobs * self.processes:
            raise ConfigError(
                f"SlurmConfig: min_workers={self.min_workers} is more than the "
                f"jobs * processes = {self.jobs} * {self.processes} workers submitted"
            )

    @property
    def workers(self) -> int:
        """Dask workers in total once every job runs (``jobs * processes``; unresolved
        ``processes`` counts as one)."""
        return self.jobs * (self.processes or 1)

    def resolved(self) -> SlurmConfig:
        """This config with ``cores``, ``processes``, ``memory`` and ``walltime`` filled from
        dask-jobqueue's configuration (``jobqueue.slurm.*``) where they are ``None``, then from
        ccdask's fallbacks; checked again. Imports dask-jobqueue (its defaults are part of
        dask's configuration once it is imported)."""
        import dask.config

        try:
            import dask_jobqueue  # noqa: F401  (registers jobqueue.slurm.* defaults)
        except ImportError as exc:
            raise CcdaskError("SLURM execution needs dask-jobqueue: pip install 'ccdask[hpc]'") from exc
        fallback: dict[str, Any] = {"cores": 1, "processes": 1, "memory": "4GB", "walltime": "01:00:00"}
        filled = {}
        for name, default in fallback.items():
            if getattr(self, name) is None:
                value = dask.config.get(f"jobqueue.slurm.{name}", default=None)
                filled[name] = default if value is None else value
        if isinstance(filled.get("memory"), int | float):
            filled["memory"] = f"{int(filled['memory'])}B"
        if "walltime" in filled:
            filled["walltime"] = str(filled["walltime"])
        return self.replace(**filled) if filled else self


# Options that only describe the embedded LocalCluster, with their defaults.
_LOCAL_ONLY = {
    "workers": 2,
    "threads_per_worker": 1,
    "memory_limit": "auto",
    "local_directory": None,
}


@dataclass(frozen=True)
class ClusterConfig(ConfigBase):
    """Which cluster runs the computation; one backend at most besides the default.

    Leave ``scheduler``, ``scheduler_file`` and ``slurm`` unset for the embedded
    ``LocalCluster`` (sized by ``workers``, ``threads_per_worker``, ``memory_limit``,
    ``local_directory``); set exactly one of them to use another backend. Local sizing options
    changed from their defaults together with another backend are an error rather than being
    silently ignored.
    """

    workers: int = option(
        2, "worker processes of the embedded LocalCluster", check=_positive, why="at least one worker"
    )
    threads_per_worker: int = option(
        1, "threads in each worker process of the embedded LocalCluster", check=_positive, why="at least one thread"
    )
    memory_limit: str = option(
        "auto",
        "memory limit of each embedded worker ('2GiB', '500MB'); 'auto': the machine's "
        "memory divided between the workers; '0': no limit. Past 60 % of it a worker spills "
        "to disk, at 95 % it is restarted",
        check=lambda v: v == "auto" or _is_size(v),
        why="'auto' or a size such as '2GiB'",
    )
    local_directory: str | None = option(
        None,
        "scratch directory of the embedded workers (spilled data); None: dask's temporary directory",
        check=lambda v: bool(v.strip()),
        why="a directory path",
    )
    scheduler: str | None = option(
        None,
        "address of a running dask scheduler, e.g. 'tcp://10.0.0.5:8786'",
        check=_non_blank,
        why="an address such as 'tcp://host:8786'",
    )
    scheduler_file: str | None = option(
        None,
        "JSON file written by 'dask scheduler --scheduler-file FILE'",
        check=lambda v: bool(v.strip()),
        why="a file path",
    )
    # option() returns a dataclasses.field, which ruff cannot see through.
    slurm: SlurmConfig | None = option(None, "submit dask workers as SLURM jobs")
    dashboard_address: str = option(
        ":0",
        "where the dashboard of a cluster started here listens: ':0' a free port, "
        "':8787' the usual one, 'localhost:8787' only this machine",
        check=lambda v: bool(_DASHBOARD.match(v)),
        why="':PORT' or 'HOST:PORT'",
    )
    silence_logs: bool = option(
        True,
        "show only warnings and errors from the scheduler and workers started here; "
        "false: leave dask's logging configuration alone",
    )
    timeout: float = option(
        30.0,
        "seconds to wait for an existing scheduler (its scheduler file, the connection) and for its first worker",
        check=lambda v: v > 0,
        why="a positive number of seconds",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        chosen = [name for name in ("scheduler", "scheduler_file", "slurm") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ConfigError(
                "ClusterConfig: choose one backend, not "
                + " and ".join(f"{name}={_short(getattr(self, name))}" for name in chosen)
            )
        if not chosen:
            return
        backend = chosen[0]
        for name, default in _LOCAL_ONLY.items():
            value = getattr(self, name)
            if value != default:
                hint = (
                    "size the jobs with slurm.jobs, slurm.cores, slurm.processes and slurm.memory"
                    if backend == "slurm"
                    else "the existing cluster's workers are sized where they are started"
                )
                raise ConfigError(
                    f"ClusterConfig: {name}={value!r} applies to the embedded LocalCluster only "
                    f"and conflicts with {backend}={_short(getattr(self, backend))}; {hint}"
                )
        if backend != "slurm" and self.dashboard_address != ":0":
            raise ConfigError(
                f"ClusterConfig: dashboard_address={self.dashboard_address!r} conflicts with "
                f"{backend}={_short(getattr(self, backend))}: an existing scheduler's dashboard "
                "is set where it is started (dask scheduler --dashboard-address)"
            )

    @property
    def backend(self) -> str:
        """``'local'``, ``'scheduler'``, ``'scheduler_file'`` or ``'slurm'``."""
        for name in ("scheduler", "scheduler_file", "slurm"):
            if getattr(self, name) is not None:
                return name
        return "local"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, *, where: str = "") -> Any:
        """Build from a mapping (a TOML table); ``slurm`` may be a nested table.

        ``slurm = {}`` (or ``[cluster.slurm]`` with no keys) selects SLURM with every default.
        """
        data = dict(data or {})
        slurm = data.get("slurm")
        if isinstance(slurm, dict):
            data["slurm"] = SlurmConfig.from_dict(slurm, where=f"{where}slurm.")
        elif slurm is True:
            data["slurm"] = SlurmConfig()
        elif slurm is False:
            data["slurm"] = None
        return super().from_dict(data, where=where)


def cluster_defaults(**given: Any) -> ClusterConfig:
    """The cluster ``given`` (options set by flags or code, ``None`` values ignored) over the
    ``ccdask.cluster`` table of dask's configuration, over the built-in defaults.

    A backend given here (or local sizing such as ``workers``) wins over the backend of dask's
    configuration, whose options for another backend are then left out rather than reported as
    a conflict; ``ccdask.cluster.slurm`` completes a ``slurm`` table given here.
    """
    from .utils._daskconfig import dask_defaults

    given = {k: v for k, v in given.items() if v is not None}
    base = dask_defaults("cluster")
    backends = ("scheduler", "scheduler_file", "slurm")
    if any(b in given for b in backends):
        slurm_base = base.get("slurm") if "slurm" in given else None
        base = {k: v for k, v in base.items() if k not in backends and k not in _LOCAL_ONLY}
        if isinstance(slurm_base, dict) and isinstance(given["slurm"], dict):
            # --slurm with a few flags: the other SLURM options from ccdask.cluster.slurm
            given["slurm"] = {**slurm_base, **given["slurm"]}
    elif any(k in given for k in _LOCAL_ONLY):
        base = {k: v for k, v in base.items() if k not in backends}  # the flags chose the local cluster
    where = "dask configuration ccdask.cluster: " if base else ""
    return ClusterConfig.from_dict({**base, **given}, where=where)


def _short(value: object) -> str:
    """A backend option for messages: strings quoted, a SlurmConfig by its queue and jobs."""
    if isinstance(value, SlurmConfig):
        return f"SlurmConfig(queue={value.queue!r}, jobs={value.jobs})"
    return repr(value)


@contextlib.contextmanager
def open_client(config: ClusterConfig | None = None, *, client: Any = None) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster ``config`` describes, closed on exit.

    Parameters
    ----------
    config : ClusterConfig, optional
        The backend and its options; ``None`` is ``ClusterConfig()``, an embedded
        ``LocalCluster`` of two single-threaded worker processes.
    client : distributed.Client, optional
        A client the caller manages (for instance on a ``PBSCluster``). It is yielded unchanged
        and left open; ``config`` is then not used.

    Yields
    ------
    distributed.Client
        Never the global default client. Whatever this function started (the cluster, its
        processes, the SLURM jobs) is stopped when the ``with`` block exits, also on errors.

    Raises
    ------
    ConfigError
        ``config`` or ``client`` is not of the right type.
    CcdaskError
        The cluster cannot be started or reached, or no worker joined in time; the message
        says which backend, address or queue, and where to look.
    """
    if client is not None:
        from distributed import Client

        if not isinstance(client, Client):
            raise ConfigError(f"client must be a distributed.Client, not {type(client).__name__}")
        yield client
        return
    if config is None:
        config = ClusterConfig()
    if not isinstance(config, ClusterConfig):
        raise ConfigError(f"config must be a ClusterConfig, not {type(config).__name__}")
    starters = {
        "local": _start_local,
        "scheduler": _start_scheduler,
        "scheduler_file": _start_scheduler_file,
        "slurm": _start_slurm,
    }
    with contextlib.ExitStack() as stack:
        yield starters[config.backend](config, stack)


class LazyClient:
    """A client opened on first use: :meth:`get` starts the cluster ``config`` describes (once,
    through :func:`open_client`), and leaving the ``with`` block stops whatever was started.

    A reduction with nothing left to compute never calls :meth:`get`, so it starts no cluster
    (and imports no ``distributed``); :attr:`started` says whether one was started.
    ``on_start(client, stack)`` runs once the client is up (to print where it computes, or to
    enter contexts such as a performance report on ``stack``, closed before the client).
    """

    def __init__(
        self,
        config: ClusterConfig | None = None,
        *,
        on_start: Callable[[Any, contextlib.ExitStack], None] | None = None,
    ) -> None:
        self.config = config if config is not None else cluster_defaults()
        self.on_start = on_start
        self._client: Any = None
        self._stack = contextlib.ExitStack()

    @property
    def started(self) -> bool:
        return self._client is not None

    def get(self) -> Any:
        """The client, starting the cluster on the first call."""
        if self._client is None:
            client = self._stack.enter_context(open_client(self.config))
            self._client = client
            if self.on_start is not None:
                self.on_start(client, self._stack)
        return self._client

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LazyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_level(config: ClusterConfig) -> int | bool:
    return logging.WARNING if config.silence_logs else False


def _start_local(config: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    memory = config.memory_limit
    limit: str | int = "auto" if memory == "auto" else parse_bytes(memory)
    kwargs: dict[str, Any] = {
        "n_workers": config.workers,
        "threads_per_worker": config.threads_per_worker,
        "processes": True,
        "memory_limit": limit,
        "dashboard_address": config.dashboard_address,
        "silence_logs": _log_level(config),
    }
    if config.local_directory is not None:
        kwargs["local_directory"] = config.local_directory
    try:
        cluster = LocalCluster(**kwargs)
    except Exception as exc:
        raise CcdaskError(
            f"could not start the embedded LocalCluster ({config.workers} worker processes, "
            f"memory limit {memory}): {type(exc).__name__}: {exc}"
        ) from exc
    stack.callback(cluster.close)
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)
    return client


def _connect(
    address: str | None,
    scheduler_file: str | None,
    config: ClusterConfig,
    what: str,
    stack: contextlib.ExitStack,
    hint: str = "",
) -> Any:
    """Connect to an existing scheduler and wait for its first worker."""
    from distributed import Client

    try:
        if scheduler_file is not None:
            client = Client(scheduler_file=scheduler_file, timeout=config.timeout, set_as_default=False)
        else:
            client = Client(address, timeout=config.timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise CcdaskError(
            f"cannot connect to the dask scheduler at {what} within {config.timeout:g} s: {exc}. "
            f"Is it running, and reachable from here (host, port, firewall, SSH tunnel)?{hint}"
        ) from exc
    stack.callback(client.close)
    try:
        client.wait_for_workers(1, timeout=config.timeout)
    except TimeoutError as exc:
        raise CcdaskError(
            f"the dask scheduler at {what} has no worker after {config.timeout:g} s; start some "
            f"with 'dask worker {client.scheduler.address}' (or "
            "'dask worker --scheduler-file FILE')"
        ) from exc
    return client


def _start_scheduler(config: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    return _connect(config.scheduler, None, config, repr(config.scheduler), stack)


def _start_scheduler_file(config: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    path = os.path.abspath(os.path.expanduser(str(config.scheduler_file)))
    deadline = time.monotonic() + config.timeout
    address = None
    while address is None:
        try:
            with open(path, encoding="utf-8") as handle:
                address = json.load(handle)["address"]
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            # Possibly caught half-written; give up only at the deadline.
            if time.monotonic() > deadline:
                raise CcdaskError(f"{path}: not a dask scheduler file ({exc})") from exc
        if address is None:
            if time.monotonic() > deadline:
                raise CcdaskError(
                    f"scheduler file {path} did not appear within {config.timeout:g} s; start a "
                    f"scheduler with 'dask scheduler --scheduler-file {path}'"
                )
            time.sleep(0.1)
    return _connect(
        None,
        path,
        config,
        f"{address!r} (from {path})",
        stack,
        hint=" Or is the file left over from a scheduler that has stopped?",
    )


def slurm_cluster_kwargs(config: ClusterConfig) -> tuple[SlurmConfig, dict[str, Any]]:
    """The resolved SLURM options of ``config`` and the ``SLURMCluster`` keyword arguments they
    make: options left at ``None`` are not passed, so dask-jobqueue takes them from its own
    configuration (``jobqueue.slurm.*``)."""
    assert config.slurm is not None
    slurm = config.slurm.resolved()
    kwargs: dict[str, Any] = {
        "cores": slurm.cores,
        "processes": slurm.processes,
        "memory": slurm.memory,
        "walltime": slurm.walltime,
        "silence_logs": _log_level(config),
        "scheduler_options": {"dashboard_address": config.dashboard_address},
    }
    optional = {
        "queue": slurm.queue,
        "account": slurm.account,
        "interface": slurm.interface,
        "python": slurm.python,
        "log_directory": slurm.log_directory,
        "local_directory": slurm.local_directory,
        "job_extra_directives": list(slurm.job_extra_directives) or None,
        "job_script_prologue": list(slurm.job_script_prologue) or None,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    return slurm, kwargs


def _start_slurm(config: ClusterConfig, stack: contextlib.ExitStack) -> Any:
    from distributed import Client

    slurm, kwargs = slurm_cluster_kwargs(config)
    from dask_jobqueue import SLURMCluster

    if slurm.log_directory is not None:
        os.makedirs(slurm.log_directory, exist_ok=True)
    try:
        cluster = SLURMCluster(**kwargs)
    except Exception as exc:
        raise CcdaskError(
            f"could not start the dask scheduler for SLURM workers (queue {slurm.queue!r}): {type(exc).__name__}: {exc}"
        ) from exc
    stack.callback(_close_jobqueue_cluster, cluster)
    client = Client(cluster, set_as_default=False)
    stack.callback(client.close)
    queue = repr(slurm.queue) if slurm.queue else "the default partition"
    _check_job_script(cluster.job_script(), queue)
    try:
        cluster.scale(jobs=slurm.jobs)
    except Exception as exc:
        raise CcdaskError(
            f"could not submit {slurm.jobs} SLURM job(s) to {queue}: {type(exc).__name__}: {str(exc).strip()}"
        ) from exc
    _wait_for_slurm_workers(client, cluster, slurm)
    return client


def _check_job_script(script: str, queue: str) -> None:
    """Ask SLURM whether it would accept the worker job (``sbatch --test-only``).

    ``SLURMCluster.scale`` submits in the background and only logs a refusal, so an unknown
    partition or an impossible memory request would otherwise surface as a startup timeout.
    """
    import tempfile

    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise CcdaskError(
            "sbatch is not on PATH: SLURM workers can only be submitted from a "
            "machine with the SLURM client commands (a login node)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="ccdask-job-") as handle:
        handle.write(script)
        handle.flush()
        try:
            done = subprocess.run(
                [sbatch, "--test-only", handle.name], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise CcdaskError(f"cannot run 'sbatch --test-only' to check the worker job for {queue}: {exc}") from exc
    if done.returncode != 0:
        reason = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
        raise CcdaskError(f"SLURM refuses the dask worker job for {queue}: {reason}")


def _close_jobqueue_cluster(cluster: Any) -> None:
    """Close a dask-jobqueue cluster and scancel its jobs, whatever state they are in.

    ``SpecCluster.close`` asserts that every job object it made and that is still referenced
    somewhere is closing, closed or failed, but a dask-jobqueue job keeps the state 'running'
    after ``scancel`` and a job whose ``sbatch`` failed stays 'created'. When such an object is
    still alive (a traceback holding it is enough), close would raise before stopping the
    cluster's event loop thread. Mark them first: they are being closed.
    """
    from distributed.core import Status

    jobs = [*getattr(cluster, "workers", {}).values(), *getattr(cluster, "_created", ())]
    for job in jobs:
        status = getattr(job, "status", None)
        if status == Status.created:
            job.status = Status.failed
        elif status == Status.running:
            job.status = Status.closing
    del jobs
    cluster.close()


def _job_ids(cluster: Any) -> list[str]:
    """SLURM job ids of the cluster's submitted jobs (those with an id so far)."""
    ids = []
    for job in list(getattr(cluster, "workers", {}).values()):
        job_id = getattr(job, "job_id", None)
        if job_id:
            ids.append(str(job_id))
    return sorted(ids, key=lambda i: (len(i), i))


def _queued(ids: list[str]) -> dict[str, str] | None:
    """``{job id: 'STATE reason'}`` of those ``ids`` SLURM still lists; None if unknown."""
    squeue = shutil.which("squeue")
    if squeue is None or not ids:
        return None
    try:
        out = subprocess.run(
            [squeue, "-h", "-o", "%i %T %R", "-u", str(os.getuid())],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    listed = {}
    for line in out.splitlines():
        job_id, _, rest = line.strip().partition(" ")
        if job_id in ids:
            listed[job_id] = rest
    return listed


def _wait_for_slurm_workers(client: Any, cluster: Any, slurm: SlurmConfig) -> None:
    """Wait for ``slurm.min_workers``; fail early when every job has already ended."""
    deadline = time.monotonic() + slurm.startup_timeout
    submitted = False
    queue = repr(slurm.queue) if slurm.queue else "the default partition"
    while True:
        remaining = deadline - time.monotonic()
        try:
            # Short waits at first, so that jobs dying at once are reported at once.
            step = 2.0 if slurm.startup_timeout - remaining < 60 else 10.0
            client.wait_for_workers(slurm.min_workers, timeout=max(0.1, min(step, remaining)))
            return
        except TimeoutError:
            pass
        ids = _job_ids(cluster)
        if len(getattr(cluster, "workers", {})) >= slurm.jobs and not ids:
            # Every sbatch call has returned and none gave a job id.
            raise CcdaskError(
                f"sbatch failed for every dask worker job submitted to {queue}; its error is in the log above"
            )
        submitted = submitted or len(ids) >= slurm.jobs
        listed = _queued(ids) if submitted else None
        where = (
            f"the job logs in {slurm.log_directory}"
            if slurm.log_directory
            else "the slurm-<jobid>.out files in the directory ccdask was started from"
        )
        if listed is not None and not listed:
            raise CcdaskError(
                f"every SLURM job submitted to {queue} (ids {', '.join(ids)}) ended before "
                f"{slurm.min_workers} dask worker(s) joined; see {where} for why "
                "(Python not found on the node? scheduler unreachable? see slurm.interface)"
            )
        if remaining <= 0:
            states = ", ".join(f"{i}: {s}" for i, s in (listed or {}).items()) or "unknown"
            raise CcdaskError(
                f"only {_running_workers(client)} of {slurm.min_workers} dask worker(s) joined "
                f"within {slurm.startup_timeout:g} s of submitting {slurm.jobs} SLURM job(s) to "
                f"{queue} (job states: {states}); check 'squeue -u $USER' for why they wait and "
                f"{where}; raise slurm.startup_timeout for busy queues"
            )


def _workers(client: Any) -> list[dict[str, Any]]:
    """The scheduler's information on every worker (all of them, not the first few)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before 2025 has no n_workers and returns them all
        info = client.scheduler_info()
    return list(info["workers"].values())


def _running_workers(client: Any) -> int:
    try:
        return len(_workers(client))
    except Exception:
        return 0


def describe_client(client: Any) -> str:
    """One line about where ``client`` computes, for the caller to print.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    str
        The backend (cluster class or scheduler address; SLURM job ids where known), the number
        of workers and threads, the memory limit per worker and the dashboard link, e.g.
        ``'LocalCluster at tcp://127.0.0.1:40121: 2 workers, 2 threads, memory limit
        1.00 GiB per worker; dashboard http://127.0.0.1:8787/status'``.
    """
    from dask.utils import format_bytes

    cluster = getattr(client, "cluster", None)
    address = client.scheduler.address
    if cluster is None:
        backend = f"scheduler {address}"
    else:
        backend = f"{type(cluster).__name__} at {address}"
        ids = _job_ids(cluster)
        if ids:
            backend += f" (SLURM jobs {', '.join(ids)})"
    workers = _workers(client)
    if not workers:
        sizes = "no workers yet"
    else:
        threads = sum(w.get("nthreads", 0) for w in workers)
        limits = sorted({w.get("memory_limit") or _UNLIMITED_MEMORY for w in workers})
        if limits == [_UNLIMITED_MEMORY]:
            memory = "no memory limit"
        elif len(limits) == 1:
            memory = f"memory limit {format_bytes(limits[0])} per worker"
        else:
            memory = f"memory limits {format_bytes(limits[0])} to {format_bytes(limits[-1])} per worker"
        sizes = (
            f"{len(workers)} worker{'s' if len(workers) != 1 else ''}, {threads} "
            f"thread{'s' if threads != 1 else ''}, {memory}"
        )
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        link = None
    dashboard = f"dashboard {link}" if link else "no dashboard"
    return f"{backend}: {sizes}; {dashboard}"
