"""Reports: the figure (`report_for(recs)`, `write_report(files, output)`) and terminal tables."""

from herdtrace.reports.files import report_for, write_report

__all__ = ["report_for", "write_report"]
