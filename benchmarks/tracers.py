"""The tracers compared: none, herdtrace, a bpftrace counting script, perf record."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from herdtrace.bench.runner import record_argv
from herdtrace.probes import program
from herdtrace.probes.features import REQUIRED_TRACEPOINTS
from herdtrace.procfs import descendants
from herdtrace.workloads.pipes import lines_within
from tests.integration.independent import script as counting_script

# The same tracepoints herdtrace attaches, for perf.
TRACEPOINTS = [*REQUIRED_TRACEPOINTS, "sock:sk_data_ready"]


class Tracer:
    name = "untraced"
    cpu_s: float | None = None  # the tracer's own CPU time while the load ran

    def start(self, pids: list[int], workdir: Path) -> None:
        self.pids = pids

    def stop(self) -> dict[str, object]:
        return {}


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime of a process, or of its waited-for children (cutime+cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float:
    """Time a process's live threads have run, to the nanosecond (schedstat), where
    utime+stime count whole clock ticks: 10 ms, a third of a 3 s run's 0.003 cores."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, IndexError, ValueError):  # a thread gone meanwhile; no schedstat
        return cpu_seconds(pid)


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and everything below it, as far as they are alive."""
    total = 0.0
    for pid in descendants((root,)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += run_seconds(pid)
    return total


class _Process(Tracer):
    """A tracer run as a process; its CPU time (with its children's) while the
    load ran is reported as `cpu_s`."""

    proc: subprocess.Popen[str]
    cpu_at_start = 0.0

    def _mark(self) -> None:
        self.cpu_at_start = tree_cpu_seconds(self.proc.pid)

    def _cpu_used(self) -> float:
        return tree_cpu_seconds(self.proc.pid) - self.cpu_at_start

    def _wait_for(self, marker: str, timeout: float = 60.0, stream: IO[str] | None = None) -> None:
        stream = stream or self.proc.stdout or self.proc.stderr
        assert stream is not None
        if not any(marker in line for line in lines_within(stream, timeout)):
            raise RuntimeError(f"{self.name} did not start")
        self._mark()

    def _interrupt(self) -> str:
        self.cpu_s = self._cpu_used()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # seen once with bpftrace: stuck detaching
            self.proc.kill()
            out, err = self.proc.communicate()
            err = (err or "") + f"\n{self.name} did not stop on SIGINT within 120 s: killed"
        return (out or "") + (err or "")


class Herdtrace(_Process):
    name = "herdtrace"
    extra: tuple[str, ...] = ()
    tree: Path | None = None  # another revision's source tree, run with this venv

    def start(self, pids: list[int], workdir: Path) -> None:
        self.output = workdir / "herdtrace.parquet"
        env = dict(os.environ)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        self.proc = subprocess.Popen(
            record_argv(pids[0], self.output, self.extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
            cwd=self.tree)
        self._wait_for("herdtrace: recording")

    def stop(self) -> dict[str, object]:
        text = self._interrupt()
        done = [ln for ln in text.splitlines() if ln.startswith("herdtrace: recorded")]
        from herdtrace.analysis.load import read_metadata

        _, meta = read_metadata(self.output)
        return {"lost_events": meta.lost_events, "probe_misses": meta.probe_misses,
                "summary": done[-1] if done else "", "bytes": self.output.stat().st_size}


def ablated(level: str) -> type[Herdtrace]:
    """herdtrace with its probes cut back to `level` (see ABLATE in herd.bpf.c)."""
    return type(f"Herdtrace_{level}", (Herdtrace,),
                {"name": f"herdtrace {level}", "extra": ("--ablate", level)})


def at_revision(rev: str, tree: Path) -> type[Herdtrace]:
    """herdtrace as it was at `rev` (checked out in `tree`), for a before/after in one run."""
    return type(f"Herdtrace_{rev}", (Herdtrace,), {"name": f"herdtrace@{rev}", "tree": tree})


class HerdtraceWithoutConnections(Herdtrace):
    """herdtrace record --no-connections: no inet_sock_set_state probe."""

    name = "herdtrace --no-connections"
    extra = ("--no-connections",)


class HerdtraceBesidePerf(Herdtrace):
    """herdtrace letting a concurrent perf record see the tracepoints (size run)."""

    extra = ("--let-perf-see",)


class Top(_Process):
    """`herdtrace top` on the target's listeners: one report a second, no recording."""

    name = "herdtrace top"

    def start(self, pids: list[int], workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herdtrace", "top", "--json", "--pid", str(pids[0]), "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._wait_for("herdtrace: watching", stream=self.proc.stderr)

    def stop(self) -> dict[str, object]:
        self.cpu_s = self._cpu_used()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        out, _ = self.proc.communicate(timeout=120)
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        misses = [r["probe_misses"] for r in reports]
        return {"lost_events": sum(r["lost_events"] for r in reports),
                "probe_misses": None if None in misses else sum(misses)}


class Exporter(_Process):
    """herdtrace exporter narrowed to the target's processes (-p): in-kernel counts, no
    records, /metrics on a free port of its own."""

    name = "herdtrace exporter"
    extra: tuple[str, ...] = ()

    def start(self, pids: list[int], workdir: Path) -> None:
        from herdtrace.workloads.real_servers import free_port

        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herdtrace", "exporter", "--web.listen-address",
             f"127.0.0.1:{self.metrics_port}", "-p", str(pids[0]), *self.extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_for("herdtrace: counting", stream=self.proc.stderr)

    def stop(self) -> dict[str, object]:
        self.cpu_s = self._cpu_used()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return {}


def exporter_ablated(level: str) -> type[Exporter]:
    """The exporter's probes, each cut back to `level` (see ABLATE in herd.bpf.c)."""
    return type(f"Exporter_{level}", (Exporter,),
                {"name": f"exporter, {level}", "extra": ("--ablate", level)})


class Bpftrace(_Process):
    """A bpftrace script counting wakeups, accepts and EAGAINs of the same processes."""

    name = "bpftrace"
    herd = False

    def start(self, pids: list[int], workdir: Path) -> None:
        script = workdir / "count.bt"
        script.write_text(counting_script(pids, herd=self.herd))
        self.proc = subprocess.Popen(["bpftrace", str(script)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._wait_for("ready")  # printed by BEGIN, once every probe is attached

    def stop(self) -> dict[str, object]:
        out = self._interrupt()
        return {"counted": sum(int(ln.rsplit(":", 1)[1]) for ln in out.splitlines()
                               if ln.startswith("@") and ln.rsplit(":", 1)[1].strip().isdigit())}


class BpftraceHerd(Bpftrace):
    """The same script also telling listener wakings from the rest (sk_data_ready and
    the socket's state, as `record --no-connections` does): what counting the herd,
    rather than every wakeup, costs a bpftrace user. A reference beside the target's,
    not in place of it."""

    name = "bpftrace counting the herd"
    herd = True


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
        self._mark()

    def stop(self) -> dict[str, object]:
        out = self._interrupt()
        lost = [ln for ln in out.splitlines() if "lost" in ln.lower()]
        return {"bytes": self.output.stat().st_size if self.output.exists() else 0,
                "messages": lost[-3:]}


ABLATIONS = tuple(program.ABLATIONS)  # in the table's order


def available(baselines: list[type[Herdtrace]]) -> list[type[Tracer]]:
    """In the order of the ablation table: untraced, the floor (empty programs), ...,
    herdtrace, then the tools it is compared with."""
    found: list[type[Tracer]] = [Tracer, *(ablated(level) for level in ABLATIONS), Herdtrace,
                                 HerdtraceWithoutConnections, Top]
    found.extend(baselines)
    if shutil.which("bpftrace"):
        found.extend((Bpftrace, BpftraceHerd))
    if shutil.which("perf"):
        found.append(PerfRecord)
    return found


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="herdtrace-perf-"))
