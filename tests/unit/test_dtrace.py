"""The DTrace path on Linux: transcripts in FreeBSD's probe semantics -> the same recording."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from herdtrace.analysis import load, metrics
from herdtrace.cli import app
from herdtrace.collectors.dtrace_collector import SCRIPT, convert_transcript
from herdtrace.collectors.dtrace_parser import LINE_ARITY, DtraceParser
from herdtrace.collectors.session import RecordOptions
from herdtrace.errors import HerdtraceError
from herdtrace.schema import Outcome, WaitCall
from tests.unit.builder import Builder

DATA = Path(__file__).parent / "data"
HERD = (DATA / "kevent-herd.txt").read_text().splitlines()
A, E, AB = Outcome.ACCEPTED, Outcome.EAGAIN, Outcome.ABSORBED


def convert(tmp: Path, lines: list[str], stderr: list[str] | None = None) -> load.Recording:
    out = tmp / "bsd.parquet"
    convert_transcript(lines, stderr or [], RecordOptions(output=out, force=True))
    return load.load_recording(out)


def test_herd_four_woken_one_wins(tmp_path: Path) -> None:
    rec = convert(tmp_path, HERD)
    s = metrics.summarize(rec)
    assert s.wakeups == 4 and s.accepts == 1 and s.eagain == 2
    assert s.outcomes == {"accepted": 1, "eagain": 2, "absorbed": 1, "other": 0,
                             "unresolved": 0}
    assert s.wakeups_per_accept == 4.0 and s.idle_fraction == 0.75
    assert s.accept_latency_match == "peer"
    assert s.accept_latency_us is not None
    assert s.accept_latency_us["p50"] == pytest.approx(0.15)  # 1150 - 1000 ns
    assert (rec.wakeups["wait_call"] == "kevent").all()
    assert (rec.wakeups["conn_id"] == 1).all() and rec.wakeups["net_cause"].all()
    assert rec.meta.backend == "dtrace" and rec.meta.attribution == "solisten_wakeup"
    per = metrics.per_connection(rec)
    assert per.loc[0, "threads_woken"] == 4 and per.loc[0, "winner_tid"] == 101


def test_wake_one_run(tmp_path: Path) -> None:
    lines = [ln for ln in HERD if not re.match(r"[WO] \d+ 10[234] ", ln)]
    lines = [ln for ln in lines if not ln.startswith(("R 1105", "E 1115", "R 1160", "R 1125",
                                                      "E 1130", "R 1165"))]
    s = metrics.summarize(convert(tmp_path, lines))
    assert s.wakeups == 1 and s.wakeups_per_accept == 1.0
    assert s.eagain == 0 and s.outcomes["accepted"] == 1


def test_same_fields_as_a_linux_recording_of_the_same_shape(tmp_path: Path) -> None:
    bsd = metrics.summarize(convert(tmp_path, HERD))
    linux = Builder()
    for tid in (101, 102, 103, 104):
        linux.thread(tid, tid, 100, "herdlab", ts=100)
    linux.conn(1000, 1, rport=50001)
    for tid, ts, oncpu, outcome, acc, eag in ((101, 1020, 1040, A, 1, 0), (102, 1021, 1060, E, 0, 1),
                                             (103, 1022, 1080, E, 0, 1), (104, 1023, 1120, AB, 0, 0)):
        linux.wakeup(ts, tid, outcome, oncpu=oncpu, conn_id=1, accepts=acc, eagains=eag,
                     call=WaitCall.KEVENT, tgid=tid)
    linux.accept(1150, 101, 7, rport=50001, tgid=101)
    linux.accept(1160, 102, -11, tgid=102)
    linux.accept(1165, 103, -11, tgid=103)
    lin = metrics.summarize(load.load_recording(linux.write(tmp_path / "linux.parquet")))
    for key in ("threads", "connections", "accepts", "eagain", "wakeups",
                "wakeups_per_accept", "outcomes", "idle_wakeups", "idle_fraction",
                "wake_latency_us", "accept_latency_us", "accept_latency_match",
                "accepts_per_thread", "fairness_jain", "max_share", "lost_events"):
        assert getattr(bsd, key) == getattr(lin, key), key


def test_drops_become_lost_events(tmp_path: Path) -> None:
    stderr = ["dtrace: 7 drops on CPU 1", "dtrace: 2 drops on CPU 1",
              "dtrace: 3 dynamic variable drops", "dtrace: error on enabled probe ID 5"]
    rec = convert(tmp_path, HERD, stderr)
    assert rec.meta.lost_events == 9 and rec.meta.lost_per_cpu == [0, 9]
    assert rec.meta.dtrace_other_drops == 3 and rec.meta.dtrace_errors == 1
    assert metrics.summarize(rec).lost_events == 9


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    junk = ["W 1 2", "Z 1 2 3", "E x 101 101 kevent 4 0 1", "R 1 2 3 kqueue 1 0 - - -",
            "E 5 101 101 epoll 4 0 1", "\x00\xff garbage", "C 1 2 3 not-an-address"]
    rec = convert(tmp_path, [*HERD[:5], *junk, *HERD[5:]])
    assert rec.meta.malformed_lines == len(junk)
    assert rec.meta.malformed_examples == junk[:5]
    assert metrics.summarize(rec).wakeups == 4


def test_unknown_format_version_is_refused() -> None:
    with pytest.raises(HerdtraceError, match="format 2"):
        DtraceParser().feed("# herdtrace-dtrace 2")


def test_open_wakeups_at_the_end_are_unresolved() -> None:
    p = DtraceParser()
    for line in [*HERD[:17], "W 1020 101 101 200 200 0"]:
        p.feed(line)
    ev = p.finish()
    assert (ev["outcome"][ev["kind"] == 1] == Outcome.UNRESOLVED).all()


def test_import_dtrace_command(tmp_path: Path) -> None:
    transcript = tmp_path / "kevent.txt"
    transcript.write_text("\n".join(HERD) + "\n")
    out = tmp_path / "bsd.parquet"
    runner = CliRunner()
    result = runner.invoke(app, ["import-dtrace", str(transcript), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 wakeups, 1 accepts, 2 EAGAINs" in result.output
    analysed = runner.invoke(app, ["analyze", str(out), "--json"])
    assert '"wakeups_per_accept": 4.0' in analysed.output


def test_script_and_parser_agree_on_the_format() -> None:
    """Every printf in kevent.d prints as many fields as the parser expects."""
    formats = re.findall(r'printf\("([A-Z]) ([^"]*)\\n"', SCRIPT.read_text())
    assert {kind for kind, _ in formats} == set(LINE_ARITY)
    for kind, rest in formats:
        assert 1 + len(rest.split(" ")) == LINE_ARITY[kind], kind
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dtrace-format.md").read_text()
    for kind in LINE_ARITY:
        assert f"`{kind} " in doc, kind


def real_dtrace() -> str | None:
    path = shutil.which("dtrace")
    if path is None:
        return None
    proc = subprocess.run([path, "-V"], capture_output=True, text=True)
    return path if "Sun D" in proc.stdout + proc.stderr else None


def test_d_script_compiles() -> None:
    dtrace = real_dtrace()
    if dtrace is None:
        pytest.skip("no D compiler here (Debian ships no DTrace); kevent.d is compiled only "
                    "where `dtrace -V` reports a Sun D compiler")
    proc = subprocess.run([dtrace, "-Z", "-e", "-s", str(SCRIPT), "-c", "true"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_dtrace_backend_where_there_is_no_dtrace(tmp_path: Path) -> None:
    if real_dtrace() is not None:
        pytest.skip("this machine has DTrace")
    result = CliRunner().invoke(app, ["record", "--backend", "dtrace", "-o",
                                      str(tmp_path / "x.parquet"), "--", "true"])
    assert result.exit_code != 0
    line = result.output.strip()
    assert line.startswith("herdtrace: error: ") and "\n" not in line
    assert "dtrace" in line
