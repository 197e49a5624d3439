"""`herdtrace record`: trace a running server (--pid) or a command (-- CMD)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from herdtrace.collectors.backends import DEFAULT as BACKEND_DEFAULT
from herdtrace.errors import HerdtraceError
from herdtrace.validate import check_suffix

if TYPE_CHECKING:
    from herdtrace.collectors.session import RecordSummary


def default_output() -> Path:
    return Path(f"herdtrace-{dt.datetime.now():%Y%m%d-%H%M%S}.parquet")


def record_command(
    command: Annotated[list[str] | None, typer.Argument(metavar="[-- COMMAND [ARGS]...]", show_default=False, help="A command to start and trace from its first instruction, instead of --pid.")] = None,
    pid: Annotated[list[int] | None, typer.Option("--pid", "-p", metavar="PID", show_default=False, help="Process to trace, with its threads and children (repeatable).")] = None,
    port: Annotated[list[int] | None, typer.Option("--port", "-P", metavar="PORT", show_default=False, help="Trace the processes listening on this TCP port, without looking up a pid (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", show_default=False, help="Recording file [default: herdtrace-YYYYmmdd-HHMMSS.parquet].")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", metavar="SECONDS", show_default=False, help="Seconds to record [default: until Ctrl-C/SIGTERM or the target exits].")] = None,
    buffer_pages: Annotated[int, typer.Option(metavar="PAGES", help="Ring buffer size in pages (a power of two).")] = 4096,
    max_conns: Annotated[int | None, typer.Option(metavar="N", show_default=False, help="Accepted connections the kernel remembers at once, to tie their wakeups to them (a power of two) [default: 65536].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file, or write one not named .parquet.")] = False,
    label: Annotated[str | None, typer.Option(help="Label for analysis, e.g. the mode [default: file name].")] = None,
    print_bpf: Annotated[bool, typer.Option("--print-bpf", help="Print the BPF program and its flags, then exit.")] = False,
    let_perf_see: Annotated[bool, typer.Option("--let-perf-see", help="Let a perf record of the same tracepoints, running beside herdtrace, see them (costs ~3% of throughput at saturation).")] = False,
    backend: Annotated[str, typer.Option(metavar="NAME", show_default=False, help="bcc (Linux eBPF) or dtrace (FreeBSD, macOS, illumos) [default: bcc on Linux, else dtrace].")] = BACKEND_DEFAULT,
    cause_basis: Annotated[str, typer.Option(help="How listener wakeups are recognised: auto (sock:sk_data_ready where the kernel has it, Linux 6.3+; else the connection-state rule) or conn-state (force the rule every kernel since 4.16 supports).")] = "auto",
    ablate: Annotated[str | None, typer.Option(hidden=True, help="bench-perf only: empty, filter, state or empty-counting (records nothing).")] = None,
    cross_check_causes: Annotated[bool, typer.Option("--cross-check-causes", help="Run the connection-state rule beside sk_data_ready and keep its verdict per wakeup (column conn_state_listener in analysis), to compare the two.")] = False,
    no_connections: Annotated[bool, typer.Option("--no-connections", help="Do not follow accepted connections (no sock:inet_sock_set_state probe, the costliest per request): listener wakeups, herd factor, EAGAINs and absorbed wakeups as usual; no connection records, no accept latency, no peer. Needs sk_data_ready (Linux 6.3+).")] = False,
) -> None:
    """Record every wakeup of the target's threads, with its cause and outcome.

    Examples:

      herdtrace record -p 1234 -o nginx.parquet -d 30

      herdtrace record -P 80 -o web.parquet -d 30

      herdtrace record -o lab.parquet -- herdtrace lab serve --mode epoll-shared
    """
    from herdtrace.collectors.backends import collector
    from herdtrace.collectors.session import RecordOptions
    from herdtrace.probes import program

    out = output or default_output()
    check_suffix(out, (".parquet",), force, "a recording")
    if no_connections and max_conns is not None:
        raise HerdtraceError("--max-conns sizes the table of followed connections: "
                             "it has no effect with --no-connections")
    probe = program.ProbeOptions(ringbuf_pages=buffer_pages, let_perf_see=let_perf_see,
                                 cause_basis=cause_basis, cross_check_causes=cross_check_causes,
                                 ablate=ablate, connections=not no_connections)
    if max_conns is not None:
        probe = dataclasses.replace(probe, max_conns=max_conns)
    if print_bpf:
        typer.echo(program.source_text(program.plan(probe)))
        return
    pids = tuple(pid or ()) + listening_pids(port or [])
    opts = RecordOptions(
        output=out, pids=pids, command=tuple(command or ()),
        duration=duration, probe=probe, force=force, label=label,
    )
    say = functools.partial(print, file=sys.stderr, flush=True)
    collector(backend)(opts, stop_on_signals(), on_ready=say, on_done=print_summary)


def stop_on_signals() -> threading.Event:
    """Set by Ctrl-C or SIGTERM: the collector then finishes the file and stops."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def listening_pids(ports: list[int]) -> tuple[int, ...]:
    """The processes holding a listening socket on each port; an error for a port
    nothing listens on."""
    from herdtrace.collectors import listeners
    from herdtrace.validate import check_port

    pids: list[int] = []
    for port in ports:
        check_port(port)
        holders = listeners.holders_of_ports([port])
        if not holders:
            raise HerdtraceError(f"nothing listens on TCP port {port} (IPv4 or IPv6)")
        pids += holders
    return tuple(dict.fromkeys(pids))


def print_summary(summary: RecordSummary) -> None:
    typer.echo(summary.line(), err=True)
    if summary.lost_events:
        typer.echo(f"herdtrace: warning: {summary.lost_events} events lost (ring buffer full): "
                   "raise --buffer-pages", err=True)
    if summary.probe_misses:
        typer.echo(f"herdtrace: warning: {summary.probe_misses} probe misses (the kernel skipped "
                   "herdtrace's programs while another BPF program ran on the same CPU: "
                   "another tracer or a perf session)", err=True)
    if summary.wakings_unseen:
        typer.echo(f"herdtrace: note: {summary.wakings_unseen} wakeups were found at their "
                   "switch-in, the kernel having run no probe for their waking: their waker, "
                   "cause and wake latency are unknown (column waking_unseen)", err=True)
    if summary.conns_evicted:
        typer.echo(f"herdtrace: warning: {summary.conns_evicted} connections forgotten to make room "
                   "for newer ones (the connection table was full): their later wakeups say "
                   "cause socket, not connection; raise --max-conns", err=True)


def import_dtrace_command(
    transcript: Annotated[Path, typer.Argument(help="kevent.d output saved to a file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Recording to write.")],
    stderr: Annotated[Path | None, typer.Option(help="dtrace's stderr saved to a file (drops become lost events).")] = None,
    label: Annotated[str | None, typer.Option(help="Label for analysis [default: file name].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
) -> None:
    """Turn a saved kevent.d transcript (from a BSD machine) into a recording."""
    from herdtrace.collectors.dtrace_collector import convert_transcript
    from herdtrace.collectors.session import RecordOptions

    for path in (transcript, stderr):
        if path is not None and not path.is_file():
            raise HerdtraceError(f"{path}: no such file")
    with transcript.open(errors="replace") as out_lines:
        err_lines = stderr.read_text(errors="replace").splitlines() if stderr else []
        summary = convert_transcript(out_lines, err_lines,
                                     RecordOptions(output=output, label=label, force=force))
    print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("record", short_help="Record every wakeup of a running server, or of a command.",
                epilog="Example:\n\n\b\n  herdtrace record -P 8080 -o before.parquet -d 30")(record_command)


def register_import(app: typer.Typer) -> None:
    app.command("import-dtrace", short_help="A BSD kevent.d transcript into a recording.",
                epilog="Example:\n\n\b\n  herdtrace import-dtrace trace.txt -o bsd.parquet")(import_dtrace_command)
