"""What removes a herd, as data: each server's own settings (with the versions they
hold for and the test that proves them on that server), the kernel mechanisms, and
the plain word where a server has no setting.

A "setting" row is printed only with its proofs: names of scenarios in
tests/integration/test_server_fixes.py that starts the real server with the herd,
then with the setting, and shows the herd gone and the wasted CPU lower. A "none"
row's proofs are those of the workaround it names (the same app moved to a server
whose setting removes the herd). A unit test holds every row to its scenarios.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SETTING, MECHANISM, NONE = "setting", "mechanism", "none"


@dataclass(frozen=True)
class Fix:
    kind: str  # setting, mechanism or none
    text: str
    server: str | None = None  # the server name servers.identify gives
    since: str | None = None  # first version the row holds for
    until: str | None = None  # first version it no longer holds for
    when: dict[str, tuple[str, ...]] = field(default_factory=dict)  # details it needs
    proofs: tuple[str, ...] = ()  # scenarios of tests/integration/test_server_fixes.py

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "kind": self.kind}
        if self.server:
            out["server"] = self.server
        if self.since or self.until:
            out["versions"] = {"since": self.since, "until": self.until}
        if self.proofs:
            out["proven_by"] = [f"tests/integration/test_server_fixes.py[{p}]" for p in self.proofs]
        return out


def version_key(version: str) -> tuple[int, ...]:
    """"2.6.12-1+deb12u4" -> (2, 6, 12): the release numbers, distribution suffix dropped."""
    head = re.match(r"[\d.]+", version)
    return tuple(int(p) for p in head.group(0).split(".") if p) if head else ()


def holds_for(fix: Fix, server: dict[str, Any]) -> bool:
    if fix.server != server.get("name"):
        return False
    version = server.get("version")
    if fix.since or fix.until:
        if not version:
            return False
        key = version_key(version)
        if fix.since and key < version_key(fix.since):
            return False
        if fix.until and key >= version_key(fix.until):
            return False
    details = server.get("details") or {}
    return all(details.get(k) in allowed for k, allowed in fix.when.items())


# gunicorn worker classes `--reuse-port` is proven on (27.0.1: eventlet's is gone).
GUNICORN_PROVEN_WORKERS = ("sync", "gthread", "gevent", "tornado", "asgi",
                           "uvicorn.workers.UvicornWorker")

SERVER_FIXES: tuple[Fix, ...] = (
    Fix(SETTING, "gunicorn: start it with `--reuse-port` (`reuse_port = True` in its config): "
        "since 24.0 every worker opens its own listening socket with SO_REUSEPORT, and the "
        "kernel hands each connection to one of them", server="gunicorn", since="24.0.0",
        when={"worker_class": GUNICORN_PROVEN_WORKERS},
        proofs=("gunicorn-reuse-port", "gunicorn-gthread-reuse-port", "gunicorn-gevent-reuse-port",
                "gunicorn-tornado-reuse-port", "gunicorn-asgi-reuse-port",
                "gunicorn-uvicorn-worker-reuse-port")),
    Fix(NONE, "gunicorn before 24.0 has no setting that removes it: every worker waits on the "
        "one socket the master opened (--reuse-port only sets the flag on it). Upgrade to "
        "24.0+ and start it with `--reuse-port`; until then each worker beyond the cores "
        "adds a thread woken per connection", server="gunicorn", until="24.0.0"),
    Fix(SETTING, "Apache httpd (event MPM): `ListenCoresBucketsRatio 1` (2.4.17+, on a kernel "
        "with SO_REUSEPORT) gives each bucket of children its own listening socket, one bucket "
        "per CPU; the herd is gone when there are no more children (ServerLimit) than buckets",
        server="apache", since="2.4.17", when={"mpm": ("event",)}, proofs=("apache-event-buckets",)),
    Fix(SETTING, "HAProxy: one `bind` line per thread on the same address, each with "
        "`thread N` (`bind :80 thread 1`, `bind :80 thread 2`, ... up to nbthread): each is "
        "its own listening socket (SO_REUSEPORT) and the kernel spreads connections over them",
        server="haproxy", since="2.5", proofs=("haproxy-bind-per-thread",)),
    Fix(SETTING, "Node.js cluster: leave NODE_CLUSTER_SCHED_POLICY unset or set it to `rr` "
        "(or `cluster.schedulingPolicy = cluster.SCHED_RR` before the first fork): the primary "
        "accepts and hands each connection to one worker. The primary's accept and the "
        "hand-over cost CPU of their own: compare CPU per connection before and after",
        server="node", since="0.11.2", when={"cluster": ("yes",)}, proofs=("node-cluster-rr",)),
    Fix(NONE, "uvicorn has no setting that removes it: `--workers N` share the one socket "
        "the supervisor opened, each in its own epoll. Serve the same app with gunicorn 24+ "
        "and uvicorn's worker, `gunicorn -k uvicorn.workers.UvicornWorker --reuse-port -w N "
        "app:app`, where each worker opens its own socket; or run fewer workers (each one "
        "beyond the cores is one more woken per connection) and weigh the price below",
        server="uvicorn", proofs=("uvicorn-to-gunicorn-uvicorn-worker",)),
    Fix(NONE, "hypercorn has no setting that removes it: with `--workers N` the parent opens "
        "one listening socket (its SO_REUSEPORT flag does not split it) and every worker's "
        "event loop polls it. Serve the same ASGI app with gunicorn 24+, `gunicorn -k asgi "
        "--reuse-port -w N app:app`, where each worker opens its own socket; or run fewer "
        "workers and weigh the price below", server="hypercorn",
        proofs=("hypercorn-to-gunicorn-asgi",)),
)

def server_fixes(server: dict[str, Any] | None) -> list[Fix]:
    """The rows that hold for this server and version, settings only with a proof."""
    if not server:
        return []
    return [f for f in SERVER_FIXES
            if holds_for(f, server) and (f.kind != SETTING or f.proofs)]


def describe(server: dict[str, Any] | None) -> str:
    if not server:
        return "an unrecognised server"
    version = server.get("version")
    return f"{server['name']} {version}" if version else str(server["name"])
