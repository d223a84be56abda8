"""``ccdask reduce`` at the terminal and on reruns.

- A rerun over a finished night decides from the catalogue, the plan, the cache and the outputs'
  CCDKEYs that nothing is left, and ends without starting a cluster: the manifest says so, the
  process never imports ``distributed``, and the outputs are untouched.
- A partly finished night (one reduced file removed) starts the cluster for what is left only:
  every master comes from the cache (no master task), the missing file is made again, equal to
  the first run's.
- ``--log-json`` gives one JSON line per stage computed; ``--report`` writes dask's
  performance report.
- Under a pseudo-terminal the bar of each stage advances (tasks done out of the total,
  Mpix/s, elapsed, remaining) and reaches the total.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from ccdask.cli._main import EXIT_OK, main
from ccdask.cli._progress import format_bar
from ccdask.simulate._night import simulate_night
from tests.cli.test_fast import imported_by


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Two chips of 192 x 160 pixels; 3 biases, 2 darks, 2 g flats, 3 g science frames."""
    return simulate_night(
        tmp_path_factory.mktemp("rerun-night"),
        chips=2,
        amps=2,
        size="small",
        nbias=3,
        ndark=2,
        nflat=2,
        filters=("g",),
        nscience=3,
        seed=11,
    )


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _planes(path):
    with fits.open(path) as hdul:
        return {(h.name, h.ver): h.data.copy() for h in hdul if h.data is not None}


@pytest.mark.slow
def test_rerun_with_nothing_to_do_starts_no_cluster_and_a_partial_one_only_what_is_left(night, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["reduce", str(night.raw_dir), "--out", str(out), "--workers", "1"]
    assert main(args) == EXIT_OK
    first = _manifest(out)
    assert first["cluster_started"] is True
    reduced = sorted((out / "reduced").glob("*.fits"))
    assert len(reduced) == 3
    stamps = {p: p.stat().st_mtime_ns for p in [*reduced, *(out / "masters").glob("*.fits")]}
    capsys.readouterr()

    # nothing to do: decided before any cluster, in a process that never imports distributed
    modules, done = imported_by(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no cluster started" in done.stdout
    assert "ccdask.night._reduce" in modules and "distributed" not in modules
    again = _manifest(out)
    assert again["cluster_started"] is False
    assert again["outputs"]["reduced"] == [] and len(again["outputs"]["skipped"]) == 3
    assert all(rec.get("tasks", 0) == 0 for rec in again["timings"].values() if isinstance(rec, dict))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # partly done: one output removed; the cluster runs the science stage for it alone
    gone = reduced[1]
    before = _planes(gone)
    gone.unlink()
    report = tmp_path / "report.html"
    assert main([*args, "--log-json", "--report", str(report)]) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    stages = {line["stage"]: line for line in lines if "stage" in line}
    assert set(stages) == {"science"}, stages  # no master stage computed anything
    raw_file = next(p for p in night.raw_dir.rglob("*.fits") if p.name == gone.name)
    with fits.open(raw_file) as hdul:  # the raw pixels of the one exposure left to reduce
        pixels = sum(h.header["NAXIS1"] * h.header["NAXIS2"] for h in hdul if h.header.get("NAXIS") == 2)
    assert stages["science"]["tasks"] > 0
    assert stages["science"]["raw_mpix"] == pytest.approx(pixels / 1e6, abs=1e-3)
    assert lines[-1]["done"] is True and lines[-1]["reduced"] == 1 and lines[-1]["cluster_started"] is True
    partial = _manifest(out)
    assert partial["cluster_started"] is True and partial["outputs"]["reduced"] == [str(gone)]
    assert all(partial["timings"][s]["built"] == 0 for s in ("bias", "dark", "flat-g"))
    after = _planes(gone)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert report.stat().st_size > 0 and "Dask Performance Report" in report.read_text()


def test_format_bar_reports_rate_and_time_left():
    text = format_bar("science", 10, 40, raw_pixels=80_000_000, elapsed=5.0, width=8)
    # a quarter of 80 Mpix in 5 s; 30 tasks left at 10 tasks per 5 s
    assert text == "science [##------] 10/40 tasks     4.0 Mpix/s  0:05 elapsed  0:15 left"
    assert format_bar("bias", 0, 7, 1, 0.0).endswith("-:-- left")


_BAR = re.compile(r"(\S+) \[[#-]+\] +(\d+)/(\d+) tasks +[\d.]+ Mpix/s +[\d:]+ elapsed +[\d:-]+ left")


@pytest.mark.slow
def test_the_bar_advances_under_a_terminal(night, tmp_path):
    out = tmp_path / "tty"
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccdask", "reduce", str(night.raw_dir), "--out", str(out), "--workers", "1"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    # a bar is redrawn with carriage returns, never a newline: each line of the output holds
    # the states of one computation (a stage may compute twice: its frames, then its masters)
    runs = []
    for line in text.split("\n"):
        seq = [(stage, int(d), int(t)) for stage, d, t in _BAR.findall(line)]
        if seq:
            runs.append(seq)
    assert any(seq[0][0] == "science" for seq in runs), text[-3000:]
    for seq in runs:
        dones = [d for _, d, _ in seq]
        assert dones == sorted(dones), seq  # never goes back
        assert seq[-1][1] == seq[-1][2], seq  # ends at the stage's total
    # the bar moved while a stage ran: some computation was drawn at two or more counts
    assert any(len({d for _, d, _ in seq}) >= 2 for seq in runs), runs
    assert "\x1b[2K" in text  # redrawn in place, not one line per state
    assert "reduced 3 exposure(s)" in text
