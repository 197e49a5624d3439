"""A Snapshot of in-kernel counts as Prometheus metrics (prometheus_client), named
and labelled as node_exporter names its own: base units, _total for counters."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from herdtrace.counts import LATENCY_BUCKETS, WOKEN_BUCKETS, ListenerCounts, Snapshot

LABELS = ["listener", "server", "mode"]
# Per-listener counters: (name without _total, help, value).
COUNTERS: tuple[tuple[str, str, Callable[[ListenerCounts], float]], ...] = (
    ("herdtrace_listener_wakeups", "Wakeups of the server's threads caused by the listener "
     "(a new connection), counted once their outcome is known.", lambda c: c.wakeups),
    ("herdtrace_accepts", "accept() calls on the listener that returned a connection.",
     lambda c: c.accepts),
    ("herdtrace_accept_eagain", "accept() calls on the listener that returned EAGAIN "
     "(the accept race lost).", lambda c: c.accept_eagain),
    ("herdtrace_idle_wakeups", "Listener wakeups that woke for nothing: absorbed in the "
     "kernel, or returned to an accept() that got EAGAIN.", lambda c: c.idle),
    ("herdtrace_wasted_cpu_seconds", "On-CPU time of the listener wakeups that woke for "
     "nothing: what the herd costs.", lambda c: c.idle_cpu_ns / 1e9),
    ("herdtrace_listener_cpu_seconds", "On-CPU time of every listener wakeup, until the "
     "woken thread waited again.", lambda c: c.cpu_ns / 1e9),
    ("herdtrace_connections", "Connections established on the listener (SYN_RECV -> "
     "ESTABLISHED).", lambda c: c.connections),
)


def _labels(c: ListenerCounts) -> list[str]:
    return [c.name, c.server, c.mode or ""]


# Upper bounds of every bucket but the last (+Inf): wake latency in log2 ns buckets,
# threads woken 0..7.
LATENCY_BOUNDS = [repr(2.0 ** (b + 1) / 1e9) for b in range(LATENCY_BUCKETS - 1)]
WOKEN_BOUNDS = [f"{b}.0" for b in range(WOKEN_BUCKETS - 1)]


def _cumulative(counts: list[int], bounds: list[str]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus' cumulative buckets, the last one +Inf."""
    out: list[tuple[str, float]] = []
    running = 0
    for le, n in zip([*bounds, "+Inf"], counts, strict=True):
        running += n
        out.append((le, running))
    return out


def metrics(snap: Snapshot) -> Iterator[Metric]:
    for name, text, value in COUNTERS:
        if name == "herdtrace_connections" and not snap.connections_followed:
            continue
        family = CounterMetricFamily(name, text, labels=LABELS)
        for c in snap.listeners:
            family.add_metric(_labels(c), value(c))
        yield family
    latency = HistogramMetricFamily(
        "herdtrace_wake_latency_seconds", "Listener wakeup (sched_waking) to the woken "
        "thread's next switch onto a CPU.", labels=LABELS)
    woken = HistogramMetricFamily(
        "herdtrace_threads_woken_per_connection", "Threads one new connection woke through "
        "the listener, counted in the waker's call chain.", labels=LABELS)
    for c in snap.listeners:
        latency.add_metric(_labels(c), _cumulative(c.latency, LATENCY_BOUNDS), c.latency_ns / 1e9)
        woken.add_metric(_labels(c), _cumulative(c.woken, WOKEN_BOUNDS), float(c.woken_sum))
    yield latency
    yield woken
    yield from own_metrics(snap)


def own_metrics(snap: Snapshot) -> Iterator[Metric]:
    yield CounterMetricFamily("herdtrace_exporter_uncounted", "Listeners or accepting "
                              "sockets not counted because a BPF map was full.",
                              value=snap.uncounted)
    yield CounterMetricFamily("herdtrace_exporter_lost_events", "Updates lost in the "
                              "kernel (ring buffer full; none are sent while aggregating).",
                              value=snap.lost_events)
    if snap.probe_misses is not None:
        yield CounterMetricFamily("herdtrace_exporter_probe_misses", "Events a probe was "
                                  "skipped for (another BPF program ran on that CPU).",
                                  value=snap.probe_misses)
    run = CounterMetricFamily("herdtrace_exporter_bpf_run_seconds", "Kernel time of each of "
                              "the exporter's BPF programs.", labels=["program"])
    runs = CounterMetricFamily("herdtrace_exporter_bpf_runs", "Runs of each of the "
                               "exporter's BPF programs.", labels=["program"])
    for prog, ns in sorted(snap.bpf_run_ns.items()):
        if ns is not None:
            run.add_metric([prog], ns / 1e9)
        n = snap.bpf_run_count.get(prog)
        if n is not None:
            runs.add_metric([prog], n)
    yield run
    yield runs
    yield GaugeMetricFamily("herdtrace_exporter_listeners", "Listeners served.",
                            value=len(snap.listeners))
    yield GaugeMetricFamily("herdtrace_exporter_threads_traced", "Threads the probes follow.",
                            value=snap.threads_traced)
    entries = GaugeMetricFamily("herdtrace_exporter_map_entries", "Entries in each counting "
                                "BPF map.", labels=["map"])
    for name, n in sorted(snap.map_entries.items()):
        entries.add_metric([name], n)
    yield entries
    yield GaugeMetricFamily("herdtrace_exporter_last_snapshot_timestamp_seconds",
                            "When the maps were last read.", value=snap.ts)


class SnapshotCollector(Collector):
    """Serves a snapshot read at scrape time (`source`), or a given one (`latest`);
    before the probes are attached, only that the exporter is up."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None
        self.source: Callable[[], Snapshot | None] | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.source() if self.source is not None else self.latest
        yield GaugeMetricFamily("herdtrace_exporter_ready", "1 once the probes are attached "
                                "and the first snapshot is served.", value=int(snap is not None))
        if snap is not None:
            yield from metrics(snap)
