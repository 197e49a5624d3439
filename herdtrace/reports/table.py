"""Terminal tables: recordings (or labels) side by side, one metric per row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from herdtrace.analysis.load import CAUSES as CAUSE_DTYPE
from herdtrace.analysis.load import OUTCOMES as OUTCOME_DTYPE
from herdtrace.analysis.metrics import Summary
from herdtrace.analysis.verdict import Judged

OUTCOMES = [str(o) for o in OUTCOME_DTYPE.categories]
CAUSES = [str(c) for c in CAUSE_DTYPE.categories]


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _int(v: int | None) -> str:
    return "-" if v is None else str(v)


def _basis(s: Summary) -> str:
    """Say so where the herd figures had to count every wakeup."""
    return "" if s.herd_factor_basis == "listener" else " (all wakeups)"


def _listener_outcome(outcome: str) -> Callable[[Summary], str]:
    return lambda s: _int((s.listener_outcomes or {}).get(outcome))


def _cause(cause: str) -> Callable[[Summary], str]:
    return lambda s: str(s.wakeup_causes[cause])


def _pct(d: dict[str, float] | None, key: str) -> str:
    return "-" if not d else f"{d[key]:.1f}"


NOT_FOLLOWED = "not followed (--no-connections)"
ROWS: tuple[tuple[str, Callable[[Summary], str]], ...] = (
    ("duration s", lambda s: _num(s.duration_s, "{:.1f}")),
    ("threads traced", lambda s: str(s.threads)),
    ("connections", lambda s: str(s.connections) if s.connections_followed else NOT_FOLLOWED),
    ("accepted", lambda s: str(s.accepts)),
    ("accept EAGAIN", lambda s: str(s.eagain)),
    ("herd factor (listener wakeups / accept)", lambda s: _num(s.herd_factor) + _basis(s)),
    ("threads woken per connection", lambda s: _num(s.threads_woken_per_connection)),
    ("listener wakeups", lambda s: _int(s.listener_wakeups)),
    *((f"  {o}", _listener_outcome(o)) for o in OUTCOMES),
    ("woken-but-idle (absorbed + eagain)", lambda s: _num(s.idle_fraction, "{:.1%}")),
    ("wasted CPU µs per connection", lambda s: _num(s.wasted_cpu_us_per_connection, "{:.1f}")),
    ("wasted CPU, cores at this rate", lambda s: _num(s.wasted_cores, "{:.4f}")),
    ("CPU µs per connection (every wakeup)", lambda s: _num(s.cpu_us_per_connection, "{:.1f}")),
    ("wakeups, all causes", lambda s: str(s.wakeups)),
    *((f"  {c}", _cause(c)) for c in CAUSES),
    ("wakeups per accept (all causes)", lambda s: _num(s.wakeups_per_accept)),
    ("wake latency p50 µs", lambda s: _pct(s.wake_latency_us, "p50")),
    ("wake latency p99 µs", lambda s: _pct(s.wake_latency_us, "p99")),
    ("accept latency p50 µs", lambda s: _pct(s.accept_latency_us, "p50")),
    ("accept latency p99 µs", lambda s: _pct(s.accept_latency_us, "p99")),
    ("accept latency match", lambda s: s.accept_latency_match
     or ("-" if s.connections_followed else NOT_FOLLOWED)),
    ("workers (threads waiting on the listener)", lambda s: str(len(s.accepts_per_thread))),
    ("fairness (Jain)", lambda s: _num(s.fairness_jain, "{:.3f}")),
    ("largest share", lambda s: _num(s.max_share, "{:.1%}")),
    ("lost events", lambda s: "unknown" if s.lost_events is None else str(s.lost_events)),
    ("probe misses", lambda s: "unknown" if s.probe_misses is None else str(s.probe_misses)),
)
LOUD = ("lost events", "probe misses")


def _vs(name: str) -> Callable[[Judged], str]:
    return lambda j: _num((j.vs_baseline or {}).get(name), "{:.2f}x")


BASELINE_ROWS = tuple((f"{name.replace('_', ' ')} vs baseline", _vs(name))
                      for name in ("herd_factor", "threads_woken_per_connection", "idle_fraction",
                                   "eagain_per_accept", "wake_latency_p50_us", "accept_latency_p50_us",
                                   "wasted_cpu_us_per_connection", "cpu_us_per_connection"))


def summary_table(judged: list[Judged], title: str = "herdtrace analyze") -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("metric", style="bold", no_wrap=True)
    for j in judged:
        table.add_column(j.label, justify="right")
    for name, cell in ROWS:
        cells = [cell(j.summary) for j in judged]
        style = "red" if name in LOUD and any(c != "0" for c in cells) else None
        table.add_row(name, *cells, style=style)
    if judged and judged[0].vs_baseline is not None:
        for name, vs in BASELINE_ROWS:
            table.add_row(name, *[vs(j) for j in judged])
    return table


def verdict_lines(judged: list[Judged]) -> list[str]:
    """Each recording's verdict, and the fixes for a herd, under the table."""
    lines = []
    for j in judged:
        v = j.verdict
        colour = {"herd": "red", "no-herd": "green"}.get(v.level, "yellow")
        lines.append(f"[bold]{j.label}[/]: [{colour}]{v.text}[/]")
        lines += [f"  fix ({fix.kind}): {fix.text}" for fix in v.fixes]
        if j.change is not None:
            lines += [f"  vs baseline: {line}" for line in j.change.lines()]
    return lines


def console() -> Console:
    """A console that does not squeeze wide tables when output goes to a file or pipe."""
    c = Console(soft_wrap=True, highlight=False)
    if not c.is_terminal:
        c = Console(soft_wrap=True, highlight=False, width=300)
    return c
