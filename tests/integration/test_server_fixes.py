"""Every server setting herdtrace prints, proven on the real server: started as its
users start it, with the herd, recorded beside bpftrace; started with the setting,
recorded again. The herd must be there before, gone after (threads woken per
connection <= 1.2), and the CPU woken-but-idle wakeups burn per connection lower.
Where a server has no setting (kind "none"), the workaround its row names is proven
the same way: the same app moved to the server that has one.
analysis/fixes.py names these scenarios; a unit test holds every row to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from herdtrace.analysis import fixes, metrics, verdict
from herdtrace.workloads import real_servers
from tests.integration.test_real_servers import ServerFactory, record_beside_bpftrace

REQUESTS = 500
HERD_ABOVE = 1.5  # threads woken per connection before: a herd to remove
FIXED_AT_MOST = 1.2


@dataclass(frozen=True)
class Proof:
    server: str  # servers.identify's name, of the server with the herd
    herd: ServerFactory
    fixed: ServerFactory
    kind: str = fixes.SETTING  # the kind of the row it proves


def reuse_port(worker_class: str) -> Proof:
    return Proof("gunicorn", lambda wd: real_servers.gunicorn(wd, worker_class=worker_class),
                 lambda wd: real_servers.gunicorn(wd, worker_class=worker_class, reuse_port=True))


def moved_to_gunicorn(server: str, herd: ServerFactory, worker_class: str) -> Proof:
    return Proof(server, herd,
                 lambda wd: real_servers.gunicorn(wd, worker_class=worker_class, reuse_port=True),
                 kind=fixes.NONE)


PROOFS: dict[str, Proof] = {
    "gunicorn-reuse-port": Proof(
        "gunicorn", real_servers.gunicorn,
        lambda wd: real_servers.gunicorn(wd, reuse_port=True)),
    "gunicorn-gthread-reuse-port": reuse_port("gthread"),
    "gunicorn-gevent-reuse-port": reuse_port("gevent"),
    "gunicorn-tornado-reuse-port": reuse_port("tornado"),
    "gunicorn-asgi-reuse-port": reuse_port("asgi"),
    "gunicorn-uvicorn-worker-reuse-port": reuse_port("uvicorn.workers.UvicornWorker"),
    "uvicorn-to-gunicorn-uvicorn-worker": moved_to_gunicorn(
        "uvicorn", real_servers.uvicorn, "uvicorn.workers.UvicornWorker"),
    "hypercorn-to-gunicorn-asgi": moved_to_gunicorn("hypercorn", real_servers.hypercorn, "asgi"),
    "apache-event-buckets": Proof(
        "apache", lambda wd: real_servers.apache(wd, "event", workers=2),
        lambda wd: real_servers.apache(wd, "event", workers=2, extra="ListenCoresBucketsRatio 1")),
    "haproxy-bind-per-thread": Proof(
        "haproxy", real_servers.haproxy, lambda wd: real_servers.haproxy(wd, shard=True)),
    "node-cluster-rr": Proof(
        "node", lambda wd: real_servers.node_cluster(wd, policy="none"),
        lambda wd: real_servers.node_cluster(wd, policy="rr")),
}


def measured(tmp: Path, factory: ServerFactory) -> verdict.Judged:
    rec, counts = record_beside_bpftrace(tmp, factory, REQUESTS)
    s = metrics.summarize(rec)
    assert s.lost_events == 0 and s.accepts == REQUESTS
    assert counts.accepts == REQUESTS  # the independent counter saw the same window
    return verdict.Judged(s, verdict.judge(rec, s))


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_the_setting_removes_the_herd_on_the_real_server(tmp_path: Path, name: str) -> None:
    proof = PROOFS[name]
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    before = measured(tmp_path / "before", proof.herd)
    after = measured(tmp_path / "after", proof.fixed)
    b, a = before.summary, after.summary
    print(f"{name}: {fixes.describe(b.server)} threads woken/conn {b.threads_woken_per_connection:.2f}"
          f" -> {a.threads_woken_per_connection:.2f}; wasted CPU/conn {b.wasted_cpu_us_per_connection:.1f}"
          f" -> {a.wasted_cpu_us_per_connection:.1f} us; CPU/conn {b.cpu_us_per_connection:.1f} -> "
          f"{a.cpu_us_per_connection:.1f} us")
    assert b.server is not None and b.server["name"] == proof.server
    assert b.threads_woken_per_connection is not None and a.threads_woken_per_connection is not None
    assert b.threads_woken_per_connection > HERD_ABOVE
    assert a.threads_woken_per_connection <= FIXED_AT_MOST
    assert a.wasted_cpu_us_per_connection is not None and b.wasted_cpu_us_per_connection is not None
    assert a.wasted_cpu_us_per_connection < b.wasted_cpu_us_per_connection
    # What the herd's verdict printed is this very row, and the fixed run has no herd.
    printed = [f for f in before.verdict.fixes if f.kind == proof.kind]
    assert len(printed) == 1 and name in printed[0].proofs
    assert before.verdict.level == "herd" and after.verdict.level == "no-herd"
