"""Recordings in, a report figure on disk out: the report command as a plain function."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from herdtrace.errors import HerdtraceError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from herdtrace.analysis.load import Recording


def report_for(recs: list[Recording], by_label: bool = False) -> Figure:
    """The report figure of loaded recordings (one column per recording, or per label)."""
    from herdtrace.analysis import metrics, views
    from herdtrace.reports.figure import report_figure

    shown, _ = metrics.grouped(recs, by_label)
    return report_figure([views.label_view(r) for r in shown])


def write_report(files: list[Path], output: Path, force: bool, by_label: bool = False) -> Path:
    """Load, analyse, draw, save (PNG, SVG or PDF by the output's extension)."""
    from herdtrace.analysis import load

    check_report_output(output, force)
    return save_report(load.load_recordings(files), output, by_label)


def check_report_output(output: Path, force: bool) -> None:
    from herdtrace.reports.figure import FORMATS
    from herdtrace.validate import check_output

    check_output(output, force)
    if output.suffix.lower() not in FORMATS:
        raise HerdtraceError(f"{output}: a report is written as {', '.join(FORMATS)}")


def save_report(recs: list[Recording], output: Path, by_label: bool = False) -> Path:
    """The figure of recordings already loaded, saved by the output's extension."""
    from herdtrace.reports.figure import save_figure

    save_figure(report_for(recs, by_label), output)
    return output
