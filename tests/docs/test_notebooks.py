"""The notebooks under notebooks/ run from top to bottom, and are stored without outputs.

Each notebook is executed with nbclient in its own temporary working directory (it writes only
there), with a kernel running this interpreter. They use small data: together they are meant to
run in under three minutes on two cores.

- ``03-real-data`` needs the real frames (``shared/data/real`` beside the repository, or
  ``CCDASK_REAL_DATA``); it is skipped, saying where it looked, when they are absent.
- ``04-hpc`` runs its SLURM cells itself when ``sinfo`` shows an idle partition, and otherwise
  prints why it skips them. The test checks that the notebook's decision matches what it sees
  here, and with ``CCDASK_REQUIRE_SLURM=1`` (CI, once SLURM is up) that SLURM was used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REAL

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01-quickstart", "02-dashboard-session", "03-real-data", "04-hpc"]
BUDGET_SECONDS = 180.0
CELL_TIMEOUT = 300
_durations: dict[str, float] = {}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def test_the_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs; strip them before committing"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{name}: widget state in the metadata"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """A kernel spec that runs this very interpreter (so the venv's ccdask is the one imported)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "ccdask-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "ccdask test kernel",
                "language": "python",
            }
        )
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + old if old else "")
    yield "ccdask-test"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _slurm_idle() -> str | None:
    """None when ``sinfo`` shows an idle (or mixed) partition that is up, else why not."""
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a %T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "up" and parts[2].rstrip("*~#") in ("idle", "mixed"):
            return None
    return f"no idle partition: {done.stdout.strip() or done.stderr.strip()!r}"


def _outputs_text(nb: nbformat.NotebookNode) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                chunks.append(out.get("text", ""))
            elif "data" in out:
                chunks.append(out["data"].get("text/plain", ""))
    return "".join(chunks)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, kernel_name, tmp_path, monkeypatch):
    if name == "03-real-data":
        missing = [d for d in ("shane_kast_blue", "wht_isis_red") if not (REAL / d).is_dir()]
        if missing:
            pytest.skip(
                f"real frames not available: {', '.join(str(REAL / d) for d in missing)} absent (set CCDASK_REAL_DATA)"
            )
        monkeypatch.setenv("CCDASK_REAL_DATA", str(REAL))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend
    slurm_reason = _slurm_idle() if name == "04-hpc" else None
    if name == "04-hpc" and slurm_reason and os.environ.get("CCDASK_REQUIRE_SLURM") == "1":
        pytest.fail(f"CCDASK_REQUIRE_SLURM=1 but SLURM is unusable: {slurm_reason}")

    nb = _read(name)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}}
    )
    t0 = time.perf_counter()
    client.execute()
    _durations[name] = time.perf_counter() - t0
    text = _outputs_text(nb)
    print(f"\n{name}: {_durations[name]:.1f} s")

    if name == "04-hpc":
        if slurm_reason is None:
            assert "reduced on SLURM" in text, "SLURM is idle here but the notebook skipped it"
        else:
            assert "SLURM cells skipped:" in text, "the notebook did not say why it skipped SLURM"


def test_notebooks_fit_the_ci_budget():
    """Reported, not enforced: the total depends on the machine's load."""
    if len(_durations) < 2:
        pytest.skip("the notebooks did not all run in this session")
    total = sum(_durations.values())
    print(
        "\nnotebook run times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in _durations.items())
        + f"; total {total:.0f} s (budget {BUDGET_SECONDS:.0f} s)"
    )
    if total > BUDGET_SECONDS:
        warnings.warn(f"the notebooks took {total:.0f} s, over the {BUDGET_SECONDS:.0f} s CI budget", stacklevel=1)
