"""Per-program counters the kernel keeps for every loaded BPF program (bpf_prog_info).

`recursion_misses` counts the times the kernel skipped a program because another
BPF program was already running on that CPU (another tracer, a perf session): each
is an event herdtrace never saw. `run_cnt` and `run_time_ns` are kept only while
the sysctl kernel.bpf_stats_enabled is 1.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

from herdtrace.probes.features import bpf, hidden

_BPF_OBJ_GET_INFO_BY_FD = 15


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (include/uapi/linux/bpf.h) up to recursion_misses (5.12+)."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


@dataclass(frozen=True)
class ProgStats:
    run_cnt: int
    run_time_ns: int
    recursion_misses: int | None  # None: the kernel does not report it (< 5.12)


def prog_stats(fd: int) -> ProgStats:
    info = _ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    done = bpf(_BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr))
    if done is None:
        raise OSError(f"bpf(2) syscall number unknown on {platform.machine()}")
    ret, err = done
    if ret != 0:
        raise OSError(err, os.strerror(err))
    have_misses = (attr.info_len >= _ProgInfo.recursion_misses.offset + 8
                   and not hidden("recursion_misses"))
    return ProgStats(int(info.run_cnt), int(info.run_time_ns),
                     int(info.recursion_misses) if have_misses else None)


def probe_name(func_name: str) -> str:
    """bcc's `tracepoint__sched__sched_waking` -> `sched:sched_waking`."""
    parts = func_name.split("__")
    return f"{parts[1]}:{parts[2]}" if len(parts) == 3 and parts[0] == "tracepoint" else func_name


def all_stats(funcs: dict[bytes | str, int]) -> dict[str, ProgStats]:
    """Stats of each program (bcc function name -> fd), keyed by probe name."""
    return {probe_name(name.decode() if isinstance(name, bytes) else name): prog_stats(fd)
            for name, fd in funcs.items()}


_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


def enable_run_time_stats() -> int | None:
    """Have the kernel count every BPF program's runs and run time while the returned
    fd stays open (BPF_ENABLE_STATS, Linux 5.8+), without touching the sysctl that
    others may own. None where the kernel refuses."""
    attr = ctypes.c_uint32(_BPF_STATS_RUN_TIME)
    done = bpf(_BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return done[0] if done is not None and done[0] >= 0 else None
