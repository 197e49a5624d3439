"""`herdtrace summarize FILES|DIRS... -o summary.parquet`: one row of counts per recording."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from herdtrace.validate import check_output, check_suffix


def summarize_command(
    paths: Annotated[list[Path], typer.Argument(metavar="FILES|DIRS...", help="Recordings, or folders of them (searched recursively).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="The table to write (.parquet).")],
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", metavar="N", show_default=False, help="Recordings summarized at once [default: one per CPU].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
) -> None:
    """One row per recording into one Parquet table: host, kernel, target, ports,
    mode, times, and the counts behind every figure of `analyze --json` with the
    ratios computed from them. A broken file gets a row with its error.

    The table reads in pandas, DuckDB or Spark without herdtrace; roll it up with
    `herdtrace analyze --group-by host summary.parquet`.
    """
    from herdtrace.analysis import fleet
    from herdtrace.errors import HerdtraceError

    check_suffix(output, (".parquet",), force, "a summary table")
    check_output(output, force)
    if jobs is not None and jobs < 1:
        raise HerdtraceError(f"--jobs must be at least 1, got {jobs}")
    frame = fleet.summarize_files(paths, jobs)
    fleet.write_table(frame, output)
    errors = int(frame["error"].notna().sum())
    typer.echo(f"herdtrace: summarized {len(frame) - errors} recordings"
               + (f", {errors} could not be read (their rows say why)" if errors else "")
               + f" -> {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("summarize", short_help="One row of counts per recording, into one table.",
                epilog="Example:\n\n\b\n  herdtrace summarize recordings/ -o summary.parquet")(summarize_command)
