"""Herd metrics: pure, vectorized functions over the frames of a Recording.

DataFrames in, DataFrames or plain values out; no files, no plotting. A value
that cannot be computed is None, never a made-up number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from herdtrace import __version__
from herdtrace.analysis.load import OUTCOMES, Recording

PEER_KEY = ["peer_hi", "peer_lo", "rport"]
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def outcome_counts(wakeups: pd.DataFrame) -> dict[str, int]:
    counts = wakeups["outcome"].value_counts().reindex(OUTCOMES.categories, fill_value=0)
    return {str(k): int(v) for k, v in counts.items()}


def percentiles_us(values_ns: pd.Series) -> dict[str, float] | None:
    v = values_ns.dropna()
    if v.empty:
        return None
    q = v.quantile(list(QUANTILES.values())).to_numpy() / 1e3
    out = {k: float(x) for k, x in zip(QUANTILES, q, strict=True)}
    out["max"] = float(v.max()) / 1e3
    return out


def match_accepts(
    accepts: pd.DataFrame, connections: pd.DataFrame
) -> tuple[pd.DataFrame, str | None]:
    """Each successful accept with the connection it returned.

    By the peer address accept wrote to user memory where the application passed
    a buffer ("peer"); otherwise the n-th accept takes the n-th connection
    established on the traced listeners ("fifo"). Returns the accepts with
    conn_id, conn_ts and accept_latency_ns, and the method used.
    """
    ok = accepts.loc[accepts["accepted"], ["ts", "tid", "has_peer", *PEER_KEY]]
    cols = ["ts", "tid", "conn_id", "conn_ts", "accept_latency_ns"]
    if ok.empty or connections.empty:
        return pd.DataFrame(columns=cols), None
    conns = connections[["ts", "conn_id", *PEER_KEY]].rename(columns={"ts": "conn_ts"})
    with_peer = ok[ok["has_peer"]]
    by_peer = pd.merge_asof(with_peer.sort_values("ts"), conns.sort_values("conn_ts"),
                            left_on="ts", right_on="conn_ts", by=PEER_KEY, direction="backward")
    rest = ok[~ok["has_peer"]].sort_values("ts").reset_index(drop=True)
    method = "peer" if rest.empty else "fifo"
    if not rest.empty:
        free = conns[~conns["conn_id"].isin(by_peer["conn_id"].dropna())].sort_values("conn_ts")
        free = free.reset_index(drop=True).iloc[: len(rest)]
        rest = pd.concat([rest.iloc[: len(free)], free[["conn_id", "conn_ts"]]], axis=1)
    matched = pd.concat([by_peer, rest], ignore_index=True)
    matched["accept_latency_ns"] = (matched["ts"] - matched["conn_ts"]).astype(np.float64)
    return matched[cols].sort_values("ts").reset_index(drop=True), method


def waiting_threads(rec: Recording) -> pd.Index:
    """Threads that waited (were woken in, or returned from, a wait): the workers."""
    return pd.Index(pd.concat([rec.wakeups["tid"], rec.accepts["tid"]]).unique(), name="tid")


def accepts_per_thread(rec: Recording) -> pd.Series:
    per = rec.accepts.loc[rec.accepts["accepted"]].groupby("tid").size()
    return per.reindex(waiting_threads(rec), fill_value=0).sort_index().rename("accepts")


def jain_index(counts: pd.Series) -> float | None:
    x = counts.to_numpy(dtype=np.float64)
    denom = len(x) * float((x * x).sum())
    return float(x.sum() ** 2 / denom) if denom > 0 else None


def max_share(counts: pd.Series) -> float | None:
    total = counts.sum()
    return float(counts.max() / total) if total > 0 else None


def per_thread(rec: Recording) -> pd.DataFrame:
    w = rec.wakeups
    outcomes = pd.crosstab(w["tid"], w["outcome"], dropna=False).reindex(
        columns=OUTCOMES.categories, fill_value=0)
    a = rec.accepts
    acc = a.groupby("tid").agg(accepts=("accepted", "sum"), accept_eagain=("eagain", "sum"))
    out = pd.DataFrame(index=waiting_threads(rec)).join(w.groupby("tid").size().rename("wakeups"))
    out = out.join(outcomes).join(acc).fillna(0).astype(np.int64)
    out = out.join(w.groupby("tid")["wake_latency_ns"].median().rename("wake_latency_p50_ns"))
    return out.sort_index()


def per_connection(rec: Recording) -> pd.DataFrame:
    """How many threads each connection woke, and which thread accepted it."""
    w = rec.wakeups.dropna(subset=["conn_id"])
    cols = ["conn_id", "conn_ts", "wakeups", "threads_woken", "winner_tid", "accept_latency_ns"]
    if w.empty or rec.connections.empty:
        return pd.DataFrame(columns=cols)
    woke = w.groupby("conn_id").agg(wakeups=("tid", "size"), threads_woken=("tid", "nunique"))
    matched, _ = match_accepts(rec.accepts, rec.connections)
    winners = matched.dropna(subset=["conn_id"]).drop_duplicates("conn_id").set_index("conn_id")
    conns = rec.connections.set_index("conn_id")[["ts"]].rename(columns={"ts": "conn_ts"})
    out = conns.join(woke, how="left").join(
        winners[["tid", "accept_latency_ns"]].rename(columns={"tid": "winner_tid"}), how="left")
    out[["wakeups", "threads_woken"]] = out[["wakeups", "threads_woken"]].fillna(0).astype(np.int64)
    return out.reset_index()[cols]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def summarize(rec: Recording) -> dict[str, Any]:
    """One recording (or label) in the shape of `herdtrace analyze --json`."""
    w, a = rec.wakeups, rec.accepts
    outcomes = outcome_counts(w)
    accepted = int(a["accepted"].sum())
    idle = outcomes["absorbed"] + outcomes["eagain"]
    matched, method = match_accepts(a, rec.connections)
    per = accepts_per_thread(rec)
    return {
        "file": str(rec.path),
        "label": rec.label,
        "duration_s": rec.duration_s,
        "threads": len(rec.threads),
        "connections": len(rec.connections),
        "accepted": accepted,
        "accept_eagain": int(a["eagain"].sum()),
        "wakeups": len(w),
        "wakeups_per_accept": _ratio(len(w), accepted),
        "outcomes": outcomes,
        "idle_wakeups": idle,
        "idle_fraction": _ratio(idle, len(w)),
        "wake_latency_us": percentiles_us(w["wake_latency_ns"]),
        "accept_latency_us": percentiles_us(matched["accept_latency_ns"]) if method else None,
        "accept_latency_match": method,
        "accepts_per_thread": {str(t): int(n) for t, n in per.items()},
        "fairness_jain": jain_index(per),
        "max_share": max_share(per),
        "lost_events": int(rec.meta.get("lost_events", 0)),
        "attribution": rec.meta.get("attribution"),
        "eagain_per_accept": _ratio(int(a["eagain"].sum()), accepted),
        "kernel": rec.meta.get("kernel_release"),
    }


def combine(recs: list[Recording]) -> Recording:
    """Several recordings of one label as one (frames concatenated, counts summed)."""
    if len(recs) == 1:
        return recs[0]
    meta = dict(recs[0].meta)
    meta["lost_events"] = sum(int(r.meta.get("lost_events", 0)) for r in recs)
    meta["start_monotonic_ns"] = 0
    meta["end_monotonic_ns"] = int(sum((r.duration_s or 0.0) * 1e9 for r in recs))
    meta["combined_files"] = [str(r.path) for r in recs]

    def cat(attr: str) -> pd.DataFrame:
        frames = []
        for i, r in enumerate(recs):
            df = getattr(r, attr)
            if "conn_id" in df.columns:  # connection ids restart at 1 in every recording
                df = df.assign(conn_id=df["conn_id"] + (i << 40))
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    return Recording(path=recs[0].path.parent, label=recs[0].label, meta=meta,
                     wakeups=cat("wakeups"), accepts=cat("accepts"),
                     connections=cat("connections"), threads=cat("threads"))


def by_label(recs: list[Recording]) -> list[Recording]:
    labels = list(dict.fromkeys(r.label for r in recs))
    return [combine([r for r in recs if r.label == lbl]) for lbl in labels]


def grouped(recs: list[Recording], by_label_: bool | None = None) -> tuple[list[Recording], bool]:
    """Recordings to show: combined per label when asked, or by default when labels repeat."""
    labels = [r.label for r in recs]
    group = by_label_ if by_label_ is not None else len(set(labels)) < len(labels)
    return (by_label(recs) if group else recs), group


def analysis_json(recs: list[Recording]) -> dict[str, Any]:
    return {"herdtrace": __version__, "recordings": [summarize(r) for r in recs]}
