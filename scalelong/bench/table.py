"""The rows of a ``scalelong-bench`` table, their verdicts, and the table as text, Markdown and CSV."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scalelong.atomic import write_atomic

COLUMNS = ("section", "measurement", "ours", "baseline", "ratio", "target", "verdict", "note")
SECTIONS = {
    "backbone": "1. Training step vs reference implementations (speed: reference time / ours)",
    "scaler": "1b. Long-skip scalers (time of a step / time with none)",
    "framework": "2. Framework overhead (scalelong-train time per step / bare PyTorch loop)",
    "efficiency": "3. Compute efficiency (achieved FLOP/s of a training step / matmul peak)",
    "sampling": "4. Sampling and evaluation (library time / bare loop)",
    "memory": "5. Peak memory of a training step",
    "compile": "6. torch.compile (speed: eager time / compiled)",
}


@dataclass(frozen=True)
class Row:
    """One measurement. ``ratio`` is None when it was not measured (``note`` says why); ``target`` is
    ``(">=", 1.0)`` or ``("<=", 1.03)``, or None for a figure without a target."""

    section: str
    measurement: str
    ours: str = ""
    baseline: str = ""
    ratio: float | None = None
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``pass`` or ``miss`` against the target, ``—`` without one, ``not measured`` without a ratio."""
        if self.ratio is None or not math.isfinite(self.ratio):
            return "not measured"
        if self.target is None:
            return "—"
        op, bound = self.target
        return "pass" if (self.ratio >= bound if op == ">=" else self.ratio <= bound) else "miss"

    def cells(self) -> tuple[str, ...]:
        ratio = "" if self.ratio is None else f"{self.ratio:.3f}"
        target = "—" if self.target is None else f"{'≥' if self.target[0] == '>=' else '≤'} {self.target[1]:.2f}"
        return (self.section, self.measurement, self.ours, self.baseline, ratio, target, self.verdict, self.note)


def text_table(rows: Sequence[Row]) -> str:
    """The rows as aligned plain text, one block per section (what the command prints)."""
    lines = []
    for section, title in SECTIONS.items():
        block = [r.cells()[1:] for r in rows if r.section == section]
        if not block:
            continue
        widths = [min(60, max(len(c) for c in col)) for col in zip(COLUMNS[1:], *block)]
        lines += ["", title]
        for cells in [COLUMNS[1:], *block]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines[1:])


def markdown(rows: Sequence[Row], header: Mapping[str, str], notes: Sequence[str] = ()) -> str:
    """A Markdown page: the header (date, machine, torch, threads, precision, command), then one table per section."""
    out = [f"# scalelong-bench: {header.get('device', '')} {header.get('precision', '')}", ""]
    out += [f"- {key}: {value}" for key, value in header.items()]
    out += [f"- {note}" for note in notes]
    for section, title in SECTIONS.items():
        block = [r for r in rows if r.section == section]
        if not block:
            continue
        out += ["", f"## {title}", "", "| " + " | ".join(COLUMNS[1:]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()[1:]) + " |" for r in block]
    return "\n".join(out) + "\n"


def csv_text(rows: Sequence[Row], header: Mapping[str, str]) -> str:
    """The rows as CSV, each with the header's fields (date, machine, torch, ...) in its own columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, *header])
    for row in rows:
        writer.writerow([*row.cells(), *header.values()])
    return buffer.getvalue()


def write_tables(rows: Sequence[Row], header: Mapping[str, str], out_dir: Path,
                 notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """``<out_dir>/<device>-<precision>.md`` and ``.csv``, each written whole or not at all."""
    stem = Path(out_dir) / f"{header['device']}-{header['precision']}"
    md, table = stem.with_suffix(".md"), stem.with_suffix(".csv")
    write_atomic(md, markdown(rows, header, notes))
    write_atomic(table, csv_text(rows, header))
    return md, table
