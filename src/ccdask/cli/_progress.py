"""What ``ccdask reduce`` shows while it runs: a live bar per stage on a terminal, plain lines
otherwise, a JSON line per stage (``--log-json``) or nothing but errors (``--quiet``).

The bar follows the scheduler's own progress feed (the one ``distributed.progress`` uses), so
it is the same on an embedded LocalCluster, a remote scheduler and SLURM workers: tasks done
out of the stage's total, raw megapixels per second, elapsed and remaining time.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

__all__ = ["Reporter", "format_bar"]

MODES = ("bar", "lines", "json", "quiet")


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_bar(stage: str, done: int, total: int, raw_pixels: int, elapsed: float, width: int = 24) -> str:
    """One state of a stage's bar: ``science [######------]  12/38 tasks  45.2 Mpix/s  0:12 elapsed  0:20 left``.

    Mpix/s is the stage's raw pixels times the fraction of tasks done, over the elapsed time;
    the time left extrapolates the elapsed time at the rate tasks have finished so far.
    """
    frac = done / total if total else 1.0
    filled = int(width * frac)
    rate = raw_pixels * frac / 1e6 / elapsed if elapsed > 0 else 0.0
    left = elapsed * (total - done) / done if done else float("nan")
    left_text = _clock(left) if done else "-:--"
    return (
        f"{stage} [{'#' * filled}{'-' * (width - filled)}] {done:>{len(str(total))}}/{total} tasks  "
        f"{rate:6.1f} Mpix/s  {_clock(elapsed)} elapsed  {left_text} left"
    )


class Reporter:
    """The command line's view of a reduction, in one of :data:`MODES`.

    ``log`` takes the reduction's event lines, ``progress`` (None unless ``bar``) draws a bar
    while a stage computes, ``on_stage`` writes the JSON line of a finished stage.
    """

    def __init__(self, mode: str, out: IO[str] | None = None, err: IO[str] | None = None, interval: float = 0.2):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.interval = interval

    def log(self, message: str) -> None:
        if self.mode in ("bar", "lines"):
            print(message, file=self.out, flush=True)

    def on_stage(self, stage: str, record: dict[str, Any], seconds: float) -> None:
        if self.mode != "json":
            return
        pixels = int(record.get("raw_pixels", 0))
        line = {
            "stage": stage,
            "tasks": record.get("tasks", 0),
            "seconds": round(seconds, 3),
            "raw_mpix": round(pixels / 1e6, 3),
            "mpix_per_s": round(pixels / 1e6 / seconds, 3) if seconds > 0 else None,
            "cached": record.get("cached", 0),
            "built": record.get("built", 0),
        }
        print(json.dumps(line), file=self.out, flush=True)

    @property
    def progress(self) -> Any:
        return self._bar if self.mode == "bar" else False

    def _bar(self, stage: str, futures: list[Any], client: Any, record: dict[str, Any]) -> None:
        """Draw ``stage``'s bar from the scheduler's progress feed until its futures are done."""
        from distributed.diagnostics.progressbar import TextProgressBar

        stream, pixels = self.err, int(record.get("raw_pixels", 0))
        t0 = time.perf_counter()

        class _StageBar(TextProgressBar):  # type: ignore[misc]
            def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
                text = format_bar(stage, all - remaining, all, pixels, time.perf_counter() - t0)
                stream.write("\r\x1b[2K  " + text)
                stream.flush()

            def _draw_stop(self, **kwargs: Any) -> None:
                stream.write("\r\x1b[2K")
                stream.flush()

        _StageBar(futures, scheduler=client.scheduler.address, interval=f"{int(self.interval * 1000)}ms")
