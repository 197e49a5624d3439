"""Recordings in, typed pandas DataFrames out: wakeups, accepts, connections, threads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta
from herdtrace.schema import (
    COLUMNS,
    EAGAIN,
    EVENT_DTYPE,
    METADATA_KEY,
    SCHEMA_VERSION,
    STORED_FIELDS,
    TEXT_COLUMNS,
    Cause,
    Flag,
    Kind,
    Outcome,
    WaitCall,
    value_names,
)
from herdtrace.schema import CauseBasis as Basis

OUTCOMES = pd.CategoricalDtype([o.name.lower() for o in Outcome if o != Outcome.NONE])
WAIT_CALLS = pd.CategoricalDtype([c.name.lower() for c in WaitCall if c != WaitCall.NONE])
CAUSES = pd.CategoricalDtype([c.name.lower() for c in Cause if c != Cause.NONE])
CAUSE_BASES = pd.CategoricalDtype([b.name.lower() for b in Basis if b != Basis.NONE])
# Columns older recordings lack, read as all zero: cause unknown (schema 1), on-CPU
# time not measured (schema < 4: metadata cpu_time is None).
ADDED_IN = {"cause": 2, "cause_basis": 2, "cpu_ns": 4}

_WAKEUP_COLS = ["ts", "enter_ts", "oncpu_ts", "ret_ts", "sk", "conn_id", "tid", "tgid",
                "other_tid", "other_tgid", "fd", "ret", "lport", "cpu", "target_cpu", "accepts",
                "eagains", "outcome", "wait_call", "flags", "cause", "cause_basis", "cpu_ns"]
_ACCEPT_COLS = ["ts", "enter_ts", "tid", "tgid", "fd", "ret", "rport", "wait_call", "flags", "raddr"]
_CONN_COLS = ["ts", "conn_id", "sk", "lport", "rport", "cpu", "flags", "raddr"]
_THREAD_COLS = ["ts", "tid", "tgid", "other_tid", "comm"]


@dataclass
class Recording:
    path: Path
    label: str
    meta: RecordingMeta
    wakeups: pd.DataFrame
    accepts: pd.DataFrame
    connections: pd.DataFrame
    threads: pd.DataFrame

    @property
    def duration_s(self) -> float | None:
        return self.meta.duration_s


def read_metadata(path: Path) -> tuple[pq.ParquetFile, RecordingMeta]:
    if not path.is_file():
        raise HerdtraceError(f"{path}: no such file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise HerdtraceError(f"{path}: not a recording (not Parquet, or truncated: {exc})") from None
    raw = (pf.metadata.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise HerdtraceError(f"{path}: not a herdtrace recording (no herdtrace metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise HerdtraceError(f"{path}: corrupt herdtrace metadata") from None
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise HerdtraceError(f"{path}: schema version {version} is newer than this herdtrace "
                             f"reads ({SCHEMA_VERSION}): upgrade herdtrace")
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names
               and not version < ADDED_IN.get(c, 0)]
    if missing:
        raise HerdtraceError(f"{path}: missing columns {', '.join(missing)}")
    # Names read as dictionaries: what the writer stored, and cheap to turn into codes.
    pf = pq.ParquetFile(path, read_dictionary=[c for c in TEXT_COLUMNS if c in pf.schema_arrow.names])
    try:
        return pf, RecordingMeta.from_json(meta)
    except (TypeError, ValueError):
        raise HerdtraceError(f"{path}: corrupt herdtrace metadata") from None


_KIND_COLUMNS: dict[Kind, list[str]] = {
    Kind.WAKEUP: _WAKEUP_COLS, Kind.ACCEPT: _ACCEPT_COLS, Kind.CONN: _CONN_COLS,
    Kind.THREAD: _THREAD_COLS, Kind.THREAD_EXIT: ["ts", "tid"],
}


def _read_kinds(pf: pq.ParquetFile, path: Path, kinds: tuple[Kind, ...]) -> dict[Kind, pa.Table]:
    """One pass over the file, row group by row group (bounded memory), split by kind."""
    columns = sorted({c for k in kinds for c in _KIND_COLUMNS[k] if c in pf.schema_arrow.names}
                     | {"kind"})
    try:
        return split_kinds((pf.read_row_group(i, columns=columns) for i in range(pf.num_row_groups)),
                           pf.schema_arrow, kinds)
    except (pa.ArrowException, OSError) as exc:
        raise HerdtraceError(f"{path}: corrupt recording ({exc})") from None


def split_kinds(row_groups: Iterable[pa.Table], schema: pa.Schema,
                kinds: tuple[Kind, ...]) -> dict[Kind, pa.Table]:
    """Row groups of a recording (any schema version) -> one table per kind, with the
    columns analysis reads, enum columns as their values."""
    present = set(schema.names)
    wanted = {k: _KIND_COLUMNS[k] for k in kinds}
    parts: dict[Kind, list[pa.Table]] = {k: [] for k in wanted}
    for rg in row_groups:
        rg = as_read(rg, present)
        kind_col = rg["kind"]
        for kind, cols in wanted.items():
            parts[kind].append(rg.select(cols).filter(pc.equal(kind_col, int(kind))))
    empty = as_codes(schema.empty_table())

    def no_rows(c: str) -> pa.Array:
        return pa.array([], type=empty.schema.field(c).type if c in present else pa.uint8())

    return {
        kind: pa.concat_tables(tables) if tables else pa.table({c: no_rows(c) for c in wanted[kind]})
        for kind, tables in parts.items()
    }


_NAMED = {f.name: {n: v for v, n in enumerate(value_names(f.names)) if n}
          for f in STORED_FIELDS if f.names is not None}
_NULL_IS_ZERO = tuple(f.name for f in STORED_FIELDS if f.zero_is_null)


def _codes_of(chunk: pa.Array, values: dict[str, int]) -> pa.Array:
    """A column of names (schema 3) -> the enum values as uint8 (null: 0)."""
    if not pa.types.is_dictionary(chunk.type):
        if pa.types.is_integer(chunk.type):
            return chunk.cast(pa.uint8())  # schema 1 and 2 stored the values
        chunk = chunk.dictionary_encode()
    lut = np.array([values.get(n, 0) for n in chunk.dictionary.to_pylist()] + [0], np.uint8)
    idx = chunk.indices.fill_null(len(lut) - 1).to_numpy(zero_copy_only=False)
    return pa.array(lut[idx])


def as_read(rg: pa.Table, file_columns: Iterable[str]) -> pa.Table:
    """A row group of any schema version as analysis reads it: enum values (as_codes),
    and the columns older schemas lacked (absent from `file_columns`) as zeros."""
    rg = as_codes(rg)
    for c in ADDED_IN:
        if c not in file_columns:
            rg = rg.append_column(c, pa.array(np.zeros(rg.num_rows, EVENT_DTYPE[c])))
    return rg


def as_codes(rg: pa.Table) -> pa.Table:
    """A row group as analysis reads it, whatever the schema version: enum names as
    their values, absent (null) numbers as 0, command names as plain text."""
    for name in rg.column_names:
        col = rg.column(name)
        if name in _NAMED:
            col = pa.chunked_array([_codes_of(c, _NAMED[name]) for c in col.chunks], pa.uint8())
        elif name in _NULL_IS_ZERO and col.null_count:
            col = col.fill_null(0)
        elif name == "comm" and pa.types.is_dictionary(col.type):
            col = col.cast(pa.string()).fill_null("")
        else:
            continue
        rg = rg.set_column(rg.column_names.index(name), name, col)
    return rg


# Below this, a kind's table is converted in one go (the peak grows by at most this):
# `top` converts every interval (50k records are ~4 MiB a kind),
# and inserting columns one at a time costs ~3 ms a table whatever its size.
SMALL_TABLE_BYTES = 8 << 20


def _take_pandas(tables: dict[Kind, pa.Table], kind: Kind) -> pd.DataFrame:
    """Take one kind's table out of `tables` and convert it. A large one goes column
    by column: each column's Arrow chunks are freed, and handed back to the system,
    before the next is converted (Arrow's allocator keeps freed memory, so converting
    a whole table at once peaks at twice its size), one block per column: no
    consolidation copies. 16-byte addresses become two uint64 words, peer_hi and
    peer_lo."""
    table = tables.pop(kind)
    if table.nbytes <= SMALL_TABLE_BYTES:
        columns: dict[str, Any] = {}
        for name in table.column_names:
            if name == "raddr":
                columns["peer_hi"], columns["peer_lo"] = peer_words(table.column(name))
            else:
                columns[name] = table.column(name).to_pandas()
        return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))
    pool = pa.default_memory_pool()
    df = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    for name in table.column_names:
        column = table.column(name)
        table = table.drop_columns([name])  # the only other reference: freed below
        if name == "raddr":
            df["peer_hi"], df["peer_lo"] = peer_words(column)
        else:
            df[name] = column.to_pandas()
        del column
        pool.release_unused()
    return df


def _sorted_by(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Time order (accept and connection records arrive nearly sorted already)."""
    if df[column].is_monotonic_increasing:
        return df
    return df.sort_values(column, kind="stable", ignore_index=True)


def peer_words(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte addresses -> two uint64 words, straight from the Arrow buffer."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    if n == 0:
        return address_words(np.zeros((0, 16), np.uint8))
    return address_words(np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=16 * n,
                                       offset=arr.offset * 16).reshape(n, 16))


def address_words(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) address bytes (network order) -> peer_hi and peer_lo as uint64."""
    words = raw.view(">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _zero_to_na(s: pd.Series) -> pd.Series:
    values = s.to_numpy()
    return pd.Series(pd.arrays.IntegerArray(values.astype(np.int64), values == 0), index=s.index)


def _codes(s: pd.Series, dtype: pd.CategoricalDtype) -> pd.Categorical:
    """Enum values 1..n stored as u8 -> a categorical (0, "none", becomes NaN)."""
    return pd.Categorical.from_codes(s.to_numpy().astype(np.int8) - 1, dtype=dtype)


def wakeups_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per wakeup, in the order recorded: a wakeup is written when its outcome
    is known, so not strictly by `ts` (sort a slice when a timeline needs it; sorting
    ten million rows would double the memory analysis needs)."""
    df = df.rename(columns={"other_tid": "waker_tid", "other_tgid": "waker_tgid",
                            "cpu": "waker_cpu"})
    outcome = df["outcome"].to_numpy()
    df["outcome"] = _codes(df["outcome"], OUTCOMES)
    df["wait_call"] = _codes(df["wait_call"], WAIT_CALLS)
    flags = df.pop("flags").to_numpy()
    df["net_cause"] = (flags & int(Flag.NET_CAUSE)) > 0
    df["waker_idle"] = (flags & int(Flag.WAKER_IDLE)) > 0
    df["conn_state_listener"] = (flags & int(Flag.CONN_STATE_LISTENER)) > 0
    df["epoll_rewake"] = (flags & int(Flag.EPOLL_REWAKE)) > 0
    df["waking_unseen"] = (flags & int(Flag.WAKING_UNSEEN)) > 0
    cause, basis = _refine_cause(df, outcome)
    df["cause"] = _codes(pd.Series(cause), CAUSES)
    df["cause_basis"] = _codes(pd.Series(basis), CAUSE_BASES)
    oncpu = df["oncpu_ts"].to_numpy()
    df["wake_latency_ns"] = np.where(oncpu > 0, oncpu.astype(np.float64) - df["ts"].to_numpy(),
                                     np.nan)
    df["conn_id"] = _zero_to_na(df["conn_id"])
    return df


def _refine_cause(df: pd.DataFrame, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    basis = df["cause_basis"].to_numpy().copy()
    cause, timed_out = refined_cause(df["cause"].to_numpy(), outcome, df["ret"].to_numpy(),
                                     df["ret_ts"].to_numpy(),
                                     df["wait_call"].cat.codes.to_numpy() + 1)
    basis[timed_out] = Basis.ANALYSIS
    return cause, basis


def refined_cause(cause: np.ndarray, outcome: np.ndarray, ret: np.ndarray, ret_ts: np.ndarray,
                  call: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's cause, where analysis knows better: a poll/select/epoll wait
    that returned 0 timed out, so a wakeup the kernel could not place (`other`,
    `unknown`, or a schema-1 recording's 0) was its timer, and so was one the
    kernel tied to a socket or a connection: had that socket woken the wait, the
    wait would have returned it (the tie was the waker's coincidence: a task that
    had just made some socket readable when the timer fired on its CPU). A
    listener's stays: another worker may have taken the connection as the timeout
    ran out. Returns the causes (a copy) and which wakeups timed out. Enum values
    in, enum values out."""
    cause = cause.copy()
    cause[cause == Cause.NONE] = Cause.UNKNOWN
    timed_out = ((outcome != Outcome.ABSORBED) & (outcome != Outcome.UNRESOLVED)
                 & (ret == 0) & (ret_ts > 0)
                 & (call != WaitCall.ACCEPT) & (call != WaitCall.ACCEPT4)
                 & ((cause == Cause.OTHER) | (cause == Cause.UNKNOWN)
                    | (cause == Cause.SOCKET) | (cause == Cause.CONNECTION)))
    cause[timed_out] = Cause.TIMER
    return cause, timed_out


def accepts_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = _sorted_by(df, "ts")
    df["wait_call"] = _codes(df["wait_call"], WAIT_CALLS)
    flags = df.pop("flags").to_numpy()
    df["has_peer"] = (flags & int(Flag.PEER)) > 0
    df["accepted"] = df["ret"] >= 0
    df["eagain"] = df["ret"] == -EAGAIN
    return df


def connections_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = _sorted_by(df, "ts")
    df["ipv6"] = (df.pop("flags").to_numpy() & int(Flag.IPV6)) > 0
    return df


def threads_frame(started: pd.DataFrame, exited: pd.DataFrame) -> pd.DataFrame:
    df = started.rename(columns={"ts": "start_ts", "other_tid": "parent"})
    comm = df["comm"]
    if len(comm) and isinstance(comm.iloc[0], bytes):  # schema 1 and 2 stored char[16]
        comm = comm.str.decode("utf-8", errors="replace").str.rstrip("\0")
    df["comm"] = comm.astype(str)
    ends = exited.groupby("tid")["ts"].max().rename("exit_ts")
    df = df.drop_duplicates("tid", keep="first").join(ends, on="tid")
    return df.sort_values("start_ts", kind="stable").reset_index(drop=True)


def _frame_of(events: np.ndarray, rows: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Some records (schema.EVENT_DTYPE; `rows` selects them) -> the frame _take_pandas
    would give for them once stored and read: the same columns, dtypes and peer words.
    Column by column: only the fields a kind has are copied, not whole records, at
    indices found once (a mask per column took 2-2.6x as long)."""
    at = np.flatnonzero(rows)
    data: dict[str, np.ndarray] = {}
    for name in columns:
        if name == "raddr":
            data["peer_hi"], data["peer_lo"] = address_words(events["raddr"][at])
        else:
            data[name] = events[name][at]
    return pd.DataFrame(data, index=pd.RangeIndex(len(at)))


def recording_from_events(events: np.ndarray, meta: RecordingMeta, path: Path,
                          label: str) -> Recording:
    """Records as the ring gives them (schema.EVENT_DTYPE) -> a Recording with the
    frames loading them from a file would give (`top`, every interval: numpy straight
    to frames, no Arrow on the way, as nothing needs decoding)."""
    kind = np.ascontiguousarray(events["kind"])  # compared once a kind: not strided

    def take(k: Kind) -> pd.DataFrame:
        return _frame_of(events, kind == k, _KIND_COLUMNS[k])

    return _recording(path, label, meta, wakeups_frame(take(Kind.WAKEUP)), take)


_REST = (Kind.ACCEPT, Kind.CONN, Kind.THREAD, Kind.THREAD_EXIT)


def _recording(path: Path, label: str, meta: RecordingMeta, wakeups: pd.DataFrame,
               take: Callable[[Kind], pd.DataFrame]) -> Recording:
    """The frames of the kinds other than wakeups (`take` gives each kind's raw frame),
    and the Recording."""
    return Recording(
        path=path, label=label, meta=meta, wakeups=wakeups,
        accepts=accepts_frame(take(Kind.ACCEPT)),
        connections=connections_frame(take(Kind.CONN)),
        threads=threads_frame(take(Kind.THREAD), take(Kind.THREAD_EXIT)),
    )


def load_recording(path: Path | str, label: str | None = None) -> Recording:
    path = Path(path)
    pf, meta = read_metadata(path)
    # Wakeups first, converted before the rest is read: the peak is one copy of them.
    wakeups = wakeups_frame(_take_pandas(_read_kinds(pf, path, (Kind.WAKEUP,)), Kind.WAKEUP))
    rest = _read_kinds(pf, path, _REST)
    return _recording(path, label or meta.label or path.stem, meta, wakeups,
                      lambda k: _take_pandas(rest, k))


TIME_COLUMNS = ("ts", "enter_ts", "oncpu_ts", "ret_ts", "conn_ts", "start_ts", "exit_ts")


def readable(frame: pd.DataFrame, rec: Recording) -> pd.DataFrame:
    """The frame with its clock columns (ns of CLOCK_MONOTONIC) as µs from the start
    of the recording (absent times, 0, become NaN), and its *_ns durations in µs."""
    start = rec.meta.start_monotonic_ns or 0
    out = frame.copy()
    for col in TIME_COLUMNS:
        if col in out.columns:
            values = out[col].to_numpy(np.float64, na_value=np.nan)
            out[col.removesuffix("_ts").removesuffix("ts") + "_us" if col != "ts" else "t_us"] = (
                np.where(values > 0, (values - start) / 1e3, np.nan))
            out = out.drop(columns=col)
    for col in [c for c in out.columns if c.endswith("_ns")]:
        out[col.removesuffix("_ns") + "_us"] = out.pop(col).astype(np.float64) / 1e3
    return out


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders become their *.parquet files, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if not found:
                raise HerdtraceError(f"{p}: no .parquet recordings in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


def load_recordings(paths: list[Path]) -> list[Recording]:
    return [load_recording(p) for p in expand_paths(paths)]
