"""One recording (or one interval of `top`) split by listener, each part summarized
with the same definitions as `analyze --json`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from herdtrace.analysis import metrics, verdict
from herdtrace.analysis.load import Recording


class ListenerLike(Protocol):
    """What analysis needs of a listener (collectors.listeners.Listener is one)."""

    @property
    def addr(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def holders(self) -> tuple[tuple[int, int], ...]: ...  # (pid, fd) holding a socket on it

    @property
    def comm(self) -> str: ...

    @property
    def pids(self) -> tuple[int, ...]: ...

    @property
    def mode(self) -> str | None: ...


def _key(tgid: pd.Series, fd: pd.Series) -> np.ndarray:
    return (tgid.to_numpy(np.int64) << 32) | (fd.to_numpy(np.int64) & 0xFFFFFFFF)


def part_of(rec: Recording, listener: ListenerLike) -> Recording:
    """The listener's share of a recording: its listener wakeups (by port) and its
    processes' other wakeups, the accepts on its sockets (by process and fd), the
    connections established on it, and its processes' threads."""
    pids = list(listener.pids)
    w, a = rec.wakeups, rec.accepts
    ours = w["tgid"].isin(pids)
    not_others = (w["cause"] != "listener") | (w["lport"] == listener.port)
    held = np.array([(pid << 32) | fd for pid, fd in listener.holders], np.int64)
    return replace(
        rec,
        wakeups=w.loc[ours & not_others],
        accepts=a.loc[np.isin(_key(a["tgid"], a["fd"]), held)],
        connections=rec.connections.loc[rec.connections["lport"] == listener.port],
        threads=rec.threads.loc[rec.threads["tgid"].isin(pids)],
    )


def observed_mode(listener: ListenerLike, part: Recording) -> str | None:
    """The mode /proc shows (reuseport, epoll-shared/exclusive), else the wait its
    listener wakeups came out of (accept, select, poll, epoll)."""
    if listener.mode is not None:
        return listener.mode
    per_wait: dict[str, int] = {}
    for call, n in metrics.category_counts(metrics.herd_wakeups(part)["wait_call"]).items():
        if n and call in verdict.WAITS:
            per_wait[verdict.WAITS[call]] = per_wait.get(verdict.WAITS[call], 0) + n
    # The most frequent; a tie goes to the first by name.
    return min(per_wait, key=lambda wait: (-per_wait[wait], wait)) if per_wait else None


def listener_row(listener: ListenerLike, part: Recording, interval_s: float) -> dict[str, Any]:
    """One listener's line of `top --json` (its fields are analyze --json's; accept
    latency is not among them)."""
    s = metrics.summarize(part, metrics.unmatched())
    latency = s.wake_latency_us
    return {
        "addr": listener.addr,
        "port": listener.port,
        "pids": list(listener.pids),
        "comm": listener.comm,
        "mode": observed_mode(listener, part),
        "workers": s.workers,
        "processes": len(listener.pids),
        "accepts": s.accepts,
        "connections_per_s": s.accepts / interval_s if interval_s > 0 else None,
        "listener_wakeups": s.listener_wakeups,
        "herd_factor": s.herd_factor,
        "threads_woken_per_connection": s.threads_woken_per_connection,
        "idle_fraction": s.idle_fraction,
        "idle_wakeups": s.idle_wakeups,
        "eagain": s.eagain,
        "wasted_cpu_us_per_connection": s.wasted_cpu_us_per_connection,
        "wake_latency_p99_us": latency["p99"] if latency else None,
    }


def by_listener(rec: Recording, listeners: Sequence[ListenerLike], interval_s: float) -> list[dict[str, Any]]:
    """Every listener's row, most woken-for-nothing first, then busiest."""
    rows = [listener_row(lst, part_of(rec, lst), interval_s) for lst in listeners]
    return sorted(rows, key=lambda r: (-r["idle_wakeups"], -r["accepts"], r["port"]))
