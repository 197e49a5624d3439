"""The tracers compared: none, herdtrace, a bpftrace counting script, perf record."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from herdtrace.probes.features import REQUIRED_TRACEPOINTS

# The same tracepoints herdtrace attaches, for bpftrace and perf.
TRACEPOINTS = [*REQUIRED_TRACEPOINTS, "sock:sk_data_ready"]


def bpftrace_script() -> str:
    probes = ",\n".join(f"tracepoint:{tp}" for tp in TRACEPOINTS)
    return f"{probes}\n{{ @[probe] = count(); }}\n"


class Tracer:
    name = "untraced"

    def start(self, pids: list[int], workdir: Path) -> None:
        self.pids = pids

    def stop(self) -> dict[str, object]:
        return {}


class _Process(Tracer):
    proc: subprocess.Popen[str]

    def _wait_for(self, marker: str, timeout: float = 60.0) -> None:
        stream = self.proc.stdout or self.proc.stderr
        assert stream is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([stream], [], [], 0.2)[0]:
                line = stream.readline()
                if not line:
                    break
                if marker in line:
                    return
        raise RuntimeError(f"{self.name} did not start")

    def _interrupt(self) -> str:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        out, err = self.proc.communicate(timeout=120)
        return (out or "") + (err or "")


class Herdtrace(_Process):
    name = "herdtrace"
    extra: tuple[str, ...] = ()

    def start(self, pids: list[int], workdir: Path) -> None:
        self.output = workdir / "herdtrace.parquet"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herdtrace", "record", "--pid", str(pids[0]), "-o",
             str(self.output), "--force", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_for("herdtrace: recording")

    def stop(self) -> dict[str, object]:
        text = self._interrupt()
        done = [ln for ln in text.splitlines() if ln.startswith("herdtrace: recorded")]
        from herdtrace.analysis.load import read_metadata

        _, meta = read_metadata(self.output)
        return {"lost_events": meta["lost_events"], "summary": done[-1] if done else "",
                "bytes": self.output.stat().st_size}


class HerdtraceBesidePerf(Herdtrace):
    """herdtrace letting a concurrent perf record see the tracepoints (size run)."""

    extra = ("--let-perf-see",)


class Bpftrace(_Process):
    name = "bpftrace"

    def start(self, pids: list[int], workdir: Path) -> None:
        script = workdir / "count.bt"
        script.write_text(bpftrace_script())
        self.proc = subprocess.Popen(["bpftrace", str(script)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._wait_for("Attaching")
        time.sleep(0.5)  # bpftrace prints before the last attach completes

    def stop(self) -> dict[str, object]:
        out = self._interrupt()
        return {"counted": sum(int(ln.rsplit(":", 1)[1]) for ln in out.splitlines()
                               if ln.startswith("@[") and ln.rsplit(":", 1)[1].strip().isdigit())}


class PerfRecord(_Process):
    name = "perf record"

    def start(self, pids: list[int], workdir: Path) -> None:
        self.output = workdir / "perf.data"
        events = [arg for tp in TRACEPOINTS for arg in ("-e", tp)]
        ctl, ack = workdir / "perf-ctl", workdir / "perf-ack"
        for fifo in (ctl, ack):
            fifo.unlink(missing_ok=True)
            os.mkfifo(fifo)
        # System-wide, as a perf user must: sched_waking fires in the waker's context
        # (a client, a softirq), which per-task (-p) events never see. Started
        # disabled, then enabled over its control fifo: recording has surely begun
        # when perf acknowledges.
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-a", "-D", "-1", "--control", f"fifo:{ctl},{ack}",
             "-o", str(self.output), *events],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with ctl.open("w") as c, ack.open() as a:
            c.write("enable\n")
            c.flush()
            if a.readline().strip() != "ack":
                raise RuntimeError("perf record did not acknowledge enable")

    def stop(self) -> dict[str, object]:
        out = self._interrupt()
        lost = [ln for ln in out.splitlines() if "lost" in ln.lower()]
        return {"bytes": self.output.stat().st_size if self.output.exists() else 0,
                "messages": lost[-3:]}


def available() -> list[type[Tracer]]:
    found: list[type[Tracer]] = [Tracer, Herdtrace]
    if shutil.which("bpftrace"):
        found.append(Bpftrace)
    if shutil.which("perf"):
        found.append(PerfRecord)
    return found


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="herdtrace-perf-"))
