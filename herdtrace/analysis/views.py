"""What a report shows, computed here so that plotting never computes a metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from herdtrace.analysis import metrics
from herdtrace.analysis.load import Recording
from herdtrace.analysis.verdict import Verdict, judge
from herdtrace.metadata import RecordingMeta


@dataclass
class LabelView:
    label: str
    summary: metrics.Summary
    wake_latency_us: np.ndarray  # sorted, for a CDF
    accept_latency_us: np.ndarray  # sorted, for a CDF
    accept_share: pd.Series  # mean share of the busiest, 2nd busiest, ... worker of each run
    timeline: pd.DataFrame  # one typical connection's herd (see connection_timeline)
    meta: RecordingMeta
    verdict: Verdict


def typical_connection(per: pd.DataFrame) -> int | None:
    """Of metrics.per_connection's rows: a connection that woke the median number of
    threads and was accepted."""
    per = per[(per["wakeups"] > 0) & per["winner_tid"].notna()]
    if per.empty:
        return None
    median = per["threads_woken"].median()
    closest = (per["threads_woken"] - median).abs()
    return int(per.loc[closest.idxmin(), "conn_id"])


def connection_timeline(rec: Recording, conn_id: int | None,
                        matched: pd.DataFrame) -> pd.DataFrame:
    """Per woken thread of one connection, times in µs from its establishment:
    woken, on CPU, returned (NaN if absorbed), the accept that followed, outcome, winner."""
    cols = ["tid", "woken_us", "oncpu_us", "returned_us", "accept_us", "outcome", "won"]
    if conn_id is None:
        return pd.DataFrame(columns=cols)
    conn = rec.connections.loc[rec.connections["conn_id"] == conn_id]
    herd = metrics.herd_wakeups(rec)
    w = herd.loc[herd["conn_id"] == conn_id].copy()
    if conn.empty or w.empty:
        return pd.DataFrame(columns=cols)
    t0 = float(conn["ts"].iloc[0])
    winner = matched.loc[matched["conn_id"] == conn_id, "tid"]
    # The first accept each woken thread made after its wakeup: its win or its EAGAIN.
    a = rec.accepts[["ts", "tid"]].rename(columns={"ts": "accept_ts"}).sort_values("accept_ts")
    w = pd.merge_asof(w.sort_values("ts"), a, left_on="ts", right_on="accept_ts", by="tid",
                      direction="forward")
    w.loc[w["outcome"].isin(["absorbed", "other", "unresolved"]), "accept_ts"] = np.nan
    out = pd.DataFrame({
        "tid": w["tid"].to_numpy(),
        "woken_us": (w["ts"].to_numpy(np.float64) - t0) / 1e3,
        "oncpu_us": (w["oncpu_ts"].where(w["oncpu_ts"] > 0).to_numpy(np.float64) - t0) / 1e3,
        "returned_us": (w["ret_ts"].where(w["ret_ts"] > 0).to_numpy(np.float64) - t0) / 1e3,
        "accept_us": (w["accept_ts"].to_numpy(np.float64) - t0) / 1e3,
        "outcome": w["outcome"].astype(str).to_numpy(),
        "won": w["tid"].isin(winner).to_numpy(),
    })
    return out.sort_values("woken_us").reset_index(drop=True)


def _sorted_us(ns: pd.Series) -> np.ndarray:
    return np.sort(ns.dropna().to_numpy(np.float64)) / 1e3


def label_view(rec: Recording) -> LabelView:
    share = metrics.share_by_rank(metrics.accepts_per_run_thread(rec))
    match = metrics.match_accepts(rec.accepts, rec.connections)
    matched = match[0]
    typical = typical_connection(metrics.per_connection(rec, match))
    summary = metrics.summarize(rec, match)
    return LabelView(
        label=rec.label,
        summary=summary,
        wake_latency_us=_sorted_us(rec.wakeups["wake_latency_ns"]),
        accept_latency_us=_sorted_us(matched["accept_latency_ns"]),
        accept_share=share.astype(np.float64),
        timeline=connection_timeline(rec, typical, matched),
        meta=rec.meta,
        verdict=judge(rec, summary),
    )
