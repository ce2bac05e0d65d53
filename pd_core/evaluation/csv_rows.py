"""The CSV layout of results: its columns and the one writer of its rows (used by the CSV store,
:mod:`.store`, and by the export of Parquet shards, :mod:`.shards`, so both write the same file).

Rows are appended in whole units (one write, flushed and fsync-ed), so a run killed in the middle
leaves at most a torn last line, which :func:`repair_tail` cuts.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

__all__ = ["CSV_COLUMNS", "append_rows", "repair_tail"]

CSV_COLUMNS = ("image", "label", "attack", "preset", "defence", "prediction", "correct", "norm_l2",
               "linf_255", "psnr", "seed", "attack_seed", "copies", "agreement", "single_correct",
               "attack_success", "adv_rank_in_clean_top5", "true_rank_in_adv_top5",
               "norm_l2_model", "rmse")  # issue 13: the last two are absent (empty) in older files


def repair_tail(path: Path) -> None:
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


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows in one write, then flush and fsync: a unit is in the file whole or not at all
    (a torn last line is cut by :func:`repair_tail` / ignored by :func:`read_results`)."""
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
        writer.writerow({k: _cell_text(row.get(k)) for k in writer.fieldnames})
    with path.open("a", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _cell_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value
