"""`herdtrace analyze FILES...`: herd metrics of recordings, side by side or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def analyze_command(
    files: Annotated[list[Path], typer.Argument(help="Recordings, or folders of recordings.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    by_label: Annotated[bool | None, typer.Option("--by-label/--by-file", help="Combine recordings that share a label [default: when labels repeat].")] = None,
) -> None:
    """Wakeups per accept, outcomes, latencies and fairness for each recording."""
    from herdtrace.analysis import load, metrics

    recs = load.load_recordings(files)
    shown, grouped = metrics.grouped(recs, by_label)
    if as_json:
        out = metrics.analysis_json(recs)
        if grouped:
            out["labels"] = [metrics.summarize(r) for r in shown]
        typer.echo(json.dumps(out, indent=2))
        return
    from herdtrace.reports.table import console, summary_table

    console().print(summary_table([metrics.summarize(r) for r in shown]))


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
