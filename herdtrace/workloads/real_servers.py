"""Real servers herdtrace was not written for, started on a free loopback port.

Each runs in the foreground, in its own session (some signal their whole process
group), and is stopped by pid. Used by the integration tests (herd metrics checked
beside an independent tracer) and by `make bench-perf`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from herdtrace.errors import HerdtraceError
from herdtrace.procfs import descendants

NGINX_CONF = """worker_processes {workers};
daemon off;
pid {wd}/nginx.pid;
error_log {wd}/error.log;
events {{ worker_connections 1024; accept_mutex {accept_mutex}; }}
http {{
    access_log off;
    client_body_temp_path {wd}/body;
    proxy_temp_path {wd}/proxy;
    fastcgi_temp_path {wd}/fastcgi;
    uwsgi_temp_path {wd}/uwsgi;
    scgi_temp_path {wd}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen_flags};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

APP = '''\
def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
'''


NODE_CLUSTER = """const cluster = require("node:cluster");
const http = require("node:http");
const [port, workers] = process.argv.slice(2).map(Number);
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on("SIGTERM", () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => res.end("ok\\n")).listen(port, "127.0.0.1");
}
"""

APACHE_CONF = """ServerRoot {wd}
PidFile {wd}/httpd-{port}.pid
ErrorLog {wd}/apache-error.log
LogLevel warn
Mutex file:{wd} default
DefaultRuntimeDir {wd}
LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
Listen 127.0.0.1:{port}
ServerName localhost
User www-data
Group www-data
StartServers {workers}
ServerLimit {workers}
{mpm_limits}
MaxRequestWorkers {max_workers}
{extra}
DocumentRoot {wd}
"""


HAPROXY_CONF = """global
    nbthread {threads}
    pidfile {wd}/haproxy-{port}.pid
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend herd
{binds}
    http-request return status 200 content-type text/plain string ok
"""


@dataclass(frozen=True)
class RunningServer:
    name: str
    pid: int  # the main process: record --pid follows its children
    port: int

    def pids(self) -> list[int]:
        return descendants((self.pid,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise HerdtraceError(f"nothing listens on 127.0.0.1:{port}")


def wait_workers(pid: int, workers: int, timeout: float = 20.0) -> None:
    """Until the main process has at least `workers` children (pre-fork servers)."""
    deadline = time.monotonic() + timeout
    while len(descendants((pid,))) < workers + 1:
        if time.monotonic() > deadline:
            raise HerdtraceError(f"pid {pid} did not start {workers} workers")
        time.sleep(0.05)


@contextlib.contextmanager
def _foreground(name: str, argv: list[str], port: int, workers: int, stop_signal: int,
                cwd: Path | None = None,
                env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=cwd, env=env)
    try:
        wait_listening(port)
        wait_workers(proc.pid, workers)
        time.sleep(0.5)  # let every worker reach its wait
        yield RunningServer(name, proc.pid, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, stop_signal)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def nginx(workdir: Path, workers: int = 4, reuseport: bool = False,
          accept_mutex: bool = False) -> contextlib.AbstractContextManager[RunningServer]:
    """nginx from the distribution. accept_mutex off (nginx's default since 1.11.3)
    makes every worker add the listener with EPOLLEXCLUSIVE; `reuseport` gives each
    worker its own listening socket."""
    port = free_port()
    conf = workdir / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(
        workers=workers, wd=workdir, port=port, accept_mutex="on" if accept_mutex else "off",
        listen_flags=" reuseport" if reuseport else ""))
    argv = ["nginx", "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")]
    name = "nginx reuseport" if reuseport else f"nginx accept_mutex {'on' if accept_mutex else 'off'}"
    return _foreground(name, argv, port, workers, signal.SIGQUIT)


def _app(workdir: Path) -> Path:
    (workdir / "herd_app.py").write_text(APP)
    return workdir


def python_tool(name: str) -> str | None:
    """A console script installed beside this interpreter (the project's venv), or on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


# gunicorn worker classes that serve a WSGI app (the rest, asgi and uvicorn's, an ASGI one).
WSGI_WORKERS = ("sync", "gthread", "gevent", "tornado")


def gunicorn(workdir: Path, workers: int = 4, worker_class: str = "sync", reuse_port: bool = False,
             port: int | None = None) -> contextlib.AbstractContextManager[RunningServer]:
    """gunicorn's workers (sync: each waits in select() on the shared listener; an
    asgi or uvicorn worker class serves the ASGI app).
    `reuse_port`: --reuse-port, which since 24.0 opens a listening socket per worker.
    `port`: a given one (a server restarted on its port), else a free one."""
    port = port or free_port()
    exe = python_tool("gunicorn")
    if exe is None:
        raise HerdtraceError("gunicorn is not installed (make setup installs it)")
    app = "herd_app:wsgi" if worker_class in WSGI_WORKERS else "herd_app:asgi"
    argv = [exe, "--workers", str(workers), "--worker-class", worker_class, "--bind",
            f"127.0.0.1:{port}", "--chdir", str(_app(workdir)),
            *(["--reuse-port"] if reuse_port else []), app]
    name = f"gunicorn {worker_class}" + (" --reuse-port" if reuse_port else "")
    return _foreground(name, argv, port, workers, signal.SIGTERM)


def uvicorn(workdir: Path, workers: int = 4) -> contextlib.AbstractContextManager[RunningServer]:
    """uvicorn --workers: each worker's asyncio loop polls the shared listener with epoll."""
    port = free_port()
    exe = python_tool("uvicorn")
    if exe is None:
        raise HerdtraceError("uvicorn is not installed (make setup installs it)")
    argv = [exe, "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--app-dir", str(_app(workdir)), "herd_app:asgi"]
    return _foreground("uvicorn --workers", argv, port, workers, signal.SIGTERM)


def hypercorn(workdir: Path, workers: int = 4) -> contextlib.AbstractContextManager[RunningServer]:
    """hypercorn --workers: the parent opens the listener and spawns the workers, each
    an asyncio loop polling that one socket with epoll."""
    port = free_port()
    exe = python_tool("hypercorn")
    if exe is None:
        raise HerdtraceError("hypercorn is not installed (make setup installs it)")
    argv = [exe, "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
            "herd_app:asgi"]
    return _foreground("hypercorn --workers", argv, port, workers, signal.SIGTERM,
                       cwd=_app(workdir))


def granian(workdir: Path, workers: int = 4) -> contextlib.AbstractContextManager[RunningServer]:
    """granian --workers (its Rust runtime, one thread each): the parent opens the
    listener and every worker's event loop polls that one socket."""
    port = free_port()
    exe = python_tool("granian")
    if exe is None:
        raise HerdtraceError("granian is not installed (make setup installs it)")
    argv = [exe, "--interface", "asgi", "--workers", str(workers), "--runtime-threads", "1",
            "--host", "127.0.0.1", "--port", str(port), "--no-ws", "--working-dir",
            str(_app(workdir)), "herd_app:asgi"]
    return _foreground("granian --workers", argv, port, workers, signal.SIGTERM)


def waitress(workdir: Path, threads: int = 4) -> contextlib.AbstractContextManager[RunningServer]:
    """waitress-serve --threads N: one process whose main thread polls the listener and
    every connection (its own asyncore loop) and hands requests to N task threads."""
    port = free_port()
    exe = python_tool("waitress-serve")
    if exe is None:
        raise HerdtraceError("waitress is not installed (make setup installs it)")
    argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
            "herd_app:wsgi"]
    return _foreground("waitress", argv, port, 0, signal.SIGTERM, cwd=_app(workdir))


def daphne(workdir: Path) -> contextlib.AbstractContextManager[RunningServer]:
    """daphne: one process, one Twisted reactor (epoll) that accepts and serves."""
    port = free_port()
    exe = python_tool("daphne")
    if exe is None:
        raise HerdtraceError("daphne is not installed (make setup installs it)")
    argv = [exe, "-b", "127.0.0.1", "-p", str(port), "herd_app:asgi"]
    return _foreground("daphne", argv, port, 0, signal.SIGTERM, cwd=_app(workdir))


def node_cluster(workdir: Path, workers: int = 4,
                 policy: str = "none") -> contextlib.AbstractContextManager[RunningServer]:
    """A Node.js cluster of `workers` HTTP workers. NODE_CLUSTER_SCHED_POLICY=none: every
    worker polls the shared listener (libuv's epoll); rr (the default on Linux): the
    primary accepts and hands each connection to a worker."""
    exe = shutil.which("node")
    if exe is None:
        raise HerdtraceError("node is not installed (make setup installs nodejs)")
    port = free_port()
    script = workdir / "herd_cluster.js"
    script.write_text(NODE_CLUSTER)
    env = {**os.environ, "NODE_CLUSTER_SCHED_POLICY": policy}
    return _foreground(f"node cluster {policy}", [exe, str(script), str(port), str(workers)],
                       port, workers, signal.SIGTERM, env=env)


def apache(workdir: Path, mpm: str = "event", workers: int = 2,
           extra: str = "") -> contextlib.AbstractContextManager[RunningServer]:
    """Debian's Apache httpd in the foreground with one MPM and a minimal config
    (`extra` adds directives: the fix under test)."""
    exe = shutil.which("apache2")
    if exe is None:
        raise HerdtraceError("apache2 is not installed (make setup installs it)")
    port = free_port()
    conf = workdir / f"apache-{port}.conf"
    threads = 1 if mpm == "prefork" else 4
    limits = (f"MinSpareServers {workers}\nMaxSpareServers {workers}" if mpm == "prefork" else
              f"ThreadsPerChild {threads}\nMinSpareThreads 1\nMaxSpareThreads {workers * threads}")
    conf.write_text(APACHE_CONF.format(wd=workdir, port=port, mpm=mpm, workers=workers,
                                       mpm_limits=limits, max_workers=workers * threads,
                                       extra=extra))
    name = f"apache {mpm}" + (f" ({extra})" if extra else "")
    return _foreground(name, [exe, "-f", str(conf), "-DFOREGROUND"], port, workers,
                       signal.SIGTERM)


def haproxy(workdir: Path, threads: int = 4,
            shard: bool = False) -> contextlib.AbstractContextManager[RunningServer]:
    """Debian's HAProxy in the foreground (-db) with `threads` threads in one process.
    `shard`: one `bind` line per thread (`thread N`), each its own listening socket
    (SO_REUSEPORT, HAProxy's default)."""
    exe = shutil.which("haproxy")
    if exe is None:
        raise HerdtraceError("haproxy is not installed (make setup installs it)")
    port = free_port()
    binds = ([f"    bind 127.0.0.1:{port} thread {i}" for i in range(1, threads + 1)] if shard
             else [f"    bind 127.0.0.1:{port}"])
    conf = workdir / f"haproxy-{port}.cfg"
    conf.write_text(HAPROXY_CONF.format(threads=threads, wd=workdir, port=port,
                                        binds="\n".join(binds)))
    name = "haproxy" + (" bind per thread" if shard else "")
    return _foreground(name, [exe, "-db", "-f", str(conf)], port, 0, signal.SIGTERM)
