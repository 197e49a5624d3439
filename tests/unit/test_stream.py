"""Streaming analysis (bounded memory) against the in-memory path, on real lab
recordings and on a hand-built one whose connection straddles two row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from herdtrace.analysis import load, metrics, stream, verdict
from tests.unit.test_analysis import two_connections

ROOT = Path(__file__).parent.parent.parent
REAL = [ROOT / "notebooks" / "data" / "epoll-shared.parquet",
        ROOT / "notebooks" / "data" / "epoll-exclusive.parquet",
        ROOT / "tests" / "data" / "schema2-epoll-exclusive.parquet"]
NOT_STREAMED = {"accept_latency_us", "accept_latency_match", "wake_latency_us"}


def check_same(path: Path) -> None:
    rec = load.load_recording(path)
    memory = metrics.summarize(rec).to_json()
    streamed = stream.analyse(path)
    got = streamed.summary.to_json()
    assert {k: got[k] for k in memory if k not in NOT_STREAMED} == {
        k: memory[k] for k in memory if k not in NOT_STREAMED}
    assert got["accept_latency_us"] is None and got["accept_latency_match"] == "streamed"
    # Percentiles: the nearest-rank sample's value, to 1%; the maximum exactly.
    lat = rec.wakeups["wake_latency_ns"].dropna().to_numpy()
    for name, q in metrics.QUANTILES.items():
        exact = np.percentile(lat, q * 100, method="inverted_cdf") / 1e3
        assert got["wake_latency_us"][name] == pytest.approx(exact, rel=0.01), name
    assert got["wake_latency_us"]["max"] == memory["wake_latency_us"]["max"]
    assert streamed.evidence == verdict.evidence(rec)
    assert verdict.judge_from(streamed.summary, streamed.evidence) == verdict.judge(rec)
    assert (streamed.woken_pairs, streamed.woken_connections) == metrics.woken_pair_counts(
        metrics.herd_wakeups(rec))


@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_streaming_equals_memory_on_real_recordings(path: Path) -> None:
    check_same(path)


def test_a_connection_across_row_groups_counts_once(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")  # conn 1 straddles the groups
    check_same(path)
    assert stream.summarize_streaming(path).threads_woken_per_connection == 2.0
