"""Herd metrics: pure, vectorized functions over the frames of a Recording.

DataFrames in, DataFrames or plain values out; no files, no plotting. A value
that cannot be computed is None, never a made-up number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from herdtrace.analysis.load import OUTCOMES, Recording
from herdtrace.metadata import RecordingMeta

PEER_KEY = ["peer_hi", "peer_lo", "rport"]
# Attributions under which the kernel told listener wakeups from the rest.
LISTENER_ATTRIBUTIONS = ("sk_data_ready", "conn_state", "solisten_wakeup")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def category_counts(values: pd.Series) -> dict[str, int]:
    """Rows per category of a categorical column, every category named (0 where none):
    a bincount of its codes (value_counts costs ~1 ms whatever the size, and `top`
    asks every interval)."""
    codes = values.cat.codes.to_numpy()
    counts = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories))
    return {str(k): int(n) for k, n in zip(values.cat.categories, counts, strict=True)}


def outcome_counts(wakeups: pd.DataFrame) -> dict[str, int]:
    return category_counts(wakeups["outcome"])


def percentiles_us(values_ns: pd.Series) -> dict[str, float] | None:
    """p50/p90/p99/max in µs (linear interpolation, as pandas' quantile)."""
    arr = values_ns.to_numpy(dtype=np.float64, na_value=np.nan)
    v = arr[~np.isnan(arr)]  # our own copy: percentile may reorder it in place
    if len(v) == 0:
        return None
    q = np.percentile(v, [p * 100 for p in QUANTILES.values()], overwrite_input=True) / 1e3
    out = {k: float(x) for k, x in zip(QUANTILES, q, strict=True)}
    out["max"] = float(v.max()) / 1e3
    return out


def peer_key(df: pd.DataFrame) -> np.ndarray:
    """(address, port) folded into one uint64, so joins hash one column, not three."""
    hi = df["peer_hi"].to_numpy(np.uint64)
    lo = df["peer_lo"].to_numpy(np.uint64)
    port = df["rport"].to_numpy(np.uint64)
    with np.errstate(over="ignore"):
        return ((lo ^ (hi * np.uint64(0x9E3779B97F4A7C15))) << np.uint64(16)) | port


# match_accepts' result, for callers that need it in several places (compute it once).
Match = tuple[pd.DataFrame, str | None]
_MATCHED_COLUMNS = ["ts", "tid", "conn_id", "conn_ts", "accept_latency_ns"]


def unmatched() -> Match:
    """For a summary whose accept latency nobody reads (`top`, every interval):
    matching accepts to connections is a third of summarize's time."""
    return pd.DataFrame(columns=_MATCHED_COLUMNS), None


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
    if ok.empty or connections.empty:
        return unmatched()
    conns = pd.DataFrame({"conn_ts": connections["ts"].to_numpy(),
                          "conn_id": connections["conn_id"].to_numpy(),
                          "peer": peer_key(connections)})
    with_peer = ok.loc[ok["has_peer"], ["ts", "tid"]].assign(peer=peer_key(ok[ok["has_peer"]]))
    by_peer = pd.merge_asof(with_peer.sort_values("ts"), conns.sort_values("conn_ts"),
                            left_on="ts", right_on="conn_ts", by="peer", direction="backward")
    rest = ok[~ok["has_peer"]].sort_values("ts").reset_index(drop=True)
    method = "peer" if rest.empty else "fifo"
    if not rest.empty:
        free = conns[~conns["conn_id"].isin(by_peer["conn_id"].dropna())].sort_values("conn_ts")
        free = free.reset_index(drop=True).iloc[: len(rest)]
        rest = pd.concat([rest.iloc[: len(free)], free[["conn_id", "conn_ts"]]], axis=1)
    matched = pd.concat([by_peer, rest], ignore_index=True)
    matched["accept_latency_ns"] = (matched["ts"] - matched["conn_ts"]).astype(np.float64)
    return matched[_MATCHED_COLUMNS].sort_values("ts").reset_index(drop=True), method


def basis_of(meta: RecordingMeta) -> str:
    """"listener" where the recording tells listener wakeups from the rest, else
    "all-wakeups" (a schema-1 recording, or a BSD one without solisten_wakeup)."""
    known = meta.schema_version >= 2 and meta.attribution in LISTENER_ATTRIBUTIONS
    return "listener" if known else "all-wakeups"


def connections_followed(meta: RecordingMeta) -> bool:
    """Whether the recorder followed accepted connections (`record --no-connections`
    did not: no connection records, accept latency or peers)."""
    return meta.probe_options.get("connections", True) is not False


def herd_basis(rec: Recording) -> str:
    return basis_of(rec.meta)


def herd_wakeups(rec: Recording) -> pd.DataFrame:
    """The wakeups the herd figures count: listener wakeups (every wakeup where the
    cause is not known, see herd_basis)."""
    w = rec.wakeups
    return w.loc[w["cause"] == "listener"] if herd_basis(rec) == "listener" else w


def waiting_threads(rec: Recording, herd: pd.DataFrame | None = None) -> pd.Index:
    """The workers: threads that waited on a traced listener (woken by it, or called
    accept). A parent woken by its own timer, or a primary that only hands
    connections on, is not one. `herd`: herd_wakeups(rec), where the caller has it."""
    herd = herd_wakeups(rec) if herd is None else herd
    tids = np.union1d(herd["tid"].to_numpy(), rec.accepts["tid"].to_numpy())
    return pd.Index(tids, name="tid")


def accepts_per_thread(rec: Recording, herd: pd.DataFrame | None = None) -> pd.Series:
    a = rec.accepts
    tids, per = np.unique(a["tid"].to_numpy()[a["accepted"].to_numpy()], return_counts=True)
    workers = waiting_threads(rec, herd)
    counts = np.zeros(len(workers), np.int64)
    counts[np.searchsorted(workers.to_numpy(), tids)] = per  # every acceptor is a worker
    return pd.Series(counts, index=workers, name="accepts")


def accepts_per_run_thread(rec: Recording, herd: pd.DataFrame | None = None,
                           per: pd.Series | None = None) -> pd.Series:
    """Accepts per (run, tid), zero for threads that waited and never won. A single
    recording is run 0; `combine` numbers the recordings of a label. `per`:
    accepts_per_thread(rec), where the caller has it."""
    if "run" not in rec.accepts.columns:
        per = accepts_per_thread(rec, herd) if per is None else per
        return per.set_axis(pd.MultiIndex.from_product([[0], per.index], names=["run", "tid"]))
    herd = herd_wakeups(rec) if herd is None else herd
    keys = herd.groupby(["run", "tid"]).size().index.union(
        rec.accepts.groupby(["run", "tid"]).size().index)
    won = rec.accepts.loc[rec.accepts["accepted"]].groupby(["run", "tid"]).size()
    return won.reindex(keys, fill_value=0).rename("accepts")


def share_by_rank(counts: pd.Series) -> pd.Series:
    """Mean share of accepted connections of the busiest, second busiest, ... worker
    of each run (workers of different runs are different threads)."""
    share = counts / counts.groupby(level="run").transform("sum")
    share = share.dropna()
    rank = share.groupby(level="run").rank(ascending=False, method="first").astype(int)
    return share.groupby(rank.to_numpy()).mean().rename_axis("rank")


def _per_run(counts: pd.Series, fn: Any) -> float | None:
    values = [v for v in counts.groupby(level="run").apply(fn) if v is not None and v == v]
    return float(np.mean(values)) if values else None


def jain_index(counts: pd.Series) -> float | None:
    x = counts.to_numpy(dtype=np.float64)
    denom = len(x) * float((x * x).sum())
    return float(x.sum() ** 2 / denom) if denom > 0 else None


def max_share(counts: pd.Series) -> float | None:
    total = counts.sum()
    return float(counts.max() / total) if total > 0 else None


def per_thread(rec: Recording) -> pd.DataFrame:
    w = rec.wakeups
    by_tid = w.groupby("tid")
    outcomes = (w.groupby(["tid", "outcome"], observed=False).size()
                .unstack("outcome", fill_value=0).reindex(columns=OUTCOMES.categories, fill_value=0))
    outcomes.columns = outcomes.columns.astype(str)
    a = rec.accepts
    acc = a.groupby("tid").agg(accepts=("accepted", "sum"), accept_eagain=("eagain", "sum"))
    out = pd.DataFrame(index=waiting_threads(rec)).join(by_tid.size().rename("wakeups"))
    out = out.join(outcomes).join(acc).fillna(0).astype(np.int64)
    out = out.join(by_tid["wake_latency_ns"].median().rename("wake_latency_p50_ns"))
    return out.sort_index()


def per_connection(rec: Recording, match: Match | None = None) -> pd.DataFrame:
    """How many threads each connection woke through the listener, and which thread
    accepted it."""
    cols = ["conn_id", "conn_ts", "wakeups", "threads_woken", "winner_tid", "accept_latency_ns"]
    conns = rec.connections
    if conns.empty:
        return pd.DataFrame(columns=cols)
    matched, _ = match or match_accepts(rec.accepts, conns)
    # Each wakeup's row in `connections`, by binary search over the sorted ids.
    ids = conns["conn_id"].to_numpy(np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    herd = herd_wakeups(rec)  # request data on a connection is not its herd
    woke_conn = herd["conn_id"].to_numpy(dtype=np.int64, na_value=0)
    pos = np.minimum(np.searchsorted(sorted_ids, woke_conn), len(ids) - 1)
    hit = sorted_ids[pos] == woke_conn
    row = order[pos[hit]]
    del woke_conn, pos
    pairs, _ = distinct_pairs(row.astype(np.uint64), herd["tid"].to_numpy(np.uint64)[hit])
    del hit
    wakeups = np.bincount(row, minlength=len(ids))
    del row
    out = pd.DataFrame({
        "conn_id": ids, "conn_ts": conns["ts"].to_numpy(), "wakeups": wakeups,
        "threads_woken": np.bincount((pairs >> np.uint64(22)).astype(np.int64), minlength=len(ids)),
    })
    won = matched.dropna(subset=["conn_id"])
    at = order[np.searchsorted(sorted_ids, won["conn_id"].to_numpy(np.int64))]
    winner = np.full(len(ids), np.nan)
    latency = np.full(len(ids), np.nan)
    winner[at[::-1]] = won["tid"].to_numpy(np.float64)[::-1]  # the first accept wins
    latency[at[::-1]] = won["accept_latency_ns"].to_numpy(np.float64)[::-1]
    out["winner_tid"] = pd.array(winner, dtype="Int64")
    out["accept_latency_ns"] = latency
    return out[cols]


def ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def cause_counts(wakeups: pd.DataFrame) -> dict[str, int]:
    return category_counts(wakeups["cause"])


def woken_pair_counts(herd: pd.DataFrame) -> tuple[int, int]:
    """Distinct (connection, thread) pairs the listener woke, and the connections
    that woke anyone: the counts behind threads woken per connection."""
    conn = herd["conn_id"].to_numpy(np.int64, na_value=0)
    tied = conn > 0
    pairs, conns = distinct_pairs(conn[tied].astype(np.uint64),
                                  herd["tid"].to_numpy(np.uint64)[tied])
    return len(pairs), len(conns)


def distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    keep = np.ones(len(ordered), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def distinct_pairs(conn: np.ndarray, tid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (connection, thread) pairs, packed (tid < 2^22) and sorted, and
    the distinct connections among them: a sort and a comparison of neighbours is
    cheaper than hashing, and the connections fall out of the sorted pairs."""
    pairs = distinct(np.sort((conn << np.uint64(22)) | tid))
    return pairs, distinct(pairs >> np.uint64(22))


def threads_woken_per_connection(herd: pd.DataFrame) -> float | None:
    """Distinct threads woken per listener readiness event (one connection making the
    listener readable), over the connections that woke anyone."""
    pairs, conns = woken_pair_counts(herd)
    return pairs / conns if conns else None


@dataclass(frozen=True)
class Summary:
    """One recording (or label) in the shape of `herdtrace analyze --json`. A figure
    that cannot be computed is None. The same names as the lab's ground truth
    (accepts, eagain) and the recorder's summary line."""

    file: str
    label: str
    duration_s: float | None
    threads: int
    connections: int
    connections_followed: bool  # False: recorded with --no-connections (no conn records)
    accepts: int  # accept() calls that returned a connection
    eagain: int  # accept() calls that returned EAGAIN
    wakeups: int
    wakeups_per_accept: float | None
    herd_factor: float | None
    herd_factor_basis: str  # "listener", or "all-wakeups" where causes are unknown
    threads_woken_per_connection: float | None
    listener_wakeups: int | None
    wakeup_causes: dict[str, int]
    listener_outcomes: dict[str, int] | None
    outcomes: dict[str, int]
    idle_wakeups: int
    idle_fraction: float | None
    wake_latency_us: dict[str, float] | None
    accept_latency_us: dict[str, float] | None
    accept_latency_match: str | None
    accepts_per_thread: dict[str, int]
    workers: int
    fairness_jain: float | None
    max_share: float | None
    lost_events: int | None
    probe_misses: int | None
    attribution: str | None
    eagain_per_accept: float | None
    kernel: str | None
    # On-CPU time of woken-but-idle listener wakeups (absorbed + eagain): what the
    # herd costs. None where the recording did not measure on-CPU time.
    wasted_cpu_s: float | None = None
    wasted_cpu_us_per_connection: float | None = None
    wasted_cores: float | None = None  # at the recording's connection rate
    # On-CPU time of every wakeup per accepted connection: the server's CPU per
    # connection as the recording saw it (what a fix's before/after compares).
    cpu_us_per_connection: float | None = None
    mode: str | None = None  # how /proc showed the listeners waited on, where they agree
    server: dict[str, Any] | None = None  # what serves the listener (name, version, ...)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


IDLE = ("absorbed", "eagain")


def idle_cpu_ns(herd: pd.DataFrame) -> int:
    """On-CPU time of the woken-but-idle among `herd` (listener wakeups)."""
    idle = herd["outcome"].isin(IDLE).to_numpy()
    return int(herd["cpu_ns"].to_numpy(np.int64)[idle].sum())


def wasted_cpu(idle_ns: int, all_ns: int, accepts: int,
               meta: RecordingMeta) -> dict[str, float | None]:
    """The herd's CPU: total, per accepted connection, and in cores over the recording
    (that is, at its connection rate); and every wakeup's CPU per connection."""
    if meta.cpu_time is None:
        return {"wasted_cpu_s": None, "wasted_cpu_us_per_connection": None, "wasted_cores": None,
                "cpu_us_per_connection": None}
    seconds = idle_ns / 1e9
    duration = meta.duration_s
    return {"wasted_cpu_s": seconds, "wasted_cpu_us_per_connection": ratio(idle_ns / 1e3, accepts),
            "wasted_cores": seconds / duration if duration else None,
            "cpu_us_per_connection": ratio(all_ns / 1e3, accepts)}


def listener_mode(meta: RecordingMeta) -> str | None:
    """The mode /proc showed for the recording's listeners, where they agree."""
    modes = {lst.get("mode") for lst in meta.target.listeners}
    return modes.pop() if len(modes) == 1 else None


def summarize(rec: Recording, match: Match | None = None) -> Summary:
    """One recording (or label): every figure of `herdtrace analyze`."""
    w, a = rec.wakeups, rec.accepts
    basis = herd_basis(rec)
    herd = herd_wakeups(rec)
    outcomes = outcome_counts(w)
    herd_outcomes = outcome_counts(herd)
    accepts = int(a["accepted"].sum())
    eagain = int(a["eagain"].sum())
    idle = herd_outcomes["absorbed"] + herd_outcomes["eagain"]
    matched, method = match or match_accepts(a, rec.connections)
    per = accepts_per_thread(rec, herd)
    runs = accepts_per_run_thread(rec, herd, per)
    return Summary(
        file=str(rec.path),
        label=rec.label,
        duration_s=rec.duration_s,
        threads=len(rec.threads),
        connections=len(rec.connections),
        connections_followed=connections_followed(rec.meta),
        accepts=accepts,
        eagain=eagain,
        wakeups=len(w),
        wakeups_per_accept=ratio(len(w), accepts),
        herd_factor=ratio(len(herd), accepts),
        herd_factor_basis=basis,
        threads_woken_per_connection=threads_woken_per_connection(herd),
        listener_wakeups=len(herd) if basis == "listener" else None,
        wakeup_causes=cause_counts(w),
        listener_outcomes=herd_outcomes if basis == "listener" else None,
        outcomes=outcomes,
        idle_wakeups=idle,
        idle_fraction=ratio(idle, len(herd)),
        wake_latency_us=percentiles_us(w["wake_latency_ns"]),
        accept_latency_us=percentiles_us(matched["accept_latency_ns"]) if method else None,
        accept_latency_match=method,
        accepts_per_thread={str(t): int(n) for t, n in per.items()},
        workers=int(runs.groupby(level="run").size().max()) if len(runs) else 0,
        fairness_jain=_per_run(runs, jain_index),
        max_share=_per_run(runs, max_share),
        lost_events=rec.meta.lost_events,
        probe_misses=rec.meta.probe_misses,
        attribution=rec.meta.attribution,
        eagain_per_accept=ratio(eagain, accepts),
        kernel=rec.meta.kernel_release,
        **wasted_cpu(idle_cpu_ns(herd), int(w["cpu_ns"].to_numpy(np.int64).sum()), accepts,
                     rec.meta),
        mode=listener_mode(rec.meta),
        server=rec.meta.target.server,
    )


def combine(recs: list[Recording]) -> Recording:
    """Several recordings of one label as one: frames concatenated with a `run`
    column, counts summed; fairness is then averaged over runs."""
    if len(recs) == 1:
        return recs[0]
    losts = [r.meta.lost_events for r in recs]
    misses = [r.meta.probe_misses for r in recs]
    bases = {herd_basis(r) for r in recs}
    meta = replace(
        recs[0].meta,
        lost_events=None if None in losts else sum(x for x in losts if x is not None),
        probe_misses=None if None in misses else sum(x for x in misses if x is not None),
        # Some runs cannot tell listener wakeups apart: count all of them.
        attribution=recs[0].meta.attribution if len(bases) == 1 else None,
        start_monotonic_ns=0,
        end_monotonic_ns=int(sum((r.duration_s or 0.0) * 1e9 for r in recs)),
        combined_files=[str(r.path) for r in recs])

    def cat(attr: str) -> pd.DataFrame:
        frames = []
        for i, r in enumerate(recs):
            df = getattr(r, attr)
            if "conn_id" in df.columns:  # connection ids restart at 1 in every recording
                df = df.assign(conn_id=df["conn_id"] + (i << 40))
            frames.append(df.assign(run=np.int16(i)))
        return pd.concat(frames, ignore_index=True)

    return Recording(path=recs[0].path.parent, label=recs[0].label, meta=meta,
                     wakeups=cat("wakeups"), accepts=cat("accepts"),
                     connections=cat("connections"), threads=cat("threads"))


def combine_by_label(recs: list[Recording]) -> list[Recording]:
    labels = list(dict.fromkeys(r.label for r in recs))
    return [combine([r for r in recs if r.label == lbl]) for lbl in labels]


def grouped(recs: list[Recording], by_label: bool = False) -> tuple[list[Recording], bool]:
    """Recordings to show: one per file, or combined per label when asked."""
    return (combine_by_label(recs) if by_label else recs), by_label


def mixed_labels(recs: list[Recording]) -> dict[str, list[str]]:
    """Labels whose recordings come from different folders (a bench keeps each load in
    its own), which --by-label would combine as if they were repeats of one run."""
    folders: dict[str, set[str]] = {}
    for r in recs:
        folders.setdefault(r.label, set()).add(r.path.parent.name)
    return {label: sorted(f) for label, f in folders.items() if len(f) > 1}


# Figures compared with a baseline recording (analyze --baseline), and where they are.
COMPARED = {"herd_factor": ("herd_factor",), "threads_woken_per_connection": ("threads_woken_per_connection",),
            "idle_fraction": ("idle_fraction",), "eagain_per_accept": ("eagain_per_accept",),
            "wakeups_per_accept": ("wakeups_per_accept",),
            "wake_latency_p50_us": ("wake_latency_us", "p50"), "wake_latency_p99_us": ("wake_latency_us", "p99"),
            "accept_latency_p50_us": ("accept_latency_us", "p50"),
            "wasted_cpu_us_per_connection": ("wasted_cpu_us_per_connection",),
            "cpu_us_per_connection": ("cpu_us_per_connection",)}


def figure(summary: Summary, path: tuple[str, ...]) -> float | None:
    """A compared figure: an attribute, or a percentile inside one."""
    value: Any = getattr(summary, path[0])
    for key in path[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ratios(summary: Summary, base: Summary) -> dict[str, float | None]:
    """Each compared figure of `summary` over the baseline's (None where either is missing)."""
    out: dict[str, float | None] = {}
    for name, path in COMPARED.items():
        mine, theirs = figure(summary, path), figure(base, path)
        out[name] = None if mine is None or theirs is None else ratio(mine, theirs)
    return out
