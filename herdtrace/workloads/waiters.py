"""How one worker waits for its listener(s) to become readable, per mode.

Each waiter watches the listener(s) and the server's stop pipe and returns the
fds that are ready. The stop pipe is never registered exclusively, so stopping
wakes every worker in every mode.
"""

from __future__ import annotations

import select
import socket
from typing import Protocol


class Waiter(Protocol):
    def wait(self) -> list[int]: ...


class EpollWaiter:
    def __init__(
        self, listeners: list[socket.socket], stop_fd: int, exclusive: bool = False,
        epoll: select.epoll | None = None,
    ) -> None:
        self.epoll = epoll or self.build(listeners, stop_fd, exclusive)

    @staticmethod
    def build(listeners: list[socket.socket], stop_fd: int, exclusive: bool) -> select.epoll:
        ep = select.epoll()
        flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
        for lst in listeners:
            ep.register(lst.fileno(), flags)
        ep.register(stop_fd, select.EPOLLIN)
        return ep

    def wait(self) -> list[int]:
        # maxevents 1: a worker takes one readiness at a time, like a pre-fork server.
        return [fd for fd, _ in self.epoll.poll(-1, 1)]


class SelectWaiter:
    def __init__(self, listeners: list[socket.socket], stop_fd: int) -> None:
        self.fds = [lst.fileno() for lst in listeners] + [stop_fd]

    def wait(self) -> list[int]:
        readable, _, _ = select.select(self.fds, [], [])
        return list(readable)


class PollWaiter:
    def __init__(self, listeners: list[socket.socket], stop_fd: int) -> None:
        self.poller = select.poll()
        for fd in [lst.fileno() for lst in listeners] + [stop_fd]:
            self.poller.register(fd, select.POLLIN)

    def wait(self) -> list[int]:
        return [fd for fd, _ in self.poller.poll()]


class KqueueWaiter:
    """BSD: each worker its own kqueue; wakeone adds EV_WAKEONE where it exists."""

    def __init__(self, listeners: list[socket.socket], stop_fd: int, wakeone_flag: int = 0) -> None:
        self.kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
        changes = [
            select.kevent(  # type: ignore[attr-defined,unused-ignore]
                lst.fileno(),
                filter=select.KQ_FILTER_READ,  # type: ignore[attr-defined,unused-ignore]
                flags=select.KQ_EV_ADD | wakeone_flag,  # type: ignore[attr-defined,unused-ignore]
            )
            for lst in listeners
        ]
        changes.append(
            select.kevent(  # type: ignore[attr-defined,unused-ignore]
                stop_fd,
                filter=select.KQ_FILTER_READ,  # type: ignore[attr-defined,unused-ignore]
                flags=select.KQ_EV_ADD,  # type: ignore[attr-defined,unused-ignore]
            )
        )
        self.kq.control(changes, 0, 0)

    def wait(self) -> list[int]:
        return [int(ev.ident) for ev in self.kq.control(None, 1, None)]
