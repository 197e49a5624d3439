"""One lab run: start the server, record it by pid, drive the load, stop, collect.

The recorder runs as its own `herdtrace record --pid` process, as a user would
run it, so that it neither shares a GIL with the load generator nor hides a
CLI path from the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from herdtrace.collectors.session import DONE_LINE, READY_LINE
from herdtrace.errors import HerdtraceError
from herdtrace.workloads.lab import GroundTruth, LabServer
from herdtrace.workloads.loadgen import LoadOptions, LoadResult, run_load
from herdtrace.workloads.pipes import lines_within
from herdtrace.workloads.server import ServerOptions

ATTACH_TIMEOUT_S = 60.0


def attach_timeout_s() -> float:
    """How long the recorder may take to compile and attach: seconds here, minutes on
    an emulated CPU (make test-kernels boots its guests under qemu's TCG and sets
    HERDTRACE_ATTACH_TIMEOUT_S)."""
    raw = os.environ.get("HERDTRACE_ATTACH_TIMEOUT_S")
    if raw is None:
        return ATTACH_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise HerdtraceError(f"HERDTRACE_ATTACH_TIMEOUT_S must be a positive number of seconds, got {raw!r}")
    return value


def record_argv(pid: int, output: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The recorder as a user runs it: the one place its command line is built."""
    return [sys.executable, "-m", "herdtrace", "record", "--pid", str(pid), "-o", str(output),
            "--force", *extra]


class RecordingProcess:
    """`herdtrace record --pid PID -o FILE` in the background, ready once attached."""

    def __init__(self, pid: int, output: Path, extra: tuple[str, ...] = ()) -> None:
        self.output = output
        cmd = record_argv(pid, output, extra)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._await_ready()

    def _read_until(self, prefix: str, timeout: float) -> bool:
        """Read stderr lines until one starts with prefix (True) or EOF/timeout (False)."""
        assert self.proc.stderr is not None
        for line in lines_within(self.proc.stderr, timeout):
            self.lines.append(line.rstrip())
            if line.startswith(prefix):
                return True
        return False

    def _await_ready(self) -> None:
        if self._read_until(READY_LINE, attach_timeout_s()):
            return
        self.proc.kill()
        self.proc.wait()
        last = self.lines[-1] if self.lines else "no output"
        raise HerdtraceError(f"herdtrace record did not attach: {last}")

    def wait(self, timeout: float = 60.0) -> list[str]:
        """Wait until the recording is written (the recorder stops when its target exits).

        The recorder then detaches its probes, which takes the kernel a second or
        two; that happens in the background, overlapping whatever runs next.
        """
        if not self._read_until(DONE_LINE, timeout):
            self.interrupt()
            if not self._read_until(DONE_LINE, timeout):
                self.proc.wait(timeout)
                raise HerdtraceError(f"herdtrace record failed: {self.lines[-1] if self.lines else ''}")
        return self.lines

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)


@dataclass(frozen=True)
class RunSpec:
    mode: str
    workers: int = 4
    threads: bool = False
    rate: float | None = None
    concurrency: int | None = 1
    connections: int | None = 1000
    duration: float | None = None
    traced: bool = True
    load_tool: str = "builtin"  # builtin, ab or wrk


@dataclass
class RunResult:
    spec: RunSpec
    truth: GroundTruth
    load: LoadResult
    recording: Path | None
    recorder_log: list[str] = field(default_factory=list)


def run_once(spec: RunSpec, recording: Path | None) -> RunResult:
    if spec.traced and recording is None:
        raise HerdtraceError("a traced run needs a recording path")
    from herdtrace.bench.tools import drive

    with LabServer(ServerOptions(mode=spec.mode, workers=spec.workers, threads=spec.threads,
                                 port=0)) as server:
        recorder = (RecordingProcess(server.pid, recording, ("--label", spec.mode))
                    if spec.traced and recording else None)
        try:
            load_opts = LoadOptions(port=server.port, rate=spec.rate,
                                    concurrency=spec.concurrency, connections=spec.connections,
                                    duration=spec.duration)
            load = run_load(load_opts) if spec.load_tool == "builtin" else drive(spec.load_tool,
                                                                                load_opts)
            truth = server.stop()
        except BaseException:
            if recorder is not None:
                recorder.interrupt()
                recorder.proc.wait()
            raise
        log = recorder.wait() if recorder is not None else []
    return RunResult(spec=spec, truth=truth, load=load,
                     recording=recording if recorder else None, recorder_log=log)
