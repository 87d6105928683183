"""Statistics over seeds and the tables that show them: one definition for the reproduction reports and
``scalelong-aggregate``.

A number measured on several seeds is a :class:`Stat` (mean ± sample std, n, and how many seeds diverged).
Two cells are compared by the reports' decision rule (:func:`compare`): "A < B" holds when the ±1 std
intervals over seeds separate, so no comparison rests on one seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """mean ± std (sample std) over n seeds; ``diverged`` counts seeds whose value is infinite (a run that
    ended in a non-finite loss)."""

    mean: float
    std: float
    n: int
    diverged: int = 0

    def __str__(self) -> str:
        if self.n == 0:
            return "–" if not self.diverged else f"diverged {self.diverged}/{self.diverged}"
        text = f"{self.mean:.3g} ± {self.std:.2g} (n={self.n})" if self.n > 1 else f"{self.mean:.3g} (n=1)"
        return text + (f", diverged {self.diverged}" if self.diverged else "")

    @property
    def missing(self) -> bool:
        """No seed at all (neither a finite value nor a divergence)."""
        return self.n + self.diverged == 0


def stat(values: Iterable[float]) -> Stat:
    """The :class:`Stat` of ``values``: NaN values (not measured) are dropped, infinite ones count as diverged."""
    values = [float(v) for v in values if not math.isnan(v)]
    finite = [v for v in values if math.isfinite(v)]
    diverged = len(values) - len(finite)
    if not finite:
        return Stat(math.nan, math.nan, 0, diverged)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return Stat(statistics.fmean(finite), std, len(finite), diverged)


def compare(a: Stat, b: Stat) -> str:
    """``"<"`` / ``">"`` when the ±1 std intervals of a and b separate, ``"?"`` otherwise or with fewer than 2
    seeds. A cell whose every seed diverged counts as +∞ (worse than any finite value)."""
    def interval(s: Stat) -> tuple[float, float]:
        return (math.inf, math.inf) if s.n == 0 else (s.mean - s.std, s.mean + s.std)

    if a.n + a.diverged < 2 or b.n + b.diverged < 2 or (0 < a.n < 2) or (0 < b.n < 2):
        return "?"
    (a_low, a_high), (b_low, b_high) = interval(a), interval(b)
    if a_high < b_low:
        return "<"
    if a_low > b_high:
        return ">"
    return "?"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are written with ``str`` (a :class:`Stat` as mean ± std (n))."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
