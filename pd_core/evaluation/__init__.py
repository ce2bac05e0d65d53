"""Batch evaluation that reproduces the paper's Tables 1, 3 and 4 and Figures 2, 5 and 6 (§9–10).

One module per concept (the protocol itself is described in :mod:`.protocol`):

- :mod:`.data`: the labelled images, the held-apart tuning split, loading a chunk.
- :mod:`.stats`: Wilson intervals, name-derived seeds, accuracy per (attack, preset, defence).
- :mod:`.store`: the results CSV (append, repair, read) and its JSON sidecar, behind a small store
  interface (:class:`CsvStore`, :class:`MemoryStore`: read rows, append rows, read/write meta).
- :mod:`.batching`: how the model sees batches (device-sized, channels-last on the CPU).
- :mod:`.units`: the unit of work, one chunk of images × one attack with every defence -> rows
  (:func:`load_chunk`, :func:`run_unit`); what any engine calls.
- :mod:`.protocol`: :func:`evaluate`, the sequential engine over the units.
- :mod:`.paper`: the paper's reference numbers and the tables in its layout.
- :mod:`.figures`: Figures 2, 5 and 6 (:func:`probability_curve`, the one Figure 2 computation,
  is also what the app's Defence Explorer draws).
- :mod:`.progress`: the progress estimate and bar.
- :mod:`.grid_engine`: the sequential engine over a grid of unit settings, which :mod:`.sweeps`
  (accuracy against perturbation size) and :mod:`.dose` (accuracy against K) run on;
  :mod:`.curve_figures` draws their curves.
- :mod:`.distributed`, :mod:`.dispatch`, :mod:`.shards`: the same units on Ray, into Parquet shards.

Every public name of the former single module ``pd_core/evaluation.py`` is importable from here.
"""
from __future__ import annotations

from .batching import CHANNELS_LAST_ON_CPU, CPU_MODEL_BATCH
from .data import (DEFAULT_TUNING_FRACTION, TUNING_SALT, EvaluationError, Item, evaluation_part, load_items,
                   load_labelled_images, split_tuning)
from .figures import CurveResult, deflection_curve, probability_curve, rank_histogram, tuning_grid
from .paper import (ATTACK_ORDER, ATTACK_TITLES, PAPER_ATTACKS, PAPER_TABLE1, PAPER_TABLE3, PAPER_TABLE4,
                    TABLE3_TITLES, TABLE4_TITLES, TABLE_DEFENCES, format_table, table_frame)
from ..defence import PAPER_DEFAULTS  # noqa: F401 (the old module had it; pages/benchmark.py reads it here)
from .progress import Progress, progress_bar
from .protocol import EvaluationResult, evaluate
from .stats import summarize, wilson_interval
from .store import CSV_COLUMNS, CsvStore, MemoryStore, open_store, read_results
from .units import Chunk, UnitResult, UnitSettings, defended_copies, load_chunk, run_unit

__all__ = [
    "evaluate", "EvaluationResult", "EvaluationError", "format_table", "table_frame", "summarize",
    "wilson_interval", "split_tuning", "evaluation_part", "read_results", "load_items",
    "load_labelled_images",
    "Item", "defended_copies", "progress_bar", "deflection_curve", "probability_curve", "CurveResult",
    "tuning_grid", "rank_histogram", "PAPER_ATTACKS", "PAPER_TABLE1", "PAPER_TABLE3", "PAPER_TABLE4",
    "TABLE_DEFENCES", "ATTACK_ORDER", "ATTACK_TITLES", "CSV_COLUMNS", "DEFAULT_TUNING_FRACTION",
    # the unit of work and the store interface, for other engines (pd_core.evaluation.distributed)
    "UnitSettings", "Chunk", "UnitResult", "load_chunk", "run_unit", "CsvStore", "MemoryStore", "open_store",
]
