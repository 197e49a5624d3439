"""The exporter's collector: `top`'s discovery of every listener on the host, the
probes compiled with -DAGGREGATE (no records: per-listener counts in BPF maps), and
a Snapshot read from those maps on demand (a scrape): between scrapes user space
only looks for new listeners, once an interval.

Counts are keyed by listening port in the kernel (a listener wakeup knows its
listener's port) and accepts by (process, fd) of the accepting socket; user space
ties the fds to listeners through /proc and keeps the accept totals itself, so that
they only grow when a server's processes come and go."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from herdtrace import procfs
from herdtrace.analysis import live
from herdtrace.collectors import listeners
from herdtrace.collectors.bpf_collector import total_misses
from herdtrace.collectors.watch import Interval, TopOptions, Watcher
from herdtrace.counts import CALLS, LATENCY_BUCKETS, LISTENER_FIELDS, WOKEN_BUCKETS, ListenerCounts, Snapshot
from herdtrace.probes import program, progstats

STALE_S = 300.0  # a listener gone from /proc is still served this long, then dropped
# struct listener_counts flattened: its fields, then its three arrays.
WIDTH = len(LISTENER_FIELDS) + WOKEN_BUCKETS + LATENCY_BUCKETS + CALLS


@dataclass(frozen=True)
class ExporterOptions:
    interval_s: float = 1.0  # how often new listeners are looked for (and top reports)
    ports: tuple[int, ...] = ()
    pids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()
    probe: program.ProbeOptions = field(
        default_factory=lambda: program.ProbeOptions(aggregate=True, ringbuf_pages=1))


class AggregateWatcher(Watcher):
    def __init__(self, opts: ExporterOptions,
                 on_interval: Callable[[Interval], None] | None = None,
                 count: int | None = None) -> None:
        super().__init__(TopOptions(interval_s=opts.interval_s, count=count, ports=opts.ports,
                                    pids=opts.pids, probe=opts.probe), on_interval or (lambda _: None))
        self.reports = on_interval is not None  # `top`: a line per listener each interval
        self.previous: Snapshot | None = None
        self.attached = False
        self.exporter = opts
        self.lock = threading.Lock()  # scrapes come from the HTTP server's threads
        self.port_seen: dict[int, float] = {}  # counted port -> when last held by a listener
        self.last: Snapshot | None = None
        self.known: dict[tuple[str, int], tuple[ListenerCounts, float]] = {}
        self.accept_seen: dict[tuple[int, int], tuple[int, int]] = {}
        self.accepted: dict[tuple[str, int], list[int]] = {}
        self.stats_fd: int | None = None

    def _discover(self, now_ns: int) -> list[Any]:
        # Forget processes that are gone: a reused pid is a new server to trace.
        self.traced_pids = {p for p in self.traced_pids if procfs.is_alive(p)}
        added = super()._discover(now_ns)
        # Only the first (the ready line counts them): top's watcher keeps every thread
        # it found and a THREAD record of each, which no one reads here and which grew
        # with every server that came and went.
        first, self.attached = not self.attached, True
        return added if first else []

    def _write(self, ev: Any) -> None:
        """Nothing is recorded while counting."""

    def _wanted(self, listener: listeners.Listener) -> bool:
        # Its own /metrics socket is no server to watch.
        return os.getpid() not in listener.pids and (
            not self.exporter.comms or listener.comm in self.exporter.comms)

    def _attach(self, start_ns: int) -> None:
        self.stats_fd = progstats.enable_run_time_stats()
        super()._attach(start_ns)

    def _ready_line(self) -> str:
        line = super()._ready_line()
        return line if self.reports else line.replace("watching", "counting")

    def _drain(self) -> float:
        return 0.2  # nothing crosses the ring under AGGREGATE: just wake to look around

    def _report(self, now: float) -> None:
        elapsed = now - self.interval_start[0]
        self.interval_start = (now, time.monotonic_ns())
        if not self.reports:
            return
        snap = self.snapshot()
        if snap is None:
            return
        held = {(lst.addr, lst.port) for lst in self.listeners}
        shown = replace(snap, listeners=[c for c in snap.listeners if (c.addr, c.port) in held])
        before = self.previous
        self.previous = snap
        misses = (None if snap.probe_misses is None or before is None or before.probe_misses is None
                  else snap.probe_misses - before.probe_misses)
        self.on_interval(Interval(
            ts=snap.ts, interval_s=elapsed, probe_misses=misses,
            lost_events=snap.uncounted + snap.lost_events
            - (before.uncounted + before.lost_events if before else 0),
            listeners=live.rows(shown, before, elapsed)))

    def _listener_totals(self) -> dict[int, list[int]]:
        """by_listener summed over CPUs: port -> its fields, then its three arrays."""
        out: dict[int, list[int]] = {}
        for key, per_cpu in self.bpf[b"by_listener"].items():
            total = [0] * WIDTH
            for leaf in per_cpu:
                values = [getattr(leaf, f) for f in LISTENER_FIELDS]
                values += list(leaf.woken) + list(leaf.latency) + list(leaf.by_call)
                total = [a + b for a, b in zip(total, values, strict=True)]
            out[int(key.value)] = total
        return out

    def _accept_deltas(self, holders: dict[tuple[int, int], tuple[str, int]]) -> list[Any]:
        """New accepts per accepting socket since the last read, added to its
        listener's total (kept by user space: a process that exits keeps its share).
        Returns the map's keys, read in the same pass."""
        keys = []
        for key, per_cpu in self.bpf[b"by_accept_fd"].items():
            keys.append(key)
            fd_key = (int(key.tgid), int(key.fd))
            listener = holders.get(fd_key)
            if listener is None:
                continue  # not (yet) known as a listener's fd: counted once it is
            now = (sum(int(v.accepts) for v in per_cpu), sum(int(v.eagain) for v in per_cpu))
            seen = self.accept_seen.get(fd_key, (0, 0))
            total = self.accepted.setdefault(listener, [0, 0])
            total[0] += now[0] - seen[0]
            total[1] += now[1] - seen[1]
            self.accept_seen[fd_key] = now
        return keys

    def snapshot(self) -> Snapshot | None:
        """The counts now (None before the probes are attached, the last after)."""
        with self.lock:
            if self.bpf is not None and self.threads is not None:
                self.last = self._read()
            return self.last

    def _read(self) -> Snapshot:
        holders = {(pid, fd): (lst.addr, lst.port) for lst in self.listeners
                   for pid, fd in lst.holders}
        fd_keys = self._accept_deltas(holders)
        totals = self._listener_totals()
        now = time.monotonic()
        n = len(LISTENER_FIELDS)
        w, lat = n + WOKEN_BUCKETS, n + WOKEN_BUCKETS + LATENCY_BUCKETS
        for lst in self.listeners:
            key = (lst.addr, lst.port)
            mode = self.modes.get(key) or lst.mode
            self.modes[key] = mode
            values = totals.get(lst.port, [0] * WIDTH)
            counts = ListenerCounts(lst.addr, lst.port, lst.comm, mode,
                                    **dict(zip(LISTENER_FIELDS, values[:n], strict=True)),
                                    woken=values[n:w], latency=values[w:lat], by_call=values[lat:],
                                    pids=lst.pids)
            accepted = self.accepted.get(key, [0, 0])
            self.known[key] = (replace(counts, accepts=accepted[0], accept_eagain=accepted[1]), now)
        self._forget({k for k, (_, seen) in self.known.items() if now - seen > STALE_S},
                     self._stale_ports(totals, now), fd_keys)
        counters = self._counters()
        stats = self._prog_stats()
        assert self.threads is not None
        return Snapshot(
            ts=time.time(), listeners=[c for c, _ in self.known.values()],
            connections_followed=self.exporter.probe.connections,
            uncounted=sum(counters["uncounted"]), lost_events=sum(counters["lost_events"]),
            probe_misses=total_misses(self._probe_misses()),
            threads_traced=sum(1 for _ in self.threads.entries()),
            map_entries={"by_listener": len(totals),
                         "by_accept_fd": len(fd_keys)},
            bpf_run_ns={p: s.run_time_ns if self.stats_fd is not None else None
                        for p, s in stats.items()},
            bpf_run_count={p: s.run_cnt if self.stats_fd is not None else None
                           for p, s in stats.items()})

    def _stale_ports(self, totals: dict[int, list[int]], now: float) -> set[int]:
        """Counted ports no listener has held for STALE_S (one that came and went
        between two scrapes included)."""
        held = {lst.port for lst in self.listeners}
        for port in totals:
            if port in held or port not in self.port_seen:
                self.port_seen[port] = now
        return {p for p, seen in self.port_seen.items() if now - seen > STALE_S}

    def _forget(self, gone: set[tuple[str, int]], stale_ports: set[int], fd_keys: list[Any]) -> None:
        """Listeners not seen for STALE_S leave the metrics and the kernel's table (a
        later listener on the port starts from zero: a counter reset to Prometheus);
        accepting sockets of processes that exited leave theirs, their counts kept."""
        for key in gone:
            del self.known[key]
            self.accepted.pop(key, None)
        table = self.bpf[b"by_listener"]
        for port in stale_ports - {port for _, port in self.known}:
            self.port_seen.pop(port, None)
            with contextlib.suppress(KeyError):
                del table[table.Key(port)]
        fds = self.bpf[b"by_accept_fd"]
        for key in fd_keys:
            if not procfs.is_alive(int(key.tgid)):
                with contextlib.suppress(KeyError):
                    del fds[key]
                self.accept_seen.pop((int(key.tgid), int(key.fd)), None)

    def close(self) -> None:
        super().close()
        if self.stats_fd is not None:
            os.close(self.stats_fd)
            self.stats_fd = None


def watch_counts(opts: ExporterOptions, count: int | None,
                 on_interval: Callable[[Interval], None], stop: Any,
                 on_ready: Callable[[str], None] | None = None) -> None:
    """`top` on in-kernel counts: a line per listener each interval, COUNT of them."""
    watcher = AggregateWatcher(opts, on_interval, count)
    try:
        watcher.run(stop, on_ready)
    finally:
        watcher.close()


def count(opts: ExporterOptions, serve: Callable[[Callable[[], Snapshot | None]], None],
          stop: Any, on_ready: Callable[[str], None] | None = None) -> None:
    """Count until `stop` is set; once the probes are attached, `serve` is handed the
    function that reads a snapshot."""
    watcher = AggregateWatcher(opts)

    def ready(line: str) -> None:
        serve(watcher.snapshot)
        if on_ready:
            on_ready(line)

    try:
        watcher.run(stop, ready)
    finally:
        with watcher.lock:
            watcher.close()

