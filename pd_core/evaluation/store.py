"""The results store: a CSV of rows (one per image × attack × defence) and its JSON sidecar.

The layout and the writer of the rows are :mod:`.csv_rows` (a unit is appended whole, a torn last
line is cut by :func:`~.csv_rows.repair_tail` and ignored by :func:`read_results`); the sidecar
``<csv>.meta.json`` is :mod:`.sidecar`. An engine talks to a store through a small interface
(:class:`CsvStore`, :class:`MemoryStore`).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .csv_rows import CSV_COLUMNS, append_rows, repair_tail
from .data import EvaluationError
from .shards import read_shards
from .sidecar import check_sidecar, sidecar_path

__all__ = ["read_results", "CsvStore", "MemoryStore", "open_store"]


def read_results(csv_path: str | os.PathLike):
    """The rows of a results CSV as a pandas DataFrame (an incomplete last line is ignored), or
    the merged rows of a folder of Parquet shards (:func:`pd_core.evaluation.shards.read_shards`)."""
    import pandas as pd

    path = Path(csv_path)
    if path.is_dir():
        return read_shards(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    text = path.read_text()
    if not text.endswith("\n"):  # a run killed in the middle of a write
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text), dtype={"image": str, "attack": str, "preset": str,
                                                   "defence": str})
    missing = [c for c in ("image", "label", "attack", "preset", "defence", "prediction", "correct")
               if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path} is not a results file of this program (missing {', '.join(missing)}).")
    for column in CSV_COLUMNS:  # columns added later (norm_l2_model, rmse) read as empty in older files
        if column not in frame.columns:
            frame[column] = float("nan")
    return frame


class CsvStore:
    """Rows in a CSV file with its JSON sidecar: the store of :func:`pd_core.evaluation.evaluate`.

    The interface an engine needs from a store: :meth:`read_rows`, :meth:`append_rows` (one whole
    unit at a time), :meth:`read_meta` / :meth:`write_meta` (the sidecar) and ``path`` (None for
    a store that keeps nothing on disk).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise EvaluationError(f"{self.path} is a folder; give a file name for the results.")
        if not self.path.parent.exists():
            raise EvaluationError(f"the folder {self.path.parent} does not exist.")

    @property
    def meta_path(self) -> Path:
        return sidecar_path(self.path)

    def read_meta(self, settings: dict) -> dict:
        """The sidecar's content ({} for a new file); refuses a file made with other ``settings``."""
        return check_sidecar(self.meta_path, settings)

    def write_meta(self, meta: dict) -> None:
        self.meta_path.write_text(json.dumps(meta, indent=2, default=str))

    def read_rows(self):
        """Every stored row (a DataFrame), after cutting a torn last line left by a kill."""
        repair_tail(self.path)
        return read_results(self.path)

    def append_rows(self, rows: list[dict]) -> None:
        append_rows(self.path, rows)


class MemoryStore:
    """The same interface keeping the rows in memory (``out_csv=None``): nothing is written."""

    path = None

    def __init__(self):
        self.rows: list[dict] = []

    def read_meta(self, settings: dict) -> dict:
        return {}

    def write_meta(self, meta: dict) -> None:
        pass

    def read_rows(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(CSV_COLUMNS))

    def append_rows(self, rows: list[dict]) -> None:
        self.rows.extend(rows)


def open_store(out_csv: str | os.PathLike | None) -> CsvStore | MemoryStore:
    """A :class:`CsvStore` for a file name, a :class:`MemoryStore` for None."""
    return MemoryStore() if out_csv is None else CsvStore(out_csv)
