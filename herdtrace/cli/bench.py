"""`herdtrace bench`: the seed's experiment in every mode, recorded and compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from herdtrace.workloads.modes import HERD_MODE


def bench_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for recordings, ground truth, load results, report.png and summary.json.")],
    modes: Annotated[str | None, typer.Option(help="Comma-separated modes [default: every mode this kernel supports].")] = None,
    workers: Annotated[int, typer.Option("--workers", "-n", help="Workers per server.")] = 4,
    threads: Annotated[bool, typer.Option("--threads", help="Workers as threads.")] = False,
    rate: Annotated[float | None, typer.Option(help="Open-loop connections per second.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help="Closed-loop connections in flight.")] = None,
    connections: Annotated[int | None, typer.Option("--connections", "-k", help="Connections per run.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="Seconds of load per run.")] = None,
    repeats: Annotated[int, typer.Option(help="Repeats per mode, interleaved a b a b.")] = 1,
    load: Annotated[str, typer.Option("--load", help="Load generator: builtin, ab or wrk.")] = "builtin",
    observer_effect: Annotated[bool, typer.Option("--observer-effect", help="Also run each mode untraced; show traced/untraced throughput.")] = False,
    baseline: Annotated[str, typer.Option(help="Mode the ratios are taken against.")] = HERD_MODE,
    force: Annotated[bool, typer.Option("--force", help="Reuse a non-empty output folder.")] = False,
) -> None:
    """Run the lab in every wakeup mode, record each run, check it against the server's own
    counts, and compare: herd factor, woken-but-idle, EAGAINs, latency, throughput.

    Default: every mode this kernel has, 4 workers, two loads (one connection at a time,
    which shows the herd, and 16 in flight, which saturates), interleaved.
    """
    from herdtrace.bench.main import run_bench
    from herdtrace.bench.plan import BenchOptions
    from herdtrace.bench.summary import bench_table
    from herdtrace.reports import table

    opts = BenchOptions(
        output=output, modes=tuple(m.strip() for m in modes.split(",") if m.strip()) if modes else (),
        workers=workers, threads=threads, rate=rate, concurrency=concurrency,
        connections=connections, duration=duration, repeats=repeats, load_tool=load,
        observer_effect=observer_effect, baseline=baseline, force=force,
    )
    summary = run_bench(opts)
    console = table.console()
    for profile, desc in summary["profiles"].items():
        if any(r["profile"] == profile for r in summary["modes"]):
            console.print(bench_table(summary["modes"], profile, baseline, observer_effect))
            console.print(f"  load {desc}")
            for r in summary["modes"]:
                if r["profile"] == profile and r["recorded"]:
                    console.print(f"  {r['mode']}: {r['recorded'].verdict.text}")
    if summary["interrupted"]:
        console.print("[yellow]interrupted: the table shows the runs that finished[/]")
    for profile, path in summary["reports"].items():
        console.print(f"report ({profile} load): {path}")
    console.print(f"summary: {output / 'summary.json'}")


def register(app: typer.Typer) -> None:
    app.command("bench", short_help="The seed's experiment: every lab mode, recorded.",
                epilog="Example:\n\n\b\n  herdtrace bench --modes epoll-shared,epoll-exclusive -o results/")(bench_command)
