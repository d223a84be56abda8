"""ccdask's defaults from dask's own configuration: the ``ccdask:`` namespace of dask's YAML files.

dask reads YAML files from ``~/.config/dask/``, ``/etc/dask/`` and the folder named by
``DASK_CONFIG``, and ``DASK_*`` environment variables (``DASK_CCDASK__CLUSTER__WORKERS=4``)::

    # ~/.config/dask/ccdask.yaml
    ccdask:
      cluster:            # ClusterConfig: the embedded LocalCluster, or a backend
        workers: 4
        memory-limit: 6GiB
      reduce:             # ReduceConfig: any option of the night's TOML file, same nesting
        bias:
          combine:
            memory-per-task: 256 MiB

Precedence, highest first: a command-line flag, the night's TOML file (``--config``), dask's
configuration, the built-in default. Keys may be written with ``-`` or ``_``. The
``jobqueue.slurm`` section of dask's configuration (dask-jobqueue's own) sizes SLURM jobs when
neither a flag nor ``ccdask.cluster.slurm`` does (see :class:`ccdask.cluster.SlurmConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["dask_defaults", "merge"]


def _underscored(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).replace("-", "_"): _underscored(v) for k, v in value.items()}
    return value


def dask_defaults(section: str) -> dict[str, Any]:
    """The ``ccdask.<section>`` table of dask's configuration (``{}`` when there is none)."""
    import dask.config

    value = dask.config.get(f"ccdask.{section}", default=None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"dask configuration ccdask.{section}: a mapping of options expected, not {value!r}")
    out: dict[str, Any] = _underscored(value)
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, table by table (a value in ``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
