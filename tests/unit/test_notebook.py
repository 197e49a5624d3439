"""The notebook runs from a clean kernel on the recordings kept in the repository."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "herd_analysis.ipynb"


def test_outputs_are_saved() -> None:
    """It reads on a web page without running (`make notebook` refreshes them)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "epoll-shared accepts 400 == 400" in text


def test_notebook_executes() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "epoll-shared accepts 400 == 400" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_notebook_reads_the_recording_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    one = NOTEBOOK.parent / "data" / "epoll-exclusive.parquet"
    monkeypatch.setenv("HERDTRACE_RECORDINGS", str(one))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    assert "epoll-exclusive accepts 400 == 400" in text and "epoll-shared" not in text
