"""CLI behaviour that needs no BPF: help, bad input as one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from herdtrace.cli import app

runner = CliRunner()


def fails_with(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("herdtrace: error: ")
    return lines[0]


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("doctor", "record", "analyze", "report", "bench", "lab"):
        assert cmd in result.output


def test_record_no_such_pid(tmp_path: Path) -> None:
    line = fails_with(["record", "--pid", "999999999", "-o", str(tmp_path / "x.parquet")])
    assert "no such process: 999999999" in line


def test_record_max_conns_means_nothing_without_connections(tmp_path: Path) -> None:
    line = fails_with(["record", "--no-connections", "--max-conns", "8", "--pid", "1",
                       "-o", str(tmp_path / "x.parquet")])
    assert "--max-conns" in line and "no effect with --no-connections" in line


def test_record_needs_a_target(tmp_path: Path) -> None:
    assert "--pid" in fails_with(["record", "-o", str(tmp_path / "x.parquet")])


def test_record_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    out.write_bytes(b"")
    assert "--force" in fails_with(["record", "-o", str(out), "--", "true"])


def test_record_command_not_found(tmp_path: Path) -> None:
    line = fails_with(["record", "-o", str(tmp_path / "x.parquet"), "--", "no-such-cmd-xyz"])
    assert "cannot start 'no-such-cmd-xyz'" in line


def test_record_buffer_pages_power_of_two(tmp_path: Path) -> None:
    assert "power of two" in fails_with(["record", "--print-bpf", "--buffer-pages", "3"])


def test_doctor_json_shape() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    data = json.loads(result.output)
    assert set(data) == {"can_record", "checks"}
    names = [c["name"] for c in data["checks"]]
    for name in ("privilege", "bpf syscall", "tracefs", "tracepoints", "kernel headers", "bcc",
                 "ring buffer", "sock:sk_data_ready", "kprobes", "fentry"):
        assert name in names
    assert all(c["status"] in ("ok", "warn", "fail") for c in data["checks"])
    assert result.exit_code == (0 if data["can_record"] else 1)


def test_record_output_folder_missing(tmp_path: Path) -> None:
    line = fails_with(["record", "-o", str(tmp_path / "nope" / "x.parquet"), "--", "true"])
    assert "no such directory" in line


def test_help_lists_commands_in_the_order_a_user_meets_them() -> None:
    from herdtrace.cli import ORDER

    out = CliRunner().invoke(app, ["--help"]).output
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:8] == ["doctor", "top", "record", "analyze", "report", "lab", "bench", "summarize"]
    assert listed == list(ORDER)
    for name in listed:
        assert "..." not in next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert "Example:" in CliRunner().invoke(app, [name, "--help"]).output, name
