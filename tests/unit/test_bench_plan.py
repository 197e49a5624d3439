"""The bench schedule: interleaved modes, rotated per repeat, every profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdtrace.bench.plan import DEFAULT_PROFILES, BenchOptions, schedule
from herdtrace.errors import HerdtraceError


def test_interleaved_and_rotated(tmp_path: Path) -> None:
    opts = BenchOptions(output=tmp_path / "b", modes=("epoll-shared", "reuseport", "poll-shared"),
                        repeats=3, concurrency=1, connections=10)
    order = [(p.repeat, p.spec.mode) for p in schedule(opts)]
    assert order == [
        (1, "epoll-shared"), (1, "reuseport"), (1, "poll-shared"),
        (2, "reuseport"), (2, "poll-shared"), (2, "epoll-shared"),
        (3, "poll-shared"), (3, "epoll-shared"), (3, "reuseport"),
    ]


def test_default_profiles_and_observer_pairs(tmp_path: Path) -> None:
    opts = BenchOptions(output=tmp_path / "b", modes=("epoll-shared",), observer_effect=True)
    runs = schedule(opts)
    assert [r.profile.name for r in runs] == [p.name for p in DEFAULT_PROFILES for _ in (0, 1)]
    assert [r.spec.traced for r in runs] == [True, False] * len(DEFAULT_PROFILES)
    assert runs[1].stem == "one-at-a-time/epoll-shared.r1.untraced"


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "--workers"),
    ({"repeats": 0}, "--repeats"),
    ({"load_tool": "siege"}, "unknown --load"),
    ({"modes": ("kqueue",)}, "kqueue"),
    ({"rate": 10.0}, "--connections or --duration"),
])
def test_bad_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(HerdtraceError, match=message):
        BenchOptions(output=tmp_path / "b", **kwargs).validate()
