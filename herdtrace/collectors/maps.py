"""BPF array maps created with BPF_F_MMAPABLE, read (and written) from user space
as memory rather than a syscall per entry."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

PORTS = 1 << 16  # listen_ports in herd.bpf.c: one entry per TCP port


def map_array(table: Any, nbytes: int, writable: bool = False) -> mmap.mmap:
    length = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(table.map_fd, length, mmap.MAP_SHARED, prot)


class PortTable:
    """The traced listeners' ports (`listen_ports`): user space adds those it finds,
    the kernel those a traced thread puts into LISTEN."""

    def __init__(self, bpf: Any) -> None:
        self._map = map_array(bpf[b"listen_ports"], PORTS * 8, writable=True)
        self._flags = np.ndarray((PORTS,), dtype=np.uint64, buffer=self._map)

    def add(self, ports: set[int]) -> None:
        self._flags[sorted(ports)] = 1

    def ports(self) -> set[int]:
        return set(np.flatnonzero(self._flags).tolist())

    def close(self) -> None:
        del self._flags
        self._map.close()
