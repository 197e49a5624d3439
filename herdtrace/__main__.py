"""`python -m herdtrace` and the `herdtrace` command."""

import signal
import sys
from types import FrameType


def _quit(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def run() -> None:
    # Ctrl-C while the command's modules load (typer, numpy, pandas: a few tenths
    # of a second) ends quietly, as it does once a command runs. Started with
    # SIGINT ignored (in the background), it stays ignored.
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _quit)
    from herdtrace.cli import main

    signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
    main()


if __name__ == "__main__":
    run()
