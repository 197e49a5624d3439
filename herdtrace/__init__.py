"""herdtrace: record, attribute and report thundering-herd wakeups."""

__version__ = "0.1.0"
