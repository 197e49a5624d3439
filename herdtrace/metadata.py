"""The recording's metadata: one typed value, written as JSON in the Parquet footer
(key `herdtrace`) and read back with every field present (older recordings get
the defaults). Collectors build it; analysis, reports and bench read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from herdtrace.schema import SCHEMA_VERSION


@dataclass(frozen=True)
class TargetMeta:
    """What was traced."""

    pids: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    cmdlines: dict[str, str] = field(default_factory=dict)  # pid -> command line
    threads_at_start: int | None = None
    listen_ports: list[int] = field(default_factory=list)
    listeners: list[dict[str, Any]] = field(default_factory=list)  # listeners.Listener.to_json()
    followed_pids: list[int] = field(default_factory=list)  # every process followed
    server: dict[str, Any] | None = None  # servers.Server.to_json(): what serves the listener


@dataclass(frozen=True)
class RecordingMeta:
    schema_version: int = SCHEMA_VERSION
    label: str | None = None  # how analyze groups recordings (default: the file name)
    herdtrace_version: str | None = None
    backend: str | None = None  # "bcc" or "dtrace"
    kernel_release: str | None = None
    os: str | None = None
    hostname: str | None = None
    cpus: int | None = None
    start_time: str | None = None  # ISO 8601, UTC
    end_time: str | None = None
    start_monotonic_ns: int | None = None
    end_monotonic_ns: int | None = None
    wall_minus_monotonic_ns: int | None = None
    herdtrace_command: list[str] = field(default_factory=list)
    rows: int | None = None
    stop_reason: str | None = None  # signal, duration, target exited, recorder died, ...
    target: TargetMeta = field(default_factory=TargetMeta)
    attribution: str | None = None  # sk_data_ready, conn_state, solisten_wakeup or none
    # How a wakeup's on-CPU time (cpu_ns) was measured: "sched_switch run time" (the
    # kernel's run time of the thread, read at every switch in and out: schedstat's
    # count, a VM's stolen time left out), "sched_switch" (the clock between those
    # switches), "on-cpu to sleep" (DTrace: preemptions inside included); None: not
    # measured (schema < 4).
    cpu_time: str | None = None
    # What the kernel gave the probes and how herdtrace made up for the rest
    # (features.kernel_features: sk_data_ready, raw tracepoints, epoll_pwait2, ...).
    kernel_features: dict[str, str] = field(default_factory=dict)
    lost_events: int | None = 0  # None: nobody could count them (the recorder died)
    lost_per_cpu: list[int] = field(default_factory=list)
    probe_misses: int | None = None  # None: not counted (kernel < 5.12, older recordings)
    probe_misses_per_probe: dict[str, int | None] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)  # probe -> how it is attached
    probe_options: dict[str, Any] = field(default_factory=dict)
    ringbuf_bytes: int | None = None
    threads_untraced: int = 0
    wakings_merged: int = 0
    wakings_uninterruptible: int = 0
    wakings_unseen: int = 0
    conns_evicted: int = 0
    cause_window_ns: int | None = None
    conn_window_ns: int | None = None
    # dtrace only
    dtrace_other_drops: int = 0
    dtrace_errors: int = 0
    malformed_lines: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    enrichments: dict[str, int] = field(default_factory=dict)
    dtrace_messages: list[str] = field(default_factory=list)
    # analysis only: the recordings a combined label stands for
    combined_files: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # column -> what it holds

    @property
    def duration_s(self) -> float | None:
        if self.start_monotonic_ns is None or self.end_monotonic_ns is None:
            return None
        return (self.end_monotonic_ns - self.start_monotonic_ns) / 1e9

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordingMeta:
        """Known fields from the JSON (missing ones keep their defaults; unknown
        ones, from a newer minor version, are dropped)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        target = data.get("target") or {}
        target_known = {f.name for f in fields(TargetMeta)}
        values["target"] = TargetMeta(**{k: v for k, v in target.items() if k in target_known})
        return cls(**values)
