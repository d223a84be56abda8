"""The Dask dashboard of a ccdask reduction, in a real browser (headless Chromium).

A simulated night is reduced on an embedded ``LocalCluster`` while Chromium shows the cluster's
status page (``client.dashboard_link``). The test drives Chromium through its DevTools protocol
(``--remote-debugging-port``, spoken with tornado's websocket client, which distributed already
depends on).

What it proves
--------------
* The status page loads and runs in a real browser during a reduction: BokehJS builds the
  page's document (the *Task Stream* figure, named ``task_stream``, and the *Progress* figure,
  ``task_progress``) and keeps receiving the server's updates.
* ccdask's stage names reach the Task Stream *in the browser*. BokehJS draws the Task Stream on
  a ``<canvas>`` inside shadow roots, so the page's DOM (what ``chromium --dump-dom`` prints) holds
  no task names at all; what the canvas draws comes from the figure's ``ColumnDataSource``,
  whose ``name`` column labels and colours each rectangle (the hover tool shows it with the full
  ``key``). The test reads that data source inside the page (``Runtime.evaluate`` on
  ``Bokeh.documents``), polling while the night is reduced, and checks that the names of
  ccdask's stages appear there (``calibrate-bias``, ``combine-bias``, ``combine-flat-g``,
  ``cache-put-bias``, ``reduce``, ``write-master-bias``...) and that full keys name the exposure
  and chip (``reduce-science_g_000-CCD1-<hash>``). The Progress panel's bars (text drawn on a
  canvas too) are read the same way.

What it does not prove: that the canvas pixels are right (no image analysis beyond "a non-blank
PNG of the right size"). The screenshot is kept as ``docs/dashboard.png`` for people to look at;
runs write it to a temporary folder unless ``CCDASK_UPDATE_SCREENSHOT=1`` asks to refresh it.

Chromium absent: the test is skipped with the reason (``-ra`` prints it); with
``CCDASK_REQUIRE_CHROMIUM=1`` (set by CI after installing Debian's ``chromium``) it fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ccdask.cluster import ClusterConfig, open_client
from ccdask.night._reduce import reduce
from ccdask.simulate._night import simulate_night

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard.png"
WIDTH, HEIGHT = 1400, 1000

# Task-name groups (dask's key_split of ccdask's keys) each stage must show in the Task Stream.
EXPECTED_NAMES = {
    "calibrate-bias",
    "calibrate-flat",  # one raw chip-frame calibrated for a master
    "combine-bias",
    "combine-dark",
    "combine-flat-g",  # stacking tiles of each master
    "cache-put-bias",
    "cache-put-flat",  # masters written into the zarr cache
    "reduce",  # one science chip-frame: reduce-<exposure>-<chip>-<hash>
    "write-master-bias",  # master FITS files
}
KEY_PATTERN = re.compile(r"reduce-science_g_\d{3}-CCD[12]-")

# Reads the data sources of the Task Stream and Progress figures of every Bokeh document.
READ_PAGE_JS = r"""
(() => {
  if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
  const column = (src, name) => {
    const d = src.data;
    const v = (d instanceof Map) ? d.get(name) : d[name];
    return v ? Array.from(v) : [];
  };
  const out = {stream: {}, keys: [], progress: [], figures: 0};
  for (const doc of Bokeh.documents) {
    const ts = doc.get_model_by_name("task_stream");
    if (ts) {
      out.figures += 1;
      for (const r of ts.renderers) {
        const src = r.data_source;
        if (!src) continue;
        for (const n of column(src, "name")) out.stream[n] = (out.stream[n] || 0) + 1;
        for (const k of column(src, "key")) {
          if (/reduce-/.test(String(k)) && out.keys.length < 400) out.keys.push(String(k));
        }
      }
    }
    const tp = doc.get_model_by_name("task_progress");
    if (tp) {
      out.figures += 1;
      for (const r of tp.renderers) {
        if (r.data_source) for (const n of column(r.data_source, "name")) out.progress.push(String(n));
      }
    }
  }
  return JSON.stringify(out);
})()
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def chromium() -> str:
    path = _chromium()
    if path is not None:
        return path
    reason = (
        "no Chromium on PATH (tried chromium, chromium-browser, google-chrome); "
        "install Debian's `chromium` (apt-get install -y chromium)"
    )
    if os.environ.get("CCDASK_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"CCDASK_REQUIRE_CHROMIUM=1 but {reason}")
    print(f"\nskipping the browser test: {reason}")
    pytest.skip(reason)


class Browser:
    """A headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path):
        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # its own process group: close() stops every process it forks
        self.stderr: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        self.port = None
        while self.port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
            elif time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start its DevTools server:\n" + self.log())
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if not pages:
            self.close()
            raise RuntimeError("Chromium has no page target:\n" + self.log())
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self.ws = None
        self.next_id = 0

    def log(self) -> str:
        return "".join(self.stderr[-30:])

    async def connect(self) -> None:
        from tornado.websocket import websocket_connect

        self.ws = await websocket_connect(self.ws_url, max_message_size=256 * 2**20)

    async def call(self, method: str, **params):
        self.next_id += 1
        ident = self.next_id
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), timeout=30)
            if raw is None:
                raise RuntimeError(f"Chromium closed the DevTools connection:\n{self.log()}")
            msg = json.loads(raw)
            if msg.get("id") == ident:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self) -> bytes:
        result = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])

    async def disconnect(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def close(self) -> None:
        """Stop the browser: the process this object started and its process group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # helpers still exiting after the main process
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.slow
def test_dashboard_shows_ccdask_stages_in_chromium(chromium, tmp_path):
    t0 = time.perf_counter()
    night = simulate_night(
        tmp_path / "night", chips=2, size="small", nbias=3, ndark=2, nflat=2, filters=("g",), nscience=2, seed=5
    )
    with open_client(ClusterConfig(workers=2)) as client:
        url = client.dashboard_link
        browser = Browser(chromium, tmp_path / "chromium-profile")
        try:
            seen = asyncio.run(_watch(browser, url, client, night.raw_dir, tmp_path / "out"))
        finally:
            browser.close()
        prefixes = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))

    stream, keys, progress, png = seen["stream"], seen["keys"], seen["progress"], seen["png"]
    missing = EXPECTED_NAMES - set(stream)
    assert not missing, (
        f"stage names missing from the Task Stream data in the browser: {sorted(missing)}; seen: {sorted(stream)}"
    )
    assert prefixes >= EXPECTED_NAMES, "the scheduler itself did not run the expected task groups"
    assert any(KEY_PATTERN.search(k) for k in keys), f"no reduce-<exposure>-<chip> key among {keys[:10]}"
    assert progress & EXPECTED_NAMES, f"the Progress panel never showed a ccdask stage: {sorted(progress)}"

    assert png is not None, "no screenshot was taken"
    assert _png_size(png) == (WIDTH, HEIGHT)
    assert len(png) > 20_000, "the screenshot looks blank"
    # the committed screenshot is refreshed on request only, so a test run leaves the tree clean
    shot = SCREENSHOT if os.environ.get("CCDASK_UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    shot.write_bytes(png)
    print(
        f"\nbrowser test: {time.perf_counter() - t0:.1f} s; stage names seen in the Task Stream: "
        f"{sorted(n for n in stream if n in EXPECTED_NAMES)}; screenshot {shot}"
    )


async def _watch(browser: Browser, url: str, client, raw_dir: Path, out: Path) -> dict:
    """Load ``url``, reduce the night while polling the page, return what the page showed."""
    await browser.connect()
    try:
        return await _watch_page(browser, url, client, raw_dir, out)
    finally:
        await browser.disconnect()


async def _watch_page(browser: Browser, url: str, client, raw_dir: Path, out: Path) -> dict:
    await browser.call("Page.enable")
    await browser.call(
        "Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False
    )
    await browser.call("Page.navigate", url=url)
    deadline = time.monotonic() + 30
    while True:
        state = await browser.evaluate(READ_PAGE_JS)
        if state and json.loads(state)["figures"] >= 2:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the dashboard's status page did not render {url} in 30 s (page state {state!r}):\n{browser.log()}"
            )
        await asyncio.sleep(0.2)

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = reduce(raw_dir, out, client=client)
        except BaseException as exc:  # reported in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="ccdask-reduce")
    worker.start()
    stream: dict[str, int] = {}
    keys: list[str] = []
    progress: set[str] = set()
    best_png, best_score, last_shot = None, -1, 0.0
    finished_at = None
    while True:
        state = json.loads(await browser.evaluate(READ_PAGE_JS) or "{}")
        now_names = set(state.get("stream", {})) & EXPECTED_NAMES
        for name, count in state.get("stream", {}).items():
            stream[name] = max(stream.get(name, 0), count)
        keys.extend(k for k in state.get("keys", []) if k not in keys)
        now_progress = set(state.get("progress", []))
        progress |= now_progress
        # keep the frame that shows the most of ccdask's stages, with bars in the Progress panel
        score = len(now_names) + (2 if now_progress & EXPECTED_NAMES else 0)
        if score > best_score or (score == best_score and time.monotonic() - last_shot > 2):
            best_png, best_score, last_shot = await browser.screenshot(), score, time.monotonic()
        if not worker.is_alive():
            finished_at = finished_at or time.monotonic()
            if time.monotonic() - finished_at > 1.5:  # let the last updates reach the page
                break
        await asyncio.sleep(0.3)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return {"stream": stream, "keys": keys, "progress": progress, "png": best_png}
