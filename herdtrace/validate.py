"""Checks of user input shared by every layer: one clear HerdtraceError each."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from herdtrace.errors import HerdtraceError


def check_suffix(path: Path, allowed: tuple[str, ...], force: bool, what: str) -> None:
    """Refuse an output name whose extension says another format (unless forced)."""
    if path.suffix.lower() not in allowed and not force:
        raise HerdtraceError(f"{path}: {what} is written as {' or '.join(allowed)}; "
                             "name it so, or use --force")


def check_positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise HerdtraceError(f"{name} must be a positive number of seconds, got {value}")


def check_port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise HerdtraceError(f"--port must be 0-65535, got {value}")


def check_output(path: Path, force: bool) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise HerdtraceError(f"{path} is a directory; name a file")
        if path.exists() and not force:
            raise HerdtraceError(f"{path} exists; use --force to overwrite")
        if not parent.is_dir():
            raise HerdtraceError(f"no such directory: {parent}")
    except PermissionError:
        raise HerdtraceError(f"cannot write to {parent}: permission denied") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HerdtraceError(f"cannot write to {parent}: permission denied")
    try:  # root passes access(); some filesystems (/proc) refuse a new file all the same
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise HerdtraceError(f"cannot write to {parent}: {(exc.strerror or str(exc)).lower()}") from None
