"""A results store for millions of rows: one Parquet shard per worker and flush (issue 12).

50,000 images × 7 attacks × up to 12 defences is about 4 million rows; one CSV appended by many
processes would need a lock and is slow to read. Here every writer (one per Ray worker, or the
single process) owns its files and never touches another's:

* a flush writes ``shard-<writer>-<seq>.parquet``: first to a hidden temporary file in the same
  folder, then ``fsync`` and :func:`os.replace`, so a file is either complete or absent — a process
  killed at any moment leaves no half shard (a stray ``.tmp-*`` file is ignored and may be deleted);
* each shard carries, in its Parquet key-value metadata (``pd_units``), the keys of the work units
  whose rows it holds — including units that produced no row (an attack on a chunk whose images
  were all misclassified) — so :func:`finished_units` needs no manifest and a rerun skips exactly
  the units that reached the disk;
* :func:`read_shards` reads every shard (``pyarrow.dataset``), keeps the first row of each key
  (image, attack, preset, defence) in file-name order — a unit computed twice (a worker that died
  after writing, then retried) gives identical rows, so which copy is kept does not matter — and
  returns the same columns and values as the CSV store's :func:`read_results` for the same rows,
  once both are written through the CSV formatting (:func:`export_csv` uses the CSV store's own
  writer, so a small run can still end in ``results.csv``).

Floats are stored as float64 (the CSV keeps 6 significant digits); empty CSV cells (the attack
fields of a dropped image's clean row) are nulls. The metadata sidecar of a shard folder is
``<folder>/meta.json`` (:func:`meta_path`), with the same content as the CSV store's sidecar.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Iterable, Sequence

from .csv_rows import CSV_COLUMNS, append_rows  # the CSV store's layout and writer: the same file

__all__ = ["ShardWriter", "read_shards", "finished_units", "export_csv", "shard_files", "meta_path",
           "is_shard_store", "UNITS_KEY", "ROW_KEY"]

UNITS_KEY = b"pd_units"
ROW_KEY = ("image", "attack", "preset", "defence")
_SHARD_RE = re.compile(r"^shard-([A-Za-z0-9_.-]+)-(\d{6})\.parquet$")
_STRINGS = {"image", "attack", "preset", "defence"}
_FLOATS = {"norm_l2", "linf_255", "psnr", "agreement", "norm_l2_model", "rmse"}


def _schema():
    import pyarrow as pa

    fields = []
    for name in CSV_COLUMNS:
        kind = pa.string() if name in _STRINGS else pa.float64() if name in _FLOATS else pa.int64()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def meta_path(folder: str | os.PathLike) -> Path:
    """The metadata sidecar of a shard folder."""
    return Path(folder) / "meta.json"


def is_shard_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of shards (existing folder, or a name without ``.csv``)."""
    path = Path(path)
    return path.is_dir() or (not path.exists() and path.suffix.lower() != ".csv")


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The complete shards of ``folder``, in file-name order (temporary files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _SHARD_RE.match(p.name))


def _cell(kind, value):
    """A row value as a Parquet column of type ``kind`` holds it (None for the CSV store's empty cells)."""
    import pyarrow as pa

    if value is None or value == "":
        return None
    if pa.types.is_string(kind):
        return str(value)
    if pa.types.is_floating(kind):
        return float(value)
    return int(value)


class ShardWriter:
    """Writes one process's rows as atomic Parquet files ``shard-<writer>-<seq>.parquet``.

    ``writer`` names the process (e.g. ``"w3"``); a random suffix makes it unique across runs, so a
    restarted worker never overwrites a shard of its previous life. ``schema``: the columns of
    another kind of row (the adaptive attack's, :mod:`pd_core.adaptive.distributed`).
    """

    def __init__(self, folder: str | os.PathLike, writer: str = "w", schema=None):
        self.folder = Path(folder)
        self.schema = schema  # a pyarrow schema of strings, floats and ints; default: the CSV columns
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.]", "_", str(writer))[:40] or "w"
        self.writer = f"{safe}.{uuid.uuid4().hex[:8]}"
        self.seq = 0
        self.files: list[Path] = []

    def write(self, rows: Sequence[dict], units: Iterable[str]) -> Path:
        """Write ``rows`` (dicts with the CSV columns) and mark ``units`` finished, atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self.schema if self.schema is not None else _schema()
        data = {f.name: [_cell(f.type, row.get(f.name)) for row in rows] for f in schema}
        table = pa.Table.from_pydict(data, schema=schema)
        table = table.replace_schema_metadata({UNITS_KEY: json.dumps(sorted(set(units))).encode()})
        final = self.folder / f"shard-{self.writer}-{self.seq:06d}.parquet"
        temp = self.folder / f".tmp-{self.writer}-{self.seq:06d}.parquet"
        pq.write_table(table, temp, compression="zstd")
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, final)
        self.seq += 1
        self.files.append(final)
        return final


def finished_units(folder: str | os.PathLike) -> dict[str, int]:
    """Unit key -> number of shards that hold it (1 for each unit computed once)."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for path in shard_files(folder):
        meta = pq.read_schema(path).metadata or {}
        for unit in json.loads(meta.get(UNITS_KEY, b"[]")):
            counts[unit] = counts.get(unit, 0) + 1
    return counts


def read_shards(folder: str | os.PathLike, *, deduplicate: bool = True):
    """Every row of a shard folder as a pandas DataFrame with the CSV store's columns.

    Rows are in file-name order, then file order; with ``deduplicate`` the first row of each
    (image, attack, preset, defence) is kept. Columns and dtypes follow :func:`read_results` of
    the CSV store (strings for the key columns, floats where a cell may be empty).
    """
    import pandas as pd
    import pyarrow as pa

    files = shard_files(folder)
    if not files:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    import pyarrow.dataset as ds

    table = ds.dataset([str(p) for p in files], format="parquet", schema=_schema()).to_table()
    # ds.dataset keeps the order of the given files and of the rows inside each.
    # Nullable integers: a 63-bit seed must not pass through float64.
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if deduplicate:
        frame = frame.drop_duplicates(subset=list(ROW_KEY), keep="first").reset_index(drop=True)
    return frame


def export_csv(folder: str | os.PathLike, csv_path: str | os.PathLike, *, order: Sequence[str] | None = None) -> int:
    """Write the merged shards to one CSV in the CSV store's format (atomically); returns the row count.

    order : sort the rows by these columns first (default: the row key), so the file does not
        depend on which worker finished first.
    """
    frame = read_shards(folder)
    frame = frame.sort_values(list(order or ROW_KEY), kind="stable")
    csv_path = Path(csv_path)
    temp = csv_path.with_name(f".{csv_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    rows = [{k: (None if _isnull(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]
    append_rows(temp, rows) if rows else temp.write_text(",".join(CSV_COLUMNS) + "\n")
    os.replace(temp, csv_path)
    return len(rows)


def _isnull(value) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
