"""The report figure: six titled panels, each with data; a real, non-blank PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pytest
from matplotlib.axes import Axes
from typer.testing import CliRunner

from herdtrace.analysis import load, views
from herdtrace.cli import app
from herdtrace.reports.figure import DPI, FIGSIZE, PANEL_TITLES, report_figure
from herdtrace.schema import Outcome
from tests.unit.test_analysis import two_connections


@pytest.fixture
def two_modes(tmp_path: Path) -> list[Path]:
    herd = two_connections().write(tmp_path / "herd.parquet", label="epoll-shared")
    one = two_connections()
    one.rows = [r for r in one.rows if r.get("outcome") not in (Outcome.ABSORBED, Outcome.EAGAIN)]
    return [herd, one.write(tmp_path / "one.parquet", label="epoll-exclusive")]


def has_data(ax: Axes) -> bool:
    return bool(ax.lines or ax.patches or ax.collections)


def test_figure_panels(two_modes: list[Path]) -> None:
    fig = report_figure([views.label_view(load.load_recording(p)) for p in two_modes])
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == list(PANEL_TITLES)
    for ax in axes:
        assert has_data(ax), ax.get_title()
        assert ax.get_xlabel() or ax.get_xticklabels(), ax.get_title()
        assert ax.get_legend() is not None, ax.get_title()
    herd = axes[0].patches
    assert [round(p.get_height(), 2) for p in herd] == [2.0, 1.0]  # type: ignore[attr-defined]
    footer = fig.texts[-1].get_text()
    assert "lost events" in footer and "kernel" in footer


def test_timeline_shows_the_herd(two_modes: list[Path]) -> None:
    view = views.label_view(load.load_recording(two_modes[0]))
    tl = view.timeline
    assert sorted(tl["tid"]) == [11, 12]
    assert tl["won"].sum() == 1
    assert set(tl["outcome"]) <= {"accepted", "absorbed", "eagain"}


def test_report_png(two_modes: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report.png"
    result = CliRunner().invoke(app, ["report", *map(str, two_modes), "-o", str(out)])
    assert result.exit_code == 0, result.output
    img = mpimg.imread(out)
    assert img.shape[:2] == (int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI))
    assert img.std() > 0.05  # not blank
    again = CliRunner().invoke(app, ["report", *map(str, two_modes), "-o", str(out)])
    assert again.exit_code != 0 and "--force" in again.output


def test_default_output_next_to_input(two_modes: list[Path]) -> None:
    result = CliRunner().invoke(app, ["report", str(two_modes[0])])
    assert result.exit_code == 0, result.output
    assert two_modes[0].with_suffix(".png").exists()
