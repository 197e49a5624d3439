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
BINNED = {"accept_latency_us", "wake_latency_us"}  # percentiles from 1% bins


def check_same(path: Path) -> None:
    rec = load.load_recording(path)
    memory = metrics.summarize(rec).to_json()
    streamed = stream.analyse(path)
    got = streamed.summary.to_json()
    assert {k: got[k] for k in memory if k not in BINNED} == {
        k: memory[k] for k in memory if k not in BINNED}
    # Percentiles: the nearest-rank sample's value, to 1%; the maximum exactly.
    matched, _ = metrics.match_accepts(rec.accepts, rec.connections)
    for key, values in (("wake_latency_us", rec.wakeups["wake_latency_ns"]),
                        ("accept_latency_us", matched["accept_latency_ns"])):
        lat = values.dropna().to_numpy(np.float64)
        for name, q in metrics.QUANTILES.items():
            exact = np.percentile(lat, q * 100, method="inverted_cdf") / 1e3
            assert got[key][name] == pytest.approx(exact, rel=0.01), (key, name)
        assert got[key]["max"] == pytest.approx(memory[key]["max"]), key
    assert streamed.evidence == verdict.evidence(rec)
    assert verdict.judge_from(streamed.summary, streamed.evidence) == verdict.judge(rec)
    assert (streamed.woken_pairs, streamed.woken_connections) == metrics.woken_pair_counts(
        metrics.herd_wakeups(rec))


@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_streaming_equals_memory_on_real_recordings(path: Path) -> None:
    check_same(path)


@pytest.mark.parametrize("batch", [1, stream.MATCH_BATCH], ids=["batch-per-group", "one-batch"])
@pytest.mark.parametrize("peer", [True, False], ids=["by-peer", "in-order"])
def test_a_connection_across_row_groups_counts_once(tmp_path: Path, peer: bool, batch: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection 1's wakeups straddle the two row groups; the accepts come in the
    second, matched there against the first group's connections (batch of 1)."""
    monkeypatch.setattr(stream, "MATCH_BATCH", batch)
    path = two_connections(peer=peer).write(tmp_path / "two.parquet")
    check_same(path)
    s = stream.summarize_streaming(path)
    assert s.threads_woken_per_connection == 2.0
    assert s.accept_latency_match == ("peer" if peer else "fifo")
