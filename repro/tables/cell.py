"""One table cell: the values of a (row, column)'s finished seeds, their statistics, and counts of the runs that
gave none (``repro.tables.report`` aggregates them; ``repro.tables.reproduction`` judges them)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from repro.tables.spec import Column

__all__ = ["Cell"]


@dataclass
class Cell:
    """One (row, column): values of the finished seeds and counts of the runs that gave none."""

    values: list[float] = field(default_factory=list)
    nonfinite: int = 0
    diverged: int = 0
    failed: int = 0
    missing: int = 0  # runs not run (or not finished)
    unreported: int = 0  # finished runs that report no value for the column (e.g. a row that logs no such trace)
    peaks: list[float] = field(default_factory=list)  # each finished seed's best curve point (columns with ``better``)
    peak_steps: list[int] = field(default_factory=list)  # the step of each of ``peaks``
    # a clock-time column's: the machines its values were timed on, as the Compute line names them (None: unrecorded)
    machines: set[str | None] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def se(self) -> float | None:
        """Standard error of the mean, std / sqrt(n); None below two values."""
        return self.std / math.sqrt(self.n) if self.n > 1 else None

    def stat(self, name: str) -> float | None:
        if name == "peak":
            return statistics.fmean(self.peaks) if self.peaks else None
        return {"mean": self.mean, "std": self.std, "se": self.se}[name]

    def count(self, name: str) -> int:
        """How many seeds a statistic rests on: those with a curve for ``peak``, the finished ones otherwise."""
        return len(self.peaks) if name == "peak" else self.n

    def spread(self, col: Column) -> float | None:
        """The spread the page shows beside the mean: the paper's statistic (s.e. or std), none for one run."""
        return None if self.n < 2 else self.se if col.paper_stat == "se" else self.std
