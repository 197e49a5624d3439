"""What /proc says about processes: a floor below collectors, workloads and servers,
so that each reads /proc without reaching into another's modules."""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, None when there is no such process."""
    stat = read_text(PROC / str(pid) / "stat")
    if stat is None:
        return None
    return stat[stat.rindex(")") + 2]


def is_alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def parent_map() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_text(entry / "stat")
        if stat is None:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(roots: tuple[int, ...]) -> list[int]:
    """The roots and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> list[str]:
    raw = b""
    with contextlib.suppress(OSError):
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def run_ns(pids: list[int]) -> int:
    """Time the live threads of `pids` have spent on a CPU, in ns (schedstat's first
    field: exact, where utime+stime count 10 ms ticks). A thread or process that
    is gone meanwhile counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in (PROC / str(pid) / "task").iterdir():
                text = read_text(task / "schedstat")
                if text:
                    total += int(text.split()[0])
    return total
