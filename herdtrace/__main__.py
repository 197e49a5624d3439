"""`python -m herdtrace` and the `herdtrace` command."""

import os
import signal
from types import FrameType


def _quit(signum: int, frame: FrameType | None) -> None:
    # Nothing has started yet, so nothing needs cleaning up; and unlike SystemExit,
    # which a library's `except BaseException` around an import can swallow (the
    # signal then spent, `lab serve` would wait for another), _exit cannot be caught.
    os._exit(128 + signum)


def run() -> None:
    # Ctrl-C while the command's modules load (typer, numpy, pandas: a few tenths
    # of a second) and its command line is built ends quietly, as it does once a
    # command runs (click catches it from there). Started with SIGINT ignored (in
    # the background), it stays ignored.
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _quit)
    from herdtrace.cli import command

    cli = command()
    signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
    cli()


if __name__ == "__main__":
    run()
