"""Reading a child process's output as it comes, with a deadline."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import IO, AnyStr


def lines_within(stream: IO[AnyStr], timeout: float, poll_s: float = 0.1) -> Iterator[AnyStr]:
    """Lines from a pipe as they come, until it ends (the child exited) or `timeout`
    seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([stream], [], [], poll_s)[0]:
            line = stream.readline()
            if not line:
                return
            yield line
