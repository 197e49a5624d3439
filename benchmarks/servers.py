"""Servers the observer effect is measured on: the lab in two modes, and nginx."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from herdtrace.collectors.targets import descendants
from herdtrace.workloads.lab import LabServer
from herdtrace.workloads.server import ServerOptions

NGINX_CONF = """worker_processes {workers};
daemon off;
pid {wd}/nginx.pid;
error_log {wd}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {wd}/body;
    proxy_temp_path {wd}/proxy;
    fastcgi_temp_path {wd}/fastcgi;
    uwsgi_temp_path {wd}/uwsgi;
    scgi_temp_path {wd}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def lab(mode: str, workers: int = 4) -> Iterator[tuple[list[int], int]]:
    with LabServer(ServerOptions(mode=mode, workers=workers)) as srv:
        yield descendants((srv.pid,)), srv.port
        srv.stop()


@contextlib.contextmanager
def nginx(workdir: Path, workers: int = 4) -> Iterator[tuple[list[int], int]]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, wd=workdir, port=port))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir), "-e",
                             str(workdir / "error.log")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        time.sleep(0.2)  # let every worker reach epoll_wait
        yield descendants((proc.pid,)), port
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def targets(workdir: Path) -> dict[str, contextlib.AbstractContextManager[tuple[list[int], int]]]:
    """Fresh context managers, one per target; nginx only where it is installed."""
    found: dict[str, contextlib.AbstractContextManager[tuple[list[int], int]]] = {
        "lab epoll-shared": lab("epoll-shared"),
        "lab epoll-exclusive": lab("epoll-exclusive"),
    }
    if shutil.which("nginx"):
        found["nginx (4 workers)"] = nginx(workdir)
    return found
