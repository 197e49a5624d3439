"""The lab's load generator: one new connection per HTTP/1.0 request, on loopback.

Open loop (--rate): connection i is due at start + i/rate, and its latency is
measured from that due time, so a stalled server cannot hide its delay behind a
stalled client. Closed loop (--concurrency): C connections in flight, as ab -c.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from herdtrace.errors import HerdtraceError

REQUEST = b"GET / HTTP/1.0\r\nHost: herdtrace-lab\r\nUser-Agent: herdtrace-load\r\n\r\n"


@dataclass(frozen=True)
class LoadOptions:
    port: int
    host: str = "127.0.0.1"
    rate: float | None = None
    concurrency: int | None = None
    connections: int | None = None
    duration: float | None = None
    timeout: float = 5.0

    def validate(self) -> None:
        if (self.rate is None) == (self.concurrency is None):
            raise HerdtraceError("give exactly one of --rate or --concurrency")
        if (self.connections is None) == (self.duration is None):
            raise HerdtraceError("give exactly one of --connections or --duration")
        if self.rate is not None and self.rate <= 0:
            raise HerdtraceError(f"--rate must be positive, got {self.rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise HerdtraceError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.connections is not None and self.connections < 1:
            raise HerdtraceError(f"--connections must be at least 1, got {self.connections}")
        if self.duration is not None and self.duration <= 0:
            raise HerdtraceError(f"--duration must be positive, got {self.duration}")
        if not ipaddress.ip_address(self.host).is_loopback:
            raise HerdtraceError(f"the lab load only targets loopback, not {self.host}")


@dataclass
class LoadResult:
    loop: str  # "open" or "closed"
    started: int
    completed: int
    errors: int
    duration_s: float
    throughput_rps: float
    latency_ms: dict[str, float | None]
    error_kinds: dict[str, int] = field(default_factory=dict)
    target_rate: float | None = None
    concurrency: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Conn:
    sock: socket.socket
    due: float
    started: float
    got: bytes = b""


def percentiles(values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    arr = np.asarray(values_s) * 1e3
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(arr.max())}


class _Run:
    def __init__(self, opts: LoadOptions) -> None:
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.inflight: dict[int, _Conn] = {}
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.started = 0
        self.t0 = time.perf_counter()

    def can_launch(self, now: float) -> bool:
        o = self.opts
        if o.connections is not None:
            return self.started < o.connections
        assert o.duration is not None
        return now - self.t0 < o.duration

    def launch(self, due: float) -> None:
        self.started += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors: the server fell behind the rate
            self.errors[errno.errorcode.get(exc.errno or 0, "socket")] += 1
            return
        sock.setblocking(False)
        err = sock.connect_ex((self.opts.host, self.opts.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(sock, errno.errorcode.get(err, str(err)))
            return
        conn = _Conn(sock, due, time.perf_counter())
        self.inflight[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_WRITE)

    def fail(self, sock: socket.socket, kind: str) -> None:
        self.errors[kind] += 1
        fd = sock.fileno()
        if fd in self.inflight:
            self.sel.unregister(sock)
            del self.inflight[fd]
        sock.close()

    def on_event(self, fd: int, mask: int) -> None:
        conn = self.inflight.get(fd)
        if conn is None:  # failed earlier in this batch of events
            return
        sock = conn.sock
        if mask & selectors.EVENT_WRITE:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(sock, errno.errorcode.get(err, str(err)))
                return
            try:
                sock.send(REQUEST)
            except OSError as exc:
                self.fail(sock, errno.errorcode.get(exc.errno or 0, "send"))
                return
            self.sel.modify(sock, selectors.EVENT_READ)
            return
        try:
            chunk = sock.recv(4096)
        except OSError as exc:
            self.fail(sock, errno.errorcode.get(exc.errno or 0, "recv"))
            return
        if chunk:
            conn.got += chunk
            return
        if not conn.got.startswith(b"HTTP/1.") or b" 200 " not in conn.got[:16]:
            self.fail(sock, "bad-response")
            return
        self.latencies.append(time.perf_counter() - conn.due)
        self.sel.unregister(sock)
        del self.inflight[fd]
        sock.close()

    def expire(self, now: float) -> None:
        for conn in [c for c in self.inflight.values() if now - c.started > self.opts.timeout]:
            self.fail(conn.sock, "timeout")


def run_load(opts: LoadOptions) -> LoadResult:
    opts.validate()
    run = _Run(opts)
    interval = 1.0 / opts.rate if opts.rate else 0.0
    next_due = run.t0
    while True:
        now = time.perf_counter()
        if opts.rate:
            while run.can_launch(now) and next_due <= now:
                run.launch(next_due)
                next_due = run.t0 + run.started * interval
        else:
            assert opts.concurrency is not None
            while run.can_launch(now) and len(run.inflight) < opts.concurrency:
                run.launch(time.perf_counter())
        launching = run.can_launch(time.perf_counter())
        if not launching and not run.inflight:
            break
        wait = max(0.0, next_due - time.perf_counter()) if opts.rate and launching else 0.05
        for key, mask in run.sel.select(min(wait, 0.05)):
            run.on_event(key.fd, mask)
        run.expire(time.perf_counter())
    elapsed = time.perf_counter() - run.t0
    run.sel.close()
    completed = len(run.latencies)
    return LoadResult(
        loop="open" if opts.rate else "closed",
        started=run.started,
        completed=completed,
        errors=sum(run.errors.values()),
        duration_s=elapsed,
        throughput_rps=completed / elapsed if elapsed > 0 else 0.0,
        latency_ms=percentiles(run.latencies),
        error_kinds=dict(run.errors),
        target_rate=opts.rate,
        concurrency=opts.concurrency,
    )
