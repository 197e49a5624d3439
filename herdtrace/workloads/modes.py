"""The lab's wakeup modes: how workers wait on the listening socket."""

from __future__ import annotations

import select
import sys
from dataclasses import dataclass

from herdtrace.errors import HerdtraceError


@dataclass(frozen=True)
class Mode:
    """A wakeup mode as data: the server reads these fields, never the name."""

    name: str
    summary: str
    wakes_one: bool  # the kernel path wakes one waiter per connection
    platform: str  # "linux" or "bsd"
    waiter: str  # how a worker waits: epoll, epoll-exclusive, epoll-one-fd, select, poll,
    #              kqueue, kqueue-wakeone, or accept (blocked in accept itself)
    listener_per_worker: bool = False  # a SO_REUSEPORT listener each, else one shared


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("epoll-shared", "each worker its own epoll on the shared listener (the herd)",
             False, "linux", "epoll"),
        Mode("epoll-exclusive", "as epoll-shared, registered with EPOLLEXCLUSIVE", True, "linux",
             "epoll-exclusive"),
        Mode("epoll-one-fd", "one epoll instance shared by every worker", False, "linux",
             "epoll-one-fd"),
        Mode("reuseport", "a SO_REUSEPORT listener per worker, each in its own epoll",
             True, "linux", "epoll", listener_per_worker=True),
        Mode("accept-blocking", "workers block in accept() on the shared listener",
             True, "linux", "accept"),
        Mode("select-shared", "select() on the shared listener", False, "linux", "select"),
        Mode("poll-shared", "poll() on the shared listener", False, "linux", "poll"),
        Mode("kqueue", "each worker its own kqueue on the shared listener", False, "bsd",
             "kqueue"),
        Mode("kqueue-wakeone", "as kqueue, with EV_WAKEONE", True, "bsd", "kqueue-wakeone"),
    )
}
LINUX_MODES = tuple(name for name, m in MODES.items() if m.platform == "linux")
HERD_MODE = "epoll-shared"


def is_bsd() -> bool:
    return "bsd" in sys.platform or sys.platform == "darwin"


def kq_wakeone_flag() -> int | None:
    """EV_WAKEONE where the kernel and Python expose it; None elsewhere."""
    value = getattr(select, "KQ_EV_WAKEONE", None)
    return int(value) if value is not None else None


def resolve(name: str) -> Mode:
    """The mode by name, or a one-line error when unknown or not on this kernel."""
    mode = MODES.get(name)
    if mode is None:
        raise HerdtraceError(f"unknown mode {name!r}; modes: {', '.join(MODES)}")
    if mode.platform == "bsd" and not hasattr(select, "kqueue"):
        raise HerdtraceError(f"mode {name} needs kqueue, which this kernel ({sys.platform}) lacks")
    if mode.platform == "linux" and not hasattr(select, "epoll"):
        raise HerdtraceError(f"mode {name} needs Linux (epoll); this is {sys.platform}")
    if mode.waiter == "epoll-exclusive" and not hasattr(select, "EPOLLEXCLUSIVE"):
        raise HerdtraceError(f"mode {name} needs EPOLLEXCLUSIVE (Linux 4.5+)")
    if mode.waiter == "kqueue-wakeone" and kq_wakeone_flag() is None:
        raise HerdtraceError(
            f"mode {name} needs EV_WAKEONE, which this kernel does not define "
            "(it was proposed for DragonFly BSD in 2010 and never merged)"
        )
    return mode


def supported_modes() -> tuple[str, ...]:
    names = []
    for name in MODES:
        try:
            resolve(name)
        except HerdtraceError:
            continue
        names.append(name)
    return tuple(names)
