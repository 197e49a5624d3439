"""Herd metrics on hand-built recordings, with the answers worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from herdtrace.analysis import load, metrics
from herdtrace.cli import app
from herdtrace.collectors.session import RecordSummary
from herdtrace.errors import HerdtraceError
from herdtrace.schema import Cause, Outcome, WaitCall
from tests.unit.builder import Builder

A, E, AB = Outcome.ACCEPTED, Outcome.EAGAIN, Outcome.ABSORBED


def two_connections(peer: bool = True) -> Builder:
    """Two workers (11, 12); each connection wakes both; one wins, the other idles.

    conn 1 (t=1000): 11 woken at 1100 (on CPU 1150) accepts at 1200; 12 woken at
    1105 (on CPU 1300) goes back to sleep. conn 2 (t=2000): 12 woken at 2101 (2150)
    accepts at 2160; 11 woken at 2100 (2200) gets EAGAIN at 2250.
    """
    b = Builder().thread(10, 10, 1, "srv").thread(11, 11, 10, "w").thread(12, 12, 10, "w")
    b.conn(1000, 1, rport=40001).conn(2000, 2, rport=40002)
    b.wakeup(1100, 11, A, oncpu=1150, conn_id=1, accepts=1)
    b.wakeup(1105, 12, AB, oncpu=1300, conn_id=1)
    b.wakeup(2100, 11, E, oncpu=2200, conn_id=2, eagains=1)
    b.wakeup(2101, 12, A, oncpu=2150, conn_id=2, accepts=1)
    b.accept(1200, 11, 5, rport=40001 if peer else 0)
    b.accept(2160, 12, 6, rport=40002 if peer else 0)
    b.accept(2250, 11, -11)
    return b


@pytest.fixture
def rec(tmp_path: Path) -> load.Recording:
    return load.load_recording(two_connections().write(tmp_path / "two.parquet"))


def test_summary_worked_by_hand(rec: load.Recording) -> None:
    s = metrics.summarize(rec)
    assert s.threads == 3 and s.connections == 2
    assert s.accepts == 2 and s.eagain == 1
    assert s.wakeups == 4 and s.wakeups_per_accept == 2.0
    assert s.outcomes == {"accepted": 2, "eagain": 1, "absorbed": 1, "other": 0,
                             "unresolved": 0}
    assert s.idle_wakeups == 2 and s.idle_fraction == 0.5  # of the 4 listener wakeups
    # wake latencies 50, 195, 100, 49 ns: median (50 + 100) / 2 = 75 ns
    assert s.wake_latency_us is not None and s.accept_latency_us is not None
    assert s.wake_latency_us["p50"] == pytest.approx(0.075)
    assert s.wake_latency_us["max"] == pytest.approx(0.195)
    # accept latencies: 1200 - 1000 = 200 ns, 2160 - 2000 = 160 ns
    assert s.accept_latency_match == "peer"
    assert s.accept_latency_us["p50"] == pytest.approx(0.18)
    assert s.accept_latency_us["max"] == pytest.approx(0.2)
    assert s.accepts_per_thread == {"11": 1, "12": 1}
    assert s.fairness_jain == 1.0 and s.max_share == 0.5
    assert s.duration_s == 2.0 and s.lost_events == 0



def test_small_tables_convert_as_large_ones_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables up to SMALL_TABLE_BYTES are converted in one go (top, every interval),
    larger ones column by column: the frames must not tell which."""
    path = two_connections().write(tmp_path / "two.parquet")
    at_once = load.load_recording(path)
    monkeypatch.setattr(load, "SMALL_TABLE_BYTES", -1)
    by_column = load.load_recording(path)
    for frame in ("wakeups", "accepts", "connections", "threads"):
        pdt.assert_frame_equal(getattr(at_once, frame), getattr(by_column, frame), check_exact=True)


def test_top_reads_ring_records_as_a_recording_reads_them(tmp_path: Path) -> None:
    """top turns each interval's records into frames without writing them the way a
    recording stores them: the frames must be those of the stored recording."""
    made = two_connections()
    stored = load.load_recording(made.write(tmp_path / "two.parquet"))
    direct = load.recording_from_events(made.array(), stored.meta, Path("top"), "top")
    for frame in ("wakeups", "accepts", "connections", "threads"):
        pdt.assert_frame_equal(getattr(direct, frame), getattr(stored, frame), check_exact=True)
    assert len(stored.wakeups) and len(stored.accepts) and len(stored.connections) and len(stored.threads)


def test_fifo_match_gives_the_same_latencies(tmp_path: Path) -> None:
    rec = load.load_recording(two_connections(peer=False).write(tmp_path / "fifo.parquet"))
    s = metrics.summarize(rec)
    assert s.accept_latency_match == "fifo" and s.accept_latency_us is not None
    assert s.accept_latency_us["p50"] == pytest.approx(0.18)


def test_per_connection_frame(rec: load.Recording) -> None:
    got = metrics.per_connection(rec)
    want = pd.DataFrame({
        "conn_id": pd.Series([1, 2], dtype="uint64"),
        "conn_ts": pd.Series([1000, 2000], dtype="uint64"),
        "wakeups": [2, 2], "threads_woken": [2, 2],
        "winner_tid": pd.Series([11, 12], dtype="uint32"),
        "accept_latency_ns": [200.0, 160.0],
    })
    pdt.assert_frame_equal(got, want, check_dtype=False)


def test_per_thread_frame(rec: load.Recording) -> None:
    got = metrics.per_thread(rec)[["wakeups", "accepted", "eagain", "absorbed", "accepts",
                                   "accept_eagain"]]
    want = pd.DataFrame({"wakeups": [2, 2], "accepted": [1, 1], "eagain": [1, 0],
                         "absorbed": [0, 1], "accepts": [1, 1], "accept_eagain": [1, 0]},
                        index=pd.Index([11, 12], name="tid"))
    pdt.assert_frame_equal(got, want, check_dtype=False, check_index_type=False)


def test_fairness_counts_workers_that_never_won(tmp_path: Path) -> None:
    b = two_connections().thread(13, 13, 10, "w").wakeup(1106, 13, AB, oncpu=1400, conn_id=1)
    s = metrics.summarize(load.load_recording(b.write(tmp_path / "three.parquet")))
    assert s.accepts_per_thread == {"11": 1, "12": 1, "13": 0}
    assert s.fairness_jain == pytest.approx(4 / 6)  # (1+1+0)^2 / (3 * (1+1+0))
    assert s.wakeups_per_accept == 2.5


def test_nothing_made_up_without_data(tmp_path: Path) -> None:
    b = Builder().thread(10, 10, 1, "idle").wakeup(100, 10, Outcome.OTHER)
    s = metrics.summarize(load.load_recording(b.write(tmp_path / "idle.parquet")))
    assert s.accepts == 0
    assert s.wakeups_per_accept is None and s.accept_latency_us is None
    assert s.accept_latency_match is None and s.fairness_jain is None
    assert s.max_share is None and s.wake_latency_us is None


def test_labels_combine_recordings(tmp_path: Path) -> None:
    a = two_connections().write(tmp_path / "a.parquet", label="epoll-shared")
    b = two_connections().write(tmp_path / "b.parquet", label="epoll-shared")
    recs = load.load_recordings([tmp_path])
    assert [r.label for r in recs] == ["epoll-shared", "epoll-shared"]
    (combined,) = metrics.combine_by_label(recs)
    s = metrics.summarize(combined)
    assert s.wakeups == 8 and s.accepts == 4 and s.connections == 4
    assert len(metrics.per_connection(combined)) == 4  # ids kept apart across files
    assert s.duration_s == 4.0
    assert a.exists() and b.exists()


runner = CliRunner()


def test_analyze_json_shape(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")
    result = runner.invoke(app, ["analyze", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (r,) = data["recordings"]
    for key in ("file", "label", "duration_s", "threads", "connections", "accepts",
                "eagain", "wakeups", "wakeups_per_accept", "outcomes", "idle_wakeups",
                "idle_fraction", "wake_latency_us", "accept_latency_us", "accept_latency_match",
                "accepts_per_thread", "fairness_jain", "max_share", "lost_events",
                "herd_factor", "herd_factor_basis", "threads_woken_per_connection",
                "listener_wakeups", "wakeup_causes", "listener_outcomes", "probe_misses"):
        assert key in r
    assert set(r["wake_latency_us"]) == {"p50", "p90", "p99", "max"}
    assert r["label"] == "two"


def test_analyze_table(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")
    result = runner.invoke(app, ["analyze", str(path)])
    assert result.exit_code == 0
    assert "wakeups per accept" in result.output and "2.00" in result.output


def bad(args: list[str]) -> str:
    result = runner.invoke(app, ["analyze", *args])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_not_a_recording(tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet at all")
    assert f"{junk}: not a recording" in bad([str(junk)])


def test_truncated_recording(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "two.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert f"{cut}: not a recording" in bad([str(cut)])


def test_foreign_parquet(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    assert "not a herdtrace recording" in bad([str(other)])


def test_newer_schema(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "new.parquet", schema_version=99)
    assert "schema version 99 is newer" in bad([str(path)])


def test_missing_columns(tmp_path: Path) -> None:
    path = two_connections().write(tmp_path / "full.parquet")
    table = pq.read_table(path).drop_columns(["conn_id", "sk"])
    meta = pq.ParquetFile(path).metadata.metadata
    slim = tmp_path / "slim.parquet"
    pq.write_table(table.replace_schema_metadata(meta), slim)
    assert "missing columns sk, conn_id" in bad([str(slim)])


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    assert "no such file" in bad([str(tmp_path / "nope.parquet")])
    assert "no .parquet recordings" in bad([str(tmp_path)])


def test_load_errors_are_herdtrace_errors(tmp_path: Path) -> None:
    with pytest.raises(HerdtraceError):
        load.load_recording(tmp_path / "nope.parquet")


def test_fairness_of_a_label_is_per_run(tmp_path: Path) -> None:
    """Two runs of one mode: workers of different runs are different threads."""
    a = two_connections().write(tmp_path / "a.parquet", label="m")  # 11 and 12 win one each
    b = (Builder().thread(20, 20, 1, "srv").thread(21, 21, 20, "w").thread(22, 22, 20, "w")
         .conn(1000, 1, rport=40001).conn(2000, 2, rport=40002)
         .wakeup(1100, 21, A, oncpu=1150, conn_id=1, accepts=1, tgid=21)
         .wakeup(1105, 22, AB, oncpu=1300, conn_id=1, tgid=22)
         .wakeup(2100, 21, A, oncpu=2200, conn_id=2, accepts=1, tgid=21)
         .accept(1200, 21, 5, rport=40001, tgid=21).accept(2250, 21, 6, rport=40002, tgid=21))
    b.write(tmp_path / "b.parquet", label="m")
    (combined,) = metrics.combine_by_label(load.load_recordings([a, tmp_path / "b.parquet"]))
    s = metrics.summarize(combined)
    assert s.workers == 2
    assert s.fairness_jain == pytest.approx((1.0 + 0.5) / 2)  # run b: (2+0)^2 / (2*4)
    assert s.max_share == pytest.approx((0.5 + 1.0) / 2)
    share = metrics.share_by_rank(metrics.accepts_per_run_thread(combined))
    assert share.tolist() == pytest.approx([0.75, 0.25])


def event_driven_server() -> Builder:
    """Wake-one on the listener, but request data and timers wake workers too.

    Two workers (11, 12) and a parent (10). Each connection wakes exactly one worker
    on the listener (it accepts); the request data on that connection then wakes the
    same worker again (cause `connection`); the parent is woken once by its timer
    (a select that returned 0) and once by a pipe (`other`).
    """
    b = Builder().thread(10, 10, 1, "srv").thread(11, 11, 10, "w").thread(12, 12, 10, "w")
    b.conn(1000, 1, rport=40001).conn(2000, 2, rport=40002)
    b.wakeup(1100, 11, A, oncpu=1150, conn_id=1, accepts=1)
    b.wakeup(1300, 11, Outcome.OTHER, oncpu=1350, cause=Cause.CONNECTION)
    b.wakeup(2100, 12, A, oncpu=2150, conn_id=2, accepts=1)
    b.wakeup(2300, 12, Outcome.OTHER, oncpu=2350, cause=Cause.CONNECTION)
    b.wakeup(5000, 10, Outcome.OTHER, oncpu=5050, call=WaitCall.SELECT, ret=0)
    b.wakeup(6000, 10, Outcome.OTHER, oncpu=6050, call=WaitCall.SELECT, ret=1)
    b.accept(1200, 11, 5, rport=40001).accept(2160, 12, 6, rport=40002)
    return b


def test_herd_counts_listener_wakeups_only(tmp_path: Path) -> None:
    s = metrics.summarize(load.load_recording(event_driven_server().write(tmp_path / "e.parquet")))
    assert s.wakeups == 6 and s.wakeups_per_accept == 3.0  # kept, never the herd factor
    assert s.herd_factor_basis == "listener"
    assert s.herd_factor == 1.0 and s.listener_wakeups == 2
    assert s.threads_woken_per_connection == 1.0
    # The select that returned 0 timed out: its wakeup was the timer's.
    assert s.wakeup_causes == {"listener": 2, "connection": 2, "socket": 0, "timer": 1,
                                  "other": 1, "unknown": 0}
    assert s.listener_outcomes == {"accepted": 2, "eagain": 0, "absorbed": 0, "other": 0,
                                      "unresolved": 0}
    assert s.idle_wakeups == 0 and s.idle_fraction == 0.0
    # The parent, woken by its timer and a pipe, is not a worker: fairness of 11 and 12.
    assert s.accepts_per_thread == {"11": 1, "12": 1}
    assert s.workers == 2 and s.fairness_jain == 1.0
    assert s.probe_misses == 0


def test_herd_of_two_is_two_threads_per_connection(rec: load.Recording) -> None:
    s = metrics.summarize(rec)
    assert s.herd_factor == 2.0 and s.threads_woken_per_connection == 2.0
    assert s.listener_outcomes == {"accepted": 2, "eagain": 1, "absorbed": 1, "other": 0,
                                      "unresolved": 0}


def test_without_causes_the_herd_counts_every_wakeup(tmp_path: Path) -> None:
    """A recording that cannot tell listener wakeups apart says so, and counts all."""
    path = event_driven_server().write(tmp_path / "old.parquet", attribution="none")
    s = metrics.summarize(load.load_recording(path))
    assert s.herd_factor_basis == "all-wakeups"
    assert s.herd_factor == 3.0 and s.listener_wakeups is None
    assert s.listener_outcomes is None


def test_schema_1_recording_still_analyses(tmp_path: Path) -> None:
    """Written before causes existed: no cause columns, no probe misses."""
    path = two_connections().write(tmp_path / "v2.parquet")
    table = pq.read_table(path).drop_columns(["cause", "cause_basis"])
    meta = json.loads(pq.read_metadata(path).metadata[b"herdtrace"])
    meta["schema_version"] = 1
    del meta["probe_misses"]
    pq.write_table(table.replace_schema_metadata({b"herdtrace": json.dumps(meta).encode()}),
                   tmp_path / "v1.parquet")
    s = metrics.summarize(load.load_recording(tmp_path / "v1.parquet"))
    assert s.herd_factor_basis == "all-wakeups" and s.herd_factor == 2.0
    assert s.wakeup_causes["unknown"] == 4
    assert s.probe_misses is None


def test_analyze_baseline_and_rounding(tmp_path: Path) -> None:
    herd = two_connections().write(tmp_path / "herd.parquet")
    calm = event_driven_server().write(tmp_path / "calm.parquet")
    result = runner.invoke(app, ["analyze", str(calm), "--baseline", str(herd), "--json"])
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.output)["recordings"]
    assert r["vs_baseline"]["herd_factor"] == 0.5  # 1.0 against the herd's 2.0
    assert r["vs_baseline"]["threads_woken_per_connection"] == 0.5
    assert r["wake_latency_us"]["p50"] == round(r["wake_latency_us"]["p50"], 4)
    table = runner.invoke(app, ["analyze", str(calm), "--baseline", str(herd)]).output
    assert "herd factor vs baseline" in table and "0.50x" in table


def test_one_column_per_file_unless_by_label(tmp_path: Path) -> None:
    for name in ("a", "b"):
        two_connections().write(tmp_path / f"{name}.parquet", label="epoll-shared")
    per_file = json.loads(runner.invoke(app, ["analyze", str(tmp_path), "--json"]).output)
    assert "labels" not in per_file and len(per_file["recordings"]) == 2
    combined = json.loads(runner.invoke(app, ["analyze", str(tmp_path), "--json", "--by-label"]).output)
    assert [s["accepts"] for s in combined["labels"]] == [4]


def test_combining_labels_across_folders_warns(tmp_path: Path) -> None:
    for load_name in ("one-at-a-time", "saturate"):
        (tmp_path / load_name).mkdir()
        two_connections().write(tmp_path / load_name / "epoll-shared.r1.parquet", label="epoll-shared")
    result = runner.invoke(app, ["analyze", str(tmp_path), "--by-label", "--json"])
    assert result.exit_code == 0
    assert "label epoll-shared combines recordings from one-at-a-time, saturate" in result.stderr
    assert json.loads(result.stdout)["labels"][0]["accepts"] == 4


def test_a_recording_without_connections_says_so(tmp_path: Path) -> None:
    """record --no-connections: no conn rows; listener wakeups carry the id of their
    listener readiness, so the herd figures are as with connections followed."""
    b = Builder().thread(10, 10, 1, "srv").thread(11, 11, 10, "w").thread(12, 12, 10, "w")
    b.wakeup(1100, 11, A, oncpu=1150, conn_id=1 << 10, accepts=1)
    b.wakeup(1105, 12, AB, oncpu=1300, conn_id=1 << 10)
    b.wakeup(2100, 11, E, oncpu=2200, conn_id=(2 << 10) | 1, eagains=1)
    b.wakeup(2101, 12, A, oncpu=2150, conn_id=(2 << 10) | 1, accepts=1)
    b.accept(1200, 11, 5, rport=40001).accept(2160, 12, 6, rport=40002).accept(2250, 11, -11)
    path = b.write(tmp_path / "light.parquet", probe_options={"connections": False})
    s = metrics.summarize(load.load_recording(path))
    whole = metrics.summarize(load.load_recording(two_connections().write(tmp_path / "two.parquet")))
    assert not s.connections_followed and whole.connections_followed
    assert (s.connections, s.accept_latency_us, s.accept_latency_match) == (0, None, None)
    assert (s.herd_factor, s.threads_woken_per_connection, s.listener_outcomes) == (
        whole.herd_factor, whole.threads_woken_per_connection, whole.listener_outcomes)
    for streamed in ([], ["--stream"]):
        table = runner.invoke(app, ["analyze", *streamed, str(path)])
        assert table.exit_code == 0 and table.output.count("not followed (--no-connections)") == 2
    as_json = json.loads(runner.invoke(app, ["analyze", "--json", str(path)]).output)
    assert as_json["recordings"][0]["connections_followed"] is False


def test_the_record_summary_line_says_connections_were_not_followed(tmp_path: Path) -> None:
    line = RecordSummary(output=tmp_path / "x.parquet", duration_s=1.0, wakeups=3, accepts=2,
                         accept_eagain=1, connections=None, threads=2, lost_events=0,
                         probe_misses=0, rows=7, stop_reason="signal").line()
    assert "2 accepts, 1 EAGAINs, connections not followed, lost 0" in line
