"""`herdtrace exporter`: every listener's herd as Prometheus metrics, from in-kernel counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from herdtrace.errors import HerdtraceError

if TYPE_CHECKING:
    from herdtrace.counts import Snapshot

# Prometheus' list of default exporter ports filled 9100-9999 in 2023; herdtrace
# takes one above it (a decision: see docs/exporter.md).
DEFAULT_ADDRESS = ":10135"


def listen_address(value: str) -> tuple[str, int]:
    """"HOST:PORT", ":PORT" (every address) or "[v6]:PORT" -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise HerdtraceError(f"--web.listen-address must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "", int(port)


def exporter_command(
    web_listen_address: Annotated[str, typer.Option("--web.listen-address", metavar="HOST:PORT", help="Where /metrics is served.")] = DEFAULT_ADDRESS,
    port: Annotated[list[int] | None, typer.Option("--port", "-P", metavar="PORT", show_default=False, help="Only listeners on this port (repeatable).")] = None,
    pid: Annotated[list[int] | None, typer.Option("--pid", "-p", metavar="PID", show_default=False, help="Only listeners held by this process or its children (repeatable).")] = None,
    comm: Annotated[list[str] | None, typer.Option("--comm", metavar="NAME", show_default=False, help="Only listeners held by processes of this name (repeatable).")] = None,
    interval: Annotated[float, typer.Option(metavar="SECONDS", help="How often the kernel's counts are read and new listeners looked for.")] = 1.0,
    max_listeners: Annotated[int, typer.Option(metavar="N", help="Listening ports counted at once (kernel memory: ~0.4 KiB a port per CPU); more are counted in herdtrace_exporter_uncounted_total.")] = 4096,
    ablate: Annotated[str | None, typer.Option(hidden=True, help="bench-exporter only: empty or filter (counts nothing).")] = None,
) -> None:
    """Serve every TCP listener's herd as Prometheus metrics at /metrics.

    The probes count in BPF maps per listener (no record per wakeup crosses to
    user space): listener wakeups, accepts, EAGAINs, wakeups for nothing, their
    CPU, wake latency and threads woken per connection, and the exporter's own
    costs. Servers started or restarted later are picked up. SIGTERM or Ctrl-C
    ends it (exit 0) with its probes gone.
    """
    import time

    from prometheus_client import start_http_server
    from prometheus_client.core import CollectorRegistry

    from herdtrace.cli.record import stop_on_signals
    from herdtrace.collectors import aggregate, targets
    from herdtrace.probes import program
    from herdtrace.reports.prometheus import SnapshotCollector
    from herdtrace.validate import check_port, check_positive

    check_positive("--interval", interval)
    for p in port or ():
        check_port(p)
    targets.require_alive(tuple(pid or ()))
    program.require_privilege()
    host, web_port = listen_address(web_listen_address)
    registry = CollectorRegistry()
    served = SnapshotCollector()
    registry.register(served)
    try:
        start_http_server(web_port, addr=host or "0.0.0.0", registry=registry)
    except OSError as exc:
        raise HerdtraceError(f"cannot serve on {web_listen_address}: {exc.strerror or exc}") from None
    opts = aggregate.ExporterOptions(
        interval_s=interval, ports=tuple(port or ()), pids=tuple(pid or ()), comms=tuple(comm or ()),
        probe=program.ProbeOptions(aggregate=True, ringbuf_pages=1, max_listeners=max_listeners,
                                   connections=not program.connections_optional(), ablate=ablate))

    def serve(source: Callable[[], Snapshot | None]) -> None:
        served.source = source

    started = time.monotonic()
    aggregate.count(opts, serve, stop_on_signals(), on_ready=lambda line: typer.echo(
        f"{line}; metrics at http://{host or '0.0.0.0'}:{web_port}/metrics "
        f"(ready in {time.monotonic() - started:.1f} s)", err=True))


def register(app: typer.Typer) -> None:
    app.command("exporter", short_help="Every listener's herd as Prometheus metrics.",
                epilog="Example:\n\n\b\n  herdtrace exporter --web.listen-address 127.0.0.1:10135 &\n"
                       "  curl -s 127.0.0.1:10135/metrics | grep ^herdtrace_listener")(exporter_command)
