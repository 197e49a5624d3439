"""A recording reads without herdtrace: names not codes, nulls not zeros, metadata
on the schema, in pyarrow and in DuckDB alone."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from herdtrace.analysis import load, metrics
from herdtrace.bench.execute import truth_check
from herdtrace.workloads.lab import GroundTruth
from tests.unit.test_analysis import two_connections


def test_pyarrow_alone_sees_names_nulls_and_metadata(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"herdtrace"])
    assert meta["lost_events"] == 0
    assert "absorbed" in meta["columns"]["outcome"]
    frame = table.to_pandas()
    wakeups = frame[frame["kind"] == "wakeup"]
    assert sorted(wakeups["outcome"]) == ["absorbed", "accepted", "accepted", "eagain"]
    assert set(wakeups["wait_call"]) == {"epoll_wait"}
    assert set(wakeups["cause"]) == {"listener"}
    assert wakeups["ret_ts"].isna().sum() == 1  # the absorbed wakeup never returned
    threads = frame[frame["kind"] == "thread"]
    assert sorted(threads["comm"]) == ["srv", "w", "w"]
    accepts = frame[frame["kind"] == "accept"]
    assert accepts["outcome"].isna().all() and accepts["comm"].isna().all()


def test_duckdb_alone_counts_outcomes(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")
    db = duckdb.connect()
    rows = db.execute(
        f"SELECT outcome, count(*) FROM '{path}' WHERE kind = 'wakeup' "
        "GROUP BY outcome ORDER BY outcome").fetchall()
    assert rows == [("absorbed", 1), ("accepted", 2), ("eagain", 1)]
    ((kv,),) = db.execute(f"SELECT value FROM parquet_kv_metadata('{path}') "
                          "WHERE key = 'herdtrace'").fetchall()
    assert json.loads(kv)["schema_version"] == 4


DATA = Path(__file__).parent.parent / "data"


def test_schema_2_recording_still_agrees_with_its_truth() -> None:
    """A real lab recording written by schema 2 (integer codes, zeros for absent)."""
    path = DATA / "schema2-epoll-exclusive.parquet"
    truth = GroundTruth.from_json(json.loads(path.with_suffix(".truth.json").read_text()))
    rec = load.load_recording(path)
    assert rec.meta.schema_version == 2
    s = metrics.summarize(rec)
    assert truth_check(s, truth) is None
    assert s.herd_factor_basis == "listener" and s.herd_factor == 1.0
    assert set(rec.threads["comm"]) == {"python"}
