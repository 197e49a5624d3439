"""A recording split by listener: each part is summarized as analyze would."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from herdtrace.analysis import load
from herdtrace.analysis.per_listener import by_listener, part_of
from herdtrace.schema import Cause, Outcome, WaitCall
from tests.unit.builder import Builder

A, E, AB = Outcome.ACCEPTED, Outcome.EAGAIN, Outcome.ABSORBED


@dataclass(frozen=True)
class FakeListener:  # the fields /proc gives; analysis needs no /proc
    addr: str
    port: int
    holders: tuple[tuple[int, int], ...]
    comm: str
    mode: str | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({p for p, _ in self.holders}))


HERD = FakeListener("127.0.0.1", 8080, ((11, 3), (12, 3)), "srv")
CALM = FakeListener("::", 9090, ((21, 4),), "calm", mode="reuseport")


def two_servers() -> Builder:
    """8080: each connection wakes both workers 11 and 12 (select); 9090: one worker,
    woken once per connection, which also wakes on a timer."""
    b = Builder().thread(11, 11, 1, "srv").thread(12, 12, 1, "srv").thread(21, 21, 1, "calm")
    for c in range(2):
        t = 1000 * (c + 1)
        b.conn(t, c + 1, rport=40000 + c)
        b.wakeup(t + 10, 11, A, oncpu=t + 20, conn_id=c + 1, accepts=1, tgid=11, call=WaitCall.SELECT)
        b.wakeup(t + 11, 12, E, oncpu=t + 30, conn_id=c + 1, eagains=1, tgid=12, call=WaitCall.SELECT)
        b.accept(t + 40, 11, 5, rport=40000 + c, tgid=11).accept(t + 50, 12, -11, tgid=12)
        b.conn(t + 500, c + 11, rport=41000 + c, lport=9090)
        b.wakeup(t + 510, 21, A, oncpu=t + 520, conn_id=c + 11, accepts=1, tgid=21, lport=9090)
        b.accept(t + 530, 21, 6, rport=41000 + c, tgid=21, fd=4)
    b.wakeup(5000, 21, Outcome.OTHER, tgid=21, cause=Cause.OTHER, ret=0)
    return b


def test_each_listener_gets_its_own_wakeups_accepts_and_connections(tmp_path: Path) -> None:
    rec = load.load_recording(two_servers().write(tmp_path / "two.parquet"))
    herd, calm = part_of(rec, HERD), part_of(rec, CALM)
    assert (len(herd.wakeups), len(herd.accepts), len(herd.connections)) == (4, 4, 2)
    assert (len(calm.wakeups), len(calm.accepts), len(calm.connections)) == (3, 2, 2)
    rows = by_listener(rec, [CALM, HERD], interval_s=2.0)
    assert [r["port"] for r in rows] == [8080, 9090]  # the herd's waste first
    first, second = rows
    assert first["herd_factor"] == 2.0 and first["eagain"] == 2 and first["mode"] == "select"
    assert first["threads_woken_per_connection"] == 2.0 and first["idle_fraction"] == 0.5
    assert first["connections_per_s"] == 1.0 and first["workers"] == 2
    assert second["herd_factor"] == 1.0 and second["mode"] == "reuseport"
    assert second["listener_wakeups"] == 2  # the timer wakeup is not the listener's
