"""Drain a BPF ring buffer in batches, straight into a numpy array.

bcc's ring buffer API calls a Python function per record, which tops out near
half a million records a second on a core the traced server also needs. Every
herdtrace record has the same size, so records sit in the ring at a fixed
stride: map the ring, view everything between the consumer and producer
positions as one structured array, copy it, advance the consumer. No Python per
record.

Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (user-writable), page 1
producer_pos, then the data pages mapped twice so a record that wraps reads as
contiguous memory. Each record starts with an 8-byte header: u32 length with
BUSY (bit 31, still being written) and DISCARD (bit 30) flags, then u32 page
offset; records are 8-byte aligned.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

from herdtrace.errors import HerdtraceError
from herdtrace.probes.program import power_of_two

HEADER = 8
BUSY = 1 << 31
DISCARD = 1 << 30
LEN_MASK = DISCARD - 1


class RingReader:
    def __init__(self, map_fd: int, data_size: int, dtype: np.dtype) -> None:
        if not power_of_two(data_size):
            raise HerdtraceError(f"ring buffer size {data_size} is not a power of two")
        page = mmap.PAGESIZE
        self.dtype = dtype
        self.size = data_size
        self.mask = data_size - 1
        self.stride = (dtype.itemsize + HEADER + 7) & ~7
        self.data_offset = page  # in the producer mapping: producer page, then data
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        # One aligned 8-byte load/store each, as the kernel expects.
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        self._prod_buf = np.frombuffer(self._prod_map, dtype=np.uint8)
        self._prod = self._prod_buf[:8].view(np.uint64)

    def read(self) -> np.ndarray:
        """Every committed record, in order; empty when there is none."""
        cons = int(self._cons.value)
        avail = int(self._prod[0]) - cons
        n = avail // self.stride
        if n == 0:
            return np.zeros(0, dtype=self.dtype)
        start = self.data_offset + (cons & self.mask)
        lens = np.ndarray((n,), dtype="<u4", buffer=self._prod_buf, offset=start,
                          strides=(self.stride,))
        busy = np.flatnonzero(lens & BUSY)
        if len(busy):
            n = int(busy[0])  # stop before the first record still being written
            lens = lens[:n]
        if np.any((lens & LEN_MASK) != self.dtype.itemsize):
            raise HerdtraceError("ring buffer holds a record of unexpected size")
        records = np.ndarray((n,), dtype=self.dtype, buffer=self._prod_buf,
                             offset=start + HEADER, strides=(self.stride,)).copy()
        self._cons.value = cons + n * self.stride
        keep = (lens & DISCARD) == 0
        return records if keep.all() else records[keep]

    def close(self) -> None:
        del self._prod, self._prod_buf, self._cons
        self._prod_map.close()
        self._cons_map.close()
