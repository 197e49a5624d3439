"""`make bench-perf`: herdtrace's cost, measured side by side with bpftrace and perf.

1. Observer effect: throughput of a saturating wrk load (a new connection per
   request) on the lab server (epoll-shared, epoll-exclusive; 4 workers) and on
   nginx (4 workers) when installed, untraced and traced by herdtrace record, by a
   bpftrace script counting the same tracepoints in the kernel, and by perf
   record of the same tracepoints. Interleaved A B C D, repeated, with spread.
2. Drain: the highest wakeup-record rate herdtrace records with zero loss, and
   the collector's CPU use, from a C wakeup generator (benchmarks/wakegen.c).
3. Analysis: time and peak memory of analysing 1, 3 and 10 million wakeups.
4. Size: bytes per wakeup on disk, herdtrace's recording against perf.data,
   recorded at the same time on the same run.

Every figure is measured in this run; targets missed are printed with the gap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import analysis_speed, probe_time, servers, tracers
from herdtrace.analysis import load
from herdtrace.bench.tools import run_wrk
from herdtrace.workloads.loadgen import LoadOptions, run_load

TARGETS = {"drain_rate": 300_000, "analysis_10m_s": 10.0, "analysis_10m_mib": 2048.0,
           "stream_100m_s": 60.0, "stream_100m_mib": 1024.0}


def say(text: str) -> None:
    print(text, flush=True)


# ---- 1. observer effect ------------------------------------------------------
def throughput(port: int, seconds: float) -> float:
    return measured_load(port, seconds).rps


# wrk runs one thread: near a full core, it is what caps the throughput.
CLIENT_BOUND_CORES = 0.9
# wrk runs on one CPU, the server and the tracers wherever the scheduler puts them.
# Left free, wrk shared a CPU with whichever workers the scheduler chose, run by run:
# untraced nginx swung 12.9k-19.4k req/s (CV 0.12 over 8 runs), against 15.9k-20.0k
# (CV 0.066) pinned; the lab's CV 0.081 -> 0.064 (docs/DESIGN-DECISIONS.md).
CLIENT_CPU = 1


@contextlib.contextmanager
def client_pinned() -> Iterator[None]:
    """Children started inside (wrk) inherit this affinity; restored after."""
    before = os.sched_getaffinity(0)
    cpu = CLIENT_CPU if CLIENT_CPU in before else min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass(frozen=True)
class Load:
    rps: float
    cpu_us_per_request: float  # the whole machine's busy CPU time over the run, per request
    client_cores: float  # wrk's own CPU (user + system), in cores


def busy_s() -> float:
    """CPU time the machine has spent busy (all but idle and iowait) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measured_load(port: int, seconds: float) -> Load:
    """wrk's throughput, with what each request cost the whole machine (every tracer's
    kernel and user time included, wherever it ran: the server, softirq, the load
    generator, the tracer's own processes), and how busy wrk itself was: one wrk
    thread near a full core means the run measured the client's path as much as
    the server's."""
    busy0 = busy_s()
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with client_pinned():
        result = run_wrk(LoadOptions(port=port, concurrency=16, duration=seconds))
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, reaped by now
    busy1 = busy_s()
    requests = max(result.completed, 1)
    client_s = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    return Load(rps=result.throughput_rps, cpu_us_per_request=(busy1 - busy0) / requests * 1e6,
                client_cores=client_s / max(result.duration_s, 1e-9))


def observer_effect(repeats: int, seconds: float,
                    baselines: list[type[tracers.Herdtrace]] | None = None,
                    only: set[str] | None = None,
                    servers_only: set[str] | None = None) -> dict[str, Any]:
    kinds = [k for k in tracers.available(baselines or [])
             if only is None or k.name in only or k.name == "untraced"]
    results: dict[str, dict[str, list[float]]] = {}
    health: dict[str, dict[str, list[int | None]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    per_request: dict[str, dict[str, list[float]]] = {}
    client: dict[str, dict[str, list[float]]] = {}
    work = tracers.workdir()
    names = [n for n in servers.targets(work) if servers_only is None or n in servers_only]
    for rep in range(repeats):
        for target in names:
            # Interleaved (untraced, floor, filter, state, herdtrace, ..., perf, untraced, ...),
            # the order rotated every repeat so that no tracer always runs first.
            shift = rep % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                tracer = kind()
                with servers.targets(work)[target] as (pids, port):
                    tracer.start(pids, work)
                    load = measured_load(port, seconds)
                    info = tracer.stop()
                rps = load.rps
                results.setdefault(target, {}).setdefault(tracer.name, []).append(rps)
                per_request.setdefault(target, {}).setdefault(tracer.name, []).append(
                    load.cpu_us_per_request)
                client.setdefault(target, {}).setdefault(tracer.name, []).append(load.client_cores)
                if tracer.cpu_s is not None:
                    cpu.setdefault(target, {}).setdefault(tracer.name, []).append(tracer.cpu_s / seconds)
                if "lost_events" in info:
                    h = health.setdefault(target, {}).setdefault(tracer.name, [])
                    h.append(info["lost_events"])  # type: ignore[arg-type]
                    health[target].setdefault(tracer.name + " misses", []).append(
                        info.get("probe_misses"))  # type: ignore[arg-type]
                say(f"  [{rep + 1}/{repeats}] {target:22s} {tracer.name:26s} {rps:9.0f} req/s "
                    f"{load.cpu_us_per_request:6.1f} us of CPU a request, wrk at "
                    f"{load.client_cores:.2f} core")
    shutil.rmtree(work, ignore_errors=True)
    order = [k().name for k in kinds]
    return {"throughput": {t: {n: r[n] for n in order if n in r} for t, r in results.items()},
            "herdtrace_health": health, "tracer_cpu": cpu,
            "cpu_us_per_request": per_request, "client_cores": client}


def rounds_ahead(mine: list[float], other: list[float]) -> str:
    """How many of the repeats (each runs every tracer once, back to back) `mine`
    kept at least `other`'s throughput in: a median's verdict that the rounds split
    on is within this run's noise, one all rounds agree on is not."""
    ahead = sum(a >= b for a, b in zip(mine, other, strict=True))
    rounds = len(mine)
    settled = "the rounds agree" if ahead in (0, rounds) else "not resolved by this run"
    return f"ahead in {ahead} of {rounds} rounds: {settled}"


def spread(values: list[float]) -> str:
    return f"{min(values):8.0f} {statistics.median(values):8.0f} {max(values):8.0f}"


# The ablation's rows, in order, and what the step from the row before measures.
LIGHT = tracers.HerdtraceWithoutConnections.name
STEPS = {"herdtrace empty-counting": "attaching what a counting script attaches",
         "herdtrace empty": "attaching herdtrace's other tracepoints too (the floor)",
         "herdtrace filter": "filtering",
         "herdtrace state": "per-thread state", "herdtrace": "records, drain, writer"}


def report_observer(obs: dict[str, Any], baseline_name: str | None) -> list[str]:
    verdicts = []
    say(f"\n1. Observer effect: saturating wrk -c16 on CPU {CLIENT_CPU}, a new connection per "
        "request; req/s "
        "min median max, ratio of medians to untraced, the machine's CPU time per request "
        "(median, and its difference from untraced), the tracer's own CPU (run time of "
        "its processes' threads from schedstat, cores, median) while the load ran, and the step from the row above")
    for target, by_tracer in obs["throughput"].items():
        base = statistics.median(by_tracer["untraced"])
        per_request = obs.get("cpu_us_per_request", {}).get(target, {})
        base_us = statistics.median(per_request["untraced"]) if "untraced" in per_request else None
        client = obs.get("client_cores", {}).get(target, {}).get("untraced")
        say(f"  {target}" + (f" (wrk, untraced: {statistics.median(client):.2f} of a core: "
                             + ("client-bound, the ratio weighs the load generator's path"
                                if statistics.median(client) >= CLIENT_BOUND_CORES
                                else "server-bound") + ")"
                             if client else ""))
        ratios = {name: statistics.median(values) / base for name, values in by_tracer.items()}
        previous = None
        for name, values in by_tracer.items():
            step = ""
            if name in STEPS and previous is not None:
                step = f"  step {ratios[name] - ratios[previous]:+.3f} ({STEPS[name]})"
            used = obs.get("tracer_cpu", {}).get(target, {}).get(name)
            own = f"  own CPU {statistics.median(used):.3f}" if used else ""
            us = ""
            if name in per_request and base_us is not None:
                mine_us = statistics.median(per_request[name])
                us = f"  {mine_us:5.1f} us/req ({mine_us - base_us:+5.1f})"
            say(f"    {name:26s} {spread(values)}  ratio {ratios[name]:.3f}{us}{own}{step}")
            previous = name if name in STEPS or name == "untraced" else previous
        health = obs["herdtrace_health"].get(target, {})
        lost = health.get("herdtrace", [])
        misses = health.get("herdtrace misses", [])
        say(f"    herdtrace lost events per run: {lost}; probe misses per run: {misses}")
        mine = ratios.get("herdtrace", float("nan"))
        for name in ("herdtrace", LIGHT):
            if "bpftrace" in ratios and name in ratios:
                ok = ratios[name] >= ratios["bpftrace"]
                verdicts.append(f"{target}: {name} {ratios[name]:.3f} vs bpftrace {ratios['bpftrace']:.3f}: "
                                + ("met" if ok else f"missed by {ratios['bpftrace'] - ratios[name]:.3f}")
                                + f" ({rounds_ahead(by_tracer[name], by_tracer['bpftrace'])})")
        herd_script = tracers.BpftraceHerd.name
        if herd_script in ratios and LIGHT in ratios:  # like for like: no verdict of its own
            verdicts.append(f"{target}: for reference, {LIGHT} {ratios[LIGHT]:.3f} vs "
                            f"{herd_script} {ratios[herd_script]:.3f} "
                            f"({ratios[LIGHT] - ratios[herd_script]:+.3f})")
        if "herdtrace top" in ratios and "herdtrace" in ratios:
            top = ratios["herdtrace top"]
            verdicts.append(f"{target}: top {top:.3f} vs record {mine:.3f}: "
                            + ("met" if top >= mine else f"missed by {mine - top:.3f}")
                            + " (top costs no more than record; "
                            + f"{rounds_ahead(by_tracer['herdtrace top'], by_tracer['herdtrace'])})")
        if "perf record" in ratios and "herdtrace" in ratios:
            ok = mine > ratios["perf record"]
            verdicts.append(f"{target}: herdtrace {mine:.3f} vs perf record {ratios['perf record']:.3f}: "
                            + ("met" if ok else f"missed by {ratios['perf record'] - mine:.3f}")
                            + f" ({rounds_ahead(by_tracer['herdtrace'], by_tracer['perf record'])})")
        floor = ratios.get("herdtrace empty")
        if floor is not None and baseline_name in ratios:
            now, before = floor - mine, floor - ratios[baseline_name]
            ok = now <= before / 2
            verdicts.append(f"{target}: cost above the floor {now:.3f}, {baseline_name} {before:.3f}: "
                            + ("met" if ok else f"missed: target <= {before / 2:.3f}") + " (at most half)")
        lost = lost + health.get(LIGHT, [])
        misses = misses + health.get(f"{LIGHT} misses", [])
        bad_lost = sum(x for x in lost if x)
        bad_misses = sum(x for x in misses if x)
        verdicts.append(f"{target}: herdtrace lost {bad_lost}, probe misses {bad_misses} at that load: "
                        + ("met" if bad_lost == 0 and bad_misses == 0 else "missed (target: 0)"))
    return verdicts


def checkout(rev: str) -> Path:
    """The source tree of `rev`, to run it beside this one in the same venv."""
    tree = Path(tempfile.mkdtemp(prefix=f"herdtrace-{rev}-"))
    archive = subprocess.run(["git", "archive", rev, "herdtrace"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


# ---- 1b. kernel time per probe -------------------------------------------------
def probe_kernel_time(seconds: float) -> dict[str, Any]:
    target = servers.NAMES[2] if shutil.which("nginx") else servers.NAMES[1]
    kinds: list[type[tracers.Tracer]] = [*(tracers.ablated(level) for level in tracers.ABLATIONS),
                                         tracers.Herdtrace, tracers.HerdtraceWithoutConnections]
    if shutil.which("bpftrace"):
        kinds.extend((tracers.Bpftrace, tracers.BpftraceHerd))
    return {"target": target, "tracers": probe_time.run(kinds, target, seconds, throughput)}


def report_probe_time(figures: dict[str, Any]) -> None:
    say(f"\n1b. Kernel time of each tracer's BPF programs (kernel.bpf_stats_enabled=1, one run "
        f"each, {figures['target']}): cores, and the costliest programs "
        "(runs/s, ns per run, cores)")
    for name, m in figures["tracers"].items():
        say(f"    {name:18s} {m['cores']:.4f} cores at {m['rps']:.0f} req/s")
        for probe, row in list(m["per_probe"].items())[:6]:
            say(f"      {probe[:36]:36s} {row['runs_per_s']:9.0f}/s {row['ns_per_run']:6.0f} ns "
                f"{row['cores']:.4f}")


# ---- 2. drain ------------------------------------------------------------------
def build_wakegen(work: Path) -> Path:
    exe = work / "wakegen"
    src = Path(__file__).with_name("wakegen.c")
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
    return exe


def drain_run(exe: Path, work: Path, rate_per_pair: float, seconds: float) -> dict[str, float]:
    """wakegen (2 pairs) recorded by --pid; records/s, lost, and the collector's CPU
    between attaching and writing the summary (start-up and detach excluded)."""
    out = work / "drain.parquet"
    gen = subprocess.Popen([str(exe), "2", str(seconds + 5), str(rate_per_pair)],
                           stdout=subprocess.DEVNULL)
    rec = subprocess.Popen([sys.executable, "-m", "herdtrace", "record", "--pid", str(gen.pid),
                            "-o", str(out), "--force", "--duration", str(seconds)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert rec.stderr is not None
    cpu0 = t0 = None
    cpu = span = writer = 0.0
    for line in rec.stderr:
        if line.startswith("herdtrace: recording"):
            cpu0, t0 = tracers.cpu_seconds(rec.pid), time.monotonic()
        elif line.startswith("herdtrace: recorded") and cpu0 is not None and t0 is not None:
            cpu, span = tracers.cpu_seconds(rec.pid) - cpu0, time.monotonic() - t0
            writer = tracers.cpu_seconds(rec.pid, children=True)  # the Parquet writer, reaped by now
    rec.wait()
    gen.send_signal(signal.SIGTERM)
    gen.wait()
    if rec.returncode != 0 or not span:
        raise RuntimeError("herdtrace record failed in the drain benchmark")
    _, meta = load.read_metadata(out)
    wakeups = load.load_recording(out).wakeups
    recorded = meta.duration_s or 1.0
    return {"round_trips_per_s": 2 * rate_per_pair, "wakeups_per_s": len(wakeups) / recorded,
            "lost": float(meta.lost_events or 0), "collector_cpu_pct": 100 * cpu / span,
            "writer_cpu_us_per_record": 1e6 * writer / max(meta.rows or 0, 1)}


def drain(seconds: float) -> list[dict[str, float]]:
    work = tracers.workdir()
    exe = build_wakegen(work)
    runs = []
    for rate in (25_000, 50_000, 75_000, 100_000, 0):  # 0: as fast as the generator goes
        r = drain_run(exe, work, rate, seconds)
        runs.append(r)
        target = "unpaced" if rate == 0 else f"{2 * rate:,.0f} rt/s"
        say(f"  generator {target:>14s}: {r['wakeups_per_s']:10,.0f} wakeups/s recorded, "
            f"lost {r['lost']:.0f}, drain {r['collector_cpu_pct']:.0f}% of a core, "
            f"Parquet writer {r['writer_cpu_us_per_record']:.2f} µs CPU/record (nice 19)")
    shutil.rmtree(work, ignore_errors=True)
    return runs


def report_drain(runs: list[dict[str, float]]) -> list[str]:
    clean = [r for r in runs if r["lost"] == 0]
    best = max(clean, key=lambda r: r["wakeups_per_s"]) if clean else None
    if best is None:
        return ["drain: every rate lost records"]
    ok = best["wakeups_per_s"] >= TARGETS["drain_rate"]
    gap = "" if ok else f" (short of {TARGETS['drain_rate']:,} by {TARGETS['drain_rate'] - best['wakeups_per_s']:,.0f})"
    return [f"drain: {best['wakeups_per_s']:,.0f} wakeups/s with zero loss, drain at "
            f"{best['collector_cpu_pct']:.0f}% of a core, writer {best['writer_cpu_us_per_record']:.2f} "
            f"µs CPU/record{gap}"]


# ---- 5. the lab's load generator -----------------------------------------------
def loadgen(seconds: float = 2.0) -> list[dict[str, float]]:
    """Open-loop rates against the lab (epoll-exclusive, 4 workers), and wrk on the
    same server: where the built-in generator stops keeping up, and who is the
    bottleneck there."""
    rows = []
    with servers.lab("epoll-exclusive") as (_, port):
        server_capacity = throughput(port, 3)
        for rate in (4000, 8000, 12000, 16000, 20000, 25000, 30000):
            r = run_load(LoadOptions(port=port, rate=rate, duration=seconds))
            rows.append({"rate": rate, "achieved": r.throughput_rps,
                         "p99_ms": r.latency_ms["p99"] or 0.0, "errors": r.errors,
                         "server_capacity_wrk": server_capacity})
            say(f"  open loop {rate:6d}/s: {r.throughput_rps:8.0f}/s done, p99 "
                f"{r.latency_ms['p99'] or 0:7.2f} ms, errors {r.errors}  "
                f"(same server under wrk: {server_capacity:.0f}/s)")
    return rows


# ---- 4. size -------------------------------------------------------------------
def size(connections: int) -> dict[str, float]:
    """herdtrace and perf record on the same lab run."""
    work = tracers.workdir()
    with servers.lab("epoll-shared") as (pids, port):
        ht, pf = tracers.HerdtraceBesidePerf(), tracers.PerfRecord()
        ht.start(pids, work)
        pf.start(pids, work)
        run_load(LoadOptions(port=port, concurrency=1, connections=connections))
        pf_info = pf.stop()
        ht_info = ht.stop()
    wakeups = len(load.load_recording(work / "herdtrace.parquet").wakeups)
    out = {"wakeups": wakeups, "herdtrace_bytes": float(ht_info["bytes"]),  # type: ignore[arg-type]
           "perf_bytes": float(pf_info["bytes"])}  # type: ignore[arg-type]
    shutil.rmtree(work, ignore_errors=True)
    return out


def analysis_verdicts(runs: list[dict[str, float]]) -> list[str]:
    out = []
    ten = next((a for a in runs if a["wakeups"] >= 10_000_000 and "seconds" in a), None)
    if ten:
        ok_t = ten["seconds"] < TARGETS["analysis_10m_s"]
        ok_m = ten["peak_mib"] < TARGETS["analysis_10m_mib"]
        out.append(f"analysis of 10M in memory: {ten['seconds']:.1f} s ({'met' if ok_t else 'missed'}: "
                   f"< 10 s), {ten['peak_mib']:.0f} MiB ({'met' if ok_m else 'missed'}: < 2048 MiB)")
    hundred = next((a for a in runs if a["wakeups"] >= 100_000_000), None)
    if hundred:
        s, m = hundred["stream_seconds"], hundred["stream_peak_mib"]
        out.append(f"streamed analysis of 100M: {s:.1f} s ({'met' if s < TARGETS['stream_100m_s'] else 'missed'}"
                   f": < 60 s), {m:.0f} MiB ({'met' if m < TARGETS['stream_100m_mib'] else 'missed'}"
                   ": < 1024 MiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-rev", action="append", default=[],
                        help="also run herdtrace as of this git revision (repeatable; the first "
                        "is the 'before' of the cost-above-the-floor target), "
                        "for a before/after in the same run")
    parser.add_argument("--seconds", type=float, default=3.0, help="load per observer run")
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--skip", default="",
                        help="comma list of: observer,probes,drain,analysis,size,loadgen")
    parser.add_argument("--servers", help="comma list of server names for the observer runs "
                        "(default: all): " + ", ".join(servers.NAMES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--tracers", help="comma list of tracer names for the observer runs "
                        "(default: all; untraced always runs)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench-perf needs root (BPF, perf, bpftrace)", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    figures: dict[str, Any] = {"machine": {"kernel": os.uname().release, "cpus": os.cpu_count()}}
    verdicts: list[str] = []
    started = time.monotonic()
    if "observer" not in skip:
        say("1. observer effect (interleaved runs)")
        baselines = [tracers.at_revision(rev, checkout(rev)) for rev in args.baseline_rev]
        only = set(args.tracers.split(",")) if args.tracers else None
        served = set(args.servers.split(",")) if args.servers else None
        figures["observer"] = observer_effect(args.repeats, args.seconds, baselines, only, served)
        verdicts += report_observer(figures["observer"],
                                    baselines[0].name if baselines else None)
    if "probes" not in skip and shutil.which("bpftool"):
        figures["probe_time"] = probe_kernel_time(args.seconds)
        report_probe_time(figures["probe_time"])
    if "drain" not in skip:
        say("\n2. drain")
        figures["drain"] = drain(3.0)
        verdicts += report_drain(figures["drain"])
    if "analysis" not in skip:
        say("\n3. analysis, fresh process per run: streamed (summarize in bounded memory), and "
            "in memory (load + summarize + per_thread + per_connection) up to 10M")
        sizes = tuple(int(s) for s in args.sizes.split(","))
        with tempfile.TemporaryDirectory(prefix="herdtrace-analysis-") as tmp:
            figures["analysis"] = analysis_speed.run(sizes, Path(tmp))
        for a in figures["analysis"]:
            memory = (f"in memory {a['seconds']:6.2f} s, peak {a['peak_mib']:6.0f} MiB"
                      if "seconds" in a else "in memory: not tried (would not fit in 2 GiB)")
            say(f"  {a['wakeups']:>11,} wakeups (file {a['file_mib']:5.0f} MiB): streamed "
                f"{a['stream_seconds']:6.2f} s, peak {a['stream_peak_mib']:5.0f} MiB; {memory}")
        verdicts += analysis_verdicts(figures["analysis"])
    if "size" not in skip and shutil.which("perf"):
        say("\n4. size on disk (same run, recorded by both)")
        s = size(2000)
        figures["size"] = s
        ht, pf = s["herdtrace_bytes"] / s["wakeups"], s["perf_bytes"] / s["wakeups"]
        say(f"  {s['wakeups']:.0f} wakeups: herdtrace {ht:.1f} B/wakeup, perf.data {pf:.1f} B/wakeup "
            f"({pf / ht:.1f}x)")
        verdicts.append(f"size: herdtrace {ht:.1f} B/wakeup vs perf.data {pf:.1f} B/wakeup")
    if "loadgen" not in skip and shutil.which("wrk"):
        say("\n5. the lab's load generator (open loop, one new connection per request)")
        figures["loadgen"] = loadgen()
        kept = [r for r in figures["loadgen"] if r["achieved"] >= 0.97 * r["rate"] and r["p99_ms"] < 50]
        if kept:
            best = kept[-1]
            verdicts.append(f"load generator sustains {best['rate']:,}/s open loop; the same server "
                            f"takes {best['server_capacity_wrk']:,.0f}/s from wrk, so past that rate "
                            "the Python generator, not the server, is the bottleneck")
    say(f"\nTargets ({time.monotonic() - started:.0f} s):")
    for v in verdicts:
        say(f"  - {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
