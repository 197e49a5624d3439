"""Start and stop a lab server from Python and get its ground truth back.

The server runs as its own process (`herdtrace lab serve`), so that it can be
traced by pid and does not share a GIL with the caller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from herdtrace.errors import HerdtraceError
from herdtrace.workloads.pipes import lines_within
from herdtrace.workloads.server import GroundTruth, ServerOptions

START_TIMEOUT_S = 20.0


def serve_command(opts: ServerOptions, stats: Path) -> list[str]:
    cmd = [sys.executable, "-m", "herdtrace", "lab", "serve", "--mode", opts.mode,
           "--workers", str(opts.workers), "--host", opts.host, "--port", str(opts.port),
           "--backlog", str(opts.backlog), "--stats", str(stats)]
    if opts.threads:
        cmd.append("--threads")
    return cmd


class LabServer:
    """`with LabServer(opts) as srv: ...; truth = srv.stop()`"""

    def __init__(self, opts: ServerOptions) -> None:
        self.opts = opts
        self._dir = tempfile.TemporaryDirectory(prefix="herdtrace-lab-")
        self.stats_path = Path(self._dir.name) / "truth.json"
        self._log = Path(self._dir.name) / "server.log"
        self.command = serve_command(opts, self.stats_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.truth: GroundTruth | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self) -> LabServer:
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        for line in lines_within(self.proc.stdout, START_TIMEOUT_S):  # ends if it dies
            self.port = int(json.loads(line)["port"])
            return self
        self._abort()
        raise HerdtraceError(f"lab server did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        text = self._log.read_text(errors="replace").strip() if self._log.exists() else ""
        return text.splitlines()[-1] if text else "no output"

    def _abort(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> GroundTruth:
        """SIGTERM the server, wait for it, and read what its workers counted."""
        assert self.proc is not None, "server not started"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._abort()
            raise HerdtraceError("lab server did not stop within its timeout") from None
        if not self.stats_path.exists():
            raise HerdtraceError(f"lab server wrote no ground truth: {self.log_tail()}")
        self.truth = GroundTruth.from_json(json.loads(self.stats_path.read_text()))
        return self.truth

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if et is None:
                self.stop()
            else:
                self._abort()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._dir.cleanup()
