"""`top`'s lines from in-kernel counts: what changed in each listener's counters over
one interval, in the fields of `top --json` (analyze --json's names)."""

from __future__ import annotations

from typing import Any

from herdtrace.analysis.verdict import WAITS
from herdtrace.counts import LATENCY_BUCKETS, ListenerCounts, Snapshot
from herdtrace.schema import WaitCall

CALL_NAMES = {int(c): c.name.lower() for c in WaitCall if c != WaitCall.NONE}


def _minus(now: list[int], before: list[int] | None) -> list[int]:
    return now if before is None else [a - b for a, b in zip(now, before, strict=True)]


def p99_us(latency: list[int]) -> float | None:
    """The upper bound of the log2 bucket the 99th percentile falls in (within 2x)."""
    total = sum(latency)
    if not total:
        return None
    running = 0
    for b in range(LATENCY_BUCKETS):
        running += latency[b]
        if running >= 0.99 * total:
            return 2.0 ** (b + 1) / 1e3
    return None


def wait_of(by_call: list[int]) -> str | None:
    """The wait most listener wakeups came out of (accept, select, poll, epoll)."""
    per_wait: dict[str, int] = {}
    for call, n in enumerate(by_call):
        if n and call in CALL_NAMES:
            wait = WAITS[CALL_NAMES[call]]
            per_wait[wait] = per_wait.get(wait, 0) + n
    return min(per_wait, key=lambda w: (-per_wait[w], w)) if per_wait else None


def row(now: ListenerCounts, before: ListenerCounts | None, interval_s: float) -> dict[str, Any]:
    def d(name: str) -> int:
        value: int = getattr(now, name)
        return value - (getattr(before, name) if before is not None else 0)

    accepts, wakeups, idle = d("accepts"), d("wakeups"), d("idle")
    woken = _minus(now.woken, before.woken if before else None)
    woke = d("readiness") - woken[0]
    return {
        "addr": now.addr, "port": now.port, "pids": list(now.pids), "comm": now.server,
        "mode": now.mode or wait_of(_minus(now.by_call, before.by_call if before else None)),
        "processes": len(now.pids), "accepts": accepts,
        "connections_per_s": accepts / interval_s if interval_s > 0 else None,
        "listener_wakeups": wakeups,
        "herd_factor": wakeups / accepts if accepts else None,
        "threads_woken_per_connection": d("woken_sum") / woke if woke > 0 else None,
        "idle_fraction": idle / wakeups if wakeups else None, "idle_wakeups": idle,
        "eagain": d("accept_eagain"),
        "wake_latency_p99_us": p99_us(_minus(now.latency, before.latency if before else None)),
        "wasted_cpu_us_per_connection": d("idle_cpu_ns") / 1e3 / accepts if accepts else None,
    }


def rows(now: Snapshot, before: Snapshot | None, interval_s: float) -> list[dict[str, Any]]:
    """One row per listener, most wakeups for nothing first (as `top` prints them)."""
    earlier = {(c.addr, c.port): c for c in before.listeners} if before else {}
    out = [row(c, earlier.get((c.addr, c.port)), interval_s) for c in now.listeners]
    return sorted(out, key=lambda r: (-r["idle_wakeups"], -r["accepts"], r["port"]))
