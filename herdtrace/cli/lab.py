"""`herdtrace lab serve|load`: the herd lab server and its load generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from herdtrace.errors import HerdtraceError
from herdtrace.validate import check_port, check_positive
from herdtrace.workloads.modes import HERD_MODE, MODES

MODE_HELP = "Wakeup mode: " + ", ".join(MODES) + "."


def serve_command(
    mode: Annotated[str, typer.Option("--mode", "-m", help=MODE_HELP)] = HERD_MODE,
    workers: Annotated[int, typer.Option("--workers", "-n", help="Number of workers.")] = 4,
    threads: Annotated[bool, typer.Option("--threads", help="Workers as threads (default: forked processes).")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-P", help="Port (0: any free port).")] = 8080,
    backlog: Annotated[int, typer.Option(help="listen() backlog.")] = 511,
    stats: Annotated[Path | None, typer.Option(help="Write the ground truth (per-worker counts) here as JSON on exit.")] = None,
) -> None:
    """Serve HTTP/1.0 with N workers waiting in MODE until SIGINT/SIGTERM.

    When listening it prints one JSON line on stdout, {"ready": true, "pid": ..., "port": ...,
    ...}, then a line for people; on exit, the accepts and EAGAINs it counted.
    """
    from herdtrace.workloads.server import ServerOptions, serve

    check_port(port)
    serve(ServerOptions(mode=mode, workers=workers, threads=threads, host=host, port=port,
                        backlog=backlog), stats)


def load_command(
    port: Annotated[int, typer.Option("--port", "-P", help="Server port on loopback.")] = 8080,
    host: Annotated[str, typer.Option(help="Loopback address.")] = "127.0.0.1",
    rate: Annotated[float | None, typer.Option(help="Open loop: new connections per second.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help="Closed loop: connections in flight.")] = None,
    connections: Annotated[int | None, typer.Option("--connections", "-k", help="Stop after this many connections.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="Stop starting connections after this many seconds.")] = None,
    timeout: Annotated[float, typer.Option(help="Per-connection timeout, seconds.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Drive the lab (or any loopback HTTP server) with one connection per request.

    Default: one connection at a time (-c 1), 1000 connections (-k 1000).
    """
    from herdtrace.workloads.loadgen import LoadOptions, run_load

    if rate is None and concurrency is None:
        concurrency = 1
    if connections is None and duration is None:
        connections = 1000
    check_port(port)
    check_positive("--duration", duration)
    check_positive("--timeout", timeout)
    result = run_load(LoadOptions(port=port, host=host, rate=rate, concurrency=concurrency,
                                  connections=connections, duration=duration, timeout=timeout))
    if result.completed == 0 and result.errors:
        kinds = ", ".join(f"{k} x{n}" for k, n in result.error_kinds.items())
        raise HerdtraceError(f"no request succeeded ({kinds}): is a server listening on "
                             f"{host}:{port}?")
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    lat = result.latency_ms
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    typer.echo(
        f"{result.loop} loop: {result.completed}/{result.started} completed, {result.errors} errors "
        f"{result.error_kinds or ''} in {result.duration_s:.2f}s = {result.throughput_rps:.0f} req/s\n"
        f"latency ms: p50 {fmt(lat['p50'])}  p90 {fmt(lat['p90'])}  p99 {fmt(lat['p99'])}  "
        f"max {fmt(lat['max'])}"
    )


def register(app: typer.Typer, group_cls: type[TyperGroup]) -> None:
    lab = typer.Typer(cls=group_cls, no_args_is_help=True, rich_markup_mode=None,
                      help="The herd lab: a server in every wakeup mode and a load generator.",
                      short_help="The lab: a server in every wakeup mode, and load.",
                      epilog="Example:\n\n\b\n  herdtrace lab serve --mode epoll-shared -P 8080 &\n"
                             "  herdtrace lab load -P 8080 -c 1 -k 1000")
    lab.command("serve")(serve_command)
    lab.command("load")(load_command)
    app.add_typer(lab, name="lab")
