"""What every collector shares: options, the summary line, running counts, metadata."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from herdtrace import __version__
from herdtrace.collectors import targets
from herdtrace.collectors.ringbuf import Frames, frames_of, records_of
from herdtrace.collectors.spool import SpoolFile
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta, TargetMeta
from herdtrace.probes import program
from herdtrace.schema import EAGAIN, SCHEMA_VERSION, Kind
from herdtrace.validate import check_output, check_positive

READY_LINE = "herdtrace: recording"
DONE_LINE = "herdtrace: recorded"


@dataclass(frozen=True)
class RecordOptions:
    output: Path
    pids: tuple[int, ...] = ()
    command: tuple[str, ...] = ()
    duration: float | None = None
    probe: program.ProbeOptions = field(default_factory=program.ProbeOptions)
    force: bool = False
    label: str | None = None  # how analyze groups recordings (default: the file name)
    flush_interval_s: float = 1.0  # dtrace: how often parsed lines go to the spool
    drain_interval_s: float = 0.005  # the drain's clock adapts between these two
    drain_interval_max_s: float = 0.1

    def validate_output(self) -> None:
        check_output(self.output, self.force)

    def validate(self) -> None:
        if not self.pids and not self.command:
            raise HerdtraceError("nothing to record: give --pid PID or --port PORT (repeatable), or -- COMMAND [ARGS]")
        if self.pids and self.command:
            raise HerdtraceError("give --pid/--port or -- COMMAND [ARGS], not both")
        check_positive("--duration", self.duration)
        self.validate_output()
        targets.require_alive(self.pids)
        if self.command:
            targets.require_command(self.command[0])


@dataclass
class RecordSummary:
    output: Path
    duration_s: float
    wakeups: int
    accepts: int
    accept_eagain: int
    connections: int | None  # None: not followed (--no-connections)
    threads: int
    lost_events: int
    probe_misses: int | None
    rows: int
    stop_reason: str
    wakings_unseen: int = 0
    conns_evicted: int = 0

    def line(self) -> str:
        conns = "connections not followed" if self.connections is None else f"{self.connections} connections"
        return (
            f"{DONE_LINE} {self.duration_s:.1f}s: {self.wakeups} wakeups, {self.accepts} accepts, "
            f"{self.accept_eagain} EAGAINs, {conns}, "
            f"lost {self.lost_events}, probe misses "
            f"{'unknown' if self.probe_misses is None else self.probe_misses} -> {self.output}"
        )


class Tally:
    """Running counts over everything written, for the summary line."""

    def __init__(self) -> None:
        self.by_kind = np.zeros(8, dtype=np.int64)
        self.accepts = 0
        self.eagain = 0
        self.processes: set[int] = set()  # every process a traced thread belonged to

    def add(self, ev: np.ndarray) -> None:
        """Counts a batch (a strided view of the ring is fine): one pass over the
        kinds, then only the rows of the kinds that need more."""
        kind = ev["kind"]
        by_kind = np.bincount(kind, minlength=8)[:8]
        self.by_kind += by_kind
        if by_kind[Kind.THREAD]:
            self.processes.update(int(p) for p in np.unique(ev["tgid"][kind == Kind.THREAD]))
        if by_kind[Kind.ACCEPT]:
            ret = ev["ret"][kind == Kind.ACCEPT]
            self.accepts += int(np.count_nonzero(ret >= 0))
            self.eagain += int(np.count_nonzero(ret == -EAGAIN))


class Sink:
    """The recording being written, with its running counts.

    Records go to a spool that a low-priority process turns into Parquet row
    groups (collectors/spool.py): the recording process never encodes. Without
    a path (`top` with no -o) nothing is written; `tap` sees every batch.
    """

    def __init__(self, path: Path | None, tap: Callable[[np.ndarray], None] | None = None) -> None:
        self.path = path
        self.spool = SpoolFile(path) if path is not None else None
        self.tap = tap
        self.tally = Tally()
        self.rows = 0

    def write(self, ev: np.ndarray) -> None:
        """Records made in user space (thread rows, closing wakeups, DTrace's)."""
        if len(ev):
            self.write_frames(frames_of(ev))

    def write_frames(self, frames: Frames) -> None:
        """Records as the ring holds them: spooled as they are, counted from the view."""
        ev = frames.records
        if len(ev) == 0:
            return
        if self.spool is not None:
            self.spool.append(frames.raw)
        if self.tap is not None:
            # A copy (the ring reuses its space once the frames are released), of the
            # bytes: a structured array's strided copy takes ~6x as long.
            self.tap(records_of(frames.raw, ev.dtype))
        self.tally.add(ev)
        self.rows += len(ev)

    def ready(self) -> None:
        """Wait until the writer process has started (see collectors/spool.py)."""
        if self.spool is not None:
            self.spool.wait_ready()

    def close(self, metadata: RecordingMeta) -> None:
        """Hand over the metadata; returns once the file is complete."""
        if self.spool is not None:
            self.spool.finish(metadata.to_json())

    def abandon(self) -> None:
        if self.spool is not None:
            self.spool.abandon()

    def summary(self, opts: RecordOptions, duration_s: float, lost: int,
                probe_misses: int | None, reason: str) -> RecordSummary:
        t = self.tally
        return RecordSummary(
            output=opts.output, duration_s=duration_s,
            wakeups=int(t.by_kind[Kind.WAKEUP]), accepts=t.accepts, accept_eagain=t.eagain,
            connections=int(t.by_kind[Kind.CONN]) if opts.probe.connections else None,
            threads=int(t.by_kind[Kind.THREAD]),
            lost_events=lost, probe_misses=probe_misses, rows=self.rows, stop_reason=reason,
        )


def stop_reason(stop: threading.Event, opts: RecordOptions, start_ns: int) -> str | None:
    """Why recording must end now, whichever collector: a signal or the duration."""
    if stop.is_set():
        return "signal"
    if opts.duration is not None and time.monotonic_ns() - start_ns >= opts.duration * 1e9:
        return "duration"
    return None


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def base_metadata(
    opts: RecordOptions, backend: str, start_ns: int, end_ns: int, wall_offset_ns: int,
    reason: str, rows: int,
) -> RecordingMeta:
    """Metadata every recording carries, whichever collector made it (each adds its own
    with dataclasses.replace)."""
    return RecordingMeta(
        schema_version=SCHEMA_VERSION, label=opts.label, herdtrace_version=__version__,
        backend=backend, kernel_release=platform.release(), os=platform.system(),
        hostname=socket.gethostname(), cpus=os.cpu_count(),
        start_time=iso(start_ns + wall_offset_ns), end_time=iso(end_ns + wall_offset_ns),
        start_monotonic_ns=start_ns, end_monotonic_ns=end_ns,
        wall_minus_monotonic_ns=wall_offset_ns, herdtrace_command=list(sys.argv), rows=rows,
        stop_reason=reason,
        target=TargetMeta(pids=list(opts.pids), command=list(opts.command)),
    )
