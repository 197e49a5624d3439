"""`herdtrace report FILES... -o report.png`: the one-glance PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from herdtrace.errors import HerdtraceError


def default_output(files: list[Path]) -> Path:
    first = files[0]
    return first / "report.png" if first.is_dir() else first.with_suffix(".png")


def write_report(files: list[Path], output: Path, force: bool, by_label: bool | None = None) -> Path:
    """Load, analyse, draw, save: the report command as a plain function."""
    from herdtrace.analysis import load, metrics, views
    from herdtrace.reports.figure import report_figure, save_png

    if output.exists() and not force:
        raise HerdtraceError(f"{output} exists; use --force to overwrite")
    shown, _ = metrics.grouped(load.load_recordings(files), by_label)
    save_png(report_figure([views.label_view(r) for r in shown]), output)
    return output


def report_command(
    files: Annotated[list[Path], typer.Argument(help="Recordings, or folders of recordings.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="PNG to write [default: next to the first input].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
    by_label: Annotated[bool | None, typer.Option("--by-label/--by-file", help="Combine recordings that share a label [default: when labels repeat].")] = None,
) -> None:
    """Herd factor, outcomes, latency CDFs, fairness and one connection's herd, as one PNG."""
    out = write_report(files, output or default_output(files), force, by_label)
    typer.echo(f"herdtrace: wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
