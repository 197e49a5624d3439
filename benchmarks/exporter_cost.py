"""What leaving `herdtrace exporter` running costs, side by side in one run.

    python -m benchmarks.exporter_cost [--rounds 3] [--seconds 5]
    python -m benchmarks.exporter_cost --soak-minutes 60

Cost per connection, not throughput (which swings 5-20% run to run here): the
kernel time of each tracer's own BPF programs (bpf_stats) per accepted connection,
and the exporter's user-space CPU (schedstat) in cores, under ab opening a new
connection per request at the rate this machine sustains. Throughput is printed
too, as a ratio to untraced with its spread. Rounds interleave the tracers.

--soak-minutes: the exporter watching the whole host while servers start on new
ports and stop, every minute its RSS, the kernel maps' entries and the listeners
it serves: flat memory is the target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import probe_time, servers, tracers
from herdtrace import procfs
from herdtrace.workloads import real_servers
from tests.integration.test_exporter import scrape_metrics as scrape

CONCURRENCY = 8
TARGETS = ("lab epoll-shared", "nginx (4 workers)")
# The target is bpftrace's counting script; the same script also telling listener
# wakings from the rest (what the exporter's herd figures need) is printed beside it,
# as a reference, not in its place.
# The exporter's own probe set with every program returning at once, then only
# finding whether the event is a traced thread's: what attaching those tracepoints
# costs in bpf_stats run time before any counting (the floor of that probe set).
EMPTY, FILTER = tracers.exporter_ablated("empty"), tracers.exporter_ablated("filter")
KINDS: tuple[type[tracers.Tracer], ...] = (tracers.Tracer, tracers.Bpftrace, tracers.BpftraceHerd,
                                          tracers.Exporter, EMPTY, FILTER)


def ab_connections(port: int, seconds: float) -> tuple[int, float]:
    """New connections (one request each) ab completed, and its wall time."""
    out = subprocess.run(["ab", "-q", "-r", "-c", str(CONCURRENCY), "-t", str(seconds),
                          "-n", "10000000", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=False).stdout
    done = next((int(line.split()[-1]) for line in out.splitlines()
                 if line.startswith("Complete requests:")), 0)
    took = next((float(line.split()[-2]) for line in out.splitlines()
                 if line.startswith("Time taken for tests:")), seconds)
    return done, took


SCRAPE_EVERY_S = 1.0  # harsher than Prometheus' usual 15-60 s: each scrape reads the maps


def scraping(tracer: tracers.Exporter, stop: threading.Event) -> None:
    while not stop.wait(SCRAPE_EVERY_S):
        with contextlib.suppress(OSError):
            scrape(tracer.metrics_port)


def one(kind: type[tracers.Tracer], target: str, seconds: float) -> dict[str, float]:
    work = tracers.workdir()
    tracer = kind()
    stop = threading.Event()
    with servers.targets(work)[target] as (pids, port):
        existing = set(probe_time.snapshot())
        tracer.start(pids, work)
        if isinstance(tracer, tracers.Exporter):
            threading.Thread(target=scraping, args=(tracer, stop), daemon=True).start()
        before = probe_time.snapshot()
        done, took = ab_connections(port, seconds)
        after = probe_time.snapshot()
        stop.set()
        tracer.stop()
    own = [pid for pid in after if pid not in existing]
    # Summed by program id: names are cut to 15 characters and several share one.
    per_program: dict[str, float] = {}
    runs = 0
    for p in own:
        name, runs_now, ns_now = after[p]
        _, runs_then, ns_then = before.get(p, ("", 0, 0))
        per_program[name] = per_program.get(name, 0.0) + (ns_now - ns_then) / max(done, 1)
        runs += runs_now - runs_then
    return {"conn_per_s": done / took, "bpf_ns_per_conn": sum(per_program.values()),
            "runs_per_conn": runs / max(done, 1),
            "user_cores": (tracer.cpu_s or 0.0) / took,
            **{f"ns/conn {name}": ns for name, ns in per_program.items()}}


def cost(rounds: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    with probe_time.bpf_stats():
        for target in TARGETS:
            for _ in range(rounds):
                for kind in KINDS:
                    row = one(kind, target, seconds)
                    bucket = results.setdefault(f"{target} | {kind.name}", {})
                    for k, v in row.items():
                        bucket.setdefault(k, []).append(v)
    return results


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def report(results: dict[str, dict[str, list[float]]]) -> None:
    print(f"{'target | tracer':48} {'conn/s':>22} {'BPF ns/conn':>22} {'runs/conn':>10} "
          f"{'user cores':>12}")
    for name, r in results.items():
        print(f"{name:48} {spread(r['conn_per_s']):>22} {spread(r['bpf_ns_per_conn']):>22} "
              f"{statistics.median(r['runs_per_conn']):>10.1f} {statistics.median(r['user_cores']):>12.4f}")
    for target in TARGETS:
        base = results[f"{target} | untraced"]["conn_per_s"]
        bt = results[f"{target} | bpftrace"]
        ex = results[f"{target} | herdtrace exporter"]
        ratio = [e / statistics.median(base) for e in ex["conn_per_s"]]
        bt_ns, ex_ns = statistics.median(bt["bpf_ns_per_conn"]), statistics.median(ex["bpf_ns_per_conn"])
        user = statistics.median(ex["user_cores"])
        print(f"\n{target}:")
        print(f"  BPF run time per connection: exporter {ex_ns:.0f} ns, bpftrace counting "
              f"{bt_ns:.0f} ns: ratio {ex_ns / bt_ns:.2f} "
              f"({'met' if ex_ns <= bt_ns else f'missed by {ex_ns - bt_ns:.0f} ns'}: target <= 1.00)")
        herd_ns = statistics.median(results[f"{target} | {tracers.BpftraceHerd.name}"]["bpf_ns_per_conn"])
        print(f"  reference: bpftrace counting the herd {herd_ns:.0f} ns: exporter / it "
              f"{ex_ns / herd_ns:.2f}")
        for floor in (EMPTY, FILTER):
            floor_ns = statistics.median(results[f"{target} | {floor.name}"]["bpf_ns_per_conn"])
            runs = statistics.median(results[f"{target} | {floor.name}"]["runs_per_conn"])
            print(f"  the exporter's probes, {floor.name.split(', ')[1]}: {floor_ns:.0f} ns "
                  f"({runs:.1f} runs a connection): {floor_ns / bt_ns:.2f} of bpftrace counting's")
        print(f"  exporter user-space CPU: {user:.4f} cores "
              f"({'met' if user <= 0.01 else f'missed by {user - 0.01:.4f}'}: target <= 0.01)")
        print(f"  throughput vs untraced: {statistics.median(ratio):.3f} "
              f"[{min(ratio):.3f}-{max(ratio):.3f}]")
        for label, r in (("exporter", ex), ("bpftrace", bt),
                         ("bpftrace counting the herd", results[f"{target} | {tracers.BpftraceHerd.name}"])):
            progs = sorted(((k[8:], statistics.median(v)) for k, v in r.items()
                            if k.startswith("ns/conn ")), key=lambda kv: -kv[1])
            print(f"  {label} per program, ns/conn: " +
                  ", ".join(f"{name} {ns:.0f}" for name, ns in progs if ns >= 0.5))


def rss_kib(pid: int) -> int:
    status = procfs.read_text(Path(f"/proc/{pid}/status")) or ""
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)


def soak(minutes: float) -> None:
    """Servers come and go on new ports while the exporter watches the host."""
    metrics_port = real_servers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "herdtrace", "exporter", "--web.listen-address",
                             f"127.0.0.1:{metrics_port}"], stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    proc.stderr.readline()
    start = time.monotonic()
    next_report, started = start, 0
    print("minute  rss_kib  by_listener  by_accept_fd  listeners  threads  servers_started",
          flush=True)
    try:
        while time.monotonic() - start < minutes * 60:
            work = tracers.workdir()
            with servers.targets(work)["lab epoll-shared"] as (_, port):
                started += 1
                ab_connections(port, 2)
            time.sleep(3)
            if time.monotonic() >= next_report:
                m = scrape(metrics_port)
                entries = {k.split('"')[1]: v for k, v in m.items()
                           if k.startswith("herdtrace_exporter_map_entries")}
                print(f"{(time.monotonic() - start) / 60:6.1f}  {rss_kib(proc.pid):7d}  "
                      f"{entries.get('by_listener', 0):11.0f}  {entries.get('by_accept_fd', 0):12.0f}  "
                      f"{m.get('herdtrace_exporter_listeners', 0):9.0f}  "
                      f"{m.get('herdtrace_exporter_threads_traced', 0):7.0f}  {started:15d}",
                      flush=True)
                next_report += 60
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--soak-minutes", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the raw rounds here")
    args = ap.parse_args()
    if args.soak_minutes:
        soak(args.soak_minutes)
        return
    results = cost(args.rounds, args.seconds)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
