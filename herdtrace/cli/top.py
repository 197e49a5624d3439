"""`herdtrace top [INTERVAL [COUNT]]`: every listener on this host, its herd, now."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from herdtrace.cli.record import print_summary, stop_on_signals
from herdtrace.validate import check_suffix

if TYPE_CHECKING:
    from herdtrace.collectors.watch import Interval

COLUMNS = ("LISTENER", "SERVER (PID)", "PROCS", "MODE", "CONN/S", "HERD", "WOKEN/CONN",
           "IDLE", "EAGAIN/S", "WAKE p99 µs", "WASTED µs/CONN")
WIDTHS = (22, 20, 7, 15, 8, 6, 10, 5, 8, 11, 14)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cells(row: dict[str, Any], interval_s: float) -> tuple[str, ...]:
    addr = f"[{row['addr']}]" if ":" in row["addr"] else row["addr"]
    server = f"{row['comm']} ({row['pids'][0]})" if row["pids"] else row["comm"]
    head = (f"{addr}:{row['port']}", server, str(row["processes"]), row["mode"] or "-")
    if not row["accepts"]:
        return (*head, "idle")
    idle = row["idle_fraction"]
    return (*head, _num(row["connections_per_s"], ".1f"), _num(row["herd_factor"], ".2f"),
            _num(row["threads_woken_per_connection"], ".2f"),
            "-" if idle is None else f"{idle:.0%}", f"{row['eagain'] / interval_s:.1f}",
            _num(row["wake_latency_p99_us"], ".1f"),
            _num(row.get("wasted_cpu_us_per_connection"), ".1f"))


def table_lines(interval: Interval) -> list[str]:
    """One interval as text: a header line, then one line per listener."""
    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 or i == 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, WIDTHS, strict=False))).rstrip()

    misses = "unknown" if interval.probe_misses is None else interval.probe_misses
    out = [f"{time.strftime('%H:%M:%S', time.localtime(interval.ts))}  "
           f"{len(interval.listeners)} listeners  lost {interval.lost_events}  "
           f"probe misses {misses}", line(COLUMNS)]
    out += [line(_cells(row, interval.interval_s)) for row in interval.listeners]
    return out


def top_command(
    interval: Annotated[float, typer.Argument(metavar="[INTERVAL", show_default=False, help="Seconds per report [default: 1].")] = 1.0,
    count: Annotated[int | None, typer.Argument(metavar="[COUNT]]", show_default=False, help="Reports before exiting [default: until Ctrl-C].")] = None,
    port: Annotated[list[int] | None, typer.Option("--port", "-P", metavar="PORT", show_default=False, help="Only listeners on this port (repeatable).")] = None,
    pid: Annotated[list[int] | None, typer.Option("--pid", "-p", metavar="PID", show_default=False, help="Only listeners held by this process or its children (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per interval per line.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", show_default=False, help="Also write a recording of everything traced, as `record` does.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
    buffer_pages: Annotated[int, typer.Option(metavar="PAGES", help="Ring buffer size in pages (a power of two).")] = 4096,
) -> None:
    """Which servers on this host wake more workers than they need, right now.

    Finds every process with a TCP listening socket (IPv4 and IPv6; listeners
    that appear later too), traces their waiting threads with record's probes
    counting in the kernel (as the exporter does: no record per wakeup; with -o,
    records, as `record` writes them), and prints one line per listener every
    INTERVAL seconds, most wakeups for nothing first: connections/s, herd factor,
    threads woken per connection, woken-but-idle, EAGAIN/s, wake latency p99
    (to within its power-of-two bucket when counting), wasted CPU per connection,
    and how the workers wait.

    Examples:

      herdtrace top

      herdtrace top 5 12 --port 80 --port 443 --json
    """
    from herdtrace.collectors.watch import TopOptions, watch
    from herdtrace.probes import program

    if output is not None:
        check_suffix(output, (".parquet",), force, "a recording")
    opts = TopOptions(interval_s=interval, count=count, ports=tuple(port or ()),
                      pids=tuple(pid or ()), output=output, force=force,
                      # Its rows need no connection records: where the kernel can tell
                      # listener wakeups without them, top leaves their probe out.
                      probe=program.ProbeOptions(ringbuf_pages=buffer_pages,
                                                 connections=not program.connections_optional()))
    def show(report: Interval) -> None:
        if as_json:
            typer.echo(json.dumps(report.to_json()))
        else:
            typer.echo("\n".join(table_lines(report)) + "\n")
        sys.stdout.flush()

    if output is None:  # the exporter's in-kernel counts: no record crosses to user space
        from herdtrace.collectors import aggregate

        counting = aggregate.ExporterOptions(
            interval_s=interval, ports=opts.ports, pids=opts.pids,
            probe=program.ProbeOptions(aggregate=True, ringbuf_pages=1,
                                       connections=opts.probe.connections))
        opts.validate()
        aggregate.watch_counts(counting, count, show, stop_on_signals(),
                               on_ready=lambda line: typer.echo(line, err=True))
        return
    summary = watch(opts, show, stop_on_signals(),
                    on_ready=lambda line: typer.echo(line, err=True))
    if output is not None:
        print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("top", short_help="Every listener on this host, its herd, every second.",
                epilog="Example:\n\n\b\n  herdtrace top 2 5      # five 2-second intervals")(top_command)
