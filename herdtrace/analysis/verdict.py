"""One sentence per recording: is there a herd, what does it cost, and the fix that
fits what was observed (the wait the workers use, one listener or several, the server).

The rules are the table below; tests cover a recording of each shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from herdtrace.analysis import metrics
from herdtrace.analysis.fixes import MECHANISM, NONE, SETTING, Fix, describe, server_fixes
from herdtrace.analysis.load import Recording

HERD_ABOVE = 1.2  # threads woken per connection (or herd factor) that make a herd
# Saturated: listener wakeups accept several (>= 2) connections each. Between 0.5 and
# 1 a herd factor comes from a worker that accepts again right after serving, before
# it sleeps (gunicorn's sync worker: 0.77 at 250 connections/s, one at a time).
SATURATED_BELOW = 0.5

REUSEPORT = ("give each worker its own listening socket with SO_REUSEPORT (Linux 3.9+): the "
             "kernel then hands each connection to one of them")
EXCLUSIVE = ("add the listening socket to each worker's epoll with EPOLLEXCLUSIVE (Linux 4.5+): "
             "one waiter wakes per connection")
ONE_EPOLL = ("several workers wait in one epoll instance: each leaves with the listener still "
             "ready (level-triggered) and wakes the next; give each worker its own epoll with "
             "EPOLLEXCLUSIVE, or add the listener with EPOLLET or EPOLLONESHOT")
ALREADY_EXCLUSIVE = ("the listener is already added with EPOLLEXCLUSIVE, which wakes at least one "
                     "waiter and more when several are idle; " + REUSEPORT)
# Fixes by the wait the herd's workers were woken in.
WAIT_FIXES: dict[str, tuple[str, ...]] = {
    "epoll": (EXCLUSIVE, REUSEPORT),
    "select/poll": ("select() and poll() wake every waiter on the socket: wait in epoll with "
                    "EPOLLEXCLUSIVE instead", REUSEPORT),
    "accept": ("blocking accept() wakes one waiter per connection on Linux; several woke here, "
               "so look for other waits on the same socket (a poll before accept)",),
    "kevent": ("FreeBSD 12+: give each worker its own listening socket with SO_REUSEPORT_LB",),
}
# The wait each traced syscall is (what `top` shows as a mode where /proc shows none)...
WAITS = {"accept": "accept", "accept4": "accept", "select": "select", "pselect6": "select",
         "poll": "poll", "ppoll": "poll", "epoll_wait": "epoll", "epoll_pwait": "epoll",
         "epoll_pwait2": "epoll", "kevent": "kevent"}
# ...and the kind of wait a fix is chosen for: select and poll wake alike.
WAIT_KINDS = {call: {"select": "select/poll", "poll": "select/poll"}.get(wait, wait)
              for call, wait in WAITS.items()}


@dataclass(frozen=True)
class Verdict:
    level: str  # "herd", "no-herd" or "unknown"
    text: str
    fixes: tuple[Fix, ...] = ()
    server: dict[str, Any] | None = None  # {name, version, details}: what serves the listener
    saturated: bool = False  # wakeups accepted several connections each (herd factor < 1)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fixes"] = [f.to_json() for f in self.fixes]
        return d


# How /proc showed the listener waited on (collectors/listeners.py), in words.
MODE_WORDS = {"epoll-shared": "epoll without EPOLLEXCLUSIVE",
              "epoll-exclusive": "epoll with EPOLLEXCLUSIVE",
              "reuseport": "a socket per worker (SO_REUSEPORT)"}


WAIT_WORDS = {"epoll": "epoll", "select/poll": "select() or poll()",
              "accept": "a blocking accept()", "kevent": "kevent()"}


@dataclass(frozen=True)
class Evidence:
    """What the verdict reads beyond the summary: how the workers waited and who
    they are. From a loaded recording (evidence) or a streamed one (stream.py)."""

    mode: str | None  # what /proc showed at record time
    waits: tuple[str, ...]  # kinds of wait listener wakeups came out of, most used first
    server: str | None  # the command name most workers run under
    rewakes: int  # listener wakeups by a worker leaving the same epoll (epoll_rewake)
    extra: int  # listener wakeups beyond one per connection
    identity: dict[str, Any] | None = None  # servers.Server.to_json() from the metadata


def waits_ranked(calls: pd.Series) -> tuple[str, ...]:
    """Wait syscall names (one per wakeup, or counts indexed by name) -> kinds, most first."""
    return tuple(calls.groupby(calls.index.map(WAIT_KINDS)).sum().sort_values(ascending=False).index)


def evidence(rec: Recording) -> Evidence:
    herd = metrics.herd_wakeups(rec)
    workers = metrics.waiting_threads(rec)
    comms = rec.threads.loc[rec.threads["tid"].isin(workers), "comm"]
    calls = herd["wait_call"].astype(str).value_counts()
    return Evidence(
        mode=metrics.listener_mode(rec.meta),
        waits=waits_ranked(calls[calls > 0]),
        server=str(comms.mode().iloc[0]) if len(comms) else None,
        rewakes=int(herd["epoll_rewake"].sum()),
        extra=len(herd) - int(herd["conn_id"].nunique()),
        identity=rec.meta.target.server,
    )


def judge(rec: Recording, summary: metrics.Summary | None = None) -> Verdict:
    return judge_from(summary or metrics.summarize(rec), evidence(rec))


def judge_from(s: metrics.Summary, ev: Evidence) -> Verdict:
    if not s.accepts:
        return Verdict("unknown", "no connection was accepted while recording: nothing to judge")
    woken = s.threads_woken_per_connection
    factor = s.herd_factor
    measure = woken if woken is not None else factor
    basis = "" if s.herd_factor_basis == "listener" else (
        " (this recording cannot tell listener wakeups from others: every wakeup counted)")
    saturated = factor is not None and factor <= SATURATED_BELOW
    busy = (f"; saturated: each listener wakeup accepted {1 / factor:.1f} connections, so the "
            f"workers rarely slept and a herd's cost shows at lower load: record again at a "
            f"lower connection rate") if saturated and factor else ""
    if measure is None or measure <= HERD_ABOVE:
        what = (f"{woken:.2f} threads woken per connection" if woken is not None
                else f"herd factor {factor:.2f}")
        # One thread woken for every connection (waitress, daphne: a single event loop
        # accepts) is not a wake-one mechanism at work: say what was seen.
        single = "one thread took every connection" if s.workers == 1 else "wake-one"
        return Verdict("no-herd", f"no herd: {what}, {single}{basis}{busy}",
                       server=ev.identity, saturated=saturated)
    idle = s.idle_fraction or 0.0
    eagain = s.eagain_per_accept or 0.0
    text = (f"herd: {measure:.1f} threads woken per connection, {idle:.0%} of them for nothing, "
            f"{eagain:.1f} EAGAIN per accept{basis}")
    how = MODE_WORDS.get(ev.mode or "") or (WAIT_WORDS[ev.waits[0]] if ev.waits else None)
    if how:
        text += f" (the workers wait in {how})"
    if s.wasted_cpu_us_per_connection is not None:
        # A floor: the herd also slows the wakeup that accepts, and tracing itself
        # shifts idle workers from EAGAIN to absorbed (docs/servers.md, the price).
        text += f"; woken for nothing they burn {s.wasted_cpu_us_per_connection:.1f} µs of CPU " \
                "per connection"
        if s.wasted_cores is not None:
            text += f", {s.wasted_cores:.4f} cores at this rate"
        text += " (a floor of the herd's cost: a before/after gives all of it)"
    own = server_fixes(ev.identity)
    if not any(f.kind in (SETTING, NONE) for f in own):
        text += (f"; {describe(ev.identity)} has no setting known and proven to remove it, so "
                 "the fixes below are changes to its code" if ev.identity else
                 "; the server was not recognised, so the fixes below are changes to its code")
    mechanisms = tuple(Fix(MECHANISM, t) for t in dict.fromkeys(wait_fixes(ev)))
    return Verdict("herd", text + busy, (*own, *mechanisms), server=ev.identity,
                   saturated=saturated)


def wait_fixes(ev: Evidence) -> tuple[str, ...]:
    """The fix for the wait most of the herd's wakeups came out of."""
    if not ev.waits:
        return ()
    if ev.waits[0] == "epoll":
        if ev.extra > 0 and ev.rewakes > ev.extra / 2:  # waiters woke each other
            return (ONE_EPOLL, REUSEPORT)
        if ev.mode == "epoll-exclusive":
            return (ALREADY_EXCLUSIVE,)
    return WAIT_FIXES[ev.waits[0]]


@dataclass(frozen=True)
class Judged:
    """A summary with its verdict (and, against a baseline, its ratios): one
    recording of `analyze --json`."""

    summary: metrics.Summary
    verdict: Verdict
    vs_baseline: dict[str, float | None] | None = None
    change: Any = None  # compare.Change against the baseline, where both were loaded

    @property
    def label(self) -> str:
        return self.summary.label

    def to_json(self) -> dict[str, Any]:
        out = self.summary.to_json()
        out["verdict"] = self.verdict.to_json()
        if self.vs_baseline is not None:
            out["vs_baseline"] = self.vs_baseline
        if self.change is not None:
            out["change"] = self.change.to_json()
        return out


def judged_summary(rec: Recording) -> Judged:
    """metrics.summarize with the verdict."""
    s = metrics.summarize(rec)
    return Judged(s, judge(rec, s))
