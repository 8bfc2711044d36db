"""Plain-text tables for the metric logs."""
from __future__ import annotations

from typing import Sequence


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """Fixed-width table; floats printed with 2 decimals, NaN as 'nan'."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [title] if title else []
    lines.append(rule)
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                       for i, (c, w) in enumerate(zip(row, widths))) + " |")
        if index == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)
