"""Parse kevent.d's output (format 1, docs/dtrace-format.md) into herdtrace events.

The same wakeup state machine as the BPF program, in user space: DTrace prints
raw scheduler and syscall events; this decides each wakeup's outcome exactly as
herd.bpf.c does (DESIGN.md's terms), so a BSD recording reads like a Linux one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from herdtrace.errors import HerdtraceError
from herdtrace.schema import (
    CAUSE_WINDOW_NS,
    EAGAIN,
    EVENT_DTYPE,
    Cause,
    CauseBasis,
    Flag,
    Kind,
    Outcome,
    WaitCall,
    outcome_of,
)

FORMAT_VERSION = 1
BSD_EAGAIN = 35  # EAGAIN/EWOULDBLOCK on FreeBSD and macOS (illumos uses 11, as Linux)
CALLS = {"kevent": WaitCall.KEVENT, "accept": WaitCall.ACCEPT, "accept4": WaitCall.ACCEPT4,
         "poll": WaitCall.POLL, "select": WaitCall.SELECT}
ACCEPTS = (WaitCall.ACCEPT, WaitCall.ACCEPT4)
AF_INET = 2
MAX_EXAMPLES = 5
# "dtrace: 12 drops on CPU 1", "dtrace: 3 dynamic variable drops", "... aggregation drops"
DROPS = re.compile(r"^dtrace: (\d+) (?:(dynamic variable|aggregation|speculative) )?drops?"
                   r"(?: on CPU (\d+))?")
ERROR = re.compile(r"^dtrace: (?:error|\d+ errors?)")
# Words on each kind of kevent.d line, its one-letter kind included.
LINE_ARITY = {"E": 8, "R": 10, "W": 7, "S": 4, "O": 5, "T": 6, "X": 4, "C": 5, "N": 4}


def _raddr(text: str) -> bytes:
    """Peer address as the probes store it: IPv6, or IPv4 mapped into IPv6."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


@dataclass
class _Thread:
    pid: int
    call: WaitCall = WaitCall.NONE
    fd: int = 0
    enter_ts: int = 0
    wakeup: dict[str, Any] | None = None  # the open wakeup, as in herd.bpf.c
    returned: bool = False


@dataclass
class ParseStats:
    lost_events: int = 0
    lost_per_cpu: dict[int, int] = field(default_factory=dict)
    other_drops: int = 0
    dtrace_errors: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    wakings_merged: int = 0
    enrichments: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # dtrace's other words, the last few


class DtraceParser:
    def __init__(self, listen_ports: set[int] | None = None, cause_window_ns: int = CAUSE_WINDOW_NS) -> None:
        self.listen_ports = listen_ports or set()
        self.window = cause_window_ns
        self.threads: dict[int, _Thread] = {}
        self.rows: list[dict[str, Any]] = []
        self.stats = ParseStats()
        self.conn_seq = 0
        self.last_conn: tuple[int, int] = (0, 0)  # (ts, conn_id)
        self.ready: dict[int, tuple[int, int]] = {}  # cpu -> (ts of solisten_wakeup, conn_id)
        self.saw_header = False

    # ---- input ---------------------------------------------------------------
    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if not line:
            return
        if line.startswith("#"):
            self._header(line)
            return
        parts = line.split(" ")
        handler = getattr(self, f"_on_{parts[0]}", None)
        if handler is None or len(parts) != LINE_ARITY[parts[0]]:
            self._malformed(line)
            return
        try:
            handler(parts)
        except ValueError:
            self._malformed(line)

    def feed_stderr(self, line: str) -> None:
        """dtrace's own messages: drops become lost events, errors are counted."""
        m = DROPS.match(line.strip())
        if m:
            n, kind, cpu = int(m.group(1)), m.group(2), m.group(3)
            if kind:
                self.stats.other_drops += n
            else:
                self.stats.lost_events += n
                if cpu is not None:
                    self.stats.lost_per_cpu[int(cpu)] = self.stats.lost_per_cpu.get(int(cpu), 0) + n
        else:
            if ERROR.match(line.strip()):
                self.stats.dtrace_errors += 1
            self.stats.messages = [*self.stats.messages[-(MAX_EXAMPLES - 1):], line.strip()]

    def _header(self, line: str) -> None:
        words = line.lstrip("# ").split()
        if len(words) == 2 and words[0] == "herdtrace-dtrace":
            if int(words[1]) != FORMAT_VERSION:
                raise HerdtraceError(f"dtrace output is format {words[1]}; this herdtrace reads "
                                     f"format {FORMAT_VERSION}")
            self.saw_header = True

    def _malformed(self, line: str) -> None:
        self.stats.malformed += 1
        if len(self.stats.malformed_examples) < MAX_EXAMPLES:
            self.stats.malformed_examples.append(line[:200])

    # ---- events ----------------------------------------------------------------
    def _thread(self, tid: int, pid: int) -> _Thread:
        t = self.threads.get(tid)
        if t is None:
            t = self.threads[tid] = _Thread(pid)
        return t

    def _on_T(self, p: list[str]) -> None:
        ts, tid, pid, parent = int(p[1]), int(p[2]), int(p[3]), int(p[4])
        self._thread(tid, pid)
        self.rows.append(dict(kind=Kind.THREAD, ts=ts, tid=tid, tgid=pid, other_tid=parent,
                              comm=p[5].encode()[:16]))

    def _on_E(self, p: list[str]) -> None:
        call = CALLS.get(p[4])
        if call is None:
            raise ValueError(p[4])
        t = self._thread(int(p[2]), int(p[3]))
        t.call, t.fd, t.enter_ts = call, int(p[5]), int(p[1])

    def _on_R(self, p: list[str]) -> None:
        ts, tid, pid = int(p[1]), int(p[2]), int(p[3])
        if p[4] not in CALLS:
            raise ValueError(p[4])
        t = self._thread(tid, pid)
        if t.call == WaitCall.NONE:
            return  # entered before tracing started
        ret, err = int(p[5]), int(p[6])
        if t.call in ACCEPTS:
            self._accept(t, ts, tid, ret, err, p[7:10])
        if t.wakeup is not None and not t.returned:
            t.returned = True
            t.wakeup["ret_ts"] = ts
            t.wakeup["ret"] = ret
        t.call = WaitCall.NONE

    def _accept(self, t: _Thread, ts: int, tid: int, ret: int, err: int, peer: list[str]) -> None:
        # Results as on Linux: the new fd, or -errno with EAGAIN in Linux numbering.
        value = ret if ret >= 0 else -(EAGAIN if err == BSD_EAGAIN else err)
        row: dict[str, Any] = dict(kind=Kind.ACCEPT, ts=ts, tid=tid, tgid=t.pid, fd=t.fd,
                                   ret=value, enter_ts=t.enter_ts, wait_call=t.call)
        if value >= 0 and peer[0] != "-":
            row.update(rport=int(peer[1]), raddr=_raddr(peer[2]), flags=Flag.PEER
                       | (0 if int(peer[0]) == AF_INET else Flag.IPV6))
        self.rows.append(row)
        if t.wakeup is not None:
            if value >= 0:
                t.wakeup["accepts"] += 1
            elif value == -EAGAIN:
                t.wakeup["eagains"] += 1

    def _on_W(self, p: list[str]) -> None:
        ts, tid, pid = int(p[1]), int(p[2]), int(p[3])
        t = self._thread(tid, pid)
        if t.call == WaitCall.NONE:
            return
        if t.wakeup is not None:
            if not t.returned:
                self.stats.wakings_merged += 1
                return
            self._close(tid, t, Outcome.OTHER, ts)
        cpu = int(p[6])
        w: dict[str, Any] = dict(kind=Kind.WAKEUP, ts=ts, tid=tid, tgid=pid, enter_ts=t.enter_ts,
                                 other_tid=int(p[4]), other_tgid=int(p[5]), cpu=cpu, fd=t.fd,
                                 wait_call=t.call, accepts=0, eagains=0, flags=0,
                                 cause=Cause.UNKNOWN, cause_basis=CauseBasis.NONE)
        ready_ts, conn_id = self.ready.get(cpu, (0, 0))
        if ready_ts and ts - ready_ts < self.window:
            # solisten_wakeup: the listener became readable (BSD's sk_data_ready).
            w["flags"] |= Flag.NET_CAUSE
            w["conn_id"] = conn_id
            w["cause"], w["cause_basis"] = Cause.LISTENER, CauseBasis.SK_DATA_READY
        t.wakeup, t.returned = w, False

    def _on_S(self, p: list[str]) -> None:
        tid = int(p[2])
        t = self.threads.get(tid)
        if t is not None and t.call != WaitCall.NONE and t.wakeup is not None:
            self._close(tid, t, Outcome.ABSORBED, int(p[1]))

    def _on_O(self, p: list[str]) -> None:
        t = self.threads.get(int(p[2]))
        if t is not None and t.wakeup is not None and not t.wakeup.get("oncpu_ts"):
            t.wakeup["oncpu_ts"] = int(p[1])

    def _on_X(self, p: list[str]) -> None:
        ts, tid, pid = int(p[1]), int(p[2]), int(p[3])
        t = self.threads.pop(tid, None)
        if t is not None and t.wakeup is not None:
            self._close(tid, t, Outcome.OTHER, ts)
        self.rows.append(dict(kind=Kind.THREAD_EXIT, ts=ts, tid=tid, tgid=pid))

    def _on_C(self, p: list[str]) -> None:
        ts, lport, rport = int(p[1]), int(p[2]), int(p[3])
        if self.listen_ports and lport not in self.listen_ports:
            return
        self.conn_seq += 1
        self.last_conn = (ts, self.conn_seq)
        self.rows.append(dict(kind=Kind.CONN, ts=ts, conn_id=self.conn_seq, lport=lport,
                              rport=rport, raddr=_raddr(p[4])))

    def _on_N(self, p: list[str]) -> None:
        ts, cpu, func = int(p[1]), int(p[2]), p[3]
        self.stats.enrichments[func] = self.stats.enrichments.get(func, 0) + 1
        if func == "solisten_wakeup":  # the listener became readable: what wakes the herd
            conn_ts, conn_id = self.last_conn
            self.ready[cpu] = (ts, conn_id if conn_ts and ts - conn_ts < self.window else 0)

    def _close(self, tid: int, t: _Thread, unreturned: Outcome, now: int = 0) -> None:
        w = t.wakeup
        assert w is not None
        if now and w.get("oncpu_ts"):  # sched:::on-cpu -> sleep (a preemption between included)
            w["cpu_ns"] = min(now - w["oncpu_ts"], 0xFFFFFFFF)
        w["outcome"] = (unreturned if not t.returned
                        else outcome_of(True, w["accepts"], w["eagains"]))
        self.rows.append(w)
        t.wakeup, t.returned = None, False

    # ---- output ----------------------------------------------------------------
    def take(self) -> np.ndarray:
        """Rows complete so far, as the event dtype; they are handed over once."""
        rows, self.rows = self.rows, []
        ev = np.zeros(len(rows), dtype=EVENT_DTYPE)
        for i, row in enumerate(rows):  # collector side: a batch of parsed lines
            for key, value in row.items():
                ev[i][key] = value
        return ev

    def finish(self) -> np.ndarray:
        """End of input: wakeups still open become unresolved (or their derived outcome)."""
        for tid, t in list(self.threads.items()):
            if t.wakeup is not None:
                w = t.wakeup
                w["outcome"] = outcome_of(t.returned, w["accepts"], w["eagains"])
                self.rows.append(w)
                t.wakeup = None
            del self.threads[tid]
        return self.take()
