"""What a bench runs: load profiles x modes x repeats, interleaved."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from herdtrace.bench.runner import RunSpec
from herdtrace.bench.tools import TOOLS
from herdtrace.errors import HerdtraceError
from herdtrace.workloads import modes as wakeup_modes


@dataclass(frozen=True)
class Profile:
    """A load: `one-at-a-time` leaves workers waiting between connections (the herd
    shows); `saturate` keeps them busy (the cost shows in throughput)."""

    name: str
    rate: float | None = None
    concurrency: int | None = None
    connections: int | None = None
    duration: float | None = None

    def describe(self) -> str:
        how = f"rate {self.rate:g}/s" if self.rate else f"concurrency {self.concurrency}"
        much = f"{self.connections} connections" if self.connections else f"{self.duration:g}s"
        return f"{self.name}: {how}, {much}"


DEFAULT_PROFILES = (
    Profile("one-at-a-time", concurrency=1, connections=1000),
    Profile("saturate", concurrency=16, connections=4000),
)


@dataclass(frozen=True)
class BenchOptions:
    output: Path
    modes: tuple[str, ...] = ()
    workers: int = 4
    threads: bool = False
    rate: float | None = None
    concurrency: int | None = None
    connections: int | None = None
    duration: float | None = None
    repeats: int = 1
    load_tool: str = "builtin"
    observer_effect: bool = False
    baseline: str = wakeup_modes.HERD_MODE
    force: bool = False

    def resolved_modes(self) -> tuple[str, ...]:
        if not self.modes:
            return wakeup_modes.supported_modes()
        for name in self.modes:
            wakeup_modes.resolve(name)  # unknown, or not on this kernel: one clear line
        return self.modes

    def profiles(self) -> tuple[Profile, ...]:
        if self.rate is None and self.concurrency is None:
            if self.connections is None and self.duration is None:
                return DEFAULT_PROFILES
            return tuple(replace(p, connections=self.connections, duration=self.duration)
                         for p in DEFAULT_PROFILES)
        if (self.rate is None) == (self.concurrency is None):
            raise HerdtraceError("give at most one of --rate or --concurrency")
        if self.connections is None and self.duration is None:
            raise HerdtraceError("with --rate or --concurrency, give --connections or --duration")
        return (Profile("custom", self.rate, self.concurrency, self.connections, self.duration),)

    def validate(self) -> None:
        if self.workers < 1:
            raise HerdtraceError(f"--workers must be at least 1, got {self.workers}")
        if self.repeats < 1:
            raise HerdtraceError(f"--repeats must be at least 1, got {self.repeats}")
        if self.load_tool not in TOOLS:
            raise HerdtraceError(f"unknown --load {self.load_tool!r}; tools: {', '.join(TOOLS)}")
        if self.connections is not None and self.duration is not None:
            raise HerdtraceError("give --connections or --duration, not both")
        if self.output.exists() and any(self.output.iterdir()) and not self.force:
            raise HerdtraceError(f"{self.output} is not empty; use --force to reuse it")
        self.resolved_modes()
        self.profiles()


@dataclass(frozen=True)
class PlannedRun:
    profile: Profile
    spec: RunSpec
    repeat: int

    @property
    def stem(self) -> str:
        traced = "" if self.spec.traced else ".untraced"
        return f"{self.profile.name}/{self.spec.mode}.r{self.repeat}{traced}"


def schedule(opts: BenchOptions) -> list[PlannedRun]:
    """Every profile, then for each repeat every mode in turn (a b a b ...), so that
    drift on a noisy machine hits every mode alike; each repeat starts one mode
    later (a b c, b c a, ...) so that no mode always runs first."""
    runs = []
    names = opts.resolved_modes()
    for profile in opts.profiles():
        for repeat in range(1, opts.repeats + 1):
            shift = (repeat - 1) % len(names)
            for mode in names[shift:] + names[:shift]:
                for traced in (True, False) if opts.observer_effect else (True,):
                    spec = RunSpec(mode=mode, workers=opts.workers, threads=opts.threads,
                                   rate=profile.rate, concurrency=profile.concurrency,
                                   connections=profile.connections, duration=profile.duration,
                                   traced=traced, load_tool=opts.load_tool)
                    runs.append(PlannedRun(profile, spec, repeat))
    return runs
