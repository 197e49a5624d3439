"""Everything here attaches real BPF programs: marked `bpf`, and needs `bpf_ready`."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.nodeid:
            item.add_marker(pytest.mark.bpf)


@pytest.fixture(autouse=True)
def _needs_bpf(bpf_ready: None) -> None:
    return None
