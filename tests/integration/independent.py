"""An independent count of what herdtrace records: a bpftrace script, written here
from the terms alone, sharing no code with herdtrace's probes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

WAITS = ("accept", "accept4", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
         "select", "pselect6")


# With `herd`: also which wakings the listener caused, as a bpftrace user would count
# them from the terms: a traced thread in a wait woken, within 1 ms, by the task
# that just made a socket in LISTEN state (10) readable on that CPU. For `make
# bench-perf`'s like-for-like row; no FIN or epoll re-wake rules. The bound is wall
# time, and a VM's vCPU taken away inside the waker's loop stretches it: with 50 us,
# a busy host left 3.6% of hypercorn's listener wakings out of the count.
_HERD_PROBES = """tracepoint:sock:sk_data_ready {
    $sk = (struct sock *)args->skaddr;
    @listen_ready[cpu] = $sk->__sk_common.skc_state == 10 ? nsecs : 0;
    @ready_by[cpu] = tid;
}
"""
_HERD_WAKING = """
    if (@listen_ready[cpu] && @ready_by[cpu] == tid && nsecs - @listen_ready[cpu] < 1000000) {
        @listener_wakings = count();
    }"""


def script(pids: list[int], herd: bool = False) -> str:
    mine = " || ".join(f"pid == {p}" for p in pids)
    enters = ",\n".join(f"tracepoint:syscalls:sys_enter_{w}" for w in WAITS)
    exits = ",\n".join(f"tracepoint:syscalls:sys_exit_{w}" for w in WAITS)
    return f"""BEGIN {{ printf("ready\\n"); }}
{enters} /{mine}/ {{ @inwait[tid] = 1; }}
{exits} /{mine}/ {{ delete(@inwait[tid]); }}
tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 /{mine}/ {{
    if (args->ret >= 0) {{ @accepts = count(); }}
    if (args->ret == -11) {{ @eagain = count(); }}
}}
{_HERD_PROBES if herd else ""}tracepoint:sched:sched_waking /@inwait[args->pid]/ {{
    @wakings = count();{_HERD_WAKING if herd else ""}
}}
END {{ clear(@inwait); {"clear(@listen_ready); clear(@ready_by); " if herd else ""}}}
"""


@dataclass
class Counts:
    accepts: int
    eagain: int
    wakings: int
    wakings_missed: int  # sched_waking events the kernel skipped bpftrace's program for
    start_ns: int  # CLOCK_MONOTONIC when it was attached
    end_ns: int  # when it was asked to stop
    listener_wakings: int | None = None  # counted with herd=True only


class BpftraceCounter:
    """Counts accepts, EAGAINs and wakings of threads in a wait, for the given pids
    (with `herd`, also the listener's wakings)."""

    def __init__(self, pids: list[int], workdir: Path, herd: bool = False) -> None:
        self.herd = herd
        path = workdir / "count.bt"
        path.write_text(script(pids, herd))
        self.proc = subprocess.Popen(["bpftrace", str(path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        # Blocking reads, bounded by a timer that kills it: select() on the pipe does
        # not see lines already in the reader's buffer ("Attaching N probes" and
        # "ready" arriving in one read, on a busy host, hid "ready" for the minute).
        timer = threading.Timer(60, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.strip() == "ready":
                    self.start_ns = time.monotonic_ns()
                    return
        finally:
            timer.cancel()
        self.proc.kill()
        raise RuntimeError(f"bpftrace did not start: {self.proc.communicate()[0]}")

    def stop(self) -> Counts:
        end_ns = time.monotonic_ns()
        missed = waking_misses()
        out = interrupt(self.proc)
        found = {m[0]: int(m[1]) for m in re.findall(r"^@(\w+): (\d+)$", out, re.M)}
        return Counts(found.get("accepts", 0), found.get("eagain", 0), found.get("wakings", 0),
                      missed, self.start_ns, end_ns,
                      found.get("listener_wakings", 0) if self.herd else None)


def interrupt(proc: subprocess.Popen[str]) -> str:
    """Stop bpftrace as Ctrl-C does; its output. Seen once in ~200 runs (a CI run):
    bpftrace still in its event loop a minute after SIGINT, and gone at once on a
    second SIGINT, so a second one is sent before giving up."""
    for wait_s in (30, 30):
        os.kill(proc.pid, signal.SIGINT)
        try:
            return proc.communicate(timeout=wait_s)[0]
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    raise RuntimeError(f"bpftrace did not stop on SIGINT: {proc.communicate()[0][-500:]}")


def waking_misses() -> int:
    """recursion_misses of bpftrace's sched_waking program (a classic tracepoint: the
    kernel skips it whenever another such program is running on that CPU)."""
    if shutil.which("bpftool") is None:
        return 0
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    progs = json.loads(out.stdout or "[]")
    return sum(int(p.get("recursion_misses", 0)) for p in progs
               if p.get("type") == "tracepoint" and p.get("name") == "sched_waking")
