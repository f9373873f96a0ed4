"""Matplotlib figures without pyplot's global state (Agg canvas), rendered to PNG bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

from worldflux.core.io import atomic_write_bytes

__all__ = ["figure_png", "new_figure", "save_png"]

PALETTE = ("#1f77b4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f")


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib ``Figure`` of ``width x height`` inches with an Agg canvas attached."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('plots need matplotlib: pip install "worldflux[plot]"') from exc
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(figure, path: str | os.PathLike) -> Path:
    """Write the figure as a PNG at ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, figure_png(figure))
    return path
