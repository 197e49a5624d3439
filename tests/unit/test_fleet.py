"""Hundreds of real recordings from many hosts, one table: the roll-up equals the
sum of the per-file analyses, in herdtrace and in DuckDB alone."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from herdtrace.analysis import fleet, load, metrics
from herdtrace.cli import app

ROOT = Path(__file__).parent.parent.parent
SOURCES = [ROOT / "notebooks" / "data" / "epoll-shared.parquet",
           ROOT / "notebooks" / "data" / "epoll-exclusive.parquet",
           ROOT / "tests" / "data" / "schema2-epoll-exclusive.parquet"]
COPIES = 210
HOSTS = 7


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lab recordings copied with a host each (as from a fleet), plus a broken file."""
    out = tmp_path_factory.mktemp("fleet")
    tables = [pq.read_table(p) for p in SOURCES]
    for i in range(COPIES):
        table = tables[i % len(tables)]
        meta = json.loads(pq.read_metadata(SOURCES[i % len(tables)]).metadata[b"herdtrace"])
        meta["hostname"] = f"web{i % HOSTS}"
        sub = out / f"dc{i % 2}"
        sub.mkdir(exist_ok=True)
        pq.write_table(table.replace_schema_metadata({b"herdtrace": json.dumps(meta).encode()}),
                       sub / f"r{i:03d}.parquet")
    (out / "dc0" / "broken.parquet").write_bytes(b"PAR1 cut short")
    return out


def expected_by_host() -> dict[str, dict[str, int]]:
    """Each host's totals from analyzing every source file once, times its copies."""
    summaries = [metrics.summarize(load.load_recording(p)) for p in SOURCES]
    totals: dict[str, dict[str, int]] = {}
    for i in range(COPIES):
        s = summaries[i % len(SOURCES)]
        t = totals.setdefault(f"web{i % HOSTS}", {"accepts": 0, "listener_wakeups": 0,
                                                  "eagain": 0, "recordings": 0})
        t["accepts"] += s.accepts
        t["eagain"] += s.eagain
        t["listener_wakeups"] += s.listener_wakeups or 0
        t["recordings"] += 1
    return totals


def test_summarize_then_roll_up_by_host(folder: Path, tmp_path: Path) -> None:
    table = tmp_path / "summary.parquet"
    result = CliRunner().invoke(app, ["summarize", str(folder), "-o", str(table), "-j", "2"])
    assert result.exit_code == 0, result.output
    assert f"summarized {COPIES} recordings, 1 could not be read" in result.output
    rows = fleet.read_table(table)
    assert len(rows) == COPIES + 1
    (broken,) = rows.loc[rows["error"].notna(), "file"]
    assert broken.endswith("broken.parquet")
    want = expected_by_host()
    out = CliRunner().invoke(app, ["analyze", "--group-by", "host", str(table), "--json"])
    assert out.exit_code == 0, out.output
    got = {g["host"]: g for g in json.loads(out.output)["groups"]}
    assert set(got) == set(want)
    for host, t in want.items():
        g = got[host]
        assert (g["recordings"], g["accepts"], g["eagain"], g["listener_wakeups"]) == (
            t["recordings"], t["accepts"], t["eagain"], t["listener_wakeups"])
        assert g["herd_factor"] == round(t["listener_wakeups"] / t["accepts"], 4)
    # DuckDB alone, over the same table, rolls up to the same totals.
    db = duckdb.connect()
    for host, accepts, woken in db.execute(
            f"SELECT host, sum(accepts), sum(listener_wakeups) FROM '{table}' "
            "WHERE error IS NULL GROUP BY host").fetchall():
        assert (accepts, woken) == (want[host]["accepts"], want[host]["listener_wakeups"])


def test_group_by_over_recordings_equals_over_the_table(folder: Path, tmp_path: Path) -> None:
    direct = fleet.rollup(fleet.summarize_files([folder / "dc1"], jobs=2), "mode")
    table = tmp_path / "dc1.parquet"
    fleet.write_table(fleet.summarize_files([folder / "dc1"], jobs=1), table)
    via_table = fleet.rollup(fleet.read_table(table), "mode")
    assert direct[["mode", "recordings", "accepts", "listener_wakeups"]].equals(
        via_table[["mode", "recordings", "accepts", "listener_wakeups"]])
    assert direct["recordings"].sum() == COPIES // 2
