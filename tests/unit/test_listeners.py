"""Listeners found in /proc, with the mode they are waited in, on real lab servers."""

from __future__ import annotations

import os
import select
import socket

import pytest

from herdtrace.collectors import listeners, targets
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.server import ServerOptions

SEEN = {"epoll-shared": "epoll-shared", "epoll-one-fd": "epoll-shared",
        "epoll-exclusive": "epoll-exclusive", "reuseport": "reuseport",
        "accept-blocking": None, "select-shared": None}


@pytest.mark.parametrize("mode", SEEN)
def test_mode_seen_in_proc(mode: str) -> None:
    with LabServer(ServerOptions(mode=mode, workers=3)) as srv:
        (found,) = listeners.scan(ports=[srv.port])
        assert found.port == srv.port and found.addr == "127.0.0.1"
        assert found.mode == SEEN[mode]
        # The workers hold it (and, but for reuseport, the parent).
        assert set(found.pids) <= set(targets.descendants((srv.pid,)))
        assert len(found.pids) == (3 if mode == "reuseport" else 4)
        assert listeners.holders_of_ports([srv.port]) == found.pids
        assert found.comm
        srv.stop()


def test_ipv6_listener_in_an_exclusive_epoll() -> None:
    """This test's own process listens on ::1 and waits with EPOLLEXCLUSIVE."""
    with socket.socket(socket.AF_INET6) as sock, select.epoll() as ep:
        sock.bind(("::1", 0))
        sock.listen()
        ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        (found,) = listeners.scan(pids=[os.getpid()])
        assert (found.addr, found.port) == ("::1", sock.getsockname()[1])
        assert (found.mode, found.holders) == ("epoll-exclusive", ((os.getpid(), sock.fileno()),))


def test_nothing_for_a_process_without_listeners() -> None:
    assert listeners.scan(pids=[1 << 22]) == []
