"""What to trace: existing processes (with their threads and children) or a new command."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass

from herdtrace.errors import HerdtraceError
from herdtrace.procfs import PROC, is_alive, parent_map
from herdtrace.procfs import read_text as _read


@dataclass(frozen=True)
class ThreadInfo:
    tid: int
    tgid: int
    parent: int  # parent process for a main thread, the process for others
    comm: str
    syscall: tuple[int, ...] = ()  # number and arguments of the syscall it is blocked in


def read_syscall(tgid: int, tid: int) -> tuple[int, ...]:
    """/proc/TID/syscall: "nr arg0..arg5 sp pc" while blocked in a syscall, else ()."""
    text = _read(PROC / str(tgid) / "task" / str(tid) / "syscall") or ""
    parts = text.split()
    if len(parts) < 7 or parts[0] == "running" or parts[0].startswith("-"):
        return ()
    return (int(parts[0]), *(int(a, 16) for a in parts[1:7]))


def require_alive(pids: tuple[int, ...]) -> None:
    for pid in pids:
        if not is_alive(pid):
            raise HerdtraceError(f"no such process: {pid}")


def require_command(name: str) -> None:
    if shutil.which(name) is None:
        raise HerdtraceError(f"cannot start {name!r}: command not found")


def threads_of(pids: list[int]) -> list[ThreadInfo]:
    parents = parent_map()
    out = []
    for pid in pids:
        try:
            tids = [int(t.name) for t in (PROC / str(pid) / "task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            comm = (_read(PROC / str(pid) / "task" / str(tid) / "comm") or "").strip()
            parent = parents.get(pid, 0) if tid == pid else pid
            out.append(ThreadInfo(tid=tid, tgid=pid, parent=parent, comm=comm,
                                  syscall=read_syscall(pid, tid)))
    return out


class GatedCommand:
    """A command forked now and held before exec until `release()`.

    Its pid can be traced before its first instruction runs.
    """

    def __init__(self, argv: tuple[str, ...]) -> None:
        if not argv:
            raise HerdtraceError("no command given after --")
        require_command(argv[0])
        gate_r, self._gate_w = os.pipe()
        self._err_r, err_w = os.pipe()
        os.set_inheritable(err_w, False)
        pid = os.fork()
        if pid == 0:  # child: wait for the tracer, then become the command
            os.close(self._gate_w)
            os.close(self._err_r)
            try:
                os.read(gate_r, 1)
                os.close(gate_r)
                os.execvp(argv[0], list(argv))
            except OSError as exc:
                os.write(err_w, (exc.strerror or str(exc)).encode())
            finally:
                os._exit(127)
        os.close(gate_r)
        os.close(err_w)
        self.pid = pid
        self.argv = argv
        self.returncode: int | None = None

    def release(self) -> None:
        os.write(self._gate_w, b"g")
        os.close(self._gate_w)
        err = os.read(self._err_r, 4096)
        os.close(self._err_r)
        if err:
            self.wait()
            raise HerdtraceError(f"cannot start {self.argv[0]!r}: {err.decode()}")

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
