"""`herdtrace record` on Linux: load the probes, drain the ring buffer, write a recording."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from herdtrace import procfs
from herdtrace.collectors import listeners, servers, targets
from herdtrace.collectors.maps import PortTable
from herdtrace.collectors.ringbuf import RingReader
from herdtrace.collectors.session import (
    READY_LINE,
    RecordOptions,
    RecordSummary,
    Sink,
    base_metadata,
    cmdline,
    stop_reason,
)
from herdtrace.collectors.threads import ThreadTable
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta
from herdtrace.probes import program, progstats
from herdtrace.schema import (
    COUNTERS,
    EVENT_DTYPE,
    EVENT_SIZE,
    LINUX_WAIT_SYSCALLS,
    SYSCALL_NUMBERS,
    Kind,
    Outcome,
    Slept,
    outcome_of,
)

BURST_RECORDS_PER_S = 1_000_000  # about twice what the probes were measured to produce
_WAITS = {name: (call, fd_arg, buf_arg) for name, call, fd_arg, buf_arg in LINUX_WAIT_SYSCALLS}
_NUMBERS = SYSCALL_NUMBERS.get(platform.machine(), {})


def _set_wait(leaf: Any, syscall: tuple[int, ...]) -> bool:
    """A thread already blocked in a wait when tracing starts: seed the kernel's state,
    or its wakeup and return (a whole accept) would go unseen. Entry time unknown: 0.
    Returns whether it was in a wait."""
    name = _NUMBERS.get(syscall[0]) if syscall else None
    if name is None:
        return False
    call, fd_arg, buf_arg = _WAITS[name]
    args = syscall[1:]
    leaf.wait_call = int(call)
    leaf.wait_fd = ctypes.c_int32(args[fd_arg] & 0xFFFFFFFF).value
    leaf.accept_buf = args[buf_arg] if buf_arg >= 0 else 0
    return True


def thread_rows(infos: list[targets.ThreadInfo], ts: int) -> np.ndarray:
    """THREAD records for threads found in /proc (once each: threads, not events)."""
    rows = np.zeros(len(infos), dtype=EVENT_DTYPE)
    for i, info in enumerate(infos):
        rows[i]["kind"] = Kind.THREAD
        rows[i]["ts"] = ts
        rows[i]["tid"] = info.tid
        rows[i]["tgid"] = info.tgid
        rows[i]["other_tid"] = info.parent
        rows[i]["comm"] = info.comm.encode()[:16]
    return rows


def total_misses(misses: dict[str, int | None]) -> int | None:
    """All probes' misses; None where the kernel does not count them (< 5.12):
    unknown, not zero."""
    if any(v is None for v in misses.values()):
        return None
    return sum(v for v in misses.values() if v is not None)


class Recorder:
    def __init__(self, opts: RecordOptions) -> None:
        self.opts = opts
        self.plan: program.ProbePlan | None = None
        self.reader: RingReader | None = None
        self.bpf: Any = None
        self.threads: ThreadTable | None = None
        self.ports: PortTable | None = None
        self.sink: Sink | None = None
        self.command: targets.GatedCommand | None = None
        self.traced_at_start: list[targets.ThreadInfo] = []
        self.listen_ports: set[int] = set()
        self.listeners: list[listeners.Listener] = []  # the last scan that found any
        self.server: servers.Server | None = None  # what holds them
        self.next_scan = (0.0, 0.5)  # when to scan /proc for listeners again, and the step
        self.cmdlines = {str(p): cmdline(p) for p in opts.pids}
        self.warned_daemon = False
        self.say: Callable[[str], None] = lambda _: None  # the ready line and warnings
        self.last_drain = 0.0
        self.last_check = 0.0

    # ---- set-up -------------------------------------------------------------
    def _drain(self) -> float:
        """Move what the ring holds to the spool; returns how long to sleep before the
        next drain: an eighth of the time the ring would take to fill at the rate
        just seen, within the collector's bounds (0 when it was over a quarter full:
        drain again now). Fewer, larger batches cost the traced machine less; the
        spool's writer makes the row groups, so no batching here."""
        assert self.reader is not None
        assert self.sink is not None
        now = time.monotonic()
        frames = self.reader.read()
        self.sink.write_frames(frames)
        self.reader.release(frames)  # its view is not to be read after this
        drained = frames.consumed // self.reader.stride  # ring slots, discarded or not
        elapsed, self.last_drain = now - self.last_drain, now
        if frames.consumed > self.reader.size // 4:
            return 0.0
        capacity = self.reader.size / self.reader.stride
        # However quiet it was, never sleep longer than a burst at the fastest rate
        # the probes produce would take to fill half the ring.
        shortest = self.opts.drain_interval_s
        longest = max(shortest, min(self.opts.drain_interval_max_s,
                                    capacity / 2 / BURST_RECORDS_PER_S))
        if not drained:
            return longest
        fill_s = capacity / (drained / max(elapsed, 1e-3))
        return min(longest, max(shortest, fill_s / 8))

    def _trace(self, infos: list[targets.ThreadInfo], now_ns: int) -> list[targets.ThreadInfo]:
        """Trace these threads; returns those the kernel did not follow already."""
        assert self.threads is not None
        added = []
        for info in infos:
            leaf = self.threads.leaf()
            leaf.fork_ts = now_ns
            leaf.tgid = info.tgid
            leaf.parent = info.parent
            in_wait = _set_wait(leaf, info.syscall)
            if self.threads.add(info.tid, leaf):
                added.append(info)
                if not in_wait:
                    self._catch_wait(info)
        return added

    def _catch_wait(self, info: targets.ThreadInfo) -> None:
        """A thread that entered a wait after /proc was read and before the kernel
        traced it: the kernel missed the entry, and would miss every wakeup until the
        wait returns (never, for a worker whose wakeups are all absorbed). /proc, read
        again now that the kernel sees any new entry, gives the wait it is in."""
        assert self.threads is not None
        syscall = targets.read_syscall(info.tgid, info.tid)
        state = self.threads.state(info.tid) if syscall else None
        if state is not None and not state.wait_call and _set_wait(state, syscall):
            self.threads.update(info.tid, state)

    def _trace_ports(self, ports: set[int]) -> None:
        assert self.ports is not None
        self.ports.add(ports - self.listen_ports)
        self.listen_ports |= ports

    def _attach_pids(self, start_ns: int) -> None:
        seen: dict[int, targets.ThreadInfo] = {}
        # Twice: a thread created by a not-yet-traced thread during the first pass is
        # caught by the second; after that the kernel follows forks itself.
        for _ in range(2):
            procs = procfs.descendants(self.opts.pids)
            fresh = [t for t in targets.threads_of(procs) if t.tid not in seen]
            seen.update({t.tid: t for t in self._trace(fresh, start_ns)})
        self._scan_listeners(procs)  # once, of the processes the second pass found
        self.traced_at_start = list(seen.values())

    def _scan_listeners(self, procs: list[int] | None = None) -> None:
        """Which listeners the targets hold and how they wait on them (/proc). Again
        0.5, 2.5, 10.5, ... s into recording and at the end: a server started by
        `-- CMD` listens after its start, and may be gone at the end."""
        if procs is None:
            roots = set(self.opts.pids) | (self.sink.tally.processes if self.sink else set())
            if self.command is not None:
                roots.add(self.command.pid)
            procs = [p for p in roots if procfs.is_alive(p)]
        found = listeners.scan(procs)
        if found:
            self.listeners = found
            self._trace_ports({lst.port for lst in found})
            if self.server is None:  # once: `nginx -v` and the like cost a fork
                self.server = servers.identify(sorted({p for lst in found for p in lst.pids}))

    # ---- the loop -------------------------------------------------------------
    def _write(self, ev: np.ndarray) -> None:
        assert self.sink is not None
        self.sink.write(ev)

    def _target_gone(self) -> bool:
        if self.command is None:
            return not any(procfs.is_alive(p) for p in self.opts.pids)
        if self.command.poll() is None:
            return False
        # The command is gone; processes it started may live on (a server that
        # daemonized): they are still traced, so follow them until they exit.
        assert self.threads is not None
        left = sorted({leaf.tgid for _, leaf in self.threads.entries()
                       if leaf.tgid and procfs.is_alive(leaf.tgid)})
        if left and not self.warned_daemon:
            self.warned_daemon = True
            self.say(f"herdtrace: warning: {self.opts.command[0]} exited but left "
                     f"{len(left)} process{'es' if len(left) != 1 else ''} running "
                     f"(pid {', '.join(map(str, left[:5]))}): it went to the background. "
                     "Following them until they exit; Ctrl-C to stop. Keep a server in the "
                     "foreground to tie the recording to it (nginx: -g 'daemon off;').")
        return not left

    def _pending_wakeups(self) -> np.ndarray:
        """Wakeups still open in the kernel when recording stops, and wakings armed
        but not yet taken by their thread (it had not run since): unresolved."""
        rows = []
        assert self.threads is not None
        for tid, leaf in self.threads.entries():
            if leaf.pending:
                w = leaf.wakeup
                row = np.frombuffer(bytes(w), dtype=EVENT_DTYPE).copy()
                row["outcome"] = outcome_of(bool(leaf.returned), w.accepts, w.eagains)
                rows.append(row)
            k = leaf.waking
            # take_waking's rule, less its guess for the classic tracepoint's race.
            lock = (k.sleep == Slept.UNINTR if k.sleep != Slept.UNKNOWN
                    else leaf.slept == Slept.UNINTR)
            if k.armed and not lock and not (leaf.pending and not leaf.returned):
                row = np.zeros(1, dtype=EVENT_DTYPE)
                for name, value in (("kind", Kind.WAKEUP), ("ts", k.ts), ("enter_ts", leaf.enter_ts),
                                    ("sk", k.sk), ("conn_id", k.conn_id), ("tid", tid),
                                    ("tgid", leaf.tgid), ("other_tid", k.waker_tid),
                                    ("other_tgid", k.waker_tgid), ("fd", leaf.wait_fd),
                                    ("lport", k.lport), ("cpu", k.cpu), ("target_cpu", k.target_cpu),
                                    ("wait_call", leaf.wait_call), ("flags", k.flags),
                                    ("cause", k.cause), ("cause_basis", k.basis),
                                    ("outcome", Outcome.UNRESOLVED)):
                    row[name] = value
                rows.append(row)
        return np.concatenate(rows) if rows else np.zeros(0, dtype=EVENT_DTYPE)

    def _kernel_ports(self) -> set[int]:
        """Ports a traced thread put into LISTEN while recording (the kernel learnt them)."""
        assert self.ports is not None
        return self.ports.ports()

    def _counters(self) -> dict[str, list[int]]:
        table = self.bpf[b"counters"]
        return {name: [int(v) for v in table[table.Key(i)]] for i, (name, _) in enumerate(COUNTERS)}

    def _prog_stats(self) -> dict[str, progstats.ProgStats]:
        return progstats.all_stats({name: f.fd for name, f in self.bpf.funcs.items()})

    def close(self) -> None:
        """Detach the probes: slow (the kernel waits for RCU per tracepoint), so it
        comes after the recording is written and the summary is out."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.threads is not None:
            self.threads.close()
            self.threads = None
        if self.ports is not None:
            self.ports.close()
            self.ports = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def run(
        self, stop: threading.Event, on_ready: Callable[[str], None] | None = None
    ) -> RecordSummary:
        opts = self.opts
        if on_ready:
            self.say = on_ready
        self._validate()
        program.require_privilege()
        self.plan = program.plan(opts.probe)
        if opts.command:
            self.command = targets.GatedCommand(opts.command)
        # The writer process starts while the program compiles, and is ready before
        # recording begins: its start-up is not charged to the traced server.
        self.sink = self._make_sink()
        try:
            self.bpf = program.load(self.plan)
            self.threads = ThreadTable(self.bpf, opts.probe.max_threads)
            self.ports = PortTable(self.bpf)
            if self.bpf[b"events"] is None or self.threads.event_size() != EVENT_SIZE:
                raise HerdtraceError("the loaded program's event struct does not match the schema")
            self.threads.fill()
            self.sink.ready()
        except BaseException:
            self.sink.abandon()
            if self.command is not None:
                os.kill(self.command.pid, 9)
                self.command.wait()
            raise
        self.stats_at_start = self._prog_stats()
        start_ns = time.monotonic_ns()
        wall_offset = time.time_ns() - start_ns
        try:
            self._attach(start_ns)
            ring = self.bpf[b"events"]
            self.reader = RingReader(ring.map_fd, opts.probe.ringbuf_pages * mmap.PAGESIZE, EVENT_DTYPE)
            self.last_drain = time.monotonic()
            self.next_scan = (self.last_drain + 0.5, 2.0)
            self._write(thread_rows(self.traced_at_start, start_ns))
            if self.command is not None:
                self.command.release()
            self.say(self._ready_line())
            reason = self._loop(stop, start_ns)
            return self._finish(start_ns, wall_offset, reason)
        except BaseException:
            self.sink.abandon()  # no half-written recording left behind
            raise

    # ---- what `top` changes (collectors/watch.py) --------------------------------
    def _validate(self) -> None:
        self.opts.validate()

    def _attach(self, start_ns: int) -> None:
        if self.command is not None:
            self.traced_at_start = [targets.ThreadInfo(self.command.pid, self.command.pid,
                                                       os.getpid(), self.opts.command[0][:15])]
            self._trace(self.traced_at_start, start_ns)
            return
        self._attach_pids(start_ns)
        if not self.listen_ports:
            self.say(f"herdtrace: warning: pid {', '.join(map(str, self.opts.pids))} has no TCP "
                     "listening socket: there will be wakeups but no listener wakeups or "
                     "connections (is it the server's main process?)")

    def _make_sink(self) -> Sink:
        return Sink(self.opts.output)

    def _ready_line(self) -> str:
        opts = self.opts
        what = " ".join(opts.command) if opts.command else f"pid {', '.join(map(str, opts.pids))}"
        n = len(self.traced_at_start)
        until = (f"for {opts.duration:g} s" if opts.duration else
                 "until it exits" if opts.command else "(Ctrl-C to stop)")
        return (f"{READY_LINE} {n} thread{'s' if n != 1 else ''} of {what} "
                f"-> {opts.output} {until}")

    def _tick(self, now: float) -> str | None:
        """Between drains: a reason to stop, or None. Rescans /proc for listeners on
        its schedule and checks, ten times a second, whether the targets are gone."""
        if now >= self.next_scan[0]:
            at, step = self.next_scan
            self.next_scan = (max(at, now) + step, step * 4)
            self._scan_listeners()
        if now - self.last_check >= 0.1:
            self.last_check = now
            if self._target_gone():
                return "target exited"
        return None

    def _loop(self, stop: threading.Event, start_ns: int) -> str:
        while True:
            # Drain on a clock, not on every ring-buffer notification: batches of
            # thousands cost what one record would, and 16 MiB holds ~130k records.
            # A ring filling fast is drained again at once.
            pause = self._drain()
            if pause:
                time.sleep(pause)
            reason = stop_reason(stop, self.opts, start_ns) or self._tick(time.monotonic())
            if reason:
                return reason

    def _finish(self, start_ns: int, wall_offset: int, reason: str) -> RecordSummary:
        assert self.sink is not None
        self._scan_listeners()
        # Freeze the probes so the kernel state is final, drain, then close open wakeups.
        control = self.bpf[b"control"]
        control[control.Key(0)] = control.Leaf(1)
        self._drain()
        self._write(self._pending_wakeups())
        end_ns = time.monotonic_ns()
        counters = self._counters()
        misses = self._probe_misses()
        lost = sum(counters["lost_events"])
        meta = self._bcc_metadata(base_metadata(self.opts, "bcc", start_ns, end_ns, wall_offset,
                                                reason, self.sink.rows), counters, misses)
        self.sink.close(meta)
        if self.command is not None and reason != "target exited":
            self.command.terminate()
            self.command.wait()
        summary = self.sink.summary(self.opts, (end_ns - start_ns) / 1e9, lost,
                                    meta.probe_misses, reason)
        return replace(summary, wakings_unseen=meta.wakings_unseen, conns_evicted=meta.conns_evicted)

    def _probe_misses(self) -> dict[str, int | None]:
        """Events each program was skipped for while recording (recursion_misses)."""
        end = self._prog_stats()
        out: dict[str, int | None] = {}
        for probe, stats in end.items():
            before = self.stats_at_start.get(probe)
            if stats.recursion_misses is None or before is None or before.recursion_misses is None:
                out[probe] = None
            else:
                out[probe] = stats.recursion_misses - before.recursion_misses
        return out

    def _bcc_metadata(self, base: RecordingMeta, counters: dict[str, list[int]],
                      misses: dict[str, int | None]) -> RecordingMeta:
        opts = self.opts
        target = replace(
            base.target, cmdlines=self.cmdlines, threads_at_start=len(self.traced_at_start),
            listen_ports=sorted(self.listen_ports | self._kernel_ports()),
            # Each listener as /proc showed it: holders, sockets, epoll flags, mode.
            listeners=[lst.to_json() for lst in self.listeners],
            server=self.server.to_json() if self.server else None,
            # Every process followed: the targets, and what they forked or spawned.
            followed_pids=sorted(self.sink.tally.processes) if self.sink else [])
        return replace(
            base, target=target,
            probes=self.plan.methods if self.plan else {},
            attribution=self.plan.attribution if self.plan else None,
            cpu_time=self.plan.cpu_time if self.plan else "sched_switch",
            kernel_features=program.kernel_features(),
            probe_options={k: v for k, v in asdict(opts.probe).items() if k != "sk_key"},
            ringbuf_bytes=opts.probe.ringbuf_pages * os.sysconf("SC_PAGE_SIZE"),
            lost_events=sum(counters["lost_events"]),
            lost_per_cpu=counters["lost_events"],
            threads_untraced=sum(counters["threads_untraced"]),
            wakings_merged=sum(counters["wakings_merged"]),
            wakings_uninterruptible=sum(counters["wakings_uninterruptible"]),
            wakings_unseen=sum(counters["wakings_unseen"]),
            conns_evicted=sum(counters["conns_evicted"]),
            probe_misses_per_probe=misses,
            probe_misses=total_misses(misses),
            cause_window_ns=opts.probe.cause_window_ns,
            conn_window_ns=opts.probe.conn_window_ns,
        )


def record(
    opts: RecordOptions, stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_done: Callable[[RecordSummary], None] | None = None,
) -> RecordSummary:
    """Record until stopped; `on_done` sees the summary before the probes are detached."""
    recorder = Recorder(opts)
    try:
        summary = recorder.run(stop or threading.Event(), on_ready)
        if on_done:
            on_done(summary)
        return summary
    finally:
        recorder.close()
