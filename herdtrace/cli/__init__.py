"""The `herdtrace` command: thin Typer commands, one module each, over plain functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from herdtrace import __version__
from herdtrace.errors import HerdtraceError

# `herdtrace --help` lists the commands in the order a user meets them: is this machine
# ready, which server has a herd, record it, read it, draw it; then the lab, the
# seed's bench, fleet tables, and BSD transcripts.
ORDER = ("doctor", "top", "record", "analyze", "report", "lab", "bench", "summarize",
         "exporter", "import-dtrace")


class _Group(TyperGroup):
    """Catches HerdtraceError once, for every command: one line, non-zero exit. An
    operating-system error nobody foresaw (a full disk, a file that cannot be
    created) is still the user's to fix: one line too, never a traceback."""

    def list_commands(self, ctx):  # type: ignore[no-untyped-def]
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except HerdtraceError as exc:
            typer.echo(f"herdtrace: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"herdtrace: error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"herdtrace {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, as other command-line tools print it
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
    help="Record, attribute and report thundering-herd wakeups in servers.",
)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Record, attribute and report thundering-herd wakeups in servers."""


def _register() -> None:
    from herdtrace.cli import analyze, bench, doctor, exporter, lab, record, report, summarize, top

    for module in (doctor, top, record, analyze, report, bench, summarize, exporter):
        module.register(app)
    record.register_import(app)
    lab.register(app, _Group)


_register()


def command() -> Callable[[], Any]:
    """The command line as click runs it. Typer builds it by inspecting every
    command's signature (tens of ms): `herdtrace` builds it before it lets Ctrl-C
    raise, so that one arriving meanwhile ends it as quietly as during the imports."""
    return typer.main.get_command(app)

