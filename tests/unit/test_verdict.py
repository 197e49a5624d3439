"""The verdict's rules, one recording of each shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from herdtrace.analysis import load
from herdtrace.analysis.verdict import (
    ALREADY_EXCLUSIVE,
    EXCLUSIVE,
    ONE_EPOLL,
    REUSEPORT,
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


def texts(v: Verdict) -> tuple[str, ...]:
    return tuple(f.text for f in v.fixes)


def test_epoll_herd_of_an_unrecognised_server_gets_the_mechanisms(tmp_path: Path) -> None:
    v = verdict_of(herd("nginx", WaitCall.EPOLL_WAIT), tmp_path)
    assert v.level == "herd"
    assert v.text == ("herd: 3.0 threads woken per connection, 67% of them for nothing, "
                      "1.0 EAGAIN per accept (the workers wait in epoll); the server was not "
                      "recognised, so the fixes below are changes to its code")
    assert texts(v) == (EXCLUSIVE, REUSEPORT)
    assert {f.kind for f in v.fixes} == {"mechanism"}


def test_select_herd_points_away_from_select(tmp_path: Path) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.SELECT), tmp_path)
    assert v.level == "herd"
    assert "select() and poll() wake every waiter" in texts(v)[0]
    assert texts(v)[1] == REUSEPORT


def gunicorn(version: str, worker_class: str = "sync") -> dict[str, object]:
    return {"name": "gunicorn", "version": version,
            "details": {"processes": "5", "worker_class": worker_class}}


def test_a_recognised_server_gets_its_own_proven_setting_first(tmp_path: Path) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.SELECT), tmp_path,
                   target={"server": gunicorn("24.1.1")})
    assert v.fixes[0].kind == "setting" and "--reuse-port" in v.fixes[0].text
    assert v.fixes[0].to_json()["proven_by"][0].endswith("[gunicorn-reuse-port]")
    assert [f.kind for f in v.fixes[1:]] == ["mechanism", "mechanism"]
    assert v.server == gunicorn("24.1.1")
    assert "no setting" not in v.text


def test_a_version_without_the_setting_is_told_so(tmp_path: Path) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.SELECT), tmp_path,
                   target={"server": gunicorn("23.0.0")})
    assert v.fixes[0].kind == "none"
    assert v.fixes[0].text.startswith("gunicorn before 24.0 has no setting that removes it")
    assert all(f.kind != "setting" for f in v.fixes)


@pytest.mark.parametrize("worker_class", ["gthread", "gevent", "tornado", "asgi",
                                          "uvicorn.workers.UvicornWorker"])
def test_every_proven_worker_class_gets_the_setting(tmp_path: Path, worker_class: str) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.EPOLL_WAIT), tmp_path,
                   target={"server": gunicorn("27.0.1", worker_class)})
    assert v.fixes[0].kind == "setting" and "--reuse-port" in v.fixes[0].text


@pytest.mark.parametrize("name", ["uvicorn", "hypercorn"])
def test_a_server_without_a_setting_gets_the_proven_workaround(tmp_path: Path, name: str) -> None:
    server = {"name": name, "version": "0.18.0", "details": {"processes": "5", "workers": "4"}}
    v = verdict_of(herd(name, WaitCall.EPOLL_WAIT), tmp_path, target={"server": server})
    none = v.fixes[0]
    assert none.kind == "none" and none.text.startswith(f"{name} has no setting that removes it")
    assert "--reuse-port" in none.text and none.to_json()["proven_by"]
    assert [f.kind for f in v.fixes[1:]] == ["mechanism"] * (len(v.fixes) - 1)
    assert "no setting known" not in v.text


def test_a_worker_class_the_proof_did_not_cover_gets_no_setting(tmp_path: Path) -> None:
    v = verdict_of(herd("gunicorn", WaitCall.EPOLL_WAIT), tmp_path,
                   target={"server": gunicorn("24.1.1", "eventlet")})
    assert all(f.kind == "mechanism" for f in v.fixes)
    assert "gunicorn 24.1.1 has no setting known and proven to remove it" in v.text


def test_a_saturated_server_is_called_saturated_not_herd_free(tmp_path: Path) -> None:
    b = Builder().thread(10, 10, 1, "srv").thread(11, 11, 10, "srv")
    for c in range(4):
        b.conn(1000 * (c + 1), c + 1, rport=40000 + c)
    for c in range(2):  # each wakeup accepts two connections
        t0 = 1000 * (2 * c + 1)
        b.wakeup(t0 + 10, 11, A, oncpu=t0 + 50, conn_id=2 * c + 1, call=WaitCall.EPOLL_WAIT,
                 accepts=2)
        b.accept(t0 + 100, 11, 5, rport=40000 + 2 * c).accept(t0 + 110, 11, 6, rport=40001 + 2 * c)
    v = verdict_of(b, tmp_path)
    assert v.level == "no-herd" and v.saturated
    assert "saturated: each listener wakeup accepted 2.0 connections" in v.text
    assert "record again at a lower connection rate" in v.text


def test_wake_one_has_no_herd_and_no_fix(tmp_path: Path) -> None:
    v = verdict_of(herd("nginx", WaitCall.EPOLL_WAIT, woken=1), tmp_path)
    assert v.level == "no-herd" and v.fixes == ()
    assert v.text == "no herd: 1.00 threads woken per connection, wake-one"


def test_one_thread_taking_every_connection_is_not_called_wake_one(tmp_path: Path) -> None:
    b = Builder().thread(10, 10, 1, "waitress-serve").thread(11, 11, 10, "waitress-serve")
    for c in range(3):
        t0 = 1000 * (c + 1)
        b.conn(t0, c + 1, rport=40000 + c)
        b.wakeup(t0 + 10, 11, A, oncpu=t0 + 50, conn_id=c + 1, call=WaitCall.POLL, accepts=1)
        b.accept(t0 + 100, 11, 5, rport=40000 + c)
    v = verdict_of(b, tmp_path)
    assert v.level == "no-herd" and v.fixes == ()
    assert v.text == "no herd: 1.00 threads woken per connection, one thread took every connection"


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
    assert "fix (mechanism): add the listening socket to each worker's epoll with EPOLLEXCLUSIVE" in out
    data = CliRunner().invoke(app, ["analyze", str(path), "--json"]).output
    assert '"level": "herd"' in data


def test_listener_mode_from_proc_is_named_and_changes_the_fix(tmp_path: Path) -> None:
    listener = {"addr": "0.0.0.0", "port": 8080, "pids": [10, 11], "mode": "epoll-exclusive"}
    v = verdict_of(herd("srv", WaitCall.EPOLL_WAIT), tmp_path,
                   target={"listeners": [listener]})
    assert "(the workers wait in epoll with EPOLLEXCLUSIVE);" in v.text
    assert texts(v) == (ALREADY_EXCLUSIVE,)


def test_waiters_waking_each_other_in_one_epoll(tmp_path: Path) -> None:
    b = herd("srv", WaitCall.EPOLL_WAIT)
    for row in b.rows:
        if row["kind"] == Kind.WAKEUP:
            row["flags"] |= Flag.EPOLL_REWAKE
    v = verdict_of(b, tmp_path)
    assert texts(v) == (ONE_EPOLL, REUSEPORT)


def test_every_printed_setting_names_a_proof_the_suite_runs() -> None:
    from herdtrace.analysis.fixes import SERVER_FIXES
    from tests.integration.test_server_fixes import PROOFS

    settings = [f for f in SERVER_FIXES if f.kind == "setting"]
    assert settings
    for fix in settings:
        assert fix.proofs, fix.text
    for fix in SERVER_FIXES:  # a none row's proofs are its workaround's
        for proof in fix.proofs:
            assert PROOFS[proof].server == fix.server and PROOFS[proof].kind == fix.kind
    assert set(PROOFS) == {p for f in SERVER_FIXES for p in f.proofs}  # none unclaimed


def test_versions_compare_by_release_numbers() -> None:
    from herdtrace.analysis.fixes import version_key

    assert version_key("2.6.12-1+deb12u4") == (2, 6, 12)
    assert version_key("24.0.0") > version_key("23.0.0") > version_key("2.5")
    assert version_key("unknown") == ()
