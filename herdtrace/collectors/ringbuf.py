"""Drain a BPF ring buffer in batches, as numpy views of the ring itself.

bcc's ring buffer API calls a Python function per record, which tops out near
half a million records a second on a core the traced server also needs. Every
herdtrace record has the same size, so records sit in the ring at a fixed
stride: map the ring and view everything between the consumer and producer
positions as one structured array. No Python per record, and no copy: the
recorder counts from that view, writes the ring's bytes (headers included) to
its spool as they are, and only then releases them to the kernel.

Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (user-writable), page 1
producer_pos, then the data pages mapped twice so a record that wraps reads as
contiguous memory. Each record starts with an 8-byte header: u32 length with
BUSY (bit 31, still being written) and DISCARD (bit 30) flags, then u32 page
offset; records are 8-byte aligned.
"""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass

import numpy as np

from herdtrace.errors import HerdtraceError
from herdtrace.probes.program import power_of_two

HEADER = 8
BUSY = 1 << 31
DISCARD = 1 << 30
LEN_MASK = DISCARD - 1


def frame_size(record_size: int) -> int:
    """A record's stride in the ring: header, record, padding to 8 bytes."""
    return (record_size + HEADER + 7) & ~7


@dataclass
class Frames:
    """Committed records, still in the ring until released (or a copy of them).

    `raw` is their frames as the ring holds them, each a header then the record;
    `records` views the records themselves, strided."""

    raw: memoryview
    records: np.ndarray
    consumed: int  # ring bytes these frames take; what release() gives back


def frames_of(records: np.ndarray) -> Frames:
    """Records made in user space (thread rows, closing wakeups), framed as the
    ring would: what the spool holds is one format, whoever wrote it."""
    size = records.dtype.itemsize
    frame = frame_size(size)
    buf = np.zeros((len(records), frame), dtype=np.uint8)
    buf[:, :4].view("<u4")[:, 0] = size
    buf[:, HEADER:HEADER + size] = np.ascontiguousarray(records).view(np.uint8).reshape(-1, size)
    view = np.ndarray((len(records),), dtype=records.dtype, buffer=buf, offset=HEADER,
                      strides=(frame,))
    return Frames(raw=buf.reshape(-1).data, records=view, consumed=0)


def records_of(raw: bytes | memoryview, dtype: np.dtype) -> np.ndarray:
    """Frames -> a contiguous array of their records, the discarded left out."""
    frame = frame_size(dtype.itemsize)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, frame)
    keep = (rows[:, :4].copy().view("<u4")[:, 0] & DISCARD) == 0
    body = rows[:, HEADER:HEADER + dtype.itemsize]
    return np.ascontiguousarray(body if keep.all() else body[keep]).view(dtype).reshape(-1)


class RingReader:
    def __init__(self, map_fd: int, data_size: int, dtype: np.dtype) -> None:
        if not power_of_two(data_size):
            raise HerdtraceError(f"ring buffer size {data_size} is not a power of two")
        page = mmap.PAGESIZE
        self.dtype = dtype
        self.size = data_size
        self.mask = data_size - 1
        self.stride = frame_size(dtype.itemsize)
        self.data_offset = page  # in the producer mapping: producer page, then data
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        # One aligned 8-byte load/store each, as the kernel expects.
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        self._prod_buf = np.frombuffer(self._prod_map, dtype=np.uint8)
        self._prod = self._prod_buf[:8].view(np.uint64)
        self._empty = Frames(raw=memoryview(b""), records=np.zeros(0, dtype), consumed=0)

    def read(self) -> Frames:
        """Every committed record, in order, left in the ring until release()."""
        cons = int(self._cons.value)
        n = (int(self._prod[0]) - cons) // self.stride
        if n == 0:
            # An idle recording reads an empty ring ~16 times a second, each time
            # with cold caches: building the views cost ~0.2 ms a time.
            return self._empty
        start = self.data_offset + (cons & self.mask)  # the data is mapped twice: no wrap
        lens = np.ndarray((n,), dtype="<u4", buffer=self._prod_buf, offset=start,
                          strides=(self.stride,))
        busy = np.flatnonzero(lens & BUSY)
        if len(busy):
            n = int(busy[0])  # stop before the first record still being written
            lens = lens[:n]
        if np.any((lens & LEN_MASK) != self.dtype.itemsize):
            raise HerdtraceError("ring buffer holds a record of unexpected size")
        records = np.ndarray((n,), dtype=self.dtype, buffer=self._prod_buf,
                             offset=start + HEADER, strides=(self.stride,))
        raw = self._prod_buf[start:start + n * self.stride].data
        if np.any(lens & DISCARD):  # the probes never discard; if one did, leave it out
            kept = frames_of(records[(lens & DISCARD) == 0])
            return Frames(raw=kept.raw, records=kept.records, consumed=n * self.stride)
        return Frames(raw=raw, records=records, consumed=n * self.stride)

    def release(self, frames: Frames) -> None:
        """Give the frames' space back to the kernel (after they were written)."""
        self._cons.value = int(self._cons.value) + frames.consumed

    def close(self) -> None:
        del self._prod, self._prod_buf, self._cons
        self._prod_map.close()
        self._cons_map.close()
