"""`herdtrace record --backend dtrace`: run kevent.d, parse as it streams, write a recording."""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from herdtrace import procfs
from herdtrace.collectors import listeners
from herdtrace.collectors.dtrace_parser import DtraceParser, ParseStats
from herdtrace.collectors.session import (
    READY_LINE,
    RecordOptions,
    RecordSummary,
    Sink,
    base_metadata,
    stop_reason,
)
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta

SCRIPT = Path(__file__).resolve().parent.parent / "probes" / "kevent.d"
PROBES = {
    "syscall::kevent,accept,accept4,poll,select:entry/return": "dtrace syscall",
    "sched:::wakeup,sleep,on-cpu": "dtrace sched",
    "proc:::lwp-exit": "dtrace proc",
    "tcp:::accept-established": "dtrace tcp",
    "fbt::solisten_wakeup,knote,wakeup_one:entry": "dtrace fbt (optional, -Z)",
}


def dtrace_metadata(base: RecordingMeta, stats: ParseStats) -> RecordingMeta:
    return replace(
        base, probes=PROBES,
        attribution="solisten_wakeup" if stats.enrichments.get("solisten_wakeup") else "none",
        cpu_time="on-cpu to sleep",
        lost_events=stats.lost_events,
        lost_per_cpu=[stats.lost_per_cpu.get(c, 0)
                      for c in range(max(stats.lost_per_cpu, default=-1) + 1)],
        dtrace_other_drops=stats.other_drops, dtrace_errors=stats.dtrace_errors,
        malformed_lines=stats.malformed, malformed_examples=stats.malformed_examples,
        wakings_merged=stats.wakings_merged, enrichments=stats.enrichments,
        dtrace_messages=stats.messages,
    )


def convert_transcript(
    lines: Iterable[str], stderr: Iterable[str], opts: RecordOptions, reason: str = "transcript"
) -> RecordSummary:
    """A saved kevent.d transcript (and dtrace's stderr) -> a recording."""
    opts.validate_output()
    parser = DtraceParser()
    sink = Sink(opts.output)
    for line in lines:
        parser.feed(line)
    for line in stderr:
        parser.feed_stderr(line)
    sink.write(parser.finish())
    return _close(sink, parser, opts, "dtrace", 0, 0, 0, reason)


def _close(sink: Sink, parser: DtraceParser, opts: RecordOptions, backend: str, start_ns: int,
           end_ns: int, wall_offset: int, reason: str) -> RecordSummary:
    meta = dtrace_metadata(base_metadata(opts, backend, start_ns, end_ns, wall_offset, reason,
                                         sink.rows), parser.stats)
    sink.close(meta)
    return sink.summary(opts, (end_ns - start_ns) / 1e9, parser.stats.lost_events, None, reason)


def dtrace_command(opts: RecordOptions) -> list[str]:
    dtrace = shutil.which("dtrace")
    if dtrace is None:
        raise HerdtraceError("dtrace not found: the dtrace backend needs FreeBSD, macOS or illumos "
                             "with DTrace (on Linux use --backend bcc)")
    if len(opts.pids) > 1:
        raise HerdtraceError("the dtrace backend traces one --pid (with its descendants)")
    target = ["-p", str(opts.pids[0])] if opts.pids else ["-c", shlex.join(opts.command)]
    return [dtrace, "-Z", "-q", "-s", str(SCRIPT), *target]


def record_dtrace(
    opts: RecordOptions, stop: threading.Event,
    on_ready: Callable[[str], None] | None = None,
    on_done: Callable[[RecordSummary], None] | None = None,
) -> RecordSummary:
    opts.validate()
    if os.geteuid() != 0:
        raise HerdtraceError("recording with dtrace needs root: run with sudo")
    cmd = dtrace_command(opts)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    parser = DtraceParser(listeners.ports_of(procfs.descendants(opts.pids))
                          if opts.pids else None)
    sink = Sink(opts.output)
    try:
        start_ns = time.monotonic_ns()
        wall_offset = time.time_ns() - start_ns
        reason = "target exited"
        streams = {proc.stdout: parser.feed, proc.stderr: parser.feed_stderr}
        last_flush = time.monotonic()
        interrupted = False
        while streams:
            for stream in select.select(list(streams), [], [], 0.1)[0]:
                line = stream.readline()
                if not line:
                    del streams[stream]
                    continue
                streams[stream](line)
                if on_ready and parser.saw_header:
                    on_ready(f"{READY_LINE} {' '.join(cmd[-2:])} with dtrace -> {opts.output} "
                             "(Ctrl-C to stop)")
                    on_ready = None
            if time.monotonic() - last_flush >= opts.flush_interval_s:
                sink.write(parser.take())
                last_flush = time.monotonic()
            asked = stop_reason(stop, opts, start_ns)
            if not interrupted and asked:
                reason = asked
                proc.send_signal(signal.SIGINT)  # dtrace prints what it has buffered and exits
                interrupted = True
        proc.wait()
        if proc.returncode not in (0, 130, -signal.SIGINT) and not parser.saw_header:
            last = parser.stats.messages[-1] if parser.stats.messages else "no message"
            raise HerdtraceError(f"dtrace failed (exit {proc.returncode}): {last}")
        sink.write(parser.finish())
        summary = _close(sink, parser, opts, "dtrace", start_ns, time.monotonic_ns(), wall_offset,
                         reason)
        if on_done:
            on_done(summary)
        return summary
    except BaseException:
        sink.abandon()
        raise
