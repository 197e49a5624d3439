"""Servers the observer effect is measured on: the lab in two modes, and nginx."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from herdtrace.procfs import descendants
from herdtrace.workloads import real_servers
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.server import ServerOptions


@contextlib.contextmanager
def lab(mode: str, workers: int = 4) -> Iterator[tuple[list[int], int]]:
    with LabServer(ServerOptions(mode=mode, workers=workers)) as srv:
        yield descendants((srv.pid,)), srv.port
        srv.stop()


@contextlib.contextmanager
def nginx(workdir: Path, workers: int = 4) -> Iterator[tuple[list[int], int]]:
    with real_servers.nginx(workdir, workers) as srv:
        yield srv.pids(), srv.port


NAMES = ("lab epoll-shared", "lab epoll-exclusive", "nginx (4 workers)")


def targets(workdir: Path) -> dict[str, contextlib.AbstractContextManager[tuple[list[int], int]]]:
    """Fresh context managers, one per target; nginx only where it is installed."""
    found: dict[str, contextlib.AbstractContextManager[tuple[list[int], int]]] = {
        NAMES[0]: lab("epoll-shared"),
        NAMES[1]: lab("epoll-exclusive"),
    }
    if shutil.which("nginx"):
        found[NAMES[2]] = nginx(workdir)
    return found
