"""The results file: a CSV of rows (one per image × attack × defence) and its JSON sidecar.

Rows are appended in whole units (one write, flushed and fsync-ed), so a run killed in the middle
leaves at most a torn last line, which :func:`repair_tail` cuts and :func:`read_results` ignores.
The sidecar ``<csv>.meta.json`` records the model, the settings, the library versions (with the
git commit) and one record per run.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
from pathlib import Path

import torch

from .data import EvaluationError

__all__ = ["CSV_COLUMNS", "read_results", "CsvStore", "MemoryStore", "open_store"]

CSV_COLUMNS = ("image", "label", "attack", "preset", "defence", "prediction", "correct", "norm_l2",
               "linf_255", "psnr", "seed", "attack_seed", "copies", "agreement", "single_correct",
               "attack_success", "adv_rank_in_clean_top5", "true_rank_in_adv_top5",
               "norm_l2_model", "rmse")  # issue 13: the last two are absent (empty) in older files


def _meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".meta.json")


def read_results(csv_path: str | os.PathLike):
    """The rows of a results CSV as a pandas DataFrame (an incomplete last line is ignored), or
    the merged rows of a folder of Parquet shards (:func:`pd_core.evaluation.shards.read_shards`)."""
    import pandas as pd

    path = Path(csv_path)
    if path.is_dir():
        from .shards import read_shards

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


def _repair_tail(path: Path) -> None:
    """Cut an incomplete last line (left by a kill during a write) so appends stay well formed."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.seek(0)
        fh.truncate(data.rfind(b"\n") + 1)


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows in one write, then flush and fsync: a unit is in the file whole or not at all
    (a torn last line is cut by :func:`_repair_tail` / ignored by :func:`read_results`)."""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    new = not path.exists() or path.stat().st_size == 0
    if not new:  # keep an older file's own columns, so its rows stay aligned with its header
        with path.open() as fh:
            header = fh.readline().strip().split(",")
        if header != list(CSV_COLUMNS) and set(header) <= set(CSV_COLUMNS):
            writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    if new:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in writer.fieldnames})
    with path.open("a", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _versions() -> dict:
    from importlib import metadata

    from .. import __version__

    out = {"pd_core": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "torchvision", "timm", "foolbox", "ptwt", "PyWavelets", "scikit-image", "numpy",
                 "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["torch"] = torch.__version__  # with the build tag (+cpu, +cu130), which the metadata lacks
    out["git_commit"] = _git_commit()
    return out


def _git_commit() -> str | None:
    """The checkout's commit (with "+dirty" when pd_core has uncommitted changes), or None."""
    import subprocess

    here = Path(__file__).resolve().parent.parent  # the pd_core folder
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here)], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


def _check_meta(meta_path: Path, settings: dict) -> dict:
    """Read an existing sidecar and refuse to mix results made with other settings."""
    if not meta_path.exists():
        return {}
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise EvaluationError(f"{meta_path} is unreadable; delete it (and its CSV) or choose another output file.") from None
    old_settings = old.get("settings", {})
    diff = [k for k in settings if k in old_settings and old_settings[k] != settings[k]]
    if diff:
        detail = ", ".join(f"{k}: {old_settings[k]!r} in the file, {settings[k]!r} now" for k in diff)
        raise EvaluationError(f"the results file was made with other settings ({detail}); "
                              f"choose another output file or use the same settings to resume.")
    return old


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
        return _meta_path(self.path)

    def read_meta(self, settings: dict) -> dict:
        """The sidecar's content ({} for a new file); refuses a file made with other ``settings``."""
        return _check_meta(self.meta_path, settings)

    def write_meta(self, meta: dict) -> None:
        self.meta_path.write_text(json.dumps(meta, indent=2, default=str))

    def read_rows(self):
        """Every stored row (a DataFrame), after cutting a torn last line left by a kill."""
        _repair_tail(self.path)
        return read_results(self.path)

    def append_rows(self, rows: list[dict]) -> None:
        _append_rows(self.path, rows)


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
