"""The kernel's table of traced threads, from user space.

Threads live in slots of an array (`traced`); `is_traced`, indexed by tid, holds
1 + a thread's slot (0: untraced); free slots wait in the `free_slots` queue,
which the kernel pops at a traced thread's fork and pushes at its exit. User space
fills the queue once, and takes its slots from it too, so the two never hand out
the same slot. The slots array is mapped, so finding the used ones (every 0.1 s
while a daemonized server is followed) reads memory, not 65535 map lookups.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np

from herdtrace.collectors.maps import map_array
from herdtrace.errors import HerdtraceError


class ThreadTable:
    def __init__(self, bpf: Any, max_threads: int) -> None:
        self.threads = bpf[b"traced"]
        self.slots = bpf[b"is_traced"]
        self.free = bpf[b"free_slots"]
        self.max_threads = max_threads
        self.size = ctypes.sizeof(self.threads.Leaf)
        self._map = map_array(self.threads, max_threads * self.size)
        self._tids = np.ndarray((max_threads,), dtype=np.uint32, buffer=self._map,
                                offset=self.threads.Leaf.tid.offset, strides=(self.size,))

    def fill(self) -> None:
        """Every slot free: once, before any thread is traced."""
        for slot in range(self.max_threads):
            self.free.push(self.free.Leaf(slot))

    def add(self, tid: int, leaf: Any) -> bool:
        """Trace `tid` from `leaf`; False if the kernel already follows it (it was
        forked by a traced thread: its own state is newer than what /proc said)."""
        if self.slots[self.slots.Key(tid)].value:
            return False
        try:
            slot = self.free.pop().value
        except KeyError:
            raise HerdtraceError(f"more than {self.max_threads} threads to trace") from None
        leaf.tid = tid
        self.threads[self.threads.Key(slot)] = leaf
        self.slots[self.slots.Key(tid)] = self.slots.Leaf(slot + 1)
        return True

    def leaf(self) -> Any:
        return self.threads.Leaf()

    def state(self, tid: int) -> Any | None:
        """A copy of `tid`'s state in the kernel, None if it is not traced."""
        slot = self.slots[self.slots.Key(tid)].value
        if not slot:
            return None
        leaf = self.threads.Leaf.from_buffer_copy(self._map, (slot - 1) * self.size)
        return leaf if leaf.tid == tid else None

    def update(self, tid: int, leaf: Any) -> None:
        """Write back a state read with `state` (a waking armed meanwhile is lost)."""
        slot = self.slots[self.slots.Key(tid)].value
        if slot:
            self.threads[self.threads.Key(slot - 1)] = leaf

    def entries(self) -> Iterator[tuple[int, Any]]:
        """(tid, a copy of its state) of every traced thread."""
        for slot in np.flatnonzero(self._tids):
            leaf = self.threads.Leaf.from_buffer_copy(self._map, int(slot) * self.size)
            if leaf.tid:  # it may have exited since
                yield leaf.tid, leaf

    def event_size(self) -> int:
        return ctypes.sizeof(self.threads.Leaf().wakeup)

    def close(self) -> None:
        del self._tids
        self._map.close()
