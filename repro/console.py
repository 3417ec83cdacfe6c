"""The terminal console of repro's commands."""
from __future__ import annotations

from rich.console import Console

__all__ = ["wide_console"]

PIPE_WIDTH = 200  # columns when stdout is not a terminal (a log file, a pipe): rich would cut tables at 80


def wide_console() -> Console:
    """A rich console: the terminal's width in a terminal, ``PIPE_WIDTH`` columns otherwise."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)
