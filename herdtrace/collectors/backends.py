"""The collectors `record` can run, behind one signature, chosen by name here."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from herdtrace.errors import HerdtraceError

if TYPE_CHECKING:  # a light module: the CLI reads DEFAULT before any collector loads
    from herdtrace.collectors.session import RecordOptions, RecordSummary


class Collector(Protocol):
    def __call__(self, opts: RecordOptions, stop: threading.Event,
                 on_ready: Callable[[str], None] | None = None,
                 on_done: Callable[[RecordSummary], None] | None = None) -> RecordSummary:
        """Record until `stop`, the duration or the targets' end; `on_ready` gets the
        ready line and warnings, `on_done` the summary once the file is complete."""
        ...


def _bcc() -> Collector:
    from herdtrace.collectors.bpf_collector import record

    return record


def _dtrace() -> Collector:
    from herdtrace.collectors.dtrace_collector import record_dtrace

    return record_dtrace


# Imported on use: the dtrace backend needs no bcc, and bcc needs no dtrace.
BACKENDS: dict[str, Callable[[], Collector]] = {"bcc": _bcc, "dtrace": _dtrace}
DEFAULT = "bcc" if sys.platform.startswith("linux") else "dtrace"


def collector(name: str) -> Collector:
    if name not in BACKENDS:
        raise HerdtraceError(f"unknown --backend {name!r}; backends: {', '.join(BACKENDS)}")
    return BACKENDS[name]()
