"""Batch evaluation that reproduces the paper's Tables 1, 3 and 4 and Figures 2, 5 and 6 (§9–10).

One module per concept (the protocol itself is described in :mod:`.protocol`):

- :mod:`.data`: the labelled images, the held-apart tuning split, loading a chunk.
- :mod:`.stats`: Wilson intervals, accuracy per (attack, preset, defence).
- :mod:`.csv_rows`, :mod:`.sidecar`, :mod:`.store`: the results CSV (columns, append, repair), its
  JSON sidecar (versions, run identity) and the store interface engines use (:class:`CsvStore`,
  :class:`MemoryStore`); :mod:`.resume`: what a store already holds.
- :mod:`.batching`: how the model sees batches (device-sized, channels-last on the CPU).
- :mod:`.tables`: the tables' layout (rows, columns from the defence registry, titles).
- :mod:`.units`: the unit of work, one chunk of images × one attack with every defence -> rows
  (:func:`load_chunk`, :func:`run_unit`); what any engine calls.
- :mod:`.protocol`: :func:`evaluate`, the sequential engine over the units; :mod:`.result` what
  it returns.
- :mod:`.paper`: the paper's reference numbers and the tables in its layout.
- :mod:`.figures`: Figures 2, 5 and 6 (:func:`probability_curve`, the one Figure 2 computation,
  is also what the app's Defence Explorer draws).
- :mod:`.progress`: the progress estimate and bar.
- :mod:`.grid_engine`: the sequential engine over a grid of unit settings, which :mod:`.sweeps`
  (accuracy against perturbation size) and :mod:`.dose` (accuracy against K) run on;
  :mod:`.curve_figures` draws their curves.
- :mod:`.distributed`, :mod:`.dispatch`, :mod:`.shards`, :mod:`.ray_cluster`: the same units on
  Ray, into Parquet shards.

This package's ``__all__`` is what a user of the library needs; everything else is imported from
the module that defines it.
"""
from __future__ import annotations

from .csv_rows import CSV_COLUMNS
from .data import (DEFAULT_TUNING_FRACTION, EvaluationError, Item, evaluation_part, held_apart_everywhere,
                   load_items, split_tuning)
from .figures import (CurveResult, CurveSettings, deflection_curve, probability_curve, rank_histogram,
                      tuning_grid)
from .paper import PAPER_TABLE1, PAPER_TABLE3, PAPER_TABLE4, format_table, table_frame
from .progress import Progress, progress_bar
from .protocol import evaluate
from .result import EvaluationResult
from .settings import ClusterSettings, ProtocolSettings
from .stats import summarize, wilson_interval
from .store import read_results
from .tables import ATTACK_ORDER, ATTACK_TITLES, PAPER_ATTACKS

__all__ = [
    "evaluate", "ProtocolSettings", "ClusterSettings", "EvaluationResult", "EvaluationError", "format_table",
    "table_frame", "summarize", "wilson_interval", "split_tuning", "held_apart_everywhere", "evaluation_part",
    "read_results", "load_items",
    "Item", "Progress", "progress_bar", "deflection_curve", "probability_curve", "CurveSettings", "CurveResult",
    "tuning_grid", "rank_histogram", "PAPER_ATTACKS", "PAPER_TABLE1", "PAPER_TABLE3", "PAPER_TABLE4", "ATTACK_ORDER",
    "ATTACK_TITLES", "CSV_COLUMNS", "DEFAULT_TUNING_FRACTION",
]
