"""What a results store already holds, so that a restarted run computes only what is missing.

Rows are keyed by (image, attack, preset, defence): a run needs, for each image and attack, one row
per column of its settings (:attr:`~pd_core.evaluation.units.UnitSettings.columns`), and a dropped
image (misclassified without attack) only its clean, undefended row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .data import Item

if TYPE_CHECKING:
    from .units import UnitSettings

__all__ = ["ResumeState"]


@dataclass
class ResumeState:
    """What the store already holds: the finished row keys (image, attack, preset, defence) and
    the clean correctness of each image seen (1 counted, 0 dropped)."""

    done: set = field(default_factory=set)
    clean_known: dict = field(default_factory=dict)

    @classmethod
    def of(cls, rows) -> "ResumeState":
        done = set(zip(rows["image"].astype(str), rows["attack"].astype(str), rows["preset"].astype(str),
                       rows["defence"].astype(str)))
        clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
        return cls(done, {r.image: int(r.correct) for r in clean.itertuples()})

    def needed(self, it: Item, attack: str, settings: UnitSettings) -> list[tuple]:
        """The rows this run must have for ``it``: a dropped image has only its clean, undefended row."""
        if self.clean_known.get(it.name) == 0:
            return [(it.name, "clean", "none", "none")] if attack == "clean" else []
        return [(it.name, attack, settings.row_preset(attack), d) for d in settings.columns]

    def pending(self, chunk: Sequence[Item], attack: str, settings: UnitSettings) -> list[Item]:
        return [it for it in chunk if any(k not in self.done for k in self.needed(it, attack, settings))]
