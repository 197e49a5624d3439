"""The lab server: n workers wait on one listening port in a chosen wakeup mode.

Every connection gets a minimal HTTP/1.0 response and is closed. Each worker
counts its wait returns, accepts and accept EAGAINs in shared memory: that is
the ground truth a recording is checked against.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from herdtrace.errors import HerdtraceError
from herdtrace.workloads import modes
from herdtrace.workloads.waiters import (
    EpollWaiter,
    KqueueWaiter,
    PollWaiter,
    SelectWaiter,
    Waiter,
)

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
REQUEST_LIMIT = 16384
READ_TIMEOUT = struct.pack("ll", 2, 0)  # SO_RCVTIMEO: no poll() behind our back, unlike settimeout
COUNTER_NAMES = ("pid", "tid", "wait_returns", "accepts", "eagain", "errors")
PID, TID, WAIT_RETURNS, ACCEPTS, EAGAIN, ERRORS = range(len(COUNTER_NAMES))
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerOptions:
    mode: str = modes.HERD_MODE
    workers: int = 4
    threads: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    backlog: int = 511


class Counters:
    """Per-worker int64 counters in anonymous shared memory (survives fork)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.mem = mmap.mmap(-1, 8 * len(COUNTER_NAMES) * workers)
        self.view = memoryview(self.mem).cast("q")

    def bump(self, slot: int, what: int) -> None:
        self.view[slot * len(COUNTER_NAMES) + what] += 1

    def set(self, slot: int, what: int, value: int) -> None:
        self.view[slot * len(COUNTER_NAMES) + what] = value

    def rows(self) -> list[dict[str, int]]:
        n = len(COUNTER_NAMES)
        return [
            {"worker": slot, **dict(zip(COUNTER_NAMES, self.view[slot * n : (slot + 1) * n], strict=True))}
            for slot in range(self.workers)
        ]


@dataclass(frozen=True)
class GroundTruth:
    """What the lab server counted itself: what a recording of it must agree with.
    The same names as analysis' Summary (accepts, eagain)."""

    mode: str
    workers: int
    threads: bool
    accepts: int
    eagain: int
    wait_returns: int
    errors: int
    per_worker: list[dict[str, int]]
    pid: int = 0
    port: int = 0
    stuck_workers: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundTruth:
        counts = data.get("totals", data)  # files written before 2026-11 kept counts apart
        return cls(mode=data["mode"], workers=data["workers"], threads=data["threads"],
                   accepts=counts["accepts"], eagain=counts["eagain"],
                   wait_returns=counts["wait_returns"], errors=counts["errors"],
                   per_worker=data["per_worker"], pid=data.get("pid", 0),
                   port=data.get("port", 0), stuck_workers=tuple(data.get("stuck_workers", ())))


def respond(conn: socket.socket) -> None:
    with conn:
        conn.setblocking(True)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, READ_TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < REQUEST_LIMIT:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(RESPONSE)


def make_listener(opts: ServerOptions, *, reuseport: bool, blocking: bool) -> socket.socket:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        lst.bind((opts.host, opts.port))
    except OSError as exc:
        lst.close()
        if exc.errno == errno.EADDRINUSE:
            raise HerdtraceError(f"port {opts.port} on {opts.host} is in use") from None
        raise HerdtraceError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror}") from None
    lst.listen(opts.backlog)
    lst.setblocking(blocking)
    return lst


def check_port_free(opts: ServerOptions) -> None:
    """A SO_REUSEPORT bind would join someone else's group: check with a plain bind."""
    make_listener(opts, reuseport=False, blocking=True).close()


class Server:
    def __init__(self, opts: ServerOptions) -> None:
        self.mode = modes.resolve(opts.mode)
        if opts.workers < 1:
            raise HerdtraceError(f"--workers must be at least 1, got {opts.workers}")
        self.opts = opts
        self.counters = Counters(opts.workers)
        self.stop_r, self.stop_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        self.listener: socket.socket | None = None
        self.placeholder: socket.socket | None = None
        self.shared_epoll: select.epoll | None = None
        self.port = opts.port
        self._setup_listener()

    def _setup_listener(self) -> None:
        if self.mode.listener_per_worker:
            if self.opts.port:
                check_port_free(self.opts)
            # Reserve the port with a bound, never-listening socket: it takes no connections.
            self.placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.placeholder.bind((self.opts.host, self.opts.port))
            self.port = self.placeholder.getsockname()[1]
            return
        self.listener = make_listener(
            self.opts, reuseport=False, blocking=self.mode.waiter == "accept"
        )
        self.port = self.listener.getsockname()[1]
        if self.mode.waiter == "epoll-one-fd":
            self.shared_epoll = EpollWaiter.build([self.listener], self.stop_r, exclusive=False)

    # ---- worker side -------------------------------------------------------
    def _waiter(self, listeners: list[socket.socket]) -> Waiter:
        stop = self.stop_r
        make: dict[str, Callable[[], Waiter]] = {
            "epoll": lambda: EpollWaiter(listeners, stop),
            "epoll-exclusive": lambda: EpollWaiter(listeners, stop, exclusive=True),
            "epoll-one-fd": lambda: EpollWaiter(listeners, stop, epoll=self.shared_epoll),
            "select": lambda: SelectWaiter(listeners, stop),
            "poll": lambda: PollWaiter(listeners, stop),
            "kqueue": lambda: KqueueWaiter(listeners, stop, 0),
            "kqueue-wakeone": lambda: KqueueWaiter(listeners, stop, modes.kq_wakeone_flag() or 0),
        }
        return make[self.mode.waiter]()

    def _serve_one(self, slot: int, conn: socket.socket) -> None:
        self.counters.bump(slot, ACCEPTS)
        try:
            respond(conn)
        except OSError:
            self.counters.bump(slot, ERRORS)

    def run_worker(self, slot: int) -> None:
        self.counters.set(slot, PID, os.getpid())
        self.counters.set(slot, TID, threading.get_native_id())
        if self.mode.listener_per_worker:
            lst = make_listener(
                ServerOptions(host=self.opts.host, port=self.port, backlog=self.opts.backlog),
                reuseport=True, blocking=False,
            )
        else:
            assert self.listener is not None
            lst = self.listener
        if self.mode.waiter == "accept":
            os.write(self.ready_w, b"r")
            self._accept_loop(slot, lst)
            return
        waiter = self._waiter([lst])
        os.write(self.ready_w, b"r")
        while True:
            ready = waiter.wait()
            self.counters.bump(slot, WAIT_RETURNS)
            if self.stop_r in ready:
                return
            try:
                conn, _ = lst.accept()
            except BlockingIOError:
                self.counters.bump(slot, EAGAIN)
                continue
            self._serve_one(slot, conn)

    def _accept_loop(self, slot: int, lst: socket.socket) -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:  # EINVAL once the listener is shut down: stop
                self.counters.bump(slot, WAIT_RETURNS)
                return
            self.counters.bump(slot, WAIT_RETURNS)
            self._serve_one(slot, conn)

    # ---- supervisor side ---------------------------------------------------
    def start_workers(self) -> list[Callable[[float], bool]]:
        """Start every worker; return, per worker, a function that joins it."""
        joins: list[Callable[[float], bool]] = []
        for slot in range(self.opts.workers):
            if self.opts.threads:
                th = threading.Thread(target=self.run_worker, args=(slot,), daemon=True)
                th.start()
                joins.append(functools.partial(join_thread, th))
            else:
                pid = os.fork()
                if pid == 0:
                    self._child(slot)
                joins.append(functools.partial(wait_child, pid))
        self._await_ready()
        return joins

    def _child(self, slot: int) -> None:
        code = 0
        try:
            set_parent_death_signal()
            self.run_worker(slot)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _await_ready(self) -> None:
        got = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while got < self.opts.workers:
            if time.monotonic() > deadline:
                raise HerdtraceError(f"only {got} of {self.opts.workers} workers became ready")
            got += len(os.read(self.ready_r, self.opts.workers - got))

    def stop(self) -> None:
        os.write(self.stop_w, b"s")
        if self.mode.waiter == "accept" and self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RD)

    def truth(self, stuck_workers: tuple[int, ...]) -> GroundTruth:
        rows = self.counters.rows()
        return GroundTruth(
            mode=self.mode.name, workers=self.opts.workers, threads=self.opts.threads,
            accepts=sum(r["accepts"] for r in rows), eagain=sum(r["eagain"] for r in rows),
            wait_returns=sum(r["wait_returns"] for r in rows),
            errors=sum(r["errors"] for r in rows), per_worker=rows, pid=os.getpid(),
            port=self.port, stuck_workers=stuck_workers)


def set_parent_death_signal() -> None:
    """Workers die with the server, even when it is SIGKILLed."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def join_thread(th: threading.Thread, timeout: float) -> bool:
    th.join(timeout)
    return not th.is_alive()


def wait_child(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        time.sleep(0.01)
    return False


def serve(opts: ServerOptions, stats_path: Path | None = None) -> GroundTruth:
    """Run in the foreground until SIGINT/SIGTERM; return (and write) the ground truth."""
    handled = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the workers start, so that they inherit it; unblocked again on
    # the way out, error or not: a caller in the same process (a test, a library
    # user) would otherwise pass the block on to every process it starts later.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        server = Server(opts)
        joins = server.start_workers()
        print(json.dumps({"ready": True, "pid": os.getpid(), "port": server.port,
                          "mode": opts.mode, "workers": opts.workers, "threads": opts.threads}),
              flush=True)
        print(f"herdtrace lab: {opts.mode}, {opts.workers} "
              f"{'threads' if opts.threads else 'processes'} on {opts.host}:{server.port} "
              "(Ctrl-C to stop)", file=sys.stderr, flush=True)
        signal.sigwait(handled)
        server.stop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    stuck = [i for i, join in enumerate(joins) if not join(STOP_TIMEOUT_S)]
    truth = server.truth(tuple(stuck))
    if stats_path is not None:
        stats_path.write_text(json.dumps(truth.to_json(), indent=2) + "\n")
    print(f"herdtrace lab: accepts={truth.accepts} eagain={truth.eagain} "
          f"wait_returns={truth.wait_returns} errors={truth.errors}", file=sys.stderr, flush=True)
    return truth
