"""One console line as each scan of the participant graph finishes, with the time left.

Nipype calls ``status_callback(node, status)`` for every node of the flat graph ("start", then
"end" or "exception"), under MultiProc and Linear alike; cached nodes end too. A scan is done
when every node of its sub-workflow has ended, failed as soon as one raises. MultiProc runs the
graph breadth first (every scan's N4, then every registration, ...), so scans tend to finish
together at the end: the time left is judged on the share of all nodes ended, and a line is
printed at every tenth of them.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 05 min``: precision a person can use."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class ScanProgress:
    """Counts the nodes of each scan's sub-workflow and prints ``[k/N]`` lines.

    ``scans`` maps a node-name prefix (``sub_01_wf.t1w_wf.``) to the scan's key; ``expected``
    holds how many nodes each prefix has; ``describe(node)`` may return a result text (brain
    age and flags) from a node that has just ended.
    """

    def __init__(self, scans: dict[str, str], expected: dict[str, int], *,
                 describe: Callable | None = None, quiet: bool = False, stream=None):  # fmt:skip
        self.scans, self.expected = scans, expected
        self.describe, self.quiet = describe, quiet
        self.stream = stream or sys.stdout
        self.ended = dict.fromkeys(scans, 0)
        self.started_at: dict[str, float] = {}
        self.result: dict[str, str] = {}
        self.finished: set[str] = set()
        self.clock = time.monotonic()
        self.nodes_total = sum(expected.get(p, 0) for p in scans)
        self.nodes_ended = 0
        self.tenths_shown = 0
        # levels below the top workflow that name a scan (sub_01_wf.t1w_wf. → 2)
        self.depth = next(iter(scans), ".").count(".")

    def _prefix_of(self, node) -> str | None:
        """``top_wf.sub_01_wf.t1w_wf.anat_wf.n4`` → ``sub_01_wf.t1w_wf.`` (a dict lookup: this
        runs in the scheduler for every node event).
        """
        parts = (getattr(node, "fullname", None) or "").split(".")
        prefix = ".".join(parts[1 : 1 + self.depth]) + "."
        return prefix if len(parts) > self.depth + 1 and prefix in self.scans else None

    def __call__(self, node, status: str) -> None:
        prefix = self._prefix_of(node)
        if prefix is None or prefix in self.finished:
            return
        now = time.monotonic()
        if status == "start":
            self.started_at.setdefault(prefix, now)
            return
        if status == "exception":  # its other nodes stop counting (none of their events will)
            self.nodes_total -= self.expected.get(prefix, 0) - self.ended[prefix]
            self._finish(prefix, f"FAILED at {node.name} (see logs/crash-*.txt)", now)
            return
        if status != "end":
            return
        if self.describe is not None:
            try:
                text = self.describe(node)
            except Exception:  # a progress line must never cost the run
                text = None
            if text:
                self.result[prefix] = text
        self.ended[prefix] += 1
        self.nodes_ended += 1
        tenths = 10 * self.nodes_ended // max(self.nodes_total, 1)
        if self.ended[prefix] >= self.expected.get(prefix, 0):
            took = now - self.started_at.get(prefix, now)
            text = f"done in {format_seconds(took)}"
            if prefix in self.result:
                text += f", {self.result[prefix]}"
            self._finish(prefix, text, now)
        elif tenths > self.tenths_shown and self.nodes_ended < self.nodes_total:
            self._write(f"{10 * tenths} % of the steps ended{self._time_left(now)}")
        self.tenths_shown = max(self.tenths_shown, tenths)

    def _time_left(self, now: float) -> str:
        """``; about 12 min left`` from the share of all nodes ended (not of scans finished)."""
        if not self.nodes_ended or self.nodes_ended >= self.nodes_total:
            return ""
        left = (now - self.clock) / self.nodes_ended * (self.nodes_total - self.nodes_ended)
        return f"; about {format_seconds(left)} left"

    def _finish(self, prefix: str, text: str, now: float) -> None:
        self.finished.add(prefix)
        if len(self.finished) < len(self.scans):
            text += self._time_left(now)
        self._write(f"{self.scans[prefix]}: {text}")

    def _write(self, text: str) -> None:
        if not self.quiet:
            # tqdm.write keeps the line whole when several processes print at once
            line = f"[{len(self.finished)}/{len(self.scans)}] {text}"
            tqdm.write(line, file=self.stream)
            self.stream.flush()


def brain_age_text(node) -> str | None:
    """``brain age 47.2 y (flags: none)`` from a finished ``predict`` node (its first model)."""
    if node.name != "predict":
        return None
    import pandas as pd

    table = pd.read_csv(node.result.outputs.out_table, sep="\t", na_values="n/a",
                        keep_default_na=False)  # fmt:skip
    if table.empty:
        return None
    row = table.iloc[0]
    flags = row["flags"] if isinstance(row.get("flags"), str) else "none"
    return f"brain age {row['predicted_age']:.1f} y (flags: {flags})"
