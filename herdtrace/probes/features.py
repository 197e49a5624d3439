"""What this kernel and machine offer the probes: found by looking, never assumed."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from herdtrace.schema import LINUX_WAIT_SYSCALLS

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

# Tracepoints the probes cannot work without.
REQUIRED_TRACEPOINTS: tuple[str, ...] = (
    "sched:sched_waking",
    "sched:sched_switch",
    "sched:sched_process_fork",
    "sched:sched_process_exit",
    "sock:inet_sock_set_state",
    *(
        f"syscalls:sys_{side}_{name}"
        for name, *_ in LINUX_WAIT_SYSCALLS
        if name != "epoll_pwait2"
        for side in ("enter", "exit")
    ),
)
# Enrichments, used when present (and said so in the recording's metadata).
OPTIONAL_TRACEPOINTS: tuple[str, ...] = (
    "sock:sk_data_ready",
    "syscalls:sys_enter_epoll_pwait2",
    "syscalls:sys_exit_epoll_pwait2",
)

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_libc = ctypes.CDLL(None, use_errno=True)
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_RINGBUF = 27


def bpf(cmd: int, attr: object, size: int) -> tuple[int, int] | None:
    """bpf(2) itself: its return value and errno, None where its number is unknown."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        return None
    ret = int(_libc.syscall(nr, cmd, attr, size))
    return ret, ctypes.get_errno() if ret < 0 else 0


def tracefs_root() -> Path | None:
    for root in TRACEFS_ROOTS:
        with contextlib.suppress(OSError):
            if (root / "events").is_dir():
                return root
    return None


def tracefs_problem() -> str:
    """Why no tracefs is usable: not mounted, or not readable by this user."""
    if any(os.path.ismount(r) for r in TRACEFS_ROOTS):
        return "tracefs is mounted but not readable: run as root"
    return "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing"


# Features a test may hide to act out an older kernel on this one
# (HERDTRACE_HIDE_FEATURES=sock:sk_data_ready,ringbuf,raw_sched,...): tracepoint names,
# and "ringbuf" (5.8), "raw_sched" (sched_switch's prev_state as a raw tracepoint,
# 5.18), "raw_net" (BTF offsets of struct sock), "recursion_misses" (5.12).
HIDE_ENV = "HERDTRACE_HIDE_FEATURES"


def hidden(feature: str) -> bool:
    return feature in {f.strip() for f in os.environ.get(HIDE_ENV, "").split(",") if f.strip()}


def tracepoint_exists(name: str, root: Path | None = None) -> bool:
    if hidden(name):
        return False
    root = root or tracefs_root()
    if root is None:
        return False
    category, event = name.split(":", 1)
    return (root / "events" / category / event / "format").is_file()


def missing_tracepoints(names: tuple[str, ...]) -> list[str]:
    root = tracefs_root()
    return [n for n in names if not tracepoint_exists(n, root)]


def effective_caps() -> int | None:
    """This process's effective capabilities, None where /proc cannot say."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    return int(m.group(1), 16) if m else None


def has_bpf_privilege() -> bool:
    """By capability, not by uid: root with its capabilities dropped (a container,
    setpriv) cannot load the program either. CAP_SYS_ADMIN stands for both on every
    kernel; CAP_BPF and CAP_PERFMON (5.8+) are the narrow pair."""
    caps = effective_caps()
    if caps is None:
        return os.geteuid() == 0
    pair = (1 << CAP_BPF) | (1 << CAP_PERFMON)
    return bool(caps & (1 << CAP_SYS_ADMIN)) or caps & pair == pair


@dataclass(frozen=True)
class PrivilegeProblem:
    """Why this process cannot load BPF, and the fix: doctor's row and record's error."""
    cause: str
    fix: str
    dropped: bool  # root, with its capabilities dropped

    def error(self) -> str:
        need = "recording needs root (or CAP_BPF and CAP_PERFMON)"
        return f"{need}, and this is {self.cause}: {self.fix}" if self.dropped else f"{need}: {self.fix}"


def privilege_problem() -> PrivilegeProblem | None:
    if has_bpf_privilege():
        return None
    if os.geteuid() == 0:
        return PrivilegeProblem("root with its capabilities dropped", "run with CAP_SYS_ADMIN, or "
                                "CAP_BPF and CAP_PERFMON (a container: --privileged)", dropped=True)
    return PrivilegeProblem("not root and no CAP_BPF + CAP_PERFMON", "run with sudo", dropped=False)


def bpf_syscall_errno() -> int:
    """Call bpf(BPF_MAP_CREATE) with an empty attribute: EINVAL means the syscall exists."""
    done = bpf(_BPF_MAP_CREATE, ctypes.create_string_buffer(128), 0)
    if done is None:
        return errno.ENOSYS
    fd, err = done
    if fd >= 0:
        os.close(fd)
    return err


@dataclass(frozen=True)
class Headers:
    path: Path
    release: str | None  # the release the headers were built for
    running: str

    @property
    def matches(self) -> bool:
        return self.release == self.running


def kernel_headers() -> Headers | None:
    running = platform.release()
    build = Path("/lib/modules") / running / "build"
    if not (build / "include").is_dir():
        return None
    release = None
    uts = build / "include" / "generated" / "utsrelease.h"
    if uts.is_file():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        release = m.group(1) if m else None
    return Headers(path=build.resolve(), release=release, running=running)


def pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 4194304  # the largest Linux allows


def ringbuf_available() -> bool:
    """Whether the kernel creates a BPF ring buffer map (Linux 5.8+, or a distribution
    kernel that carries it): asked of the kernel, not read off its release. Without
    the privilege to ask, assumed present (the privilege check speaks first)."""
    if hidden("ringbuf"):
        return False
    attr = (ctypes.c_uint32 * 32)(_BPF_MAP_TYPE_RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE"))
    done = bpf(_BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if done is None:
        return True
    fd, err = done
    if fd >= 0:
        os.close(fd)
        return True
    return err in (errno.EPERM, errno.EACCES)


def recursion_misses_reported() -> bool:
    if hidden("recursion_misses"):
        return False
    release = re.match(r"(\d+)\.(\d+)", platform.release())
    return release is None or (int(release[1]), int(release[2])) >= (5, 12)


def kprobes_available() -> bool:
    root = tracefs_root()
    return root is not None and (root / "kprobe_events").exists()


def btf_available() -> bool:
    return Path("/sys/kernel/btf/vmlinux").is_file()
