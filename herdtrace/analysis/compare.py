"""Before and after a fix: is the herd gone, what CPU did it save, what did latency do,
and is each change larger than the recordings' own spread?

The spread comes from the recordings themselves: each is cut into BLOCKS stretches of
equally many accepted connections, a figure is computed per stretch, and its standard
error is the stretches' standard deviation over sqrt(BLOCKS). A change smaller than
twice the combined standard error of the two recordings is called inside the noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from herdtrace.analysis import metrics
from herdtrace.analysis.load import Recording
from herdtrace.analysis.verdict import HERD_ABOVE

BLOCKS = 10
NOISE_SE = 2.0  # a change within this many combined standard errors is noise
# Figure -> (its Summary attribute, unit, how it reads).
FIGURES = {
    "threads_woken_per_connection": ("threads_woken_per_connection", "", "threads woken per connection"),
    "wasted_cpu_us_per_connection": ("wasted_cpu_us_per_connection", " µs", "wasted CPU per connection"),
    "cpu_us_per_connection": ("cpu_us_per_connection", " µs", "CPU per connection"),
    "wake_latency_p50_us": ("wake_latency_us", " µs", "wake latency p50"),
    "accept_latency_p50_us": ("accept_latency_us", " µs", "accept latency p50"),
}


def blocks(rec: Recording, n: int = BLOCKS) -> pd.DataFrame:
    """One row per stretch of the recording, the figures of FIGURES computed in it."""
    a = rec.accepts
    ok_ts = np.sort(a.loc[a["accepted"], "ts"].to_numpy(np.int64))
    if len(ok_ts) < 2 * n:
        return pd.DataFrame(columns=list(FIGURES))
    edges = ok_ts[np.linspace(0, len(ok_ts), n + 1).astype(int)[1:-1]]

    def block_of(ts: pd.Series) -> np.ndarray:
        return np.searchsorted(edges, ts.to_numpy(np.int64), side="right")

    accepts = np.bincount(block_of(pd.Series(ok_ts)), minlength=n).astype(np.float64)
    w = rec.wakeups
    herd = metrics.herd_wakeups(rec)
    hb, wb = block_of(herd["ts"]), block_of(w["ts"])
    idle = herd["outcome"].isin(metrics.IDLE).to_numpy()
    herd_cpu = herd["cpu_ns"].to_numpy(np.float64)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    pairs = pd.DataFrame({"b": hb, "conn": herd["conn_id"].to_numpy(np.float64, na_value=np.nan),
                          "tid": herd["tid"].to_numpy()}).dropna().drop_duplicates()
    per = pairs.groupby("b").agg(pairs=("tid", "size"), conns=("conn", "nunique"))
    out["threads_woken_per_connection"] = (per["pairs"] / per["conns"]).reindex(out.index)
    out["wasted_cpu_us_per_connection"] = (
        np.bincount(hb[idle], weights=herd_cpu[idle], minlength=n) / 1e3 / accepts)
    out["cpu_us_per_connection"] = (
        np.bincount(wb, weights=w["cpu_ns"].to_numpy(np.float64), minlength=n) / 1e3 / accepts)
    out["wake_latency_p50_us"] = (w["wake_latency_ns"].groupby(wb).median() / 1e3).reindex(out.index)
    per_conn = metrics.per_connection(rec)
    if len(per_conn):
        lat = per_conn.dropna(subset=["accept_latency_ns"])
        out["accept_latency_p50_us"] = (lat["accept_latency_ns"].groupby(block_of(lat["conn_ts"]))
                                        .median() / 1e3).reindex(out.index)
    else:
        out["accept_latency_p50_us"] = np.nan
    if metrics.herd_basis(rec) != "listener" or rec.meta.cpu_time is None:
        cols = ["cpu_us_per_connection", "wasted_cpu_us_per_connection"] \
            if rec.meta.cpu_time is None else []
        out[cols] = np.nan
    return out


def standard_error(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) >= 2 else None


@dataclass(frozen=True)
class Delta:
    figure: str
    before: float | None
    after: float | None
    change: float | None
    standard_error: float | None
    reading: str  # "lower", "higher", "inside the noise", or "unknown"


@dataclass(frozen=True)
class Change:
    """One recording against its baseline."""

    herd: str  # "gone", "still there", "none before", or "unknown"
    deltas: tuple[Delta, ...]
    connections_per_s: float | None  # the after recording's rate: what "cores" assume
    wasted_cores_saved: float | None
    cores_saved: float | None  # every wakeup's CPU, at the same rate

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["deltas"] = [asdict(d) for d in self.deltas]
        return out

    def lines(self) -> list[str]:
        out = [f"herd {self.herd}"]
        for d in self.deltas:
            unit, words = FIGURES[d.figure][1], FIGURES[d.figure][2]
            if d.before is None or d.after is None or d.change is None:
                continue
            spread = f" ± {d.standard_error:.1f}" if d.standard_error is not None else ""
            out.append(f"{words}: {d.before:.2f} -> {d.after:.2f}{unit} "
                       f"({d.change:+.2f}{spread}: {d.reading})")
        if self.wasted_cores_saved is not None and self.connections_per_s:
            out.append(f"at {self.connections_per_s:.0f} connections/s: "
                       f"{_saves(self.wasted_cores_saved)} of wasted CPU, "
                       f"{_saves(self.cores_saved)} of all the server's CPU")
        return out


def _saves(cores: float | None) -> str:
    if cores is None:
        return "unknown"
    return f"saves {cores:.4f} cores" if cores >= 0 else f"costs {-cores:.4f} cores more"


def _value(summary: metrics.Summary, figure: str) -> float | None:
    attr = FIGURES[figure][0]
    v: Any = getattr(summary, attr)
    if isinstance(v, dict):
        v = v.get("p50")
    return None if v is None else float(v)


def _delta(figure: str, before: float | None, after: float | None,
           se_b: float | None, se_a: float | None) -> Delta:
    if before is None or after is None:
        return Delta(figure, before, after, None, None, "unknown")
    change = after - before
    se = float(np.hypot(se_b, se_a)) if se_b is not None and se_a is not None else None
    if se is None:
        reading = "unknown spread"
    elif abs(change) <= NOISE_SE * se:
        reading = "inside the noise"
    else:
        reading = "lower" if change < 0 else "higher"
    return Delta(figure, before, after, change, se, reading)


def herd_state(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "unknown"
    if before <= HERD_ABOVE:
        return "none before"
    return "gone" if after <= HERD_ABOVE else "still there"


def compare(base: Recording, base_summary: metrics.Summary, rec: Recording,
            summary: metrics.Summary) -> Change:
    bb, ba = blocks(base), blocks(rec)
    deltas = tuple(_delta(f, _value(base_summary, f), _value(summary, f),
                          standard_error(bb[f]) if f in bb else None,
                          standard_error(ba[f]) if f in ba else None) for f in FIGURES)
    by = {d.figure: d for d in deltas}
    rate = summary.accepts / summary.duration_s if summary.duration_s else None

    def saved(figure: str) -> float | None:
        d = by[figure]
        return None if d.change is None or rate is None else -d.change * rate / 1e6

    return Change(herd=herd_state(by["threads_woken_per_connection"].before,
                                  by["threads_woken_per_connection"].after),
                  deltas=deltas, connections_per_s=rate,
                  wasted_cores_saved=saved("wasted_cpu_us_per_connection"),
                  cores_saved=saved("cpu_us_per_connection"))
