"""Every command, with bad input, as a user runs it (a real process): one line that
starts `herdtrace: error:`, a non-zero exit, never a traceback. (As a non-root user:
tests/integration/test_doctor.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_analysis import two_connections


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_connections().write(tmp_path_factory.mktemp("rec") / "two.parquet")


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herdtrace", *args], capture_output=True,
                          text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("herdtrace: error: ")
    return lines[0]


BAD = {  # name: (arguments with {rec} and {tmp}, words the one line must hold)
    "report into a missing folder": (["report", "{rec}", "-o", "/nonexistent/dir/r.png"], "no such directory"),
    "report onto a folder": (["report", "{rec}", "-o", "{tmp}", "--force"], "is a directory"),
    "report in an unknown format": (["report", "{rec}", "-o", "{tmp}/r.txt"], ".png, .svg, .pdf"),
    "report of a junk file": (["report", "{tmp}/junk.parquet", "-o", "{tmp}/r.png"], "not a recording"),
    "analyze of a missing file": (["analyze", "{tmp}/none.parquet"], "no such file"),
    "analyze streamed by label": (["analyze", "--stream", "--by-label", "{rec}"], "use --group-by"),
    "analyze grouped by color": (["analyze", "--group-by", "color", "{rec}"], "one of host, target"),
    "summarize with no jobs": (["summarize", "{rec}", "-o", "{tmp}/s.parquet", "-j", "0"], "--jobs"),
    "record into /proc": (["record", "-p", "1", "-o", "/proc/a.parquet"], "cannot write"),
    "record a huge ring": (["record", "-p", "1", "--buffer-pages", "1073741824", "-o", "{tmp}/a.parquet"],
                           "the largest is"),
    "record for nan seconds": (["record", "-p", "1", "-d", "nan", "-o", "{tmp}/a.parquet"], "--duration"),
    "record for no time": (["record", "-p", "1", "-d", "0", "-o", "{tmp}/a.parquet"], "--duration"),
    "record nothing": (["record", "-o", "{tmp}/a.parquet"], "nothing to record"),
    "record a pid and a command": (["record", "-p", "1", "-o", "{tmp}/a.parquet", "--", "true"], "not both"),
    "record into a picture": (["record", "-p", "1", "-o", "{tmp}/a.png"], ".parquet"),
    "record no such pid": (["record", "-p", "999999999", "-o", "{tmp}/a.parquet"], "no such process"),
    "record with an unknown backend": (["record", "-p", "1", "--backend", "nope", "-o", "{tmp}/a.parquet"],
                                       "unknown --backend 'nope'; backends: bcc, dtrace"),
    "record a port nothing listens on": (["record", "-P", "1", "-o", "{tmp}/a.parquet"],
                                         "nothing listens on TCP port 1"),
    "top every 0 s": (["top", "0"], "INTERVAL must be a positive number"),
    "top every nan s": (["top", "nan"], "INTERVAL must be a positive number"),
    "top 0 times": (["top", "1", "0"], "COUNT must be at least 1"),
    "top port 70000": (["top", "-P", "70000"], "0-65535"),
    "top no such pid": (["top", "-p", "999999999"], "no such process"),
    "top into a picture": (["top", "-o", "{tmp}/a.png"], ".parquet"),
    "serve on port 70000": (["lab", "serve", "-P", "70000"], "0-65535"),
    "load port 70000": (["lab", "load", "-P", "70000", "-c", "1", "-k", "1"], "0-65535"),
    "load for nan seconds": (["lab", "load", "-c", "1", "-d", "nan"], "--duration"),
    "bench an unknown mode": (["bench", "--modes", "epoll-herd", "-o", "{tmp}/b"], "epoll-herd"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line(name: str, rec: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    args, words = BAD[name]
    line = one_line_error(run([a.format(rec=rec, tmp=tmp_path) for a in args]))
    assert words in line


def test_help_and_version() -> None:
    for flag in ("-h", "--help"):
        out = run([flag])
        assert out.returncode == 0 and "record" in out.stdout
    for cmd in ("record", "top", "analyze", "summarize", "report", "bench", "doctor", "lab"):
        assert run([cmd, "-h"]).returncode == 0
    version = run(["--version"])
    assert version.returncode == 0 and version.stdout.startswith("herdtrace ")
    record_help = run(["record", "-h"]).stdout
    assert "-- COMMAND [ARGS]" in record_help
    assert "<list" not in record_help and "<bool>" not in record_help


def interpreter_start_s() -> float:
    """How long this interpreter takes to start and stop with nothing to run (its
    site module, the .pth files): a Ctrl-C inside that is CPython's, before any
    herdtrace code can catch it."""
    times = []
    for _ in range(3):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - start)
    return max(times)


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15, 0.4])
def test_ctrl_c_at_any_moment_of_start_up_is_quiet(delay_s: float) -> None:
    """Ctrl-C while the command's modules still load, or once it runs: no traceback.
    The moments count from the interpreter's own start-up (seen at 30 ms on a quiet
    host and past 50 ms on a busy one, where 0.05 s fell inside it)."""
    offset = interpreter_start_s() if delay_s else 0.0  # 0: before Python handles SIGINT at all
    # SIGINT as a terminal gives it, whatever this test runner inherited (a job
    # started in the background has it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "herdtrace", "lab", "serve", "-n", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(offset + delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="dropping capabilities as root needs root and setpriv")
@pytest.mark.parametrize("cmd", [["record", "--pid", "1"], ["top", "1", "1"]])
def test_root_without_capabilities_is_refused_in_one_line(tmp_path: Path, cmd: list[str]) -> None:
    """uid 0 with every capability dropped (a container, setpriv) cannot load BPF:
    said as such, before bcc tries."""
    out = subprocess.run(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
                          "--", sys.executable, "-m", "herdtrace", *cmd,
                          *(["-o", str(tmp_path / "never.parquet")] if cmd[0] == "record" else [])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "herdtrace: error: recording needs root (or CAP_BPF and CAP_PERFMON), and this is root "
        "with its capabilities dropped: run with CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON "
        "(a container: --privileged)"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="dropping capabilities as root needs root and setpriv")
def test_doctor_names_the_same_privilege_problem_as_record() -> None:
    """One diagnosis: doctor's privilege row gives the cause and fix record's error gives."""
    out = subprocess.run(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
                          "--", sys.executable, "-m", "herdtrace", "doctor"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    row = next(line for line in out.stdout.splitlines() if " privilege: " in line)
    assert row == ("fail privilege: root with its capabilities dropped -> fix: run with "
                   "CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON (a container: --privileged)")
