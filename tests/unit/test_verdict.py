"""The verdict's rules, one recording of each shape."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from herdtrace.analysis import load
from herdtrace.analysis.verdict import (
    ALREADY_EXCLUSIVE,
    EXCLUSIVE,
    ONE_EPOLL,
    REUSEPORT,
    SERVER_FIXES,
    Verdict,
    judge,
)
from herdtrace.cli import app
from herdtrace.schema import Flag, Kind, Outcome, WaitCall
from tests.unit.builder import Builder

A, E, AB = Outcome.ACCEPTED, Outcome.EAGAIN, Outcome.ABSORBED


def herd(comm: str, call: WaitCall, woken: int = 3, connections: int = 4) -> Builder:
    """Each connection wakes `woken` workers in `call`: one accepts, one gets EAGAIN,
    the rest go back to sleep."""
    b = Builder().thread(10, 10, 1, comm)
    for w in range(woken):
        b.thread(11 + w, 11 + w, 10, comm)
    for c in range(connections):
        t0 = 1000 * (c + 1)
        b.conn(t0, c + 1, rport=40000 + c)
        for w in range(woken):
            outcome = A if w == 0 else E if w == 1 else AB
            b.wakeup(t0 + 10 + w, 11 + w, outcome, oncpu=t0 + 50, conn_id=c + 1, call=call,
                     accepts=int(outcome == A), eagains=int(outcome == E))
        b.accept(t0 + 100, 11, 5, rport=40000 + c).accept(t0 + 120, 12, -11)
    return b


def verdict_of(b: Builder, tmp: Path, **meta: object) -> Verdict:
    return judge(load.load_recording(b.write(tmp / "r.parquet", **meta)))


def test_epoll_herd_in_nginx_names_nginx_and_epoll_fixes(tmp_path: Path) -> None:
    v = verdict_of(herd("nginx", WaitCall.EPOLL_WAIT), tmp_path)
    assert v.level == "herd"
    assert v.text == ("herd: 3.0 threads woken per connection, 67% of them for nothing, "
                      "1.0 EAGAIN per accept (the workers wait in epoll)")
    assert v.fixes == (*SERVER_FIXES["nginx"], EXCLUSIVE, REUSEPORT)


def test_select_herd_points_away_from_select(tmp_path: Path) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.SELECT), tmp_path)
    assert v.level == "herd"
    assert "select() and poll() wake every waiter" in v.fixes[0]
    assert v.fixes[1] == REUSEPORT


def test_wake_one_has_no_herd_and_no_fix(tmp_path: Path) -> None:
    v = verdict_of(herd("nginx", WaitCall.EPOLL_WAIT, woken=1), tmp_path)
    assert v.level == "no-herd" and v.fixes == ()
    assert v.text == "no herd: 1.00 threads woken per connection, wake-one"


def test_nothing_accepted_is_not_judged(tmp_path: Path) -> None:
    b = Builder().thread(10, 10, 1, "srv").wakeup(100, 10, Outcome.OTHER)
    assert verdict_of(b, tmp_path).level == "unknown"


def test_without_causes_the_verdict_says_so(tmp_path: Path) -> None:
    v = verdict_of(herd("nginx", WaitCall.EPOLL_WAIT), tmp_path, attribution="none")
    assert v.level == "herd" and "every wakeup counted" in v.text


def test_analyze_prints_verdict_and_fix(tmp_path: Path) -> None:
    path = herd("nginx", WaitCall.EPOLL_WAIT).write(tmp_path / "nginx.parquet")
    out = CliRunner().invoke(app, ["analyze", str(path)]).output
    assert "nginx: herd: 3.0 threads woken per connection" in out
    assert "fix: nginx: add `reuseport`" in out
    data = CliRunner().invoke(app, ["analyze", str(path), "--json"]).output
    assert '"level": "herd"' in data


def test_listener_mode_from_proc_is_named_and_changes_the_fix(tmp_path: Path) -> None:
    listener = {"addr": "0.0.0.0", "port": 8080, "pids": [10, 11], "mode": "epoll-exclusive"}
    v = verdict_of(herd("srv", WaitCall.EPOLL_WAIT), tmp_path,
                   target={"listeners": [listener]})
    assert v.text.endswith("(the workers wait in epoll with EPOLLEXCLUSIVE)")
    assert v.fixes == (ALREADY_EXCLUSIVE,)


def test_waiters_waking_each_other_in_one_epoll(tmp_path: Path) -> None:
    b = herd("srv", WaitCall.EPOLL_WAIT)
    for row in b.rows:
        if row["kind"] == Kind.WAKEUP:
            row["flags"] |= Flag.EPOLL_REWAKE
    v = verdict_of(b, tmp_path)
    assert v.fixes == (ONE_EPOLL, REUSEPORT)
