"""Drive a lab server with ab or wrk instead of the built-in generator (closed loop only)."""

from __future__ import annotations

import re
import shutil
import subprocess

from herdtrace.errors import HerdtraceError
from herdtrace.workloads.loadgen import LoadOptions, LoadResult

TOOLS = ("builtin", "ab", "wrk")


def _need(tool: str, opts: LoadOptions) -> str:
    path = shutil.which(tool)
    if path is None:
        raise HerdtraceError(f"--load {tool}: {tool} is not installed (make setup installs it)")
    if opts.concurrency is None:
        raise HerdtraceError(f"--load {tool} runs a closed loop: give --concurrency, not --rate")
    return path


def _num(pattern: str, text: str, default: float | None = None) -> float | None:
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else default


def _output(cmd: list[str], marker: str) -> str:
    """The tool's report, or a one-line error with its last words."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if marker not in proc.stdout:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        name = cmd[0].rsplit("/", 1)[-1]
        raise HerdtraceError(f"{name} failed: {last[-1] if last else f'exit {proc.returncode}'}")
    return proc.stdout


def run_ab(opts: LoadOptions) -> LoadResult:
    ab = _need("ab", opts)
    url = f"http://{opts.host}:{opts.port}/"
    count = ["-n", str(opts.connections)] if opts.connections else ["-t", str(opts.duration),
                                                                     "-n", "10000000"]
    cmd = [ab, "-q", "-r", "-s", str(int(opts.timeout)), "-c", str(opts.concurrency), *count, url]
    out = _output(cmd, "Complete requests")
    complete = int(_num(r"^Complete requests:\s+(\d+)", out, 0) or 0)
    failed = int(_num(r"^Failed requests:\s+(\d+)", out, 0) or 0)
    elapsed = _num(r"^Time taken for tests:\s+([\d.]+)", out, 0.0) or 0.0
    lat = {k: _num(rf"^\s+{p}%\s+(\d+)", out) for k, p in
           (("p50", "50"), ("p90", "90"), ("p99", "99"), ("max", "100"))}
    return LoadResult(loop="closed", started=complete + failed, completed=complete - failed,
                      errors=failed, duration_s=elapsed,
                      throughput_rps=_num(r"^Requests per second:\s+([\d.]+)", out, 0.0) or 0.0,
                      latency_ms=lat, concurrency=opts.concurrency)


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(opts: LoadOptions) -> LoadResult:
    wrk = _need("wrk", opts)
    if opts.duration is None:
        raise HerdtraceError("--load wrk runs for a duration: give --duration, not --connections")
    url = f"http://{opts.host}:{opts.port}/"
    # Connection: close, so that every request is a new connection, as in the lab.
    seconds = max(1, round(opts.duration))  # wrk takes whole seconds
    cmd = [wrk, "-t1", f"-c{opts.concurrency}", f"-d{seconds}s", "--latency",
           "-H", "Connection: close", url]
    out = _output(cmd, "requests in")
    done = int(_num(r"(\d+) requests in", out, 0) or 0)
    elapsed = _num(r"requests in ([\d.]+)s", out, 0.0) or 0.0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    lat: dict[str, float | None] = {}
    for key, pct in (("p50", "50"), ("p90", "90"), ("p99", "99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        lat[key] = _wrk_ms(m.group(1), m.group(2)) if m else None
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    lat["max"] = _wrk_ms(m.group(1), m.group(2)) if m else None
    return LoadResult(loop="closed", started=done, completed=done, errors=errors,
                      duration_s=elapsed,
                      throughput_rps=_num(r"^Requests/sec:\s+([\d.]+)", out, 0.0) or 0.0,
                      latency_ms=lat, concurrency=opts.concurrency)


def drive(tool: str, opts: LoadOptions) -> LoadResult:
    opts.validate()
    if tool == "ab":
        return run_ab(opts)
    if tool == "wrk":
        return run_wrk(opts)
    raise HerdtraceError(f"unknown load tool {tool!r}; tools: {', '.join(TOOLS)}")
