"""Summaries as JSON: one rounding for `analyze --json` and the fleet roll-ups."""

from __future__ import annotations

import math
from typing import Any


def rounded(value: Any) -> Any:
    """JSON-ready: floats to four decimals (more would be noise, not precision),
    numpy scalars as Python numbers, NaN and pandas' NA as null."""
    import pandas as pd  # here: the CLI starts without pandas

    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value
