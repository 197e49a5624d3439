"""The one error type herdtrace raises for bad input or a missing capability.

The CLI catches it once, prints its message as one line and exits non-zero.
"""


class HerdtraceError(Exception):
    """A problem the user can fix; the message says what and how."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
