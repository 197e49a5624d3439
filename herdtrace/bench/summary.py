"""Bench results: one row per (profile, mode), ratios to a baseline, spread over repeats."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from herdtrace.analysis import load, metrics
from herdtrace.analysis.verdict import Judged, judged_summary


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, flat columns."""
    if not rows:
        return pd.DataFrame()
    df = pd.json_normalize(rows, sep=".")
    return df


def _spread(values: pd.Series) -> dict[str, float | None]:
    v = values.dropna().to_numpy(np.float64)
    if len(v) == 0:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def aggregate(rows: list[dict[str, Any]], baseline: str,
              loaded: dict[str, load.Recording]) -> list[dict[str, Any]]:
    df = runs_frame(rows)
    if df.empty:
        return []
    out = []
    for (profile, mode), g in df.groupby(["profile", "mode"], sort=False):
        traced = g[g["traced"]]
        untraced = g[~g["traced"]]
        recordings = [loaded[p] for p in traced["recording"].dropna()]
        recorded = judged_summary(metrics.combine(recordings)) if recordings else None
        tput = _spread(traced["load.throughput_rps"])
        free = _spread(untraced["load.throughput_rps"]) if not untraced.empty else None
        disagreements = [d for d in traced["disagreement"].dropna()]
        out.append({
            "profile": profile, "mode": mode, "repeats": len(traced),
            "throughput_rps": tput,
            "untraced_throughput_rps": free,
            "traced_over_untraced": (tput["mean"] / free["mean"]
                                     if free and free["mean"] and tput["mean"] else None),
            "client_latency_ms": {"p50": _spread(traced["load.latency_ms.p50"])["mean"],
                                  "p99": _spread(traced["load.latency_ms.p99"])["mean"]},
            "load_errors": int(traced["load.errors"].sum()),
            "truth_accepts": int(traced["truth.accepts"].sum()),
            "truth_eagain": int(traced["truth.eagain"].sum()),
            "recorded": recorded,
            "agrees_with_truth": not disagreements,
            "disagreements": disagreements,
        })
    for profile in {r["profile"] for r in out}:
        base = next((r for r in out if r["profile"] == profile and r["mode"] == baseline), None)
        base_tput = base["throughput_rps"]["mean"] if base else None
        for r in out:
            if r["profile"] == profile:
                mean = r["throughput_rps"]["mean"]
                r["throughput_vs_baseline"] = mean / base_tput if base_tput and mean else None
    return out


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def _loud(v: object) -> str:
    """Lost events and probe misses: red unless zero."""
    return str(v) if v in (0, "-") else f"[red]{v}[/]"


def bench_table(agg: list[dict[str, Any]], profile: str, baseline: str,
                observer_effect: bool) -> Table:
    table = Table(title=f"herdtrace bench: {profile} load (ratios to {baseline})")
    heads = ["mode", "req/s (min-max)", f"vs {baseline}", "p50 ms", "p99 ms", "herd factor",
             "threads/conn", "woken-but-idle", "EAGAIN/accept", "wake p50 µs", "accept p50 µs",
             "Jain", "lost", "misses", "truth"]
    if observer_effect:
        heads.insert(3, "traced/untraced")
    for h in heads:
        table.add_column(h, justify="left" if h in ("mode", "truth") else "right",
                         no_wrap=h == "mode")
    for r in (r for r in agg if r["profile"] == profile):
        judged: Judged | None = r["recorded"]
        rec = judged.summary if judged else None
        t = r["throughput_rps"]
        wake = (rec.wake_latency_us if rec else None) or {}
        acc = (rec.accept_latency_us if rec else None) or {}
        cells = [
            r["mode"],
            f"{_f(t['mean'], '{:.0f}')} ({_f(t['min'], '{:.0f}')}-{_f(t['max'], '{:.0f}')})",
            _f(r["throughput_vs_baseline"], "{:.2f}x"),
            _f(r["client_latency_ms"]["p50"], "{:.2f}"),
            _f(r["client_latency_ms"]["p99"], "{:.2f}"),
            _f(rec.herd_factor if rec else None, "{:.2f}"),
            _f(rec.threads_woken_per_connection if rec else None, "{:.2f}"),
            _f(rec.idle_fraction if rec else None, "{:.0%}"),
            _f(rec.eagain_per_accept if rec else None, "{:.3f}"),
            _f(wake.get("p50"), "{:.1f}"),
            _f(acc.get("p50"), "{:.1f}"),
            _f(rec.fairness_jain if rec else None, "{:.2f}"),
            _loud(rec.lost_events if rec else "-"),
            _loud(rec.probe_misses if rec else "-"),
            "agrees" if r["agrees_with_truth"] else "[red]" + "; ".join(r["disagreements"]) + "[/]",
        ]
        if observer_effect:
            cells.insert(3, _f(r["traced_over_untraced"], "{:.2f}"))
        table.add_row(*cells)
    return table
