"""The one definition of a herdtrace event.

The C struct the probes fill (probes/herd_event.h, generated from this module),
the numpy dtype the collector decodes ring-buffer bytes with, the Parquet
columns of a recording, and the DTrace parser's output all come from FIELDS.
`python -m herdtrace.schema` rewrites the header; a unit test fails when the
committed header and this module disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 4  # 2: wakeup cause, cause_basis, listener port; 3: names, nulls, comm text;
# 4: a wakeup's on-CPU time (cpu_ns)
METADATA_KEY = b"herdtrace"
HEADER_PATH = Path(__file__).parent / "probes" / "herd_event.h"


class Kind(enum.IntEnum):
    WAKEUP = 1  # one wakeup of a traced thread inside a wait syscall, with its outcome
    ACCEPT = 2  # an accept/accept4 return of a traced thread
    CONN = 3  # a connection established on a traced listener (SYN_RECV -> ESTABLISHED)
    THREAD = 4  # a traced thread: created while recording, or found at start
    THREAD_EXIT = 5  # a traced thread exited


class Outcome(enum.IntEnum):
    NONE = 0  # not a wakeup record
    ACCEPTED = 1
    EAGAIN = 2
    ABSORBED = 3
    OTHER = 4
    UNRESOLVED = 5  # recording ended before the woken thread showed what it did


class Cause(enum.IntEnum):
    """What made a wakeup happen (the terms of docs/DESIGN-DECISIONS.md)."""

    NONE = 0  # not a wakeup record
    LISTENER = 1  # a traced listening socket became readable: a new connection
    CONNECTION = 2  # data or a close on a socket accepted on a traced listener
    SOCKET = 3  # another socket became readable
    TIMER = 4  # a timer expired: the wait returned 0 (decided in analysis)
    OTHER = 5  # no socket became readable: pipe, signal, futex, ...
    UNKNOWN = 6  # the kernel could not say (no sock:sk_data_ready, and not a listener)


class CauseBasis(enum.IntEnum):
    """How a wakeup's cause was decided."""

    NONE = 0
    SK_DATA_READY = 1  # sock:sk_data_ready on the waker's CPU, by the waker, just before
    CONN_STATE = 2  # a connection SYN_RECV -> ESTABLISHED on a traced listener, same CPU and waker
    ANALYSIS = 3  # decided in analysis (a wait that returned 0 timed out)


class WaitCall(enum.IntEnum):
    NONE = 0
    ACCEPT = 1
    ACCEPT4 = 2
    EPOLL_WAIT = 3
    EPOLL_PWAIT = 4
    EPOLL_PWAIT2 = 5
    POLL = 6
    PPOLL = 7
    SELECT = 8
    PSELECT6 = 9
    KEVENT = 10


class Flag(enum.IntFlag):
    NET_CAUSE = 1  # wakeup follows sock:sk_data_ready on the waker's CPU (sk, conn_id valid)
    WAKER_IDLE = 2  # the waker was the idle task: the wakeup came from an interrupt
    PEER = 4  # raddr/rport hold the peer address accept wrote to user memory
    IPV6 = 8  # the socket was AF_INET6 (raddr may still be IPv4-mapped)
    CONN_STATE_LISTENER = 16  # the fallback rule (CauseBasis.CONN_STATE) calls it a listener wakeup
    EPOLL_REWAKE = 32  # woken by a worker leaving an epoll_wait that the listener woke (shared epoll)
    WAKING_UNSEEN = 64  # the kernel did not run the waking probe: found at switch-in (no waker, cause)


class Slept(enum.IntEnum):
    """How a traced thread last left the CPU, or the state a waking found it in: the
    kernel keeps it per thread, and user space reads it for wakings still pending at stop."""

    NONE = 0  # preempted, or never switched out
    INTR = 1  # slept interruptibly (a wait)
    UNINTR = 2  # slept uninterruptibly (a lock)
    UNKNOWN = 3  # a waking's state where the classic tracepoint cannot say


# Diagnostic counters the kernel keeps per CPU (HERD_CNT_* in the header), in order.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("lost_events", "ring buffer reservation failed: a record is lost"),
    ("threads_untraced", "a new thread could not be traced: the thread table is full"),
    ("wakings_merged", "a waking of a thread whose wakeup had not returned yet: the same wakeup"),
    ("wakings_uninterruptible", "a waking that ended an uninterruptible sleep (a lock): not a wakeup"),
    ("wakings_unseen", "a thread back from a wait's sleep with no waking seen: recorded from its switch-in"),
    ("conns_evicted", "an accepted socket forgotten for a newer one (its set was full): its wakeups say socket"),
    ("uncounted", "aggregation only: a listener or accepting socket not counted, its table is full"),
)

EAGAIN = 11  # Linux numbering; accept results are stored Linux-style on every platform
# Defaults of the attribution windows (probes -D, the DTrace parser): a cause seen
# on a CPU (sk_data_ready; a child established) -> the last wakeup it may explain.
CAUSE_WINDOW_NS = 200_000
CONN_WINDOW_NS = 200_000
# The kernel's connection table (probes -D MAX_CONNS): a socket's place is one of
# this many entries of its set.
CONN_WAYS = 4


def outcome_of(returned: bool, accepts: int, eagains: int) -> Outcome:
    """The outcome rule, as close_wakeup in herd.bpf.c applies it (there with
    `absorbed` for a wait that never returned before the thread slept again)."""
    if not returned:
        return Outcome.UNRESOLVED
    if accepts:
        return Outcome.ACCEPTED
    if eagains:
        return Outcome.EAGAIN
    return Outcome.OTHER


# Linux syscalls traced as wait syscalls: (name, its WaitCall, index of the argument
# recorded as `fd`, index of accept's sockaddr argument or -1). The probes take the
# same arguments by name from the tracepoints.
LINUX_WAIT_SYSCALLS: tuple[tuple[str, WaitCall, int, int], ...] = (
    ("accept", WaitCall.ACCEPT, 0, 1),
    ("accept4", WaitCall.ACCEPT4, 0, 1),
    ("epoll_wait", WaitCall.EPOLL_WAIT, 0, -1),
    ("epoll_pwait", WaitCall.EPOLL_PWAIT, 0, -1),
    ("epoll_pwait2", WaitCall.EPOLL_PWAIT2, 0, -1),
    ("poll", WaitCall.POLL, 1, -1),
    ("ppoll", WaitCall.PPOLL, 1, -1),
    ("select", WaitCall.SELECT, 0, -1),
    ("pselect6", WaitCall.PSELECT6, 0, -1),
)
# Their numbers, to read the wait a thread is already in from /proc/TID/syscall.
SYSCALL_NUMBERS: dict[str, dict[int, str]] = {
    "x86_64": {43: "accept", 288: "accept4", 232: "epoll_wait", 281: "epoll_pwait",
               441: "epoll_pwait2", 7: "poll", 271: "ppoll", 23: "select", 270: "pselect6"},
    "aarch64": {202: "accept", 242: "accept4", 22: "epoll_pwait", 441: "epoll_pwait2",
                73: "ppoll", 72: "pselect6"},
}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str  # u64 u32 s32 u16 u8, or u8[16] / char[16]
    doc: str
    stored: bool = True  # False: padding, in the C struct and the dtype only
    # How the recording stores it, so that it reads without herdtrace: an enum's
    # value as its lower-case name (0 as null), a zero as null, char[] as text.
    names: type[enum.IntEnum] | None = None
    zero_is_null: bool = False


# Ordered widest first so that the C struct has no padding.
FIELDS: tuple[Field, ...] = (
    Field("ts", "u64", "event time, ns of CLOCK_MONOTONIC (wakeup: sched_waking; "
          "flag waking_unseen: the switch-in or return that found it)"),
    Field("enter_ts", "u64", "wakeup/accept: entry of the wait syscall", zero_is_null=True),
    Field("oncpu_ts", "u64", "wakeup: first switch onto a CPU after waking (null: not seen)",
          zero_is_null=True),
    Field("ret_ts", "u64", "wakeup: return of the woken wait syscall (null: absorbed)",
          zero_is_null=True),
    Field("sk", "u64", "wakeup: keyed hash of the socket that became ready; conn: of the child",
          zero_is_null=True),
    Field("conn_id", "u64", "conn: its id; wakeup: the connection that caused it (null: unknown; "
          "record --no-connections: one id per listener readiness, with no conn row)",
          zero_is_null=True),
    Field("tid", "u32", "thread the record is about"),
    Field("tgid", "u32", "its process"),
    Field("other_tid", "u32", "wakeup: waker thread; thread: parent thread"),
    Field("other_tgid", "u32", "wakeup: waker process"),
    Field("fd", "s32", "wakeup: fd argument of the wait (nfds for poll/select); accept: fd"),
    Field("ret", "s32", "wakeup: return of the woken wait; accept: new fd or -errno"),
    Field("cpu_ns", "u32", "wakeup: on-CPU time it led to, from its switch-in to the thread's "
          "next switch-out into a wait (absorbed: back to sleep in the same wait), as metadata "
          "cpu_time says it was taken; saturates at 2^32-1 ns"),
    Field("lport", "u16", "conn: local (listening) port; wakeup: the listener's, for listener wakeups"),
    Field("rport", "u16", "conn/accept: peer port"),
    Field("cpu", "u16", "CPU the record was made on (wakeup: the waker's)"),
    Field("target_cpu", "u16", "wakeup: CPU the woken thread was queued on"),
    Field("accepts", "u16", "wakeup: accepts that returned a connection before the next wait"),
    Field("eagains", "u16", "wakeup: accepts that returned EAGAIN before the next wait"),
    Field("kind", "u8", "what the row is: wakeup, accept, conn, thread, thread_exit", names=Kind),
    Field("outcome", "u8", "wakeup: accepted, eagain, absorbed, other or unresolved",
          names=Outcome),
    Field("wait_call", "u8", "wakeup/accept: the syscall the thread waited in", names=WaitCall),
    Field("flags", "u8", "bits: " + ", ".join(f"{int(f)} {(f.name or '').lower()}" for f in Flag)),
    Field("cause", "u8", "wakeup: listener, connection, socket, timer, other or unknown",
          names=Cause),
    Field("cause_basis", "u8", "wakeup: how the cause was decided", names=CauseBasis),
    Field("raddr", "u8[16]", "conn/accept: peer address, 16 bytes in network order, IPv6 or "
          "IPv4-mapped (::ffff:a.b.c.d); with rport, the peer"),
    Field("comm", "char[16]", "thread: command name"),
    Field("pad", "u8[2]", "padding to a multiple of 8 bytes", stored=False),
)

_NUMPY = {"u64": "<u8", "u32": "<u4", "s32": "<i4", "u16": "<u2", "u8": "u1"}
_ARROW = {
    "u64": pa.uint64(),
    "u32": pa.uint32(),
    "s32": pa.int32(),
    "u16": pa.uint16(),
    "u8": pa.uint8(),
}


def _array_len(ctype: str) -> int | None:
    if "[" not in ctype:
        return None
    return int(ctype[ctype.index("[") + 1 : -1])


def numpy_dtype() -> np.dtype:
    parts: list[tuple[str, str]] = []
    for f in FIELDS:
        n = _array_len(f.ctype)
        parts.append((f.name, f"S{n}" if n else _NUMPY[f.ctype]))
    return np.dtype(parts)


def value_names(names: type[enum.IntEnum]) -> list[str]:
    """An enum's lower-case names indexed by value (gaps and NONE as "")."""
    out = [""] * (max(int(m) for m in names) + 1)
    for m in names:
        out[int(m)] = m.name.lower() if m.name != "NONE" else ""
    return out


def arrow_type(f: Field) -> pa.DataType:
    if f.names is not None:
        return pa.dictionary(pa.int8(), pa.string())
    if f.ctype.startswith("char["):
        return pa.dictionary(pa.int32(), pa.string())
    n = _array_len(f.ctype)
    return pa.binary(n) if n else _ARROW[f.ctype]


def fixed_size_binary(col: np.ndarray) -> pa.Array:
    """A char[n] column of records (numpy S<n>) as Arrow fixed-size binary, every byte
    kept (a peer address is not a NUL-terminated string, as numpy would read it)."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(col.dtype.itemsize), len(col),
                                                [None, pa.py_buffer(col.tobytes())])


def arrow_schema() -> pa.Schema:
    return pa.schema([pa.field(f.name, arrow_type(f), metadata={"doc": f.doc})
                      for f in STORED_FIELDS])


def column_docs() -> dict[str, str]:
    """What each column holds, for the recording's metadata (Parquet keeps no field docs)."""
    return {f.name: f.doc for f in STORED_FIELDS}


STORED_FIELDS = tuple(f for f in FIELDS if f.stored)
# Columns stored as text (dictionary-encoded): enum names and command names.
TEXT_COLUMNS = tuple(f.name for f in STORED_FIELDS
                     if f.names is not None or f.ctype.startswith("char["))
EVENT_DTYPE = numpy_dtype()
EVENT_SIZE = EVENT_DTYPE.itemsize
COLUMNS = tuple(f.name for f in STORED_FIELDS)


def _c_enum(prefix: str, members: type[enum.IntEnum] | type[enum.IntFlag]) -> list[str]:
    return [f"#define HERD_{prefix}_{m.name} {int(m.value)}" for m in members]


def c_header() -> str:
    lines = [
        "/* Generated from herdtrace/schema.py by `python -m herdtrace.schema`. Do not edit. */",
        "#ifndef HERD_EVENT_H",
        "#define HERD_EVENT_H",
        "",
        f"#define HERD_SCHEMA_VERSION {SCHEMA_VERSION}",
        f"#define HERD_EVENT_SIZE {EVENT_SIZE}",
        *_c_enum("KIND", Kind),
        *_c_enum("OUTCOME", Outcome),
        *_c_enum("CALL", WaitCall),
        *_c_enum("FLAG", Flag),
        *_c_enum("CAUSE", Cause),
        *_c_enum("BASIS", CauseBasis),
        *_c_enum("SLEPT", Slept),
        f"#define HERD_EAGAIN {EAGAIN}",
        f"#define HERD_CAUSE_WINDOW_NS {CAUSE_WINDOW_NS}",
        f"#define HERD_CONN_WINDOW_NS {CONN_WINDOW_NS}",
        f"#define HERD_CONN_WAYS {CONN_WAYS}",
        *[f"#define HERD_CNT_{name.upper()} {i} /* {doc} */" for i, (name, doc) in enumerate(COUNTERS)],
        f"#define HERD_CNT_NUM {len(COUNTERS)}",
        "",
        "struct herd_event {",
    ]
    for f in FIELDS:
        n = _array_len(f.ctype)
        base = f.ctype.split("[")[0]
        decl = f"{base} {f.name}[{n}]" if n else f"{base} {f.name}"
        lines.append(f"    {decl}; /* {f.doc} */")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    HEADER_PATH.write_text(c_header())
    print(f"wrote {HEADER_PATH}")
