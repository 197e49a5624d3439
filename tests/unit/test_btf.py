"""The BTF reader against the running kernel's own BTF, cross-checked with bpftool
where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from herdtrace.probes import btf

pytestmark = pytest.mark.skipif(not btf.VMLINUX.exists(), reason="this kernel exposes no BTF")


def bpftool_member_offset(struct: str, member: str) -> int:
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(btf.VMLINUX), "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    body = out.split(f"STRUCT '{struct}' ", 1)[1].split("\n[", 1)[0]
    match = re.search(rf"'{member}' type_id=\d+ bits_offset=(\d+)", body)
    assert match, f"{struct}.{member} not in bpftool's dump"
    return int(match.group(1)) // 8


def test_task_offsets_match_bpftool() -> None:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    offsets = btf.task_offsets(btf.Btf())
    assert offsets["TASK_PID_OFF"] == bpftool_member_offset("task_struct", "pid")
    assert offsets["TASK_STATE_OFF"] == bpftool_member_offset("task_struct", "__state")
    cpu = bpftool_member_offset("task_struct", "thread_info") + bpftool_member_offset("thread_info", "cpu")
    assert offsets["TASK_CPU_OFF"] == cpu
    runtime = bpftool_member_offset("task_struct", "se") + bpftool_member_offset(
        "sched_entity", "sum_exec_runtime")
    assert offsets["TASK_RUNTIME_OFF"] == runtime


def test_raw_tracepoint_arguments() -> None:
    kernel = btf.Btf()
    assert kernel.raw_tracepoint_args("sched_waking") == 1
    assert kernel.raw_tracepoint_args("sched_switch") in (3, 4)  # prev_state since 5.18
    assert kernel.raw_tracepoint_args("no_such_tracepoint") is None


def test_not_btf_is_an_error(tmp_path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(btf.BtfError):
        btf.Btf(junk)
