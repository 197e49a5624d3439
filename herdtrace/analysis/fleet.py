"""Many recordings, one table: a row of counts per recording, and roll-ups of rows.

A row holds the counts behind every ratio (accepts, listener wakeups, idle
wakeups, EAGAINs, woken (connection, thread) pairs, ...), not only the ratios,
so that any engine (pandas, DuckDB, Spark) rolls rows up by summing and divides
at the end. The table is Parquet with flat columns: it reads without herdtrace.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from herdtrace.analysis import load, metrics, stream, verdict
from herdtrace.analysis.load import CAUSES, OUTCOMES
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta

SUMMARY_KEY = b"herdtrace_summary"  # marks a Parquet file as a table of summaries
SUMMARY_VERSION = 1
GROUP_KEYS = ("host", "target", "mode", "day", "kernel")
# Counts that add up across recordings.
COUNTS = ("threads", "connections", "accepts", "eagain", "wakeups", "listener_wakeups",
          "idle_wakeups", "woken_pairs", "woken_connections", "lost_events", "probe_misses",
          *(f"cause_{c}" for c in CAUSES.categories),
          *(f"listener_{o}" for o in OUTCOMES.categories))
# Ratios, each a sum over a sum: (numerator, denominator).
RATIOS = {"herd_factor": ("listener_wakeups", "accepts"),
          "threads_woken_per_connection": ("woken_pairs", "woken_connections"),
          "idle_fraction": ("idle_wakeups", "listener_wakeups"),
          "eagain_per_accept": ("eagain", "accepts"),
          "wakeups_per_accept": ("wakeups", "accepts")}


def row_from(s: metrics.Summary, meta: RecordingMeta, ev: verdict.Evidence, pairs: int,
             conns: int) -> dict[str, Any]:
    """Where and what a recording recorded, its counts, its ratios. The mode is what
    /proc showed at record time, else the wait most listener wakeups came out of."""
    target = meta.target
    command = target.command
    start = meta.start_time
    # Where causes are unknown every wakeup is the herd's (herd_factor_basis says so).
    listener = s.listener_outcomes if s.listener_outcomes is not None else s.outcomes
    row: dict[str, Any] = {
        "file": s.file, "error": None, "label": s.label,
        "host": meta.hostname, "kernel": meta.kernel_release,
        "target": ev.server or (Path(command[0]).name if command else None),
        "cmdline": " ".join(str(c) for c in target.cmdlines.values()) or " ".join(command),
        "listen_ports": ",".join(str(p) for p in target.listen_ports),
        "mode": ev.mode or (ev.waits[0] if ev.waits else None), "attribution": s.attribution,
        "herd_factor_basis": s.herd_factor_basis,
        "start_time": start, "end_time": meta.end_time,
        "day": start[:10] if isinstance(start, str) else None,
        "duration_s": s.duration_s,
        "threads": s.threads, "connections": s.connections, "accepts": s.accepts,
        "eagain": s.eagain, "wakeups": s.wakeups,
        "listener_wakeups": sum(listener.values()),
        "idle_wakeups": s.idle_wakeups, "woken_pairs": pairs, "woken_connections": conns,
        "lost_events": s.lost_events, "probe_misses": s.probe_misses, "workers": s.workers,
    }
    row.update({f"cause_{c}": n for c, n in s.wakeup_causes.items()})
    row.update({f"listener_{o}": listener.get(o, 0) for o in OUTCOMES.categories})
    row["wake_latency_p99_us"] = s.wake_latency_us["p99"] if s.wake_latency_us else None
    return row


def with_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Each ratio from its counts: per recording, and the same for a roll-up's sums."""
    for name, (num, den) in RATIOS.items():
        frame[name] = (frame[num] / frame[den].where(frame[den] > 0)).astype(float)
    return frame


def _whole_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts as nullable integers (null in an error's row; Parquet's nullable ints
    come back from pandas as floats)."""
    for col in (*COUNTS, "workers"):
        frame[col] = (frame[col] if col in frame.columns
                      else pd.Series(index=frame.index, dtype=object)).astype("Int64")
    return frame


def check_group_key(by: str) -> None:
    if by not in GROUP_KEYS:
        raise HerdtraceError(f"--group-by {by!r}: one of {', '.join(GROUP_KEYS)}")


def summarize_one(path: str) -> dict[str, Any]:
    """A row, or a row with the error: a broken file never fails the run."""
    try:
        st = stream.analyse(path)  # bounded memory: N of these run at once
        return row_from(st.summary, st.meta, st.evidence, st.woken_pairs, st.woken_connections)
    except (HerdtraceError, OSError, ValueError, KeyError) as exc:
        return {"file": path, "error": str(exc)}


def summarize_files(paths: Sequence[Path], jobs: int | None = None) -> pd.DataFrame:
    """One row per recording, computed in parallel (a process per core by default)."""
    files = [str(p) for p in load.expand_paths(list(paths))]
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1 or len(files) == 1:
        rows = [summarize_one(f) for f in files]
    else:
        # Spawned, not forked: the parent already runs Arrow's thread pools, and a
        # forked child can inherit one of their locks held.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(summarize_one, files, chunksize=max(1, len(files) // (jobs * 8))))
    frame = _whole_numbers(pd.DataFrame(rows))
    frame["error"] = frame["error"].astype("string")  # every row has one, None or a message
    return with_ratios(frame)


def write_table(frame: pd.DataFrame, out: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {SUMMARY_KEY: str(SUMMARY_VERSION).encode(),
            b"created": dt.datetime.now(dt.UTC).isoformat().encode()}
    pq.write_table(table.replace_schema_metadata(meta), out, compression="zstd")


def is_table(path: Path) -> bool:
    """Whether a Parquet file is a table of summaries (not a recording)."""
    try:
        kv = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError):
        return False
    return SUMMARY_KEY in kv


def read_table(path: Path) -> pd.DataFrame:
    return _whole_numbers(pq.read_table(path).to_pandas())


def rollup(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Rows grouped by host, target, mode, day or kernel: counts summed, ratios
    recomputed from the sums, recordings and errors counted."""
    check_group_key(by)
    ok = frame[frame["error"].isna()] if "error" in frame.columns else frame
    keyed = ok.assign(**{by: ok[by].fillna("(unknown)")}) if by in ok.columns else ok.assign(**{by: "(unknown)"})
    counts = [c for c in COUNTS if c in keyed.columns]
    grouped = keyed.groupby(by, sort=True)
    out = grouped[counts].sum(min_count=1)
    out.insert(0, "recordings", grouped.size())
    errors = frame["error"].notna().sum() if "error" in frame.columns else 0
    out = with_ratios(out)
    out.attrs["errors"] = int(errors)
    return out.reset_index()
