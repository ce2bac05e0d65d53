"""What the protocol's engines return (:func:`pd_core.evaluation.protocol.evaluate` and
:func:`pd_core.evaluation.distributed.evaluate_distributed`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .paper import format_table

__all__ = ["EvaluationResult"]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    rows: every CSV row (pandas DataFrame), including those of earlier runs into the same file.
    summary: one row per (attack, preset, defence) over the counted images (:func:`summarize`).
    images: evaluation images considered; kept: correctly classified before any attack;
    dropped: names of the images the undefended model misclassified; unreadable: name -> reason.
    meta: the sidecar's content. csv_path: where the rows are (None for an in-memory run).
    failed_units: the units whose defence failed in this run (chunk, attack, preset, defence,
    reason; their rows are missing and a new run retries them), also ``meta["failed_units"]``.
    """

    rows: object
    summary: object
    images: int
    kept: int
    dropped: list[str]
    unreadable: dict[str, str]
    meta: dict
    csv_path: Path | None
    table: int = 1
    preset: str = "paper"
    ensemble: int = 10
    seconds: float = 0.0
    failed_units: list = field(default_factory=list)
    columns: tuple = ()  # the defences judged in Table 1's transfer setting (empty: the table's columns)

    def format_table(self, table: int | None = None, preset: str | None = None, paper: bool = True) -> str:
        return format_table(self, table=table or self.table, preset=preset or self.preset, paper=paper,
                            defences=self.columns or None)
