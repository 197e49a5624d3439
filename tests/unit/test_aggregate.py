"""The exporter's bookkeeping that needs no kernel: which counted ports are stale."""

from __future__ import annotations

from herdtrace.collectors.aggregate import STALE_S, AggregateWatcher, ExporterOptions
from herdtrace.collectors.listeners import Listener


def test_ports_no_listener_holds_go_stale_after_a_while() -> None:
    w = AggregateWatcher(ExporterOptions())
    w.listeners = [Listener("127.0.0.1", 80, (1,), ((100, 3),))]
    totals = {80: [0], 81: [0]}  # 81: a server that came and went between scrapes
    assert w._stale_ports(totals, 1000.0) == set()
    assert w._stale_ports(totals, 1000.0 + STALE_S / 2) == set()
    assert w._stale_ports(totals, 1001.0 + STALE_S) == {81}
    w.listeners = []
    assert w._stale_ports(totals, 1002.0 + 2 * STALE_S) == {80, 81}
