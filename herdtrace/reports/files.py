"""Recordings in, a report figure on disk out: the report command as a plain function."""

from __future__ import annotations

from pathlib import Path

from herdtrace.errors import HerdtraceError


def write_report(files: list[Path], output: Path, force: bool, by_label: bool = False) -> Path:
    """Load, analyse, draw, save (PNG, SVG or PDF by the output's extension)."""
    from herdtrace.analysis import load, metrics, views
    from herdtrace.reports.figure import FORMATS, report_figure, save_figure
    from herdtrace.validate import check_output

    check_output(output, force)
    if output.suffix.lower() not in FORMATS:
        raise HerdtraceError(f"{output}: a report is written as {', '.join(FORMATS)}")
    shown, _ = metrics.grouped(load.load_recordings(files), by_label)
    save_figure(report_figure([views.label_view(r) for r in shown]), output)
    return output
