"""What ships beside the exporter: alert rules Prometheus accepts, a dashboard and
rules that ask only for metrics the exporter serves, a systemd unit that names them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from herdtrace.counts import ListenerCounts, Snapshot
from herdtrace.reports.prometheus import SnapshotCollector

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "herdtrace-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "herdtrace-dashboard.json"
UNIT = DEPLOY / "systemd" / "herdtrace-exporter.service"


def served_names() -> set[str]:
    """Every sample name the exporter serves, from a snapshot with every part present."""
    snap = Snapshot(ts=1.0, listeners=[ListenerCounts("127.0.0.1", 80, "nginx", "reuseport")],
                    connections_followed=True, uncounted=0, lost_events=0, probe_misses=0,
                    threads_traced=1, map_entries={"by_listener": 1},
                    bpf_run_ns={"sched_switch": 1}, bpf_run_count={"sched_switch": 1})
    collector = SnapshotCollector()
    collector.latest = snap
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def asked_for(text: str) -> set[str]:
    return set(re.findall(r"herdtrace_[a-z_]+", text)) - {"herdtrace_"}


def test_promtool_accepts_the_rules() -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (make setup installs Debian's prometheus)")
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_parses_and_asks_only_for_served_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert len(dash["panels"]) >= 6
    names = asked_for("\n".join(exprs))
    assert names and names <= served_names(), names - served_names()


def test_the_rules_ask_only_for_served_metrics() -> None:
    names = {n for n in asked_for(RULES.read_text()) if not n.startswith("herdtrace:")}
    names = {n for n in names if ":" not in n}
    assert names <= served_names(), names - served_names()
    assert {"herdtrace_listener_wakeups_total", "herdtrace_accepts_total",
            "herdtrace_exporter_uncounted_total"} <= names


def unit_capabilities() -> list[str]:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("CapabilityBoundingSet="))
    return line.split("=", 1)[1].split()


def test_the_unit_keeps_only_named_capabilities() -> None:
    caps = unit_capabilities()
    assert "CAP_BPF" in caps and "CAP_PERFMON" in caps and "CAP_SYS_ADMIN" not in caps
    ambient = next(x for x in UNIT.read_text().splitlines() if x.startswith("AmbientCapabilities="))
    assert ambient.split("=", 1)[1].split() == caps
    assert "herdtrace exporter" in UNIT.read_text()
