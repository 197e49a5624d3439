"""Raw records spooled to disk, turned into Parquet row groups by a low-priority process.

The recording process only appends the ring's frames to `OUTPUT.spool` as the
kernel wrote them (header and record, fixed size: one write from the mapped
ring into the page cache, no copy of its own): it must keep draining the
kernel's ring however busy the machine is. A second process, at nice 19,
follows the spool, strips the headers and writes Parquet row groups, but only
while the machine has a CPU to spare (or the spool has grown past its backlog
limit, or recording has ended): nice 19 does not make encoding free, it takes
the same cores the traced server needs, so under a saturating load encoding
waits, as perf defers decoding to report time. Being a
separate process, a descheduled writer can never hold up the drain (a thread
could, holding the GIL), and a recorder that dies still leaves a complete file.

The writer is started while the probes compile, pays its start-up then (imports,
file open, pyarrow's one-time set-up: ~0.5 s of CPU, at normal priority so that a
busy machine does not hold it up), drops to nice 19 and says it is ready: under
load it costs the traced server nothing until it has measured a spare CPU.

At the end the recording process writes `OUTPUT.spool.done` (the metadata) and
closes the writer's stdin; the writer finishes the spool, writes the footer,
removes both files and exits. That pipe is how the writer waits: with nothing to
encode it sleeps on it up to IDLE_WAIT_S, and wakes at once when the recorder
hangs up (finished, or died: the kernel closes the pipe).

Run as: python -m herdtrace.collectors.spool OUTPUT RECORDER_PID
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from herdtrace.collectors.ringbuf import frame_size, records_of
from herdtrace.collectors.writer import RecordingWriter, warm_up
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta
from herdtrace.schema import EVENT_DTYPE, EVENT_SIZE
from herdtrace.workloads.pipes import lines_within

FRAME = frame_size(EVENT_SIZE)
ROW_GROUP = 65536
FLUSH_S = 1.0
WRITER_READY = "ready"
# Encode while at least this much of the machine's CPU time was idle over the last
# IDLE_PERIOD_S; past the backlog limit (bytes not yet encoded), encode regardless.
IDLE_FRACTION = 0.4
IDLE_PERIOD_S = 0.1  # a load that starts is noticed within this (0.5 s let ~25k rows through)
# Rows waiting for a spare CPU: looked at once a period (each look is a fresh
# measurement; at 0.05 s every other one was not, and each look costs a wakeup).
IDLE_SLEEP_S = IDLE_PERIOD_S
IDLE_WAIT_S = 1.0  # nothing to encode: idle costs one wakeup a second, not twenty
BACKLOG_MIN = 1 << 30
BACKLOG_MAX = 64 << 30


def backlog_limit(directory: Path) -> int:
    """How much spool may wait for an idle CPU: a quarter of the space free beside
    the recording, within BACKLOG_MIN..BACKLOG_MAX (at 50k records/s, 1 GiB is
    under three minutes of a saturated server, 64 GiB three hours)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return BACKLOG_MIN
    return max(BACKLOG_MIN, min(BACKLOG_MAX, st.f_bavail * st.f_frsize // 4))


class IdleMeter:
    """Whether the machine had CPU to spare lately, from /proc/stat."""

    def __init__(self) -> None:
        self.last = (0, 0)
        self.at: float | None = None  # the first call starts the first period
        self.idle = False  # until a period has been measured: deferring is always safe

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return (0, 0)
        return sum(fields[3:5]), sum(fields)  # idle + iowait, total

    def restart(self) -> None:
        """After a long wait: judge only what comes next (a load that just began)."""
        self.at = None
        self.idle = False

    def spare(self) -> bool:
        now = time.monotonic()
        if self.at is None:
            self.last, self.at = self._read(), now
        elif now - self.at >= IDLE_PERIOD_S:
            cur = self._read()
            total = cur[1] - self.last[1]
            self.idle = total <= 0 or (cur[0] - self.last[0]) / total >= IDLE_FRACTION
            self.last, self.at = cur, now
        return self.idle


def spool_path(output: Path) -> Path:
    return output.with_name(output.name + ".spool")


def done_path(output: Path) -> Path:
    return output.with_name(output.name + ".spool.done")


class SpoolFile:
    """The recording process's side: append records, then hand over the metadata."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = spool_path(output)
        done_path(output).unlink(missing_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.writer = subprocess.Popen(
            [sys.executable, "-m", "herdtrace.collectors.spool", str(output), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the writer has started (see the module's doc)."""
        assert self.writer.stdout is not None
        if not any(line.strip() == WRITER_READY for line in lines_within(self.writer.stdout, timeout)):
            self.writer.kill()
            self.writer.wait()
            raise HerdtraceError(f"the recording writer did not start: {self._writer_error()}")

    def append(self, frames: memoryview) -> None:
        data = frames
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
        if self.writer.poll() is not None:
            raise HerdtraceError(f"the recording writer stopped: {self._writer_error()}")

    def _writer_error(self) -> str:
        err = self.writer.stderr.read() if self.writer.stderr else ""
        lines = err.strip().splitlines()
        return lines[-1] if lines else f"exit {self.writer.returncode}"

    def finish(self, metadata: dict[str, Any], timeout: float = 600.0) -> None:
        """Hand over the metadata and wait until the Parquet file is complete."""
        os.close(self.fd)
        tmp = done_path(self.output).with_suffix(".tmp")
        tmp.write_text(json.dumps(metadata))
        tmp.rename(done_path(self.output))  # atomic: the writer sees all of it or nothing
        assert self.writer.stdin is not None
        self.writer.stdin.close()  # after the rename: a hang-up with no metadata is a death
        try:
            self.writer.wait(timeout)
        except subprocess.TimeoutExpired:
            self.writer.kill()
            raise HerdtraceError("the recording writer did not finish in time") from None
        if self.writer.returncode != 0:
            raise HerdtraceError(f"writing {self.output} failed: {self._writer_error()}")

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait()
        for p in (self.path, done_path(self.output), self.output):
            p.unlink(missing_ok=True)


def hung_up(fd: int, seconds: float) -> bool:
    """Wait up to `seconds` for the recorder to close our stdin (it never writes)."""
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready) and os.read(fd, 1) == b""


def follow(output: Path, parent: int, hangup: int) -> None:
    """The writer process: spool -> Parquet row groups, until the metadata arrives.

    Row groups of ROW_GROUP rows, or whatever arrived within FLUSH_S, written while
    the machine has CPU to spare (IdleMeter) or once recording has ended. If the
    recording process dies without handing over metadata, the file is still
    finished, saying so, with what the spool held.
    """
    spool, done = spool_path(output), done_path(output)
    writer = RecordingWriter(output)
    warm_up()
    pending: list[np.ndarray] = []
    buffered = 0
    last_write = time.monotonic()
    orphaned = gone = False
    meter = IdleMeter()
    limit = backlog_limit(output.parent)
    # Start-up at normal priority (at nice 19 on a saturated machine it took longer
    # than the probes' compile, and held up the start), then out of the way.
    with contextlib.suppress(OSError):
        os.nice(19)
    print(WRITER_READY, flush=True)
    with spool.open("rb") as f:
        while True:
            finished = done.exists()  # checked before reading: no record can follow it
            orphaned = not finished and (gone or os.getppid() != parent)
            backlog = spool.stat().st_size - f.tell()
            if not (backlog or buffered or finished or orphaned):
                gone = hung_up(hangup, IDLE_WAIT_S)
                meter.restart()
                continue
            must = finished or orphaned or backlog > limit
            if not (must or meter.spare()):
                gone = hung_up(hangup, IDLE_SLEEP_S)
                continue
            rows = min(backlog // FRAME, ROW_GROUP - buffered)
            if rows:
                pending.append(records_of(f.read(rows * FRAME), EVENT_DTYPE))
                buffered += rows
            end = (finished or orphaned) and not rows
            due = buffered >= ROW_GROUP or end or time.monotonic() - last_write >= FLUSH_S
            # Asked again: load may have begun while these rows were read.
            if buffered and due and (must or meter.spare()):
                writer.write(np.concatenate(pending))
                pending, buffered, last_write = [], 0, time.monotonic()
            if end:
                break
            if not rows:
                gone = hung_up(hangup, IDLE_SLEEP_S)
    meta = json.loads(done.read_text()) if not orphaned else orphan_metadata()
    writer.close(meta)
    spool.unlink()
    done.unlink(missing_ok=True)


def orphan_metadata() -> dict[str, Any]:
    return RecordingMeta(stop_reason="recorder died", lost_events=None).to_json()


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # the recorder decides when to stop
        signal.signal(sig, signal.SIG_IGN)
    follow(Path(sys.argv[1]), int(sys.argv[2]), sys.stdin.fileno())


if __name__ == "__main__":
    main()
