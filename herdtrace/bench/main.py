"""`herdtrace bench` as a plain function: run, summarise, draw, write."""

from __future__ import annotations

import json
import platform
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from herdtrace import __version__
from herdtrace.bench.execute import execute
from herdtrace.bench.plan import BenchOptions
from herdtrace.bench.summary import aggregate


def report_paths(out: Path, profiles: list[str]) -> dict[str, Path]:
    """report.png for the first profile (the herd), report-<profile>.png for the rest."""
    return {p: out / ("report.png" if i == 0 else f"report-{p}.png") for i, p in enumerate(profiles)}


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    opts.validate()
    loaded: dict[str, Any] = {}  # recording path -> Recording, each loaded once
    rows, interrupted = execute(opts, loaded)
    agg = aggregate(rows, opts.baseline, loaded)
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    reports = {}
    from herdtrace.reports.files import save_report

    for profile, path in report_paths(opts.output, profiles).items():
        recs = sorted((loaded[r["recording"]] for r in rows
                       if r["profile"] == profile and r["recording"]), key=lambda rec: rec.label)
        if recs:
            reports[profile] = str(save_report(recs, path, by_label=True))
    summary = {
        "herdtrace": __version__,
        "machine": {"kernel": platform.release(), "host": socket.gethostname(),
                    "cpus": __import__("os").cpu_count()},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "profiles": {p.name: p.describe() for p in opts.profiles()},
        "interrupted": interrupted,
        "reports": reports,
        "modes": agg,
        "runs": rows,
    }
    (opts.output / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    return summary


def _json(value: Any) -> Any:
    """Typed results (a judged summary) as their JSON; anything else as text."""
    to_json = getattr(value, "to_json", None)
    return to_json() if callable(to_json) else str(value)
