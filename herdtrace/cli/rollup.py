"""`analyze --group-by KEY`: recordings or summary tables rolled up, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.table import Table

from herdtrace.analysis import fleet
from herdtrace.analysis.load import expand_paths
from herdtrace.reports.jsonable import rounded

SHOWN = ("recordings", "accepts", "listener_wakeups", "herd_factor",
         "threads_woken_per_connection", "idle_fraction", "eagain_per_accept", "lost_events",
         "probe_misses")


def rows_of(paths: list[Path], jobs: int | None) -> pd.DataFrame:
    """Summary tables as they are; recordings summarized (in parallel)."""
    tables = [p for p in paths if p.is_file() and fleet.is_table(p)]
    frames = [fleet.read_table(p) for p in tables]
    rest = [p for p in paths if p not in tables]
    if rest:
        frames.append(fleet.summarize_files(expand_paths(rest), jobs))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def print_rollup(paths: list[Path], by: str, jobs: int | None, as_json: bool) -> None:
    from herdtrace.reports.table import console

    fleet.check_group_key(by)  # before summarizing anything
    rolled = fleet.rollup(rows_of(paths, jobs), by)
    if as_json:
        records = [rounded(r) for r in rolled.to_dict("records")]
        typer.echo(json.dumps({"group_by": by, "errors": rolled.attrs.get("errors", 0),
                               "groups": records}, indent=2))
        return
    table = Table(title=f"herdtrace analyze --group-by {by}")
    table.add_column(by, style="bold")
    for col in SHOWN:
        table.add_column(col.replace("_", " "), justify="right")
    for r in rolled.to_dict("records"):
        cells = [_cell(r.get(col)) for col in SHOWN]
        table.add_row(str(r[by]), *cells)
    out = console()
    out.print(table)
    if rolled.attrs.get("errors"):
        out.print(f"[yellow]{rolled.attrs['errors']} files could not be read: see their rows "
                  "in `herdtrace summarize`'s table[/]")


def _cell(value: Any) -> str:
    v = rounded(value)
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)
