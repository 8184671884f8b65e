"""How cpv writes numbers for people: sizes in binary units, metric values to four significant
digits. One definition for the CLI's tables (``cpv model list``) and the HTML report, so a value
reads the same in both. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any


def human_size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 GiB``: bytes in binary units, one decimal above bytes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_size_delta(delta: int) -> str:
    """A signed size in human units: ``+1.5 MiB``, ``-512 B``, ``+0 B``."""
    return f"{'-' if delta < 0 else '+'}{human_size(abs(delta))}"


def metric_text(value: Any) -> str:
    """A metric's value as ``cpv model list`` shows it: a float to 4 significant digits
    (``0.8123``, ``nan``), anything else as it is."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_metrics(metrics: dict[str, Any]) -> str:
    """``accuracy=0.81, loss=0.2``, or ``-`` for none."""
    return ", ".join(f"{k}={metric_text(v)}" for k, v in metrics.items()) or "-"
