"""bench-perf's observer verdicts: medians against the targets, and whether the
repeats (rounds) agree with the median's verdict."""

from __future__ import annotations

from benchmarks import perf


def observer(herdtrace: list[float], bpftrace: list[float]) -> dict:
    throughput = {"untraced": [100.0] * len(herdtrace), "herdtrace": herdtrace,
                  "bpftrace": bpftrace, "perf record": [80.0] * len(herdtrace)}
    return {"throughput": {"lab": throughput},
            "herdtrace_health": {"lab": {"herdtrace": [0] * len(herdtrace),
                                         "herdtrace misses": [0] * len(herdtrace)}}}


def test_rounds_that_split_do_not_resolve_the_median() -> None:
    assert perf.rounds_ahead([90, 95, 91, 99, 97], [92, 94, 93, 96, 98]) == (
        "ahead in 2 of 5 rounds: not resolved by this run")
    assert perf.rounds_ahead([90, 91, 92], [93, 94, 95]) == "ahead in 0 of 3 rounds: the rounds agree"
    assert perf.rounds_ahead([95, 95], [95, 90]) == "ahead in 2 of 2 rounds: the rounds agree"


def test_observer_verdicts_name_the_margin_and_the_rounds() -> None:
    verdicts = perf.report_observer(observer([90, 95, 91, 99, 97], [92, 94, 93, 96, 98]), None)
    assert "lab: herdtrace 0.950 vs bpftrace 0.940: met (ahead in 2 of 5 rounds: not resolved by this run)" in verdicts
    assert "lab: herdtrace 0.950 vs perf record 0.800: met (ahead in 5 of 5 rounds: the rounds agree)" in verdicts
    assert "lab: herdtrace lost 0, probe misses 0 at that load: met" in verdicts
    missed = perf.report_observer(observer([90, 91, 92], [93, 94, 95]), None)
    assert ("lab: herdtrace 0.910 vs bpftrace 0.940: missed by 0.030 "
            "(ahead in 0 of 3 rounds: the rounds agree)") in missed


def test_no_herdtrace_row_gives_no_comparison_with_it() -> None:
    obs = observer([90, 91], [93, 94])
    del obs["throughput"]["lab"]["herdtrace"]
    verdicts = perf.report_observer(obs, None)
    assert not [v for v in verdicts if "vs perf record" in v or "vs bpftrace" in v]
