"""`herdtrace doctor`: can recording work here, and what to fix if not."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from herdtrace.errors import HerdtraceError
from herdtrace.probes import features, program

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = True  # a failed required check means recording cannot work


def check_privilege() -> Check:
    problem = features.privilege_problem()
    if problem is None:
        return Check("privilege", OK, "running as root" if os.geteuid() == 0 else "CAP_BPF and CAP_PERFMON")
    return Check("privilege", FAIL, problem.cause, problem.fix)


def check_bpf_syscall() -> Check:
    err = features.bpf_syscall_errno()
    if err in (0, errno.EINVAL, errno.E2BIG):
        return Check("bpf syscall", OK, "bpf(2) is available")
    if err == errno.EPERM:
        return Check("bpf syscall", FAIL, "bpf(2) refused (EPERM)", "run as root")
    return Check("bpf syscall", FAIL, f"bpf(2) unavailable ({errno.errorcode.get(err, err)})",
                 "use a kernel built with CONFIG_BPF_SYSCALL")


def check_tracefs() -> Check:
    root = features.tracefs_root()
    if root:
        return Check("tracefs", OK, f"mounted at {root}")
    return Check("tracefs", FAIL, features.tracefs_problem(),
                 "make setup (mounts it), and run as root")


def check_tracepoints() -> Check:
    missing = features.missing_tracepoints(features.REQUIRED_TRACEPOINTS)
    if not missing:
        n = len(features.REQUIRED_TRACEPOINTS)
        return Check("tracepoints", OK, f"all {n} required tracepoints present")
    return Check("tracepoints", FAIL, f"missing: {', '.join(missing)}",
                 "mount tracefs; a kernel with CONFIG_FTRACE_SYSCALLS and sched/sock events")


def check_headers() -> Check:
    h = features.kernel_headers()
    if h is None:
        return Check("kernel headers", FAIL, "no /lib/modules/$(uname -r)/build",
                     "make setup (links the nearest Debian linux-headers)")
    if h.matches:
        return Check("kernel headers", OK, f"{h.path} matches {h.running}")
    return Check("kernel headers", WARN,
                 f"{h.path} is {h.release}, kernel is {h.running}: safe here, no struct layout is "
                 "taken from them (the probes read kernel fields at offsets from the kernel's BTF)",
                 required=False)


def check_bcc() -> Check:
    try:
        bcc = program.import_bcc()
    except HerdtraceError as exc:
        return Check("bcc", FAIL, str(exc).split(":")[0], "apt-get install python3-bpfcc; make setup")
    return Check("bcc", OK, f"BPF compiler collection at {os.path.dirname(bcc.__file__)}")


def try_load(text: bytes) -> str | None:
    """Load a tiny program with bcc: None when the kernel took it, else why not
    ("bcc missing", or the kernel's refusal)."""
    try:
        bcc = program.import_bcc()
        with program.quiet_stderr():
            bcc.BPF(text=text).cleanup()
    except HerdtraceError:
        return "bcc missing"
    except Exception as exc:  # bcc raises bare Exception when the kernel refuses the program
        return str(exc) or "refused"
    return None


def check_ringbuf() -> Check:
    if features.hidden("ringbuf"):
        return Check("ring buffer", FAIL, "absent (hidden by HERDTRACE_HIDE_FEATURES)",
                     "a kernel >= 5.8 with BPF ring buffer")
    why = try_load(b"BPF_RINGBUF_OUTPUT(rb, 1); int noop(void *ctx) { return 0; }")
    if why == "bcc missing":
        return Check("ring buffer", FAIL, "bcc missing", "see the bcc line")
    if why:
        return Check("ring buffer", FAIL, f"BPF ring buffer map refused: {why}",
                     "a kernel >= 5.8 with BPF ring buffer")
    return Check("ring buffer", OK, "BPF ring buffer map created")


def check_sk_data_ready() -> Check:
    """Absent, listener wakeups still come from the connection-state rule: no fix needed."""
    return Check("sock:sk_data_ready", OK, program.kernel_features()["sk_data_ready"],
                 required=False)


def check_kernel_features() -> Check:
    """The rest of what this kernel gives, and how herdtrace makes up for what it lacks."""
    have = program.kernel_features()
    detail = "; ".join(f"{k}: {v}" for k, v in have.items() if k not in ("sk_data_ready", "ringbuf"))
    return Check("kernel features", OK, detail, required=False)


def check_kprobes() -> Check:
    if features.kprobes_available():
        return Check("kprobes", OK, "available (not needed: probes use tracepoints)",
                     required=False)
    return Check("kprobes", WARN, "not in this kernel; not needed, probes use tracepoints only",
                 required=False)


def check_fentry() -> Check:
    if not features.btf_available():
        return Check("fentry", WARN, "no BTF: unavailable; not needed, probes use tracepoints",
                     required=False)
    why = try_load(b"KFUNC_PROBE(do_nanosleep) { return 0; }")
    if why == "bcc missing":
        return Check("fentry", WARN, "not tried: bcc missing", required=False)
    if why:
        return Check("fentry", WARN, "refused by this kernel; not needed, probes use tracepoints",
                     required=False)
    return Check("fentry", OK, "available (not needed: probes use tracepoints)", required=False)


CHECKS: tuple[Callable[[], Check], ...] = (
    check_privilege, check_bpf_syscall, check_tracefs, check_tracepoints, check_headers,
    check_bcc, check_ringbuf, check_sk_data_ready, check_kernel_features, check_kprobes,
    check_fentry,
)


def run_checks() -> list[Check]:
    results: list[Check] = []
    for check in CHECKS:
        if check in (check_ringbuf, check_fentry) and any(r.status == FAIL for r in results):
            name = "ring buffer" if check is check_ringbuf else "fentry"
            results.append(Check(name, FAIL, "not tried: fix the failures above first",
                                 required=check is check_ringbuf))
            continue
        results.append(check())
    return results


def can_record(results: list[Check]) -> bool:
    return not any(r.status == FAIL and r.required for r in results)


def as_json(results: list[Check]) -> dict[str, object]:
    return {"can_record": can_record(results), "checks": [asdict(r) for r in results]}
