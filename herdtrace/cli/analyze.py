"""`herdtrace analyze FILES...`: herd metrics of recordings, side by side or as JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from herdtrace.errors import HerdtraceError

if TYPE_CHECKING:
    from herdtrace.analysis.verdict import Judged


def analyze_command(
    files: Annotated[list[Path], typer.Argument(help="Recordings, or folders of recordings.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    by_label: Annotated[bool, typer.Option("--by-label", help="Combine recordings that share a label (e.g. a bench's repeats of one mode) into one column.")] = False,
    baseline: Annotated[Path | None, typer.Option(metavar="FILE", help="A recording to compare with: adds each figure's ratio to it.")] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", metavar="KEY", show_default=False, help="Roll recordings (or tables from `herdtrace summarize`) up by host, target, mode, day or kernel: counts summed, ratios from the sums.")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", metavar="N", show_default=False, help="With --group-by: recordings summarized at once [default: one per CPU].")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Read each recording row group by row group, in bounded memory (automatic above 5M rows); latency percentiles to 1%.")] = False,
) -> None:
    """Herd factor, threads woken per connection, outcomes, causes, latencies, fairness and a
    verdict with the fix, for each recording."""
    from herdtrace.analysis import load, metrics
    from herdtrace.analysis.verdict import judged_summary

    if group_by is not None:
        from herdtrace.cli.rollup import print_rollup

        print_rollup(files, group_by, jobs, as_json)
        return
    from herdtrace.analysis import stream as streaming

    paths = load.expand_paths(files)
    if stream or any(streaming.too_big(p) for p in [*paths, *([baseline] if baseline else [])]):
        if by_label:
            raise HerdtraceError("--by-label combines recordings in memory, and these are "
                                 "streamed: use --group-by to roll them up")
        show([streaming.judged(p) for p in paths],
             streaming.judged(baseline) if baseline else None, as_json)
        return
    recs = [load.load_recording(p) for p in paths]
    shown, grouped = metrics.grouped(recs, by_label)
    if grouped:
        for label, folders in metrics.mixed_labels(recs).items():
            typer.echo(f"herdtrace: warning: label {label} combines recordings from "
                       f"{', '.join(folders)}: different loads or runs? analyze each folder "
                       "on its own to keep them apart", err=True)
    base_rec = load.load_recording(baseline) if baseline else None
    base = judged_summary(base_rec) if base_rec else None
    judged = [judged_summary(r) for r in recs]
    if base_rec is not None and base is not None and not grouped:
        from herdtrace.analysis.compare import compare

        judged = [j if r.path.resolve() == base_rec.path.resolve() else
                  replace(j, change=compare(base_rec, base.summary, r, j.summary))
                  for j, r in zip(judged, recs, strict=True)]
    show(judged, base, as_json, [judged_summary(r) for r in shown] if grouped else None)


def show(recordings: list[Judged], base: Judged | None, as_json: bool,
         labels: list[Judged] | None = None) -> None:
    """Print the judged recordings (and labels), with ratios to the baseline if any."""
    from herdtrace import __version__
    from herdtrace.analysis import metrics

    def against(judged: list[Judged]) -> list[Judged]:
        if base is None:
            return judged
        return [replace(j, vs_baseline=metrics.ratios(j.summary, base.summary)) for j in judged]

    if as_json:
        doc: dict[str, Any] = {"herdtrace": __version__,
                               "recordings": [j.to_json() for j in against(recordings)]}
        if labels is not None:
            doc["labels"] = [j.to_json() for j in against(labels)]
        from herdtrace.reports.jsonable import rounded

        typer.echo(json.dumps(rounded(doc), indent=2))
        return
    from herdtrace.reports.table import console, summary_table, verdict_lines

    shown = against(labels if labels is not None else recordings)
    out_console = console()
    out_console.print(summary_table(shown))
    for line in verdict_lines(shown):
        out_console.print(line)


def register(app: typer.Typer) -> None:
    app.command("analyze", short_help="Herd figures, their CPU cost, the verdict and the fix.",
                epilog="Example:\n\n\b\n  herdtrace analyze before.parquet after.parquet --baseline before.parquet")(analyze_command)
