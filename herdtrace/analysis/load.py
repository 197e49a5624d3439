"""Recordings in, typed pandas DataFrames out: wakeups, accepts, connections, threads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from herdtrace.errors import HerdtraceError
from herdtrace.schema import COLUMNS, METADATA_KEY, SCHEMA_VERSION, Flag, Kind, Outcome, WaitCall

OUTCOMES = pd.CategoricalDtype([o.name.lower() for o in Outcome if o != Outcome.NONE])
WAIT_CALLS = pd.CategoricalDtype([c.name.lower() for c in WaitCall if c != WaitCall.NONE])
EAGAIN = 11

_WAKEUP_COLS = ["ts", "enter_ts", "oncpu_ts", "ret_ts", "sk", "conn_id", "tid", "tgid",
                "other_tid", "other_tgid", "fd", "ret", "cpu", "target_cpu", "accepts", "eagains",
                "outcome", "wait_call", "flags"]
_ACCEPT_COLS = ["ts", "enter_ts", "tid", "tgid", "fd", "ret", "rport", "wait_call", "flags", "raddr"]
_CONN_COLS = ["ts", "conn_id", "sk", "lport", "rport", "cpu", "flags", "raddr"]
_THREAD_COLS = ["ts", "tid", "tgid", "other_tid", "comm"]


@dataclass
class Recording:
    path: Path
    label: str
    meta: dict[str, Any]
    wakeups: pd.DataFrame
    accepts: pd.DataFrame
    connections: pd.DataFrame
    threads: pd.DataFrame

    @property
    def duration_s(self) -> float | None:
        start, end = self.meta.get("start_monotonic_ns"), self.meta.get("end_monotonic_ns")
        return (end - start) / 1e9 if start is not None and end is not None else None


def read_metadata(path: Path) -> tuple[pq.ParquetFile, dict[str, Any]]:
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
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise HerdtraceError(f"{path}: missing columns {', '.join(missing)}")
    return pf, meta


def _read_kind(pf: pq.ParquetFile, path: Path, kind: Kind, columns: list[str]) -> pa.Table:
    parts = []
    try:
        for i in range(pf.num_row_groups):  # row group by row group: bounded memory
            rg = pf.read_row_group(i, columns=[*columns, "kind"])
            parts.append(rg.filter(pc.equal(rg["kind"], int(kind))).drop_columns(["kind"]))
    except (pa.ArrowException, OSError) as exc:
        raise HerdtraceError(f"{path}: corrupt recording ({exc})") from None
    if not parts:
        return pa.table({c: pa.array([], type=pf.schema_arrow.field(c).type) for c in columns})
    return pa.concat_tables(parts)


def _peer_words(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte addresses -> two uint64 words, straight from the Arrow buffer."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    words = np.frombuffer(arr.buffers()[1], dtype=">u8", count=2 * n,
                          offset=arr.offset * 16).reshape(n, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _with_peer(table: pa.Table) -> pd.DataFrame:
    hi, lo = _peer_words(table["raddr"])
    df = table.drop_columns(["raddr"]).to_pandas()
    df["peer_hi"] = hi
    df["peer_lo"] = lo
    return df


def _zero_to_na(s: pd.Series) -> pd.Series:
    return s.astype("Int64").mask(s == 0)


def wakeups_frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    df = df.rename(columns={"other_tid": "waker_tid", "other_tgid": "waker_tgid",
                            "cpu": "waker_cpu"})
    df["outcome"] = pd.Categorical.from_codes(df["outcome"].astype(np.int16) - 1, dtype=OUTCOMES)
    df["wait_call"] = pd.Categorical.from_codes(df["wait_call"].astype(np.int16) - 1,
                                                dtype=WAIT_CALLS)
    flags = df.pop("flags")
    df["net_cause"] = (flags & int(Flag.NET_CAUSE)) > 0
    df["waker_idle"] = (flags & int(Flag.WAKER_IDLE)) > 0
    seen = df["oncpu_ts"] > 0
    df["wake_latency_ns"] = (df["oncpu_ts"].astype(np.float64) - df["ts"]).where(seen)
    df["conn_id"] = _zero_to_na(df["conn_id"])
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def accepts_frame(table: pa.Table) -> pd.DataFrame:
    df = _with_peer(table)
    df["wait_call"] = pd.Categorical.from_codes(df["wait_call"].astype(np.int16) - 1,
                                                dtype=WAIT_CALLS)
    flags = df.pop("flags")
    df["has_peer"] = (flags & int(Flag.PEER)) > 0
    df["accepted"] = df["ret"] >= 0
    df["eagain"] = df["ret"] == -EAGAIN
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def connections_frame(table: pa.Table) -> pd.DataFrame:
    df = _with_peer(table)
    df["ipv6"] = (df.pop("flags") & int(Flag.IPV6)) > 0
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def threads_frame(started: pa.Table, exited: pa.Table) -> pd.DataFrame:
    df = started.to_pandas().rename(columns={"ts": "start_ts", "other_tid": "parent"})
    df["comm"] = df["comm"].str.decode("utf-8", errors="replace").str.rstrip("\0")
    ends = exited.to_pandas().groupby("tid")["ts"].max().rename("exit_ts")
    df = df.drop_duplicates("tid", keep="first").join(ends, on="tid")
    return df.sort_values("start_ts", kind="stable").reset_index(drop=True)


def load_recording(path: Path | str, label: str | None = None) -> Recording:
    path = Path(path)
    pf, meta = read_metadata(path)
    return Recording(
        path=path,
        label=label or meta.get("label") or path.stem,
        meta=meta,
        wakeups=wakeups_frame(_read_kind(pf, path, Kind.WAKEUP, _WAKEUP_COLS)),
        accepts=accepts_frame(_read_kind(pf, path, Kind.ACCEPT, _ACCEPT_COLS)),
        connections=connections_frame(_read_kind(pf, path, Kind.CONN, _CONN_COLS)),
        threads=threads_frame(_read_kind(pf, path, Kind.THREAD, _THREAD_COLS),
                              _read_kind(pf, path, Kind.THREAD_EXIT, ["ts", "tid"])),
    )


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
