"""The `herdtrace` command: thin Typer commands, one module each, over plain functions."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from herdtrace.errors import HerdtraceError


class _Group(TyperGroup):
    """Catches HerdtraceError once, for every command: one line, non-zero exit."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except HerdtraceError as exc:
            typer.echo(f"herdtrace: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Record, attribute and report thundering-herd wakeups in servers.",
)


def _register() -> None:
    from herdtrace.cli import analyze, bench, doctor, lab, record, report

    for module in (doctor, record, analyze, report, bench):
        module.register(app)
    lab.register(app, _Group)


_register()


def main() -> None:
    app()
