"""What every benchmark receives, and what it hands back."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Ctx:
    quick: bool
    backbones: tuple[str, ...]
    reps: int  # repetitions of the expensive figures
    burst: bool = False  # benchmark 3: also upload 1,000 frames in one burst
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Figure:
    """One row of the figures table."""

    bench: int
    name: str
    backbone: str | None
    target: str
    measured: str
    passed: bool | None  # None: report only, no target
    summary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
