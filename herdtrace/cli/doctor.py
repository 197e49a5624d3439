"""`herdtrace doctor`: one line per check, with the fix; non-zero when recording cannot work."""

from __future__ import annotations

import json
from typing import Annotated

import typer

MARK = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check that this machine can record: privileges, BPF, tracefs, tracepoints, headers, bcc."""
    import os

    from herdtrace import doctor
    from herdtrace.errors import HerdtraceError

    if os.geteuid() != 0:
        # Unprivileged, tracefs and the BPF checks fail for want of root, not of a
        # kernel feature: saying so beats a screen of false "missing" lines.
        raise HerdtraceError("doctor must run as root (it probes BPF and tracefs): "
                             "sudo .venv/bin/herdtrace doctor", exit_code=1)
    results = doctor.run_checks()
    if as_json:
        typer.echo(json.dumps(doctor.as_json(results), indent=2))
    else:
        from herdtrace.reports.table import console as wide_console

        console = wide_console()
        for r in results:
            fix = f" -> fix: {r.fix}" if r.status != doctor.OK and r.fix else ""
            console.print(f"{MARK[r.status]} {r.name}: {r.detail}{fix}")
        verdict = "recording can work" if doctor.can_record(results) else "recording cannot work"
        console.print(f"herdtrace doctor: {verdict}")
    if not doctor.can_record(results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor", short_help="Can recording work on this machine? One line per check.",
                epilog="Example:\n\n\b\n  herdtrace doctor")(doctor_command)
