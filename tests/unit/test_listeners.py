"""Listeners found from sock_diag and /proc, with the mode they are waited in, on real lab servers."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from herdtrace import procfs
from herdtrace.collectors import listeners, sockdiag
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
        assert set(found.pids) <= set(procfs.descendants((srv.pid,)))
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


def test_sock_diag_agrees_with_proc() -> None:
    """The same listeners, IPv4, IPv4-mapped and IPv6, from both sources."""
    with socket.socket(socket.AF_INET) as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        v4.listen()
        v6.listen()
        from_diag = sockdiag.listening()
        from_proc = listeners._listening_from_proc(Path("/proc/self/net"))
        assert from_diag == from_proc
        assert from_diag[os.fstat(v4.fileno()).st_ino] == ("127.0.0.1", v4.getsockname()[1])
        assert from_diag[os.fstat(v6.fileno()).st_ino] == ("::1", v6.getsockname()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")
def test_listener_in_another_network_namespace() -> None:
    """A server in a namespace of its own: found through a thread that joins it."""
    server = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('127.0.0.1', 8123)); s.listen()\n"
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        pid = server.pid  # unshare execs the command in place
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        (found,) = listeners.scan(pids=[pid])
        assert (found.addr, found.port, found.pids) == ("127.0.0.1", 8123, (pid,))
        assert found.port not in {port for _, port in sockdiag.listening().values()}
    finally:
        server.kill()
        server.wait()
