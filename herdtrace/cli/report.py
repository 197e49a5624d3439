"""`herdtrace report FILES... -o report.png`: the one-glance PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from herdtrace.reports.files import write_report


def default_output(files: list[Path]) -> Path:
    first = files[0]
    return first / "report.png" if first.is_dir() else first.with_suffix(".png")


def report_command(
    files: Annotated[list[Path], typer.Argument(help="Recordings, or folders of recordings.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", show_default=False, help="Figure to write, .png, .svg or .pdf [default: the first input's name with .png].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
    by_label: Annotated[bool, typer.Option("--by-label", help="Combine recordings that share a label (e.g. a bench's repeats of one mode).")] = False,
) -> None:
    """Herd factor, outcomes, latency CDFs, fairness and one connection's herd, as one PNG."""
    out = write_report(files, output or default_output(files), force, by_label)
    typer.echo(f"herdtrace: wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("report", short_help="One PNG, SVG or PDF figure of recordings side by side.",
                epilog="Example:\n\n\b\n  herdtrace report before.parquet after.parquet -o report.png")(report_command)
