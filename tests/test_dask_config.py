"""ccdask's defaults from dask's configuration: a real YAML file found through ``DASK_CONFIG``, read
by a fresh interpreter (dask reads its files at import), with the precedence flag > night TOML >
dask configuration > built-in default; and ``--slurm`` alone sizing the jobs from dask-jobqueue's
``jobqueue.slurm`` section, checked in the job script ``SLURMCluster`` writes (no sbatch needed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

YAML = """\
ccdask:
  cluster:
    workers: 3
    memory-limit: 1GiB
  reduce:
    overscan:
      method: median
    bias:
      combine:
        memory-per-task: 128 MiB
jobqueue:
  slurm:
    cores: 8
    memory: 16GB
    processes: 2
    queue: astro
    walltime: '04:00:00'
    account: survey
"""

PROBE = """
import json, sys
from ccdask.cli._main import build_parser
from ccdask.cli._reduce import _reduce_config, cluster_config
from ccdask.cluster import slurm_cluster_kwargs

p = build_parser()
base = ["reduce", "raw", "--out", "o"]
out = {}
c = cluster_config(p.parse_args(base))
out["local"] = [c.backend, c.workers, c.memory_limit]
out["workers_flag"] = cluster_config(p.parse_args(base + ["--workers", "5"])).workers
cfg = _reduce_config(p.parse_args(base))
out["reduce"] = [cfg.bias.combine.memory_per_task, cfg.overscan.method]
cfg = _reduce_config(p.parse_args(base + ["--config", sys.argv[1]]))
out["reduce_toml"] = [cfg.bias.combine.memory_per_task, cfg.overscan.method, cfg.dark.combine.memory_per_task]
scripts = {}
for name, flags in {"alone": ["--slurm"], "flags": ["--slurm", "--slurm-cores", "4", "--slurm-walltime", "00:20:00"]}.items():
    c = cluster_config(p.parse_args(base + flags))
    if sys.argv[2] == "jobqueue":
        from dask_jobqueue import SLURMCluster

        slurm, kwargs = slurm_cluster_kwargs(c)
        cluster = SLURMCluster(**kwargs)
        try:
            scripts[name] = cluster.job_script()
        finally:
            cluster.close()
out["scripts"] = scripts
print(json.dumps(out))
"""


def _probe(tmp_path: Path, yaml_text: str | None) -> dict:
    conf = tmp_path / "dask-config"
    conf.mkdir()
    if yaml_text is not None:
        (conf / "ccdask.yaml").write_text(yaml_text)
    toml = tmp_path / "night.toml"
    toml.write_text('[bias.combine]\nmemory_per_task = "32 MiB"\n')
    try:
        import dask_jobqueue  # noqa: F401

        jq = "jobqueue"
    except ImportError:
        jq = "none"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["DASK_CONFIG"] = str(conf)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(toml), jq],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_defaults_come_from_dask_yaml_below_flags_and_the_night_file(tmp_path):
    from ccdask.config import ReduceConfig

    got = _probe(tmp_path, YAML)
    assert got["local"] == ["local", 3, "1GiB"]  # dask configuration over the built-in 2 and 'auto'
    assert got["workers_flag"] == 5  # the flag over dask configuration
    mib = 2**20
    assert got["reduce"] == [128 * mib, "median"]
    # the night's file wins for what it sets; dask's configuration still fills the rest
    default_dark = ReduceConfig().dark.combine.memory_per_task
    assert got["reduce_toml"] == [32 * mib, "median", default_dark]


def test_without_a_dask_file_the_built_in_defaults_stand(tmp_path):
    from ccdask.cluster import ClusterConfig
    from ccdask.config import ReduceConfig

    got = _probe(tmp_path, None)
    d, c = ReduceConfig(), ClusterConfig()
    assert got["local"] == ["local", c.workers, c.memory_limit]
    assert got["reduce"] == [d.bias.combine.memory_per_task, d.overscan.method]


def test_slurm_alone_submits_the_jobs_dask_jobqueue_configuration_describes(tmp_path):
    pytest.importorskip("dask_jobqueue")
    got = _probe(tmp_path, YAML)
    alone = got["scripts"]["alone"]
    for line in ("#SBATCH -p astro", "#SBATCH -A survey", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00"):
        assert line in alone.splitlines(), alone
    # dask-jobqueue asks sbatch for whole GiB, rounded up
    assert f"#SBATCH --mem={math.ceil(16e9 / 2**30)}G" in alone.splitlines(), alone
    assert "--nworkers 2" in alone and "--nthreads 4" in alone  # 8 cores shared by 2 processes
    # flags win over the configuration, which still fills what they leave out
    flags = got["scripts"]["flags"]
    assert "#SBATCH --cpus-per-task=4" in flags.splitlines() and "#SBATCH -t 00:20:00" in flags.splitlines()
    assert "#SBATCH -p astro" in flags.splitlines() and "--nthreads 2" in flags
