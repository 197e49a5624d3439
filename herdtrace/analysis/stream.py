"""A recording of any size in bounded memory: read row group by row group, keep
partial results that merge, and build the same Summary as the in-memory path.

How exact (tests compare both paths):
- every count (wakeups, outcomes, causes, accepts, EAGAINs, connections, threads,
  per-thread accepts, fairness) is exact;
- threads woken per connection is exact while one connection's listener wakeups
  lie within two consecutive row groups (65,536 rows each; a connection's herd
  is written within microseconds of each other, so thousands of connections fit);
- wake latency percentiles come from a log-spaced histogram with 1% wide bins:
  within 1% of the exact value; the maximum is exact;
- accept latency matches accepts with connections as the in-memory path does (by
  peer address, else in order), a batch of row groups at a time, against the
  connections of this batch and the last one that no accept took: exact while an
  accept comes within a batch (MATCH_BATCH accepts and connections) of its
  connection; its percentiles come from the same 1% bins.
Peak memory is a row group's columns, a batch of accepts and connections, the
histograms and per-thread counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from herdtrace.analysis import metrics, verdict
from herdtrace.analysis.load import (
    CAUSES,
    OUTCOMES,
    as_read,
    peer_words,
    read_metadata,
    refined_cause,
)
from herdtrace.errors import HerdtraceError
from herdtrace.metadata import RecordingMeta
from herdtrace.schema import EAGAIN, Cause, Flag, Kind, Outcome, WaitCall

# Log-spaced latency bins, 1% wide, from 1 ns to ~1000 s.
BIN_GROWTH = 1.01
BINS = int(np.ceil(np.log(1e12) / np.log(BIN_GROWTH))) + 1
COLUMNS = ["kind", "ts", "oncpu_ts", "ret_ts", "ret", "tid", "conn_id", "outcome", "cause",
           "wait_call", "flags", "comm", "rport", "raddr", "cpu_ns"]
MATCH_BATCH = 500_000  # accepts and connections matched at once


def _bin(ns: np.ndarray) -> np.ndarray:
    return np.clip(np.log(np.maximum(ns, 1.0)) / np.log(BIN_GROWTH), 0, BINS - 1).astype(np.int64)


def percentiles_from(hist: np.ndarray, maximum: float) -> dict[str, float] | None:
    """p50/p90/p99 at the geometric middle of their bin, in µs; max exact."""
    total = hist.sum()
    if total == 0:
        return None
    cum = np.cumsum(hist)
    out = {}
    for name, q in metrics.QUANTILES.items():
        b = int(np.searchsorted(cum, q * total, side="left"))
        out[name] = float(BIN_GROWTH ** (b + 0.5)) / 1e3
    out["max"] = maximum / 1e3
    return out


def _found_in(values: np.ndarray, ordered: np.ndarray) -> int:
    """How many of `values` are in the sorted array `ordered`."""
    if not len(ordered) or not len(values):
        return 0
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return int(np.count_nonzero(ordered[at] == values))


@dataclass
class Partial:
    """What the row groups read so far add up to."""

    outcomes: np.ndarray = field(default_factory=lambda: np.zeros(len(Outcome), np.int64))
    listener_outcomes: np.ndarray = field(default_factory=lambda: np.zeros(len(Outcome), np.int64))
    causes: np.ndarray = field(default_factory=lambda: np.zeros(len(Cause), np.int64))
    latency: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    latency_max: float = 0.0
    connections: int = 0
    accepts: int = 0
    eagain: int = 0
    threads: set[int] = field(default_factory=set)
    accepted_by: dict[int, int] = field(default_factory=dict)
    workers: set[int] = field(default_factory=set)
    pairs: int = 0  # distinct (connection, thread) pairs of listener wakeups
    woken_connections: int = 0
    carry_pairs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    carry_conns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    wait_calls: np.ndarray = field(default_factory=lambda: np.zeros(len(WaitCall), np.int64))
    rewakes: int = 0  # listener wakeups flagged epoll_rewake
    idle_cpu_ns: int = 0  # on-CPU time of woken-but-idle listener wakeups
    cpu_ns: int = 0  # on-CPU time of every wakeup
    comms: dict[int, str] = field(default_factory=dict)  # thread -> command name
    accept_latency: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    accept_latency_max: float = 0.0
    match_method: str | None = None  # "peer" while every accept had its peer, else "fifo"
    free_conns: pd.DataFrame | None = None  # connections no accept took, last batch
    batch: list[tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=list)
    batch_rows: int = 0
    batches: int = 0

    def add_match(self, accepts: pd.DataFrame, conns: pd.DataFrame) -> None:
        """Accepts and connections of a row group, matched a batch at a time (each
        match costs a few pandas calls, so not per row group)."""
        self.batch.append((accepts, conns))
        self.batch_rows += len(accepts) + len(conns)
        if self.batch_rows >= MATCH_BATCH:
            self.flush_match()

    def flush_match(self) -> None:
        if self.batch:
            self.match(pd.concat([a for a, _ in self.batch], ignore_index=True),
                       pd.concat([c for _, c in self.batch], ignore_index=True), self.batches)
            self.batch, self.batch_rows = [], 0
            self.batches += 1

    def add_wakeups(self, w: dict[str, np.ndarray], listener_basis: bool) -> None:
        outcome = w["outcome"]
        cause, _ = refined_cause(w["cause"], outcome, w["ret"], w["ret_ts"], w["wait_call"])
        self.outcomes += np.bincount(outcome, minlength=len(Outcome))[: len(Outcome)]
        self.causes += np.bincount(cause, minlength=len(Cause))[: len(Cause)]
        herd = cause == Cause.LISTENER if listener_basis else np.ones(len(cause), bool)
        self.listener_outcomes += np.bincount(outcome[herd], minlength=len(Outcome))[: len(Outcome)]
        self.wait_calls += np.bincount(w["wait_call"][herd], minlength=len(WaitCall))[: len(WaitCall)]
        self.rewakes += int(np.count_nonzero(w["flags"][herd] & int(Flag.EPOLL_REWAKE)))
        idle = herd & ((outcome == Outcome.ABSORBED) | (outcome == Outcome.EAGAIN))
        cpu = w["cpu_ns"].astype(np.int64)
        self.idle_cpu_ns += int(cpu[idle].sum())
        self.cpu_ns += int(cpu.sum())
        self.workers.update(np.unique(w["tid"][herd]).tolist())
        oncpu = w["oncpu_ts"]
        seen = oncpu > 0
        lat = oncpu[seen].astype(np.float64) - w["ts"][seen].astype(np.float64)
        if len(lat):
            self.latency += np.bincount(_bin(lat), minlength=BINS)
            self.latency_max = max(self.latency_max, float(lat.max()))
        tied = herd & (w["conn_id"] > 0)
        self._add_pairs(w["conn_id"][tied].astype(np.uint64), w["tid"][tied].astype(np.uint64))

    def _add_pairs(self, conn: np.ndarray, tid: np.ndarray) -> None:
        """Distinct pairs and connections, against this row group and the one before."""
        pairs, conns = metrics.distinct_pairs(conn, tid)
        self.pairs += len(pairs) - _found_in(pairs, self.carry_pairs)
        self.woken_connections += len(conns) - _found_in(conns, self.carry_conns)
        self.carry_pairs, self.carry_conns = pairs, conns

    def match(self, accepts: pd.DataFrame, conns: pd.DataFrame, group: int) -> None:
        """Accept latency of a batch's accepts, against the connections of this batch
        and the last one that no accept has taken."""
        window = pd.concat([self.free_conns, conns.assign(group=group)], ignore_index=True) \
            if self.free_conns is not None else conns.assign(group=group)
        matched, method = metrics.match_accepts(accepts, window)
        if method is not None:
            self.match_method = "fifo" if "fifo" in (method, self.match_method) else "peer"
            lat = matched["accept_latency_ns"].dropna().to_numpy(np.float64)
            if len(lat):
                self.accept_latency += np.bincount(_bin(lat), minlength=BINS)
                self.accept_latency_max = max(self.accept_latency_max, float(lat.max()))
        taken = window["conn_id"].isin(matched["conn_id"].dropna()) if len(window) else None
        free = window[~taken] if taken is not None else window
        self.free_conns = free[free["group"] >= group - 1] if len(free) else None

    def add_accepts(self, accepts: pd.DataFrame) -> None:
        tid, ok = accepts["tid"].to_numpy(), accepts["accepted"].to_numpy()
        self.accepts += int(ok.sum())
        self.eagain += int(accepts["eagain"].sum())
        self.workers.update(np.unique(tid).tolist())
        won_tids, counts = np.unique(tid[ok], return_counts=True)
        for t, n in zip(won_tids.tolist(), counts.tolist(), strict=True):
            self.accepted_by[t] = self.accepted_by.get(t, 0) + n


def _columns(rg: pa.Table, mask: pa.Array, names: list[str]) -> dict[str, np.ndarray]:
    part = rg.filter(mask)
    return {n: part.column(n).to_numpy() for n in names}


def _peer(part: pa.Table) -> dict[str, np.ndarray]:
    hi, lo = peer_words(part.column("raddr"))
    return {"peer_hi": hi, "peer_lo": lo, "rport": part.column("rport").to_numpy()}


def _accept_frame(part: pa.Table) -> pd.DataFrame:
    """A row group's accepts as metrics.match_accepts reads them (load.accepts_frame)."""
    ret = part.column("ret").to_numpy()
    return pd.DataFrame({"ts": part.column("ts").to_numpy(), "tid": part.column("tid").to_numpy(),
                         "accepted": ret >= 0, "eagain": ret == -EAGAIN,
                         "has_peer": (part.column("flags").to_numpy() & int(Flag.PEER)) > 0,
                         **_peer(part)})


def _conn_frame(part: pa.Table) -> pd.DataFrame:
    return pd.DataFrame({"ts": part.column("ts").to_numpy(),
                         "conn_id": part.column("conn_id").to_numpy(), **_peer(part)})


def partial_of(path: Path) -> tuple[Partial, RecordingMeta]:
    pf, meta = read_metadata(path)
    listener_basis = metrics.basis_of(meta) == "listener"
    present = [c for c in COLUMNS if c in pf.schema_arrow.names]
    p = Partial()
    try:
        for i in range(pf.num_row_groups):
            rg = as_read(pf.read_row_group(i, columns=present), present)
            kind = rg["kind"]
            p.add_wakeups(_columns(rg, pc.equal(kind, int(Kind.WAKEUP)),
                                   ["outcome", "cause", "ret", "ret_ts", "wait_call", "oncpu_ts",
                                    "ts", "tid", "conn_id", "flags", "cpu_ns"]), listener_basis)
            accepts = _accept_frame(rg.filter(pc.equal(kind, int(Kind.ACCEPT))))
            conns = _conn_frame(rg.filter(pc.equal(kind, int(Kind.CONN))))
            p.add_accepts(accepts)
            p.connections += len(conns)
            p.add_match(accepts, conns)
            started = rg.filter(pc.equal(kind, int(Kind.THREAD)))
            p.threads.update(started.column("tid").to_pylist())
            for tid, comm in zip(started.column("tid").to_pylist(),  # few rows: threads
                                 started.column("comm").to_pylist(), strict=True):
                p.comms.setdefault(tid, comm.decode(errors="replace").rstrip("\0")
                                   if isinstance(comm, bytes) else comm)
        p.flush_match()
    except (pa.ArrowException, OSError) as exc:
        raise HerdtraceError(f"{path}: corrupt recording ({exc})") from None
    return p, meta


@dataclass(frozen=True)
class Streamed:
    """A recording analysed in bounded memory: what `analyze` and `summarize` need."""

    summary: metrics.Summary
    evidence: verdict.Evidence
    woken_pairs: int
    woken_connections: int
    meta: RecordingMeta


def analyse(path: Path | str, label: str | None = None) -> Streamed:
    path = Path(path)
    p, meta = partial_of(path)
    s = _summary(path, p, meta, label)
    calls = pd.Series(p.wait_calls[1:], index=[c.name.lower() for c in WaitCall if c != WaitCall.NONE])
    workers = [p.comms[t] for t in p.workers if t in p.comms]
    ev = verdict.Evidence(
        mode=metrics.listener_mode(meta), waits=verdict.waits_ranked(calls[calls > 0]),
        server=pd.Series(workers).mode().iloc[0] if workers else None,
        rewakes=p.rewakes, extra=int(p.listener_outcomes.sum()) - p.woken_connections,
        identity=meta.target.server)
    return Streamed(s, ev, p.pairs, p.woken_connections, meta)


STREAM_ABOVE = 5_000_000  # rows; in memory, analysis needs ~200 bytes a row


def too_big(path: Path) -> bool:
    """Whether a recording is streamed by default: more rows than STREAM_ABOVE."""
    try:
        return pq.read_metadata(path).num_rows > STREAM_ABOVE
    except (pa.ArrowException, OSError):
        return False  # not readable: the load says why, in one line


def judged(path: Path) -> verdict.Judged:
    st = analyse(path)
    return verdict.Judged(st.summary, verdict.judge_from(st.summary, st.evidence))


def summarize_streaming(path: Path | str, label: str | None = None) -> metrics.Summary:
    """The Summary of `analyze`, computed in bounded memory (see the module's notes)."""
    return analyse(path, label).summary


def _summary(path: Path, p: Partial, meta: RecordingMeta, label: str | None) -> metrics.Summary:
    basis = metrics.basis_of(meta)
    names = [o.name.lower() for o in Outcome if o != Outcome.NONE]
    outcomes = dict(zip(names, p.outcomes[1:].tolist(), strict=True))
    herd = dict(zip(names, p.listener_outcomes[1:].tolist(), strict=True))
    causes = dict(zip([c.name.lower() for c in Cause if c != Cause.NONE],
                      p.causes[1:].tolist(), strict=True))
    n_herd = int(p.listener_outcomes.sum())
    wakeups = int(p.outcomes.sum())
    idle = herd["absorbed"] + herd["eagain"]
    per = pd.Series({t: p.accepted_by.get(t, 0) for t in sorted(p.workers)}, dtype=np.int64)
    ratio = metrics.ratio
    assert list(causes) == list(CAUSES.categories) and list(outcomes) == list(OUTCOMES.categories)
    return metrics.Summary(
        file=str(path), label=label or meta.label or path.stem, duration_s=meta.duration_s,
        threads=len(p.threads), connections=p.connections,
        connections_followed=metrics.connections_followed(meta), accepts=p.accepts, eagain=p.eagain,
        wakeups=wakeups, wakeups_per_accept=ratio(wakeups, p.accepts),
        herd_factor=ratio(n_herd, p.accepts), herd_factor_basis=basis,
        threads_woken_per_connection=ratio(p.pairs, p.woken_connections),
        listener_wakeups=n_herd if basis == "listener" else None,
        wakeup_causes=causes, listener_outcomes=herd if basis == "listener" else None,
        outcomes=outcomes, idle_wakeups=idle, idle_fraction=ratio(idle, n_herd),
        wake_latency_us=percentiles_from(p.latency, p.latency_max),
        accept_latency_us=(percentiles_from(p.accept_latency, p.accept_latency_max)
                           if p.match_method else None),
        accept_latency_match=p.match_method,
        accepts_per_thread={str(t): int(n) for t, n in per.items()},
        workers=len(per), fairness_jain=metrics.jain_index(per), max_share=metrics.max_share(per),
        lost_events=meta.lost_events, probe_misses=meta.probe_misses,
        attribution=meta.attribution,
        eagain_per_accept=ratio(p.eagain, p.accepts), kernel=meta.kernel_release,
        **metrics.wasted_cpu(p.idle_cpu_ns, p.cpu_ns, p.accepts, meta),
        mode=metrics.listener_mode(meta), server=meta.target.server,
    )
