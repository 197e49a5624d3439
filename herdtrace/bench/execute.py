"""Run a bench schedule, keep every artifact, check each recording against its truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from herdtrace.analysis import load, metrics
from herdtrace.bench.plan import BenchOptions, PlannedRun, schedule
from herdtrace.bench.runner import RunSpec, run_once
from herdtrace.workloads.lab import GroundTruth


def truth_check(recorded: metrics.Summary, truth: GroundTruth) -> str | None:
    """None when the recording agrees with the server's own counts, else what differs."""
    problems = []
    if recorded.accepts != truth.accepts:
        problems.append(f"accepts {recorded.accepts} recorded vs {truth.accepts} served")
    if recorded.eagain != truth.eagain:
        problems.append(f"EAGAIN {recorded.eagain} recorded vs {truth.eagain} served")
    if recorded.connections != truth.accepts:  # each one accepted: none left queued
        problems.append(f"connections {recorded.connections} recorded vs {truth.accepts} served")
    if recorded.lost_events:
        problems.append(f"{recorded.lost_events} events lost")
    return "; ".join(problems) or None


def execute_one(planned: PlannedRun, out: Path, loaded: dict[str, load.Recording]) -> dict[str, Any]:
    """Run, record, check against the truth; the loaded recording goes into `loaded`
    (by path) so that the summary and the figure read it from there, not again."""
    base = out / planned.stem
    base.parent.mkdir(parents=True, exist_ok=True)

    def beside(suffix: str) -> Path:  # not with_suffix: the stem has dots (mode.r1)
        return base.parent / f"{base.name}{suffix}"

    recording = beside(".parquet") if planned.spec.traced else None
    result = run_once(planned.spec, recording)
    truth = result.truth.to_json()
    row: dict[str, Any] = {
        "profile": planned.profile.name, "mode": planned.spec.mode, "repeat": planned.repeat,
        "traced": planned.spec.traced, "load": result.load.to_json(), "truth": truth,
        "recording": str(recording) if recording else None, "recorded": None, "disagreement": None,
    }
    if recording is not None:
        rec = loaded[str(recording)] = load.load_recording(recording)
        summary = metrics.summarize(rec)
        row["recorded"] = summary.to_json()
        row["disagreement"] = truth_check(summary, result.truth)
    beside(".truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    beside(".load.json").write_text(json.dumps(row["load"], indent=2) + "\n")
    return row


def warm_up(first: PlannedRun) -> None:
    """One short untraced run first: the first measured run should not pay for cold
    caches and page faults alone."""
    spec = first.spec
    run_once(RunSpec(mode=spec.mode, workers=spec.workers, threads=spec.threads,
                     concurrency=4, connections=500, traced=False), None)


def execute(opts: BenchOptions,
            loaded: dict[str, load.Recording]) -> tuple[list[dict[str, Any]], bool]:
    """All runs in schedule order; stops cleanly on Ctrl-C, keeping what finished.

    Returns the finished runs and whether the bench was interrupted; every recording
    is loaded once, into `loaded`.
    """
    opts.output.mkdir(parents=True, exist_ok=True)
    plan = schedule(opts)
    rows: list[dict[str, Any]] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("bench", total=len(plan))
        try:
            progress.update(task, description="warm-up (not counted)")
            warm_up(plan[0])
            for planned in plan:
                progress.update(task, description=f"{planned.stem:<40}")
                rows.append(execute_one(planned, opts.output, loaded))
                progress.advance(task)
        except KeyboardInterrupt:
            progress.update(task, description="interrupted: keeping finished runs")
            return rows, True
    return rows, False
