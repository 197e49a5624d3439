"""The one-glance PNG: recordings (or labels) side by side, from analysis results only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from herdtrace.analysis.views import LabelView

FIGSIZE = (18.0, 10.0)
DPI = 100
OUTCOME_COLORS = {"accepted": "#2a9d8f", "eagain": "#e76f51", "absorbed": "#f4a261",
                  "other": "#8d99ae", "unresolved": "#d9d9d9"}
PANEL_TITLES = (
    "Herd factor: listener wakeups per accepted connection",
    "Outcomes of listener wakeups, per accepted connection",
    "Wake latency (sched_waking -> on CPU)",
    "Accept latency (established -> accept returns)",
    "Share of accepted connections per worker",
    "One typical connection's herd",
)


def _labels(views: list[LabelView]) -> list[str]:
    return [v.label for v in views]


def _no_data(ax: Axes, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")


def herd_factor_panel(ax: Axes, views: list[LabelView]) -> None:
    values = [v.summary.herd_factor or 0.0 for v in views]
    labels = [v.label + ("" if v.summary.herd_factor_basis == "listener" else "\n(all wakeups)")
              for v in views]
    bars = ax.bar(labels, values, color="#457b9d", label="listener wakeups / accept; inside: wasted µs/conn")
    ax.bar_label(bars, fmt="%.2f")
    wasted = [v.summary.wasted_cpu_us_per_connection for v in views]
    if any(w is not None for w in wasted):
        ax.bar_label(bars, labels=["" if w is None else f"{w:.1f} µs" for w in wasted],
                     label_type="center", rotation=90, fontsize="x-small", color="white")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="wake-one ideal (1.0)")
    ax.set_ylabel("listener wakeups per accepted connection")
    ax.set_ylim(0, max([*values, 1.0]) * 1.3)
    ax.legend(loc="upper left")


def _herd_outcomes(v: LabelView) -> dict[str, int]:
    """Outcomes of the wakeups the herd factor counts (all, where causes are unknown)."""
    return v.summary.listener_outcomes or v.summary.outcomes


def outcomes_panel(ax: Axes, views: list[LabelView]) -> None:
    bottom = np.zeros(len(views))
    for outcome, color in OUTCOME_COLORS.items():
        per_accept = np.array([_herd_outcomes(v)[outcome] / v.summary.accepts
                               if v.summary.accepts else 0.0 for v in views])
        ax.bar(_labels(views), per_accept, bottom=bottom, color=color, label=outcome)
        bottom += per_accept
    ax.set_ylabel("listener wakeups per accepted connection")
    ax.set_ylim(0, max([*bottom, 1.0]) * 1.45)
    ax.legend(title="outcome", loc="upper left", ncols=3)


def cdf_panel(ax: Axes, views: list[LabelView], attr: str) -> None:
    plotted = False
    for v in views:
        xs = getattr(v, attr)
        if len(xs) == 0:
            continue
        ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{v.label} (n={len(xs)})")
        plotted = True
    if not plotted:
        _no_data(ax, "no samples")
        return
    ax.set_xscale("log")
    ax.set_xlabel("µs (log scale)")
    ax.set_ylabel("fraction ≤ x")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")


def share_panel(ax: Axes, views: list[LabelView]) -> None:
    width = 0.8 / max(len(views), 1)
    most = max((len(v.accept_share) for v in views), default=0)
    for i, v in enumerate(views):
        if v.accept_share.empty:
            continue
        x = np.arange(len(v.accept_share)) + i * width
        jain = v.summary.fairness_jain
        ax.bar(x, v.accept_share.to_numpy() * 100, width=width,
               label=f"{v.label} (Jain {jain:.2f})" if jain is not None else v.label)
    if most == 0:
        _no_data(ax, "no accepts")
        return
    ax.set_xticks(np.arange(most) + 0.4 - width / 2, [f"#{i + 1}" for i in range(most)])
    ax.set_xlabel("worker, busiest first (mean over runs)")
    ax.set_ylabel("% of accepted connections")
    ax.legend(loc="upper right")


def timeline_panel(ax: Axes, views: list[LabelView]) -> None:
    # The label with the largest herd shows the herd best.
    v = max(views, key=lambda v: (len(v.timeline), v.summary.herd_factor or 0.0))
    tl = v.timeline
    if tl.empty:
        _no_data(ax, "no connection with attributed wakeups")
        return
    y = np.arange(len(tl))
    end = tl[["oncpu_us", "returned_us", "accept_us"]].max(axis=1).fillna(tl["woken_us"])
    colors = [OUTCOME_COLORS.get(o, "grey") for o in tl["outcome"]]
    ax.hlines(y, tl["woken_us"], end, colors=colors, linewidth=6, alpha=0.7)
    ax.scatter(tl["woken_us"], y, marker="o", color="black", zorder=3, label="woken")
    ax.scatter(tl["oncpu_us"], y, marker=">", color="#1d3557", zorder=3, label="on CPU")
    ax.scatter(tl["accept_us"], y, marker="s", color="#e63946", zorder=3, label="accept returns")
    ax.axvline(0, color="black", linestyle=":", label="connection established")
    names = [f"tid {t}{' (won)' if won else ''}: {o}"
             for t, won, o in zip(tl["tid"], tl["won"], tl["outcome"], strict=True)]
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"µs after the connection was established ({v.label})")
    ax.legend(loc="lower right", fontsize="small")


def footer(views: list[LabelView]) -> str:
    metas = [v.meta for v in views]
    kernels = sorted({m.kernel_release or "?" for m in metas})
    hosts = sorted({m.hostname or "?" for m in metas})

    def each(key: str) -> str:
        values = [getattr(v.summary, key) for v in views]
        if len(set(values)) == 1:
            return f"{values[0]}" + (" each" if len(views) > 1 else "")
        return ", ".join(f"{v.label}: {x}" for v, x in zip(views, values, strict=True))

    return (f"kernel {', '.join(kernels)} | host {', '.join(hosts)} | workers {each('workers')} | "
            f"lost events {each('lost_events')} | probe misses {each('probe_misses')} | herdtrace")


def report_figure(views: list[LabelView]) -> Figure:
    # A bare Figure on the Agg canvas: no pyplot state, no GUI, safe in servers and notebooks.
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    flat = axes.ravel()
    herd_factor_panel(flat[0], views)
    outcomes_panel(flat[1], views)
    cdf_panel(flat[2], views, "wake_latency_us")
    cdf_panel(flat[3], views, "accept_latency_us")
    share_panel(flat[4], views)
    timeline_panel(flat[5], views)
    for ax, title in zip(flat, PANEL_TITLES, strict=True):
        ax.set_title(title, fontsize="medium", fontweight="bold")
    for ax in flat[:2]:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle("herdtrace: thundering-herd report", fontsize="x-large", y=0.995)
    verdicts = "\n".join(f"{v.label}: {headline(v)}" for v in views)
    fig.text(0.5, 0.955, verdicts, ha="center", va="top", fontsize="medium")
    fig.text(0.5, 0.01, footer(views), ha="center", fontsize="small", color="#444444")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95 - 0.018 * len(views)))
    return fig


def headline(v: LabelView) -> str:
    """The verdict in a line that fits the figure: herd or not, and its price (the
    full sentence and the fixes are analyze's)."""
    s, verdict = v.summary, v.verdict
    woken = s.threads_woken_per_connection
    parts = [{"herd": "herd", "no-herd": "no herd"}.get(verdict.level, "not judged")]
    if woken is not None:
        parts.append(f"{woken:.2f} threads woken per connection")
    if s.wasted_cpu_us_per_connection is not None and verdict.level == "herd":
        parts.append(f"{s.wasted_cpu_us_per_connection:.1f} µs of CPU wasted per connection")
    if verdict.saturated:
        parts.append("saturated")
    return ", ".join(parts)


FORMATS = (".png", ".svg", ".pdf")


def save_figure(fig: Figure, path: Path) -> None:
    """PNG, SVG or PDF, by the file's extension."""
    fig.savefig(path, dpi=DPI, format=path.suffix.lower().lstrip("."))
