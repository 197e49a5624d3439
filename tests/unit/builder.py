"""Hand-built recordings: rows of the real event dtype, written by the real writer."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import numpy as np

from herdtrace.collectors.writer import RecordingWriter
from herdtrace.schema import EVENT_DTYPE, SCHEMA_VERSION, Cause, CauseBasis, Flag, Kind, Outcome, WaitCall


def v4(addr: str) -> bytes:
    """IPv4-mapped IPv6, as the probes store a v4 peer."""
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(addr).packed


class Builder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def thread(self, tid: int, tgid: int, parent: int, comm: str, ts: int = 0) -> Builder:
        self.rows.append(dict(kind=Kind.THREAD, ts=ts, tid=tid, tgid=tgid, other_tid=parent,
                              comm=comm.encode()))
        return self

    def conn(self, ts: int, conn_id: int, rport: int, addr: str = "127.0.0.1",
             lport: int = 8080) -> Builder:
        self.rows.append(dict(kind=Kind.CONN, ts=ts, conn_id=conn_id, rport=rport,
                              lport=lport, raddr=v4(addr)))
        return self

    def wakeup(self, ts: int, tid: int, outcome: Outcome, oncpu: int = 0, conn_id: int = 0,
               accepts: int = 0, eagains: int = 0, call: WaitCall = WaitCall.EPOLL_WAIT,
               tgid: int = 10, cause: Cause | None = None, ret: int = 1,
               lport: int = 8080, cpu_ns: int = 0) -> Builder:
        """A wakeup; its cause defaults to the listener where a connection is given."""
        if cause is None:
            cause = Cause.LISTENER if conn_id else Cause.OTHER
        self.rows.append(dict(kind=Kind.WAKEUP, ts=ts, tid=tid, tgid=tgid, oncpu_ts=oncpu,
                              ret_ts=0 if outcome == Outcome.ABSORBED else ts + 10, ret=ret,
                              conn_id=conn_id, outcome=outcome, accepts=accepts, eagains=eagains,
                              wait_call=call, flags=Flag.NET_CAUSE if conn_id else 0,
                              cause=cause, cause_basis=CauseBasis.SK_DATA_READY,
                              lport=lport if cause == Cause.LISTENER else 0,
                              other_tid=99, other_tgid=99, cpu_ns=cpu_ns))
        return self

    def accept(self, ts: int, tid: int, ret: int, rport: int = 0, addr: str = "127.0.0.1",
               tgid: int = 10, fd: int = 3) -> Builder:
        row: dict[str, Any] = dict(kind=Kind.ACCEPT, ts=ts, tid=tid, tgid=tgid, ret=ret, fd=fd,
                                   wait_call=WaitCall.ACCEPT4)
        if rport:
            row.update(rport=rport, raddr=v4(addr), flags=Flag.PEER)
        self.rows.append(row)
        return self

    def array(self) -> np.ndarray:
        ev = np.zeros(len(self.rows), dtype=EVENT_DTYPE)
        for i, row in enumerate(self.rows):
            for k, v in row.items():
                ev[i][k] = v
        return ev

    def write(self, path: Path, **meta: Any) -> Path:
        writer = RecordingWriter(path)
        ev = self.array()
        half = len(ev) // 2  # two row groups, as a long recording has
        writer.write(ev[:half])
        writer.write(ev[half:])
        writer.close({"schema_version": SCHEMA_VERSION, "start_monotonic_ns": 0,
                      "end_monotonic_ns": 2_000_000_000, "lost_events": 0, "probe_misses": 0,
                      "attribution": "sk_data_ready", **meta})
        return path
