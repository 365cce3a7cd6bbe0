"""Plain-text tables for the terminal.  Keys are user-controlled text: control characters
(escape sequences, newlines) are shown escaped, never sent to the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_CELL = 70


def cell(value: Any, limit: int = MAX_CELL) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"
