"""``OUT/manifest.json``: what a reduction read, made, skipped and used, and how long it took."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..catalog import Catalog, Entry
from ..config import ReduceConfig
from ..frame import Master
from ..utils import atomic_write_text
from ._plan import Plan
from ._stages import NightMasters

__all__ = ["write_manifest"]


def write_manifest(
    out: Path, catalog: Catalog, plan: Plan, cfg: ReduceConfig, result: Any, masters: NightMasters, *, total: float
) -> Path:
    """Write the manifest atomically: inputs with identities, problems, notes, outputs, masters
    (with cache keys), parameters, version, timings and task groups per stage."""

    def ident(e: Entry) -> dict[str, Any]:
        return {
            "path": e.path,
            "hdu": e.hdu,
            "chip": e.chip,
            "imagetyp": e.imagetyp,
            "label": e.label,
            "exptime": e.exptime,
            "filter": e.filter,
            "size": e.size,
            "mtime_ns": e.mtime_ns,
        }

    def row(m: Master, **where: Any) -> dict[str, Any]:
        return {**where, "cache_key": m.meta.get("cache_key"), "ncombine": m.ncombine}

    rows = []
    for kind, ms in (("bias", masters.bias), ("dark", masters.dark)):
        rows += [row(m, kind=kind, chip=c) for c, m in ms.items()]
    if cfg.dark.mode == "nearest":
        rows += [row(m, kind="dark", chip=c, exptime=t) for (c, t), m in masters.dark_groups.items()]
    for filt, ms in masters.flats.items():
        rows += [row(m, kind="flat", filter=filt, chip=c) for c, m in ms.items()]
    for filt, ms in masters.fringes.items():
        rows += [row(m, kind="fringe", filter=filt, chip=c) for c, m in ms.items()]
    doc = {
        "ccdask_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [ident(e) for e in catalog],
        "problems": [{"path": p.path, "hdu": p.hdu, "reason": p.reason} for p in catalog.problems],
        "notes": list(plan.notes),
        "outputs": {"reduced": result.outputs, "skipped": result.skipped, "masters": result.masters},
        "masters": rows,
        "read_noise": result.read_noise,
        "cluster_started": result.cluster_started,
        "parameters": cfg.to_dict(),
        "timings": {
            "total_seconds": total,
            **{k: {kk: vv for kk, vv in v.items() if kk != "task_groups"} for k, v in result.stages.items()},
        },
        "task_groups": {k: v.get("task_groups", {}) for k, v in result.stages.items()},
    }
    return atomic_write_text(out / "manifest.json", json.dumps(doc, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
