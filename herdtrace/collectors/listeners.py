"""TCP listeners on this host, from sock_diag and /proc: who holds each, and how
they wait on it.

A listener is one address:port. Several listening sockets on one of them mean
SO_REUSEPORT; a listening socket registered in an epoll instance shows its
event flags in /proc/PID/fdinfo/EPFD (`tfd: .. events: .. ino: ..`), so
EPOLLEXCLUSIVE is visible without tracing epoll_ctl, for a server started long
before herdtrace. Each network namespace has its own tables: they are read
once per namespace, through a process in it (sock_diag from a thread that joins
it, or its /proc/PID/net where that fails).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdtrace.collectors import sockdiag

PROC = Path("/proc")
TCP_LISTEN = "0A"
EPOLLEXCLUSIVE = 1 << 28
# "tfd:        5 events:       19 data:                5  pos:0 ino:1a2b sdev:8"
_FDINFO_FIELD = re.compile(r"(\w+):\s*([0-9a-fA-F]+)")


@dataclass(frozen=True)
class Listener:
    addr: str
    port: int
    sockets: tuple[int, ...]  # inodes of its listening sockets
    holders: tuple[tuple[int, int], ...]  # (pid, fd) of every process holding one
    epoll_events: tuple[int, ...] = ()  # event masks of its epoll registrations
    comm: str = ""

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({pid for pid, _ in self.holders}))

    @property
    def mode(self) -> str | None:
        """What /proc shows of how it is waited on; None where it shows nothing (a
        blocking accept, select or poll: the trace tells those apart)."""
        if len(self.sockets) > 1:
            return "reuseport"
        if self.epoll_events:
            exclusive = all(e & EPOLLEXCLUSIVE for e in self.epoll_events)
            return "epoll-exclusive" if exclusive else "epoll-shared"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr, "port": self.port, "pids": list(self.pids), "comm": self.comm,
                "sockets": len(self.sockets), "mode": self.mode,
                "epoll_registrations": len(self.epoll_events),
                "epoll_exclusive": sum(1 for e in self.epoll_events if e & EPOLLEXCLUSIVE)}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    return sockdiag.address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def listening_sockets(pid: int | None = None) -> dict[int, tuple[str, int]]:
    """Listening socket inode -> (address, port), IPv4 and IPv6, of the network
    namespace of `pid` (default: this process's). From sock_diag, which walks only
    the listening sockets (see sockdiag.py); from /proc where it cannot be used."""
    try:
        if pid is None or _netns(pid) == _netns(os.getpid()):
            return sockdiag.listening()
        return sockdiag.in_netns_of(pid, sockdiag.listening)
    except OSError:
        return _listening_from_proc(PROC / (str(pid) if pid is not None else "self") / "net")


def _listening_from_proc(net_dir: Path) -> dict[int, tuple[str, int]]:
    """The same from /proc/net/tcp{,6}. The kernel lists listening sockets before
    the others, so reading stops at the first other state; but a tcp6 table with
    few IPv6 sockets costs a walk over every IPv4 socket even so."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(net_dir / table) as f:
                next(f, None)  # the header
                for line in f:
                    cols = line.split()
                    if len(cols) <= 9 or cols[3] != TCP_LISTEN:
                        break
                    host, port = cols[1].rsplit(":", 1)
                    out[int(cols[9])] = (_address(host), int(port, 16))
        except OSError:
            continue
    return out


@dataclass
class _Process:
    sockets: dict[int, int] = field(default_factory=dict)  # fd -> socket inode
    epolls: list[int] = field(default_factory=list)  # fds of epoll instances


def _process(pid: int) -> _Process:
    found = _Process()
    fd_dir = PROC / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return found
    for name in names:
        try:
            link = os.readlink(fd_dir / name)
        except OSError:
            continue
        if link.startswith("socket:["):
            found.sockets[int(name)] = int(link[8:-1])
        elif link == "anon_inode:[eventpoll]":
            found.epolls.append(int(name))
    return found


def _epoll_events(pid: int, epfd: int) -> list[tuple[int, int]]:
    """(target inode, event mask) of each registration in one epoll instance."""
    out = []
    for line in _read(PROC / str(pid) / "fdinfo" / str(epfd)).splitlines():
        if not line.startswith("tfd:"):
            continue
        values = dict(_FDINFO_FIELD.findall(line))
        if "events" in values and "ino" in values:
            out.append((int(values["ino"], 16), int(values["events"], 16)))
    return out


def _netns(pid: int) -> str:
    try:
        return os.readlink(PROC / str(pid) / "ns" / "net")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(e) for e in os.listdir(PROC) if e.isdigit()]


def _comm(pid: int) -> str:
    return _read(PROC / str(pid) / "comm").strip()


def scan(pids: Iterable[int] | None = None, ports: Iterable[int] = ()) -> list[Listener]:
    """The listeners these processes (default: every process) hold, with the port
    filter applied, sorted by port and address."""
    wanted_ports = set(ports)
    tables: dict[str, dict[int, tuple[str, int]]] = {}
    held: dict[tuple[str, str, int], dict[str, Any]] = {}
    for pid in (all_pids() if pids is None else pids):
        proc = _process(pid)
        if not proc.sockets:
            continue
        ns = _netns(pid)
        if ns not in tables:
            tables[ns] = listening_sockets(pid)
        table = tables[ns]
        mine = {fd: ino for fd, ino in proc.sockets.items()
                if ino in table and (not wanted_ports or table[ino][1] in wanted_ports)}
        if not mine:
            continue
        inodes = set(mine.values())
        registrations = [(ino, ev) for epfd in proc.epolls for ino, ev in _epoll_events(pid, epfd)
                         if ino in inodes]
        for fd, ino in mine.items():
            addr, port = table[ino]
            entry = held.setdefault((ns, addr, port), {"sockets": set(), "holders": [],
                                                        "events": [], "pids": set()})
            entry["sockets"].add(ino)
            entry["holders"].append((pid, fd))
            if pid not in entry["pids"]:
                entry["pids"].add(pid)
                entry["events"] += [ev for i, ev in registrations if table[i] == (addr, port)]
    listeners = [Listener(addr=addr, port=port, sockets=tuple(sorted(e["sockets"])),
                          holders=tuple(sorted(e["holders"])), epoll_events=tuple(e["events"]),
                          comm=_comm(min(e["pids"])))
                 for (_, addr, port), e in held.items()]
    return sorted(listeners, key=lambda lst: (lst.port, lst.addr))


def holders_of_ports(ports: Iterable[int]) -> tuple[int, ...]:
    """Every process holding a listening socket on one of these ports."""
    return tuple(sorted({pid for lst in scan(ports=ports) for pid in lst.pids}))


def ports_of(pids: Iterable[int]) -> set[int]:
    """TCP ports on which these processes hold a listening socket."""
    return {lst.port for lst in scan(pids)}
