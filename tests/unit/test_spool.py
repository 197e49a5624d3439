"""The spool's writer process: ready before recording starts, deferring under load."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.tracers import cpu_seconds
from herdtrace.collectors import spool
from herdtrace.collectors.ringbuf import DISCARD, frames_of, records_of
from herdtrace.metadata import RecordingMeta
from herdtrace.schema import EVENT_DTYPE, Kind


def test_writer_has_paid_its_start_up_when_ready(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    s = spool.SpoolFile(out)
    s.wait_ready()
    at_ready = cpu_seconds(s.writer.pid)
    rows = np.zeros(3, dtype=EVENT_DTYPE)
    rows["kind"] = Kind.THREAD
    rows["comm"] = b"t"
    s.append(frames_of(rows).raw)
    time.sleep(1.0)
    # pyarrow's imports and its first row group's one-time set-up (~0.3 s of CPU
    # here) came before "ready"; what is left is polling.
    assert cpu_seconds(s.writer.pid) - at_ready < 0.1
    s.finish(RecordingMeta(stop_reason="test").to_json())
    assert pq.read_table(out).num_rows == 3


def test_idle_meter_defers_until_it_has_measured() -> None:
    meter = spool.IdleMeter()
    assert meter.spare() is False  # the first look starts a period: nothing measured yet
    assert meter.spare() is False  # nor within that period, however idle the machine
    assert meter.last[1] > 0  # the period started from /proc/stat's counts


def test_backlog_limit_is_a_quarter_of_the_free_space_within_bounds(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    quarter = st.f_bavail * st.f_frsize // 4
    expected = max(spool.BACKLOG_MIN, min(spool.BACKLOG_MAX, quarter))
    assert spool.backlog_limit(tmp_path) == expected
    assert spool.backlog_limit(tmp_path / "missing") == spool.BACKLOG_MIN


def test_frames_round_trip_and_discarded_records_are_left_out() -> None:
    rows = np.zeros(4, dtype=EVENT_DTYPE)
    rows["kind"] = Kind.WAKEUP
    rows["tid"] = [10, 11, 12, 13]
    frames = frames_of(rows)
    assert len(frames.raw) == 4 * spool.FRAME
    np.testing.assert_array_equal(frames.records, rows)
    np.testing.assert_array_equal(records_of(frames.raw, EVENT_DTYPE), rows)
    raw = np.frombuffer(frames.raw, dtype=np.uint8).reshape(4, spool.FRAME).copy()
    raw[1, :4].view("<u4")[0] |= DISCARD  # as the kernel marks a discarded record
    np.testing.assert_array_equal(records_of(raw.reshape(-1).data, EVENT_DTYPE), rows[[0, 2, 3]])
