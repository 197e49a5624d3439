"""`make test-kernels`: boot other kernels with this machine's file system (virtme-ng)
and run the core of the suite inside each, then print a table.

    python scripts/test_kernels.py [6.1 6.12 ...]

Each kernel is Debian's image and headers of that series (installed when missing).
The guest mounts tracefs, runs `herdtrace doctor --json` and the CHECKS below with
HERDTRACE_REQUIRE_BPF=1, and writes its results to a folder it may write to. KVM is
used where a guest boots with it (tried first, bounded), qemu's TCG otherwise; the
table says which. Exit 1 when a check failed on any kernel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The named subset: each id is a pytest node, its label the table's column.
TRUTH = "tests/integration/test_record.py::test_record_by_pid_matches_ground_truth[{}-processes]"
CHECKS = {
    "doctor": "tests/integration/test_doctor.py::test_doctor_says_recording_can_work",
    "epoll-shared": TRUTH.format("epoll-shared"),
    "epoll-exclusive": TRUTH.format("epoll-exclusive"),
    "accept-blocking": TRUTH.format("accept-blocking"),
    "gunicorn vs bpftrace": "tests/integration/test_real_servers.py::test_herd_factor_on_real_servers[gunicorn-sync]",
    "Ctrl-C reads back": "tests/integration/test_stop.py::test_signal_leaves_a_complete_recording[SIGINT]",
    "exporter vs lab": "tests/integration/test_exporter.py::test_in_kernel_counts_are_the_labs_own",
}
KVM_TRY_S = 60  # a nested guest that hangs under KVM (seen here) is given up on after this
GUEST_TIMEOUT_S = 1500


def say(text: str) -> None:
    print(f"test-kernels: {text}", flush=True)


def apt_install(*packages: str) -> None:
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
    ).stdout != "install ok installed"]
    if missing:
        say(f"installing {' '.join(missing)}")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def newest(series: str) -> str:
    """The newest Debian kernel ABI of a series that has both image and headers
    (6.1 -> 6.1.0-57-amd64; 6.12 -> 6.12.118+deb12-amd64)."""
    out = subprocess.run(["apt-cache", "search", "--names-only", f"^linux-headers-{re.escape(series)}[.-]"],
                         capture_output=True, text=True, check=True).stdout
    abis = [m.group(1) for m in re.finditer(
        rf"^linux-headers-({re.escape(series)}[.-][0-9][^ ]*-amd64) ", out, re.M)]
    abis = [a for a in abis if re.fullmatch(rf"{re.escape(series)}(\.0-\d+|\.\d+\+deb\d+)-amd64", a)]
    if not abis:
        raise SystemExit(f"test-kernels: no Debian kernel of series {series} found by apt-cache")
    return sorted(abis, key=lambda a: [int(x) for x in re.findall(r"\d+", a)])[-1]


def guest_script(out: Path) -> str:
    nodes = " ".join(f"'{n}'" for n in CHECKS.values())
    return f"""set -u
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
cd {ROOT}
uname -r > {out}/release
.venv/bin/herdtrace doctor --json > {out}/doctor.json 2> {out}/doctor.err
HERDTRACE_REQUIRE_BPF=1 HERDTRACE_ATTACH_TIMEOUT_S=600 \\
  .venv/bin/python -m pytest -p no:cacheprovider -q -x --timeout 900 \\
  --junitxml={out}/junit.xml {nodes} > {out}/pytest.log 2>&1
echo $? > {out}/rc
"""


def boot(image: Path, out: Path, kvm: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    script = out / "guest.sh"
    script.write_text(guest_script(out))
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    argv = [vng, "--run", str(image), "--memory", "4G", "--cpus", "2", "--rwdir", str(out),
            *([] if kvm else ["--disable-kvm"]), "--exec", f"sh {script}"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        console, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        console, _ = proc.communicate()
        return subprocess.CompletedProcess(argv, -1, console, "")
    return subprocess.CompletedProcess(argv, proc.returncode, console, "")


def kvm_boots(image: Path) -> bool:
    if not os.access("/dev/kvm", os.W_OK):
        return False
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # In a session of its own: a hung guest's qemu is killed with the group, not left
    # running beside the real one.
    proc = subprocess.Popen([vng, "--run", str(image), "--memory", "1G", "--exec", "true"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        return proc.wait(KVM_TRY_S) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def results(out: Path) -> dict[str, str]:
    """Each check's result from the guest's junit file: passed, failed, skipped, not run."""
    found = {label: "not run" for label in CHECKS}
    junit = out / "junit.xml"
    if not junit.exists():
        return found
    by_name = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        status = ("failed" if case.find("failure") is not None or case.find("error") is not None
                  else "skipped" if case.find("skipped") is not None else "passed")
        by_name[case.get("name", "")] = status
    for label, node in CHECKS.items():
        found[label] = by_name.get(node.split("::")[-1], "not run")
    return found


def lacks(out: Path) -> str:
    try:
        doctor = json.loads((out / "doctor.json").read_text())
    except (OSError, ValueError):
        return "doctor did not answer"
    features = next((c["detail"] for c in doctor["checks"] if c["name"] == "kernel features"), "")
    missing = [name for name, text in (kv.split(": ", 1) for kv in features.split("; ") if ": " in kv)
               if not text.startswith(("raw tracepoints", "traced", "counted", "present"))]
    sk = next((c["detail"] for c in doctor["checks"] if c["name"] == "sock:sk_data_ready"), "")
    if sk.startswith("absent"):
        missing.insert(0, "sk_data_ready")
    return ", ".join(missing) or "nothing herdtrace uses"


def run(series: list[str]) -> int:
    apt_install("qemu-system-x86", "busybox-static")
    rows, failed = [], False
    for s in series:
        abi = newest(s)
        apt_install(f"linux-image-{abi}", f"linux-headers-{abi}")
        image = Path(f"/boot/vmlinuz-{abi}")
        started = time.monotonic()
        kvm = kvm_boots(image)
        out = Path(tempfile.mkdtemp(prefix=f"herdtrace-kernel-{s}-"))
        say(f"{abi}: booting under {'KVM' if kvm else 'TCG (qemu, no KVM)'}; results in {out}")
        done = boot(image, out, kvm, GUEST_TIMEOUT_S)
        guest_rc = done.returncode
        (out / "console.log").write_text(done.stdout or "")
        checks = results(out)
        took = time.monotonic() - started
        failed |= guest_rc != 0 or any(v != "passed" for v in checks.values())
        rows.append((abi, "KVM" if kvm else "TCG", lacks(out), checks, took))
        log = out / "pytest.log"
        if any(v != "passed" for v in checks.values()) and log.exists():
            say(f"{abi}: pytest's last lines:\n" + "\n".join(log.read_text().splitlines()[-25:]))
    print("\n| kernel | accel | lacks | " + " | ".join(CHECKS) + " | time |")
    print("|---|---|---|" + "---|" * len(CHECKS) + "---|")
    for abi, accel, lack, checks, took in rows:
        print(f"| {abi} | {accel} | {lack} | " + " | ".join(checks[c] for c in CHECKS)
              + f" | {took / 60:.1f} min |")
    return 1 if failed else 0


def only(args: list[str]) -> list[str]:
    """`--only LABEL[,LABEL]`: run these of CHECKS alone (a quicker look at one)."""
    if "--only" not in args:
        return args
    i = args.index("--only")
    wanted = set(args[i + 1].split(",")) if i + 1 < len(args) else set()
    unknown = wanted - set(CHECKS)
    if not wanted or unknown:
        raise SystemExit(f"test-kernels: --only takes labels of {', '.join(CHECKS)}")
    for label in [c for c in CHECKS if c not in wanted]:
        del CHECKS[label]
    return args[:i] + args[i + 2:]


if __name__ == "__main__":
    raise SystemExit(run(only(sys.argv[1:]) or ["6.1", "6.12"]))
