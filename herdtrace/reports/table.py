"""Terminal tables: recordings (or labels) side by side, one metric per row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(d: dict[str, float] | None, key: str) -> str:
    return "-" if not d else f"{d[key]:.1f}"


ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("duration s", lambda s: _num(s["duration_s"], "{:.1f}")),
    ("threads traced", lambda s: str(s["threads"])),
    ("connections", lambda s: str(s["connections"])),
    ("accepted", lambda s: str(s["accepted"])),
    ("accept EAGAIN", lambda s: str(s["accept_eagain"])),
    ("wakeups", lambda s: str(s["wakeups"])),
    ("wakeups per accept (herd)", lambda s: _num(s["wakeups_per_accept"])),
    ("  accepted", lambda s: str(s["outcomes"]["accepted"])),
    ("  eagain", lambda s: str(s["outcomes"]["eagain"])),
    ("  absorbed", lambda s: str(s["outcomes"]["absorbed"])),
    ("  other", lambda s: str(s["outcomes"]["other"])),
    ("  unresolved", lambda s: str(s["outcomes"]["unresolved"])),
    ("woken-but-idle", lambda s: _num(s["idle_fraction"], "{:.1%}")),
    ("wake latency p50 µs", lambda s: _pct(s["wake_latency_us"], "p50")),
    ("wake latency p99 µs", lambda s: _pct(s["wake_latency_us"], "p99")),
    ("accept latency p50 µs", lambda s: _pct(s["accept_latency_us"], "p50")),
    ("accept latency p99 µs", lambda s: _pct(s["accept_latency_us"], "p99")),
    ("accept latency match", lambda s: s["accept_latency_match"] or "-"),
    ("workers (threads that waited)", lambda s: str(len(s["accepts_per_thread"]))),
    ("fairness (Jain)", lambda s: _num(s["fairness_jain"], "{:.3f}")),
    ("largest share", lambda s: _num(s["max_share"], "{:.1%}")),
    ("lost events", lambda s: "unknown" if s["lost_events"] is None else str(s["lost_events"])),
)


def summary_table(summaries: list[dict[str, Any]], title: str = "herdtrace analyze") -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("metric", style="bold", no_wrap=True)
    for s in summaries:
        table.add_column(s["label"], justify="right")
    for name, cell in ROWS:
        cells = [cell(s) for s in summaries]
        style = "red" if name == "lost events" and any(c != "0" for c in cells) else None
        table.add_row(name, *cells, style=style)
    return table


def console() -> Console:
    """A console that does not squeeze wide tables when output goes to a file or pipe."""
    c = Console(soft_wrap=True, highlight=False)
    if not c.is_terminal:
        c = Console(soft_wrap=True, highlight=False, width=200)
    return c
