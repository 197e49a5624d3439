"""The BPF program itself: loads on tracepoints, agrees with the schema, sees a process."""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herdtrace.analysis import load
from herdtrace.errors import HerdtraceError
from herdtrace.probes import program
from herdtrace.schema import EVENT_DTYPE, FIELDS


def test_kernel_struct_matches_schema() -> None:
    bpf = program.load(program.plan(program.ProbeOptions(ringbuf_pages=8)))
    try:
        struct = type(bpf[b"traced"].Leaf().wakeup)
        assert ctypes.sizeof(struct) == EVENT_DTYPE.itemsize
        names = [name for name, *_ in struct._fields_]
        assert names == [f.name for f in FIELDS]
        fields = EVENT_DTYPE.fields
        assert fields is not None
        for f in FIELDS:
            assert getattr(struct, f.name).offset == fields[f.name][1], f.name
            assert getattr(struct, f.name).size == fields[f.name][0].itemsize, f.name
    finally:
        bpf.cleanup()


def _programs(plan: program.ProbePlan) -> set[str]:
    """The programs `plan` loads (and attaches), by name; unloaded again."""
    bpf = program.load(plan)
    try:
        return {name.decode() for name in bpf.funcs}
    finally:
        bpf.cleanup()


def _loaded(ablate: str | None = None, connections: bool = True) -> set[str]:
    return _programs(program.plan(program.ProbeOptions(ringbuf_pages=8, ablate=ablate,
                                                       connections=connections)))


def test_the_counting_ablation_attaches_only_what_a_counting_script_does() -> None:
    """bench-perf's first ablation row: a counting script's tracepoints (the wait
    syscalls and sched_waking) with empty programs; the floor adds the rest."""
    beyond = ("sched_switch", "sched_process_fork", "sched_process_exit",
              "inet_sock_set_state", "sk_data_ready")
    counting, floor = _loaded("empty-counting"), _loaded("empty")
    assert counting < floor
    assert {name for name in floor - counting if not name.endswith(beyond)} == set()
    assert all(any(name.endswith(tp) for name in floor - counting) for tp in beyond)
    assert any(name.endswith("sched_waking") for name in counting)
    assert any(name.endswith("sys_exit_accept4") for name in counting)
    assert any(name.endswith("sys_enter_epoll_wait") for name in counting)


def test_without_connections_the_state_probe_is_left_out() -> None:
    """--no-connections: no inet_sock_set_state; a received packet ends a readable
    socket's wakeups instead (net:netif_receive_skb). The rest is as recorded."""
    full, light = _loaded(), _loaded(connections=False)
    assert any(name.endswith("inet_sock_set_state") for name in full)
    assert not any(name.endswith("inet_sock_set_state") for name in light)
    assert {name for name in light - full} == {name for name in light if name.endswith("netif_receive_skb")}
    assert len(light - full) == 1
    assert full - light == {name for name in full if name.endswith("inet_sock_set_state")}
    plan = program.plan(program.ProbeOptions(connections=False))
    assert "sock:inet_sock_set_state" not in plan.methods
    assert plan.methods["net:netif_receive_skb"] == "raw_tracepoint"
    assert plan.attribution == "sk_data_ready"


def test_classic_tracepoints_are_the_fallback_and_load_here() -> None:
    """Where the kernel's BTF does not give the raw tracepoints' offsets, every probe
    is a classic tracepoint (the listener rule then bounded in time): that program
    compiles and loads too, and the plan says so."""
    plan = program.plan(program.ProbeOptions(ringbuf_pages=8, raw_tracepoints=False))
    assert set(plan.methods.values()) == {"tracepoint"}
    assert not any(f.startswith(("-DRAW_SCHED", "-DRAW_NET")) for f in plan.cflags)
    names = _programs(plan)
    assert names and not any(name.startswith("raw_tracepoint") for name in names)
    assert any(name.endswith("sk_data_ready") for name in names) == (plan.attribution == "sk_data_ready")


@pytest.mark.parametrize("options", [{"cause_basis": "conn-state"}, {"cross_check_causes": True}])
def test_without_connections_refuses_the_connection_state_rule(options: dict[str, object]) -> None:
    with pytest.raises(HerdtraceError, match="--no-connections works with sk_data_ready alone"):
        program.plan(program.ProbeOptions(connections=False, **options))  # type: ignore[arg-type]


def test_sees_the_wakeups_of_a_started_process(tmp_path: Path) -> None:
    out = tmp_path / "select.parquet"
    script = "import select\nfor _ in range(20):\n    select.select([], [], [], 0.01)\n"
    proc = subprocess.run([sys.executable, "-m", "herdtrace", "record", "-o", str(out), "--",
                           sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rec = load.load_recording(out)
    # Twenty timed-out selects: twenty timer wakeups inside pselect6, none absorbed.
    ps = rec.wakeups[rec.wakeups["wait_call"] == "pselect6"]
    assert len(ps) == 20
    assert (ps["outcome"] == "other").all()
    assert (ps["cause"] == "timer").all()
    assert (ps["tgid"] == rec.threads["tgid"].iloc[0]).all()
    # Under CPU contention the kernel now and then runs no probe for a timer's waking
    # (bpftrace misses it too): the wakeup is still there, found at its switch-in,
    # counted, and only its wake latency unknown.
    assert ps["waking_unseen"].sum() == rec.meta.wakings_unseen
    assert ps.loc[~ps["waking_unseen"], "wake_latency_ns"].notna().all()
    assert rec.meta.lost_events == 0
    assert rec.meta.stop_reason == "target exited"


HOLDER = """
import select, socket, sys
lst = socket.create_server(("127.0.0.1", 0))
print(lst.getsockname()[1], flush=True)
conns = [lst.accept()[0] for _ in range(8)]
waiting = set(conns)
while waiting:
    ready, _, _ = select.select(list(waiting), [], [], 5)
    for c in ready:
        c.recv(1)
        waiting.discard(c)
"""


def test_a_full_connection_table_forgets_the_oldest(tmp_path: Path) -> None:
    """Eight connections held open by a server, with room for four: the four oldest
    are forgotten, counted, and their data wakes the server as a plain socket's."""
    out = tmp_path / "held.parquet"
    rec_proc = subprocess.Popen(
        [sys.executable, "-m", "herdtrace", "record", "--max-conns", "4", "-o", str(out), "--",
         sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert rec_proc.stdout is not None
    port = int(rec_proc.stdout.readline())
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    time.sleep(0.2)  # all accepted
    for c in clients:
        c.send(b"x")
        time.sleep(0.02)  # one wakeup each
    _, err = rec_proc.communicate(timeout=60)
    for c in clients:
        c.close()
    assert rec_proc.returncode == 0, err
    assert "4 connections forgotten" in err
    rec = load.load_recording(out)
    assert rec.meta.conns_evicted == 4
    assert len(rec.connections) == 8
    w = rec.wakeups
    data = w[(w["wait_call"] == "pselect6") & w["cause"].isin(["connection", "socket"])]
    assert len(data) == 8
    newest = sorted(rec.connections["conn_id"])[4:]
    assert (data["cause"].iloc[:4] == "socket").all()
    assert (data["cause"].iloc[4:] == "connection").all()
    assert sorted(data["conn_id"].iloc[4:]) == newest
