"""Build and load the herd BPF program: the .bpf.c file plus -D options."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdtrace.errors import HerdtraceError
from herdtrace.probes import btf, features
from herdtrace.schema import CAUSE_WINDOW_NS, CONN_WAYS, CONN_WINDOW_NS, HEADER_PATH

SOURCE_PATH = Path(__file__).parent / "herd.bpf.c"
FIX = "run `herdtrace doctor` (or `make setup`) for the fix"
CAUSE_BASES = ("auto", "conn-state")
RECEIVE_TRACEPOINT = "net:netif_receive_skb"  # ends a listener's run of wakeups
# bench-perf's ablation levels in its table's order, each with its ABLATE_* in herd.bpf.c.
ABLATIONS = {"empty-counting": 4, "empty": 1, "filter": 2, "state": 3}
# herdtrace's tracepoints a counting script does without (causes, thread following):
# the "empty-counting" ablation leaves them out.
BEYOND_COUNTING_TRACEPOINTS = ("sched:sched_switch", "sched:sched_process_fork",
                               "sched:sched_process_exit", "sock:inet_sock_set_state",
                               "sock:sk_data_ready", RECEIVE_TRACEPOINT)
MAX_CONNS_LIMIT = 1 << 22  # 64 MiB of kernel memory at 16 bytes a connection


@dataclass(frozen=True)
class ProbeOptions:
    ringbuf_pages: int = 4096  # 16 MiB with 4 KiB pages: ~130k records of slack
    max_threads: int = 65535  # slots are u16 in the kernel
    max_conns: int = 65536  # sets of CONN_WAYS in the kernel's connection table
    cause_window_ns: int = CAUSE_WINDOW_NS
    conn_window_ns: int = CONN_WINDOW_NS
    # How listener wakeups are recognised: "auto" (sock:sk_data_ready where the kernel
    # has it, else the connection-state rule), or "conn-state" to force the rule that
    # works on every kernel since 4.16.
    cause_basis: str = "auto"
    # Also run the connection-state rule beside sk_data_ready and keep its verdict in
    # each wakeup's flags (Flag.CONN_STATE_LISTENER), to check one against the other.
    cross_check_causes: bool = False
    # Follow accepted connections (sock:inet_sock_set_state): connection records with
    # their peers, accept latency, each wakeup's connection. False leaves that probe
    # out, the costliest per request, and tells listener wakeups from the listening
    # socket's own state (needs sk_data_ready and the kernel's BTF).
    connections: bool = True
    # bench-perf's ablation: one of ABLATIONS (see ABLATE in herd.bpf.c).
    ablate: str | None = None
    # Raw tracepoints for the hottest probes where the running kernel's BTF gives the
    # offsets they need; False keeps every probe a classic tracepoint.
    raw_tracepoints: bool = True
    let_perf_see: bool = False  # keep a concurrent perf record of the same tracepoints working
    # Count per listener and per accepting socket in maps (the exporter, `top`), no
    # records: what crosses to user space is read on demand, not per wakeup.
    aggregate: bool = False
    max_listeners: int = 4096  # with aggregate: listening ports counted at once
    sk_key: int = field(default_factory=lambda: secrets.randbits(63))


@dataclass(frozen=True)
class ProbePlan:
    """What will be loaded: compiler flags and the method each probe uses."""

    cflags: tuple[str, ...]
    methods: dict[str, str]
    attribution: str  # how causes were decided: "sk_data_ready" or "conn_state"

    @property
    def cpu_time(self) -> str:
        """How each wakeup's cpu_ns is taken: the kernel's run time read at every
        switch (raw sched_switch), else the clock between switches."""
        return "sched_switch run time" if "-DRAW_SCHED" in self.cflags else "sched_switch"


def largest_ringbuf_pages() -> int:
    """The largest ring this machine can give: the kernel caps a BPF ring's data at
    just under 4 GiB, and it is locked memory, so at most a quarter of memory here."""
    page = os.sysconf("SC_PAGE_SIZE")
    cap = min((1 << 32) - 2 * page, os.sysconf("SC_PHYS_PAGES") * page // 4)
    pages = 1
    while pages * 2 * page <= cap:
        pages *= 2
    return pages


def power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check_ringbuf_pages(pages: int) -> None:
    if not power_of_two(pages):
        raise HerdtraceError(f"--buffer-pages must be a power of two, got {pages}")
    largest = largest_ringbuf_pages()
    if pages > largest:
        raise HerdtraceError(f"--buffer-pages {pages} is more than this machine can give a ring "
                             f"buffer; the largest is {largest} "
                             f"({largest * os.sysconf('SC_PAGE_SIZE') >> 20} MiB)")


def check_max_conns(n: int) -> None:
    if n < CONN_WAYS or n > MAX_CONNS_LIMIT or not power_of_two(n):
        raise HerdtraceError(f"--max-conns must be a power of two from {CONN_WAYS} to "
                             f"{MAX_CONNS_LIMIT}, got {n}")


def plan(options: ProbeOptions) -> ProbePlan:
    if not features.ringbuf_available():
        raise HerdtraceError("this kernel has no BPF ring buffer (Linux 5.8+), which the probes "
                             "need: record, top and the exporter cannot run here")
    check_ringbuf_pages(options.ringbuf_pages)
    check_max_conns(options.max_conns)
    if features.tracefs_root() is None:
        raise HerdtraceError(features.tracefs_problem())
    missing = features.missing_tracepoints(features.REQUIRED_TRACEPOINTS)
    if missing:
        raise HerdtraceError(f"missing tracepoints {', '.join(missing)}: {FIX}")
    cflags = [
        f"-I{HEADER_PATH.parent}",
        f"-DRINGBUF_PAGES={options.ringbuf_pages}",
        f"-DMAX_THREADS={options.max_threads}",
        # Without connections followed the table is never used: its smallest size.
        f"-DMAX_CONNS={options.max_conns if options.connections else CONN_WAYS}",
        f"-DPID_MAX={features.pid_max()}",
        f"-DCAUSE_WINDOW_NS={options.cause_window_ns}",
        f"-DCONN_WINDOW_NS={options.conn_window_ns}",
        f"-DSK_KEY={options.sk_key}ULL",
        f"-DTP_RETURN={int(options.let_perf_see)}",
    ]
    methods = {tp: "tracepoint" for tp in features.REQUIRED_TRACEPOINTS}
    if features.tracepoint_exists("syscalls:sys_enter_epoll_pwait2"):
        cflags.append("-DHAVE_EPOLL_PWAIT2")
        methods["syscalls:sys_enter_epoll_pwait2"] = "tracepoint"
        methods["syscalls:sys_exit_epoll_pwait2"] = "tracepoint"
    if options.ablate is not None:
        if options.ablate not in ABLATIONS:
            raise HerdtraceError(f"ablation must be one of {', '.join(ABLATIONS)}, got {options.ablate!r}")
        cflags.append(f"-DABLATE={ABLATIONS[options.ablate]}")
    raw_sched, raw_net = raw_flags(cflags) if options.raw_tracepoints else (False, False)
    if raw_sched:
        methods["sched:sched_waking"] = methods["sched:sched_switch"] = "raw_tracepoint"
    if raw_net:
        methods["sock:inet_sock_set_state"] = "raw_tracepoint"
    if options.cause_basis not in CAUSE_BASES:
        raise HerdtraceError(f"cause basis must be one of {', '.join(CAUSE_BASES)}, got {options.cause_basis!r}")
    attribution = "conn_state"
    if options.cause_basis == "auto" and features.tracepoint_exists("sock:sk_data_ready"):
        cflags.append("-DHAVE_SK_DATA_READY")
        methods["sock:sk_data_ready"] = "raw_tracepoint" if raw_net else "tracepoint"
        attribution = "sk_data_ready"
        if options.cross_check_causes:
            cflags.append("-DCONN_STATE_CHECK")
    if attribution == "conn_state" or options.cross_check_causes:
        if not features.tracepoint_exists(RECEIVE_TRACEPOINT):
            raise HerdtraceError(f"missing tracepoint {RECEIVE_TRACEPOINT} (the connection-state "
                                 f"rule needs it): {FIX}")
        methods[RECEIVE_TRACEPOINT] = "raw_tracepoint" if raw_net else "tracepoint"
    if not options.connections:
        check_without_connections(options, attribution, raw_net)
        cflags.append("-DNO_CONNECTIONS")
        del methods["sock:inet_sock_set_state"]
        methods[RECEIVE_TRACEPOINT] = "raw_tracepoint"  # ends a readable socket's wakeups
    if options.aggregate:
        if options.max_listeners < 1:
            raise HerdtraceError(f"--max-listeners must be at least 1, got {options.max_listeners}")
        cflags += ["-DAGGREGATE", f"-DMAX_LISTENERS={options.max_listeners}",
                   f"-DMAX_ACCEPT_FDS={4 * options.max_listeners}"]
    if options.ablate == "empty-counting":
        methods = {tp: how for tp, how in methods.items() if tp not in BEYOND_COUNTING_TRACEPOINTS}
    return ProbePlan(cflags=tuple(cflags), methods=methods, attribution=attribution)


def connections_optional() -> bool:
    """Whether this kernel can tell listener wakeups without following connections
    (--no-connections): sk_data_ready, and the BTF to read a socket's state."""
    return features.tracepoint_exists("sock:sk_data_ready") and raw_flags([])[1]


def check_without_connections(options: ProbeOptions, attribution: str, raw_net: bool) -> None:
    """--no-connections decides listener wakeups from sk_data_ready and the socket's
    state, read at the running kernel's offsets: it needs both."""
    if options.cause_basis != "auto" or options.cross_check_causes:
        raise HerdtraceError("--no-connections works with sk_data_ready alone: drop "
                             "--cause-basis conn-state and --cross-check-causes")
    if attribution != "sk_data_ready":
        raise HerdtraceError("--no-connections needs tracepoint sock:sk_data_ready "
                             "(Linux 6.3+), which this kernel lacks")
    if not raw_net:
        raise HerdtraceError("--no-connections reads a socket's state at offsets from the "
                             "kernel's BTF (/sys/kernel/btf/vmlinux), which is not usable "
                             "here: " + FIX)


# Raw tracepoints used, and the arguments each must hand over (checked in the BTF).
RAW_SCHED_ARGS = {"sched_waking": 1, "sched_switch": 4}  # prev_state: Linux 5.18+
RAW_NET_ARGS = {"sk_data_ready": 1, "netif_receive_skb": 1, "inet_sock_set_state": 3}


def raw_flags(cflags: list[str]) -> tuple[bool, bool]:
    """Which probe groups can be raw tracepoints here (appending their -D flags):
    only where the kernel's own BTF describes the arguments and offsets they read.
    Elsewhere the classic tracepoints stay, and the metadata says which was used."""
    try:
        kernel = btf.running_kernel()
        offsets = btf.task_offsets(kernel)
    except btf.BtfError:
        return False, False
    raw_sched = not features.hidden("raw_sched") and all(
        kernel.raw_tracepoint_args(n) == k for n, k in RAW_SCHED_ARGS.items())
    if raw_sched:
        cflags.append("-DRAW_SCHED")
        cflags.extend(f"-D{name}={value}" for name, value in offsets.items())
    # sk_data_ready is checked only where the kernel has it (6.3+): before, the
    # other socket probes are raw all the same.
    net_args = {n: k for n, k in RAW_NET_ARGS.items()
                if n != "sk_data_ready" or features.tracepoint_exists("sock:sk_data_ready")}
    raw_net = not features.hidden("raw_net") and all(
        kernel.raw_tracepoint_args(n) == k for n, k in net_args.items())
    if raw_net:
        try:
            sock = btf.sock_offsets(kernel)
        except btf.BtfError:  # sk_protocol a bitfield (before 5.6), or renamed
            raw_net = False
        else:
            cflags.append("-DRAW_NET")
            cflags.extend(f"-D{name}={value}" for name, value in sock.items())
    return raw_sched, raw_net


def kernel_features() -> dict[str, str]:
    """What this kernel gives the probes and how herdtrace makes up for what it lacks:
    doctor prints it, every recording's metadata keeps it."""
    flags: list[str] = []
    raw_sched, raw_net = raw_flags(flags)
    out = {
        "sk_data_ready": ("present: the socket that became readable decides each wakeup's cause"
                          if features.tracepoint_exists("sock:sk_data_ready") else
                          "absent (Linux < 6.3): listener wakeups from the connection-state rule "
                          "(a child established on a traced listener, then the same task's "
                          "wakings on that CPU); record --no-connections unavailable"),
        "raw_sched": ("raw tracepoints for sched_waking and sched_switch (BTF offsets); a "
                      "wakeup's CPU time is the kernel's run time (stolen time left out)" if raw_sched
                      else "classic sched tracepoints (no BTF, or sched_switch without prev_state "
                           "before Linux 5.18): each switch costs a copy of its fields, and a "
                           "wakeup's CPU time is the clock's (a VM's stolen time included)"),
        "raw_net": ("raw tracepoints for the socket probes (BTF offsets of struct sock)" if raw_net
                    else "classic socket tracepoints: a listener is told by a time bound"),
        "epoll_pwait2": ("traced" if features.tracepoint_exists("syscalls:sys_enter_epoll_pwait2")
                         else "absent (Linux < 5.11): not traced, no server can call it"),
        "probe_misses": ("counted (recursion_misses)" if features.recursion_misses_reported()
                         else "not counted (Linux < 5.12): probe misses show as unknown"),
        "ringbuf": "present" if features.ringbuf_available() else "absent (Linux < 5.8): cannot record",
    }
    return out



def source_text(probe_plan: ProbePlan) -> str:
    """The program as it would be compiled: flags, shared header, then the source."""
    flags = "\n".join(f"//   {f}" for f in probe_plan.cflags)
    return (
        f"// cflags:\n{flags}\n\n// ---- {HEADER_PATH.name}\n{HEADER_PATH.read_text()}\n"
        f"// ---- {SOURCE_PATH.name}\n{SOURCE_PATH.read_text()}"
    )


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence libbpf/clang chatter on fd 2 while probing a feature."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError as exc:
        raise HerdtraceError(f"bcc is not importable ({exc}): {FIX}") from None
    if not hasattr(bcc, "BPF"):
        raise HerdtraceError(
            f"the 'bcc' module at {bcc.__file__} is not the BPF compiler collection "
            f"(PyPI's 'bcc' is an unrelated package): {FIX}"
        )
    return bcc


def require_privilege() -> None:
    problem = features.privilege_problem()
    if problem is not None:
        raise HerdtraceError(problem.error())


def load(probe_plan: ProbePlan) -> Any:
    """Compile and attach; returns the bcc.BPF object."""
    require_privilege()
    if features.kernel_headers() is None:
        raise HerdtraceError(f"no kernel headers at /lib/modules/<release>/build: {FIX}")
    bcc = import_bcc()
    try:
        return bcc.BPF(src_file=str(SOURCE_PATH).encode(), cflags=list(probe_plan.cflags))
    except Exception as exc:  # bcc raises bare Exception for compile and attach errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HerdtraceError(f"could not load the BPF program: {first}; {FIX}") from None
