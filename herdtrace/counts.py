"""In-kernel counts per listener (`herdtrace exporter`, `top`): what the BPF maps
hold under -DAGGREGATE, summed over CPUs and tied to a listener by user space. The
same terms as a recording; the exporter and `record` must agree on a window."""

from __future__ import annotations

from dataclasses import dataclass, field

LATENCY_BUCKETS = 32  # herd.bpf.c: bucket b counts wake latencies in [2^b, 2^(b+1)) ns
WOKEN_BUCKETS = 9  # threads one readiness event woke: 0..7, and 8 or more
CALLS = 11  # listener wakeups by schema.WaitCall value (0: none)
# The fields of struct listener_counts, in order, before its two histograms.
LISTENER_FIELDS = ("wakeups", "idle", "eagain", "cpu_ns", "idle_cpu_ns", "latency_ns",
                   "connections", "readiness", "woken_sum")


@dataclass
class ListenerCounts:
    """One listener's counters since the exporter started (they only grow)."""

    addr: str
    port: int
    server: str  # the process name holding it
    mode: str | None  # how /proc shows it is waited on
    wakeups: int = 0  # listener wakeups
    idle: int = 0  # of them woken for nothing (absorbed + eagain)
    eagain: int = 0  # of them eagain
    cpu_ns: int = 0
    idle_cpu_ns: int = 0  # wasted CPU
    latency_ns: int = 0
    connections: int = 0
    readiness: int = 0
    woken_sum: int = 0
    woken: list[int] = field(default_factory=lambda: [0] * WOKEN_BUCKETS)
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    by_call: list[int] = field(default_factory=lambda: [0] * CALLS)
    pids: tuple[int, ...] = ()  # processes holding it
    accepts: int = 0  # accept() returning a connection on its sockets
    accept_eagain: int = 0  # accept() returning EAGAIN on them

    @property
    def name(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"

    @property
    def herd_factor(self) -> float | None:
        return self.wakeups / self.accepts if self.accepts else None

    @property
    def threads_woken_per_connection(self) -> float | None:
        """Per readiness event, counted in the waker's call chain (see herd.bpf.c)."""
        woke = self.readiness - self.woken[0]
        return self.woken_sum / woke if woke else None


@dataclass
class Snapshot:
    """Everything the exporter serves at one moment."""

    ts: float  # wall clock, s since the epoch
    listeners: list[ListenerCounts]
    connections_followed: bool  # False: no connections_total (its probe left out)
    uncounted: int  # listeners or accepting sockets not counted: a full map
    lost_events: int
    probe_misses: int | None
    threads_traced: int
    map_entries: dict[str, int]
    bpf_run_ns: dict[str, int | None]  # per program, where bpf_stats is on
    bpf_run_count: dict[str, int | None]
