"""`herdtrace analyze FILES...`: herd metrics of recordings, side by side or as JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer


def analyze_command(
    files: Annotated[list[Path], typer.Argument(help="Recordings, or folders of recordings.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    by_label: Annotated[bool, typer.Option("--by-label", help="Combine recordings that share a label (e.g. a bench's repeats of one mode) into one column.")] = False,
    baseline: Annotated[Path | None, typer.Option(metavar="FILE", help="A recording to compare with: adds each figure's ratio to it.")] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", metavar="KEY", show_default=False, help="Roll recordings (or tables from `herdtrace summarize`) up by host, target, mode, day or kernel: counts summed, ratios from the sums.")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", metavar="N", show_default=False, help="With --group-by: recordings summarized at once [default: one per CPU].")] = None,
) -> None:
    """Herd factor, threads woken per connection, outcomes, causes, latencies, fairness and a
    verdict with the fix, for each recording."""
    from herdtrace import __version__
    from herdtrace.analysis import load, metrics
    from herdtrace.analysis.verdict import Judged, judged_summary

    if group_by is not None:
        from herdtrace.cli.rollup import print_rollup

        print_rollup(files, group_by, jobs, as_json)
        return
    recs = load.load_recordings(files)
    shown, grouped = metrics.grouped(recs, by_label)
    if grouped:
        for label, folders in metrics.mixed_labels(recs).items():
            typer.echo(f"herdtrace: warning: label {label} combines recordings from "
                       f"{', '.join(folders)}: different loads or runs? analyze each folder "
                       "on its own to keep them apart", err=True)
    base = judged_summary(load.load_recording(baseline)) if baseline else None

    def summaries(of: list[load.Recording]) -> list[Judged]:
        out = [judged_summary(r) for r in of]
        if base is not None:
            out = [replace(j, vs_baseline=metrics.ratios(j.summary, base.summary)) for j in out]
        return out

    if as_json:
        doc: dict[str, Any] = {"herdtrace": __version__,
                               "recordings": [j.to_json() for j in summaries(recs)]}
        if grouped:
            doc["labels"] = [j.to_json() for j in summaries(shown)]
        typer.echo(json.dumps(rounded(doc), indent=2))
        return
    from herdtrace.reports.table import console, summary_table, verdict_lines

    shown_summaries = summaries(shown)
    out_console = console()
    out_console.print(summary_table(shown_summaries))
    for line in verdict_lines(shown_summaries):
        out_console.print(line)


def rounded(value: Any) -> Any:
    """Floats to four decimals: more would be noise, not precision."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
