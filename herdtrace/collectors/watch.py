"""`herdtrace top`'s collector: every listener on the host, traced as `record` traces
a pid, summarized per listener every interval.

The Recorder's probes, drain and (with -o) recording, with three differences:
the targets are the processes holding a TCP listening socket (found in /proc,
and again whenever the host's listening sockets change), a target exiting does
not end it, and every interval the events since the last one are summarized per
listener by analysis.per_listener, the functions `analyze` uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from herdtrace import procfs
from herdtrace.analysis import load, per_listener
from herdtrace.collectors import listeners, targets
from herdtrace.collectors.bpf_collector import Recorder, thread_rows, total_misses
from herdtrace.collectors.session import RecordOptions, RecordSummary, Sink
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta
from herdtrace.probes import program
from herdtrace.schema import EVENT_DTYPE
from herdtrace.validate import check_output, check_port, check_positive

FULL_SCAN_EVERY = 10  # intervals: catch listeners in other network namespaces too


@dataclass(frozen=True)
class TopOptions:
    interval_s: float = 1.0
    count: int | None = None  # intervals, None: until stopped
    ports: tuple[int, ...] = ()
    pids: tuple[int, ...] = ()
    output: Path | None = None  # also write a recording of everything traced
    force: bool = False
    probe: program.ProbeOptions = field(default_factory=program.ProbeOptions)

    def validate(self) -> None:
        check_positive("INTERVAL", self.interval_s)
        if self.count is not None and self.count < 1:
            raise HerdtraceError(f"COUNT must be at least 1, got {self.count}")
        for port in self.ports:
            check_port(port)
        targets.require_alive(self.pids)
        if self.output is not None:
            check_output(self.output, self.force)


@dataclass
class Interval:
    """One interval's report: what `top --json` prints as a line."""

    ts: float  # wall clock at its end, s since the epoch
    interval_s: float
    lost_events: int
    probe_misses: int | None
    listeners: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"ts": round(self.ts, 3), "interval_s": round(self.interval_s, 3),
                "lost_events": self.lost_events, "probe_misses": self.probe_misses,
                "listeners": self.listeners}


def _listening_inodes() -> frozenset[int]:
    return frozenset(listeners.listening_sockets())


class Watcher(Recorder):
    def __init__(self, top: TopOptions, on_interval: Callable[[Interval], None]) -> None:
        super().__init__(RecordOptions(output=top.output or Path("top.parquet"), probe=top.probe,
                                       force=top.force, label="top"))
        self.top = top
        self.on_interval = on_interval
        self.traced_pids: set[int] = set()
        self.pending: list[np.ndarray] = []
        self.intervals = 0
        self.inodes: frozenset[int] = frozenset()
        self.interval_start = (0.0, 0)  # monotonic s and ns
        self.lost_before = 0
        self.modes: dict[tuple[str, int], str | None] = {}
        self.misses_before: int | None = 0

    def _validate(self) -> None:
        self.top.validate()

    def _make_sink(self) -> Sink:
        return Sink(self.top.output, tap=self.pending.append)

    def _scope(self) -> list[int] | None:
        return procfs.descendants(self.top.pids) if self.top.pids else None

    def _discover(self, now_ns: int) -> list[targets.ThreadInfo]:
        """Scan for listeners; trace the threads of processes not traced yet."""
        self.inodes = _listening_inodes()
        added: list[targets.ThreadInfo] = []
        before: list[int] = []
        # Twice when the first pass traced anything: a worker a holder forked, or a
        # thread it started, while the pass traced it (before the kernel followed its
        # forks) is caught by the second.
        for _ in range(2):
            self.listeners = [lst for lst in listeners.scan(self._scope(), self.top.ports)
                              if self._wanted(lst)]
            fresh = sorted({pid for lst in self.listeners for pid in lst.pids} - self.traced_pids)
            if not fresh and not before:
                break
            added += self._trace(targets.threads_of(sorted({*before, *fresh})), now_ns)
            self.traced_pids.update(fresh)
            before = fresh
        self._trace_ports({lst.port for lst in self.listeners})
        return added

    def _wanted(self, listener: listeners.Listener) -> bool:
        return True

    def _attach(self, start_ns: int) -> None:
        self.traced_at_start = self._discover(start_ns)
        self.interval_start = (time.monotonic(), start_ns)

    def _ready_line(self) -> str:
        n = len(self.listeners)
        return (f"herdtrace: watching {n} listener{'s' if n != 1 else ''} "
                f"({len(self.traced_pids)} processes, {len(self.traced_at_start)} threads)"
                + (f" -> {self.top.output}" if self.top.output else "") + " (Ctrl-C to stop)")

    def _tick(self, now: float) -> str | None:
        if now - self.interval_start[0] < self.top.interval_s:
            return None
        self._report(now)
        self.intervals += 1
        if self.top.count is not None and self.intervals >= self.top.count:
            return "count"
        if self.intervals % FULL_SCAN_EVERY == 0 or _listening_inodes() != self.inodes:
            now_ns = time.monotonic_ns()
            infos = self._discover(now_ns)
            self._write(thread_rows(infos, now_ns))
            self.traced_at_start += infos
        return None

    def _counts(self) -> tuple[int, int | None]:
        return sum(self._counters()["lost_events"]), total_misses(self._probe_misses())

    def _report(self, now: float) -> None:
        self._drain()
        end_ns = time.monotonic_ns()
        start_s, start_ns = self.interval_start
        events = np.concatenate(self.pending) if self.pending else np.zeros(0, EVENT_DTYPE)
        self.pending.clear()
        lost, misses = self._counts()
        meta = RecordingMeta(attribution=self.plan.attribution if self.plan else None,
                             cpu_time=self.plan.cpu_time if self.plan else "sched_switch",
                             start_monotonic_ns=start_ns, end_monotonic_ns=end_ns,
                             lost_events=lost, probe_misses=misses)
        rec = load.recording_from_events(events, meta, Path("top"), "top")
        elapsed = now - start_s
        rows = per_listener.by_listener(rec, self.listeners, elapsed)
        for row in rows:  # an idle listener keeps the wait it was last seen in
            key = (row["addr"], row["port"])
            row["mode"] = row["mode"] or self.modes.get(key)
            self.modes[key] = row["mode"]
        self.on_interval(Interval(ts=time.time(), interval_s=elapsed,
                                  lost_events=lost - self.lost_before,
                                  probe_misses=None if misses is None or self.misses_before is None
                                  else misses - self.misses_before,
                                  listeners=rows))
        self.lost_before, self.misses_before = lost, misses
        self.interval_start = (now, end_ns)


def watch(top: TopOptions, on_interval: Callable[[Interval], None], stop: threading.Event,
          on_ready: Callable[[str], None] | None = None) -> RecordSummary:
    """Watch until `stop` is set or COUNT intervals are out."""
    watcher = Watcher(top, on_interval)
    try:
        return watcher.run(stop, on_ready)
    finally:
        watcher.close()
