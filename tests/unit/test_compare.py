"""Before and after: the herd's CPU priced from cpu_ns, and a change told from noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdtrace.analysis import compare, load, metrics
from herdtrace.schema import Outcome
from tests.unit.builder import Builder

A, E, AB = Outcome.ACCEPTED, Outcome.EAGAIN, Outcome.ABSORBED


def served(woken: int, accept_cpu: int, connections: int = 40, jitter: int = 0) -> Builder:
    """Each connection wakes `woken` workers: one accepts (accept_cpu ns), one gets
    EAGAIN (10 µs), the rest are absorbed (2 µs)."""
    b = Builder().thread(10, 10, 1, "srv")
    for w in range(woken):
        b.thread(11 + w, 11 + w, 10, "srv")
    for c in range(connections):
        t0 = 100_000 * (c + 1)
        b.conn(t0, c + 1, rport=40000 + c)
        for w in range(woken):
            outcome = A if w == 0 else E if w == 1 else AB
            cpu = accept_cpu + (c % 3) * jitter if outcome == A else 10_000 if outcome == E else 2_000
            b.wakeup(t0 + 10 + w, 11 + w, outcome, oncpu=t0 + 50, conn_id=c + 1,
                     accepts=int(outcome == A), eagains=int(outcome == E), cpu_ns=cpu)
        b.accept(t0 + 100, 11, 5, rport=40000 + c)
        if woken > 1:
            b.accept(t0 + 120, 12, -11)
    return b


def loaded(b: Builder, path: Path, **meta: object) -> load.Recording:
    return load.load_recording(b.write(path, cpu_time="sched_switch", **meta))


def test_wasted_cpu_is_the_idle_wakeups_time_per_connection(tmp_path: Path) -> None:
    s = metrics.summarize(loaded(served(4, 30_000), tmp_path / "herd.parquet"))
    # per connection: one EAGAIN (10 µs) and two absorbed (2 µs each)
    assert s.wasted_cpu_us_per_connection == pytest.approx(14.0)
    assert s.wasted_cpu_s == pytest.approx(40 * 14e-6)
    assert s.wasted_cores == pytest.approx(40 * 14e-6 / 2.0)  # the recording lasts 2 s
    assert s.cpu_us_per_connection == pytest.approx(44.0)


def test_an_old_recording_has_no_price(tmp_path: Path) -> None:
    s = metrics.summarize(load.load_recording(served(4, 30_000).write(tmp_path / "old.parquet")))
    assert s.wasted_cpu_us_per_connection is None and s.cpu_us_per_connection is None


def test_the_fix_that_removes_the_herd_is_told_apart_from_noise(tmp_path: Path) -> None:
    before = loaded(served(4, 30_000, jitter=3_000), tmp_path / "before.parquet")
    after = loaded(served(1, 30_000, jitter=3_000), tmp_path / "after.parquet")
    change = compare.compare(before, metrics.summarize(before), after, metrics.summarize(after))
    assert change.herd == "gone"
    by = {d.figure: d for d in change.deltas}
    assert by["wasted_cpu_us_per_connection"].change == pytest.approx(-14.0)
    assert by["wasted_cpu_us_per_connection"].reading == "lower"
    assert by["cpu_us_per_connection"].reading == "lower"
    assert change.wasted_cores_saved == pytest.approx(14.0 * 20 / 1e6)  # 40 connections in 2 s
    assert any(line.startswith("wasted CPU per connection: 14.00 -> 0.00 µs") for line in change.lines())


def test_a_change_within_the_spread_is_called_noise(tmp_path: Path) -> None:
    before = loaded(served(1, 30_000, jitter=30_000), tmp_path / "before.parquet")
    after = loaded(served(1, 31_000, jitter=30_000), tmp_path / "after.parquet")
    change = compare.compare(before, metrics.summarize(before), after, metrics.summarize(after))
    assert change.herd == "none before"
    cpu = next(d for d in change.deltas if d.figure == "cpu_us_per_connection")
    assert cpu.change == pytest.approx(1.0)
    assert cpu.reading == "inside the noise"


def test_analyze_with_a_baseline_says_what_changed(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from herdtrace.cli import app

    before = served(4, 30_000, jitter=3_000).write(tmp_path / "before.parquet", cpu_time="sched_switch")
    after = served(1, 30_000, jitter=3_000).write(tmp_path / "after.parquet", cpu_time="sched_switch")
    out = CliRunner().invoke(app, ["analyze", str(before), str(after), "--baseline", str(before)])
    assert out.exit_code == 0, out.output
    assert "vs baseline: herd gone" in out.output
    assert "saves 0.0003 cores of wasted CPU" in out.output
    data = CliRunner().invoke(app, ["analyze", str(after), "--baseline", str(before), "--json"])
    assert '"herd": "gone"' in data.output
