"""Shared fixtures. BPF tests skip with a precise reason where a capability is
missing, and fail instead of skipping under HERDTRACE_REQUIRE_BPF=1 (CI)."""

from __future__ import annotations

import os

import pytest

REQUIRE_BPF = os.environ.get("HERDTRACE_REQUIRE_BPF") == "1"


def bpf_unavailable_reason() -> str | None:
    from herdtrace import doctor

    results = doctor.run_checks()
    if doctor.can_record(results):
        return None
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == doctor.FAIL and r.required]
    return "recording cannot work here: " + "; ".join(failed)


@pytest.fixture(scope="session")
def bpf_ready() -> None:
    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if REQUIRE_BPF:
        pytest.fail(f"HERDTRACE_REQUIRE_BPF=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BPF and report.skipped and item.get_closest_marker("bpf"):
        report.outcome = "failed"
        report.longrepr = f"BPF test skipped under HERDTRACE_REQUIRE_BPF=1: {report.longrepr}"
