"""The sequential engine over a grid of unit settings, shared by :mod:`.sweeps` (one setting per
sweep point) and :mod:`.dose` (one setting whose defences are the (K, denoiser) grid).

:func:`run_grid` is the whole recorded run: open the store, record the run in the sidecar
(:func:`start_meta`, which refuses a file whose rows were made with other attack parameters),
resume, run the units chunk by chunk (:func:`run_jobs`: each chunk loaded and classified once,
then every job's unit of :mod:`.units`), and close the run's record. The paper's tables have their
own engine (:func:`pd_core.evaluation.evaluate`), with the same store and the same units.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .data import EvaluationError, Item
from .progress import Progress, ProgressTracker
from .resume import ResumeState
from .sidecar import library_versions, now_iso
from .store import open_store
from .units import UnitSettings, failed_unit_records, load_chunk, run_unit

__all__ = ["GridResult", "GridRecord", "run_grid", "run_jobs", "start_meta"]


@dataclass
class GridResult:
    """What a grid run returns: ``rows`` (every stored row, this run's and earlier ones, of the
    evaluation images), their ``summary``, the image counts (``images`` evaluated, ``kept``
    correctly classified), the ``unreadable`` files, the sidecar ``meta``, ``csv_path``, the run's
    ``seconds``, the number of units computed by this call and the units whose defence failed
    (``failed_units``: their rows are missing; the next run retries them)."""

    rows: object
    summary: object
    images: int
    kept: int
    unreadable: dict[str, str]
    meta: dict
    csv_path: Path | None
    seconds: float = 0.0
    computed_units: int = 0
    failed_units: list = field(default_factory=list)  # as :attr:`EvaluationResult.failed_units`


@dataclass(frozen=True)
class GridRecord:
    """What a grid run records in the sidecar.

    identity : the settings a resumed file must share (the store refuses others). run : this run's
    record (``date`` included), appended to ``meta["runs"]`` and closed with its seconds, counts and
    unreadable files. params : :func:`start_meta`'s attack parameters. defences : recorded under
    ``meta["defences"]`` when given. started : the ``time.monotonic()`` the seconds count from.
    """

    identity: dict
    run: dict
    params: dict
    started: float
    defences: dict | None = None


def run_grid(model, evaluation: Sequence[Item], jobs: Sequence[tuple[str, UnitSettings]],
             clean_settings: UnitSettings, record: GridRecord, *, out_csv: str | os.PathLike | None,
             summarize: Callable, progress: Progress | None) -> dict:
    """Run ``jobs`` on ``evaluation`` into the store at ``out_csv``, resuming, and record the run
    (:class:`GridRecord`). Returns the fields of a :class:`GridResult` as a dict (``summary`` is
    ``summarize(rows)``), for the caller's result class.
    """
    identity, run, started = record.identity, record.run, record.started
    store = open_store(out_csv)
    meta = store.read_meta(identity)
    start_meta(meta, model, identity, run, record.params)
    if record.defences is not None:
        meta.setdefault("defences", {}).update(record.defences)
    meta["failed_units"] = []  # this run's: it retries those of earlier runs
    store.write_meta(meta)
    resume = ResumeState.of(store.read_rows())
    unreadable, computed = run_jobs(model, evaluation, jobs, clean_settings, store, meta, resume, progress)
    rows = _evaluation_rows(store.read_rows(), evaluation)
    kept = _kept(rows)
    seconds = time.monotonic() - started
    failed = meta["failed_units"]
    meta["runs"][-1].update({"finished": now_iso(), "seconds": round(seconds, 1), "kept": kept,
                             "unreadable": unreadable, "computed_units": computed, "failed_units": len(failed)})
    store.write_meta(meta)
    return dict(rows=rows, summary=summarize(rows), images=len(evaluation), kept=kept, unreadable=unreadable,
                meta=meta, csv_path=store.path, seconds=seconds, computed_units=computed, failed_units=list(failed))


def start_meta(meta: dict, model, identity: dict, run: dict, params: dict[str, dict]) -> None:
    """Record a run in the sidecar ``meta`` (in place); refuse a point whose stored parameters differ
    from ``params`` (key ``"<attack>/<row preset>"`` -> the attack's full parameters)."""
    meta.setdefault("created", run["date"])
    meta["settings"] = identity
    meta["model"] = {"name": model.name, "title": model.spec.title, "source": model.spec.source}
    meta["versions"] = library_versions()
    stored = meta.setdefault("attack_params", {})
    for key, requested in params.items():
        requested = json.loads(json.dumps(requested, default=str))  # as the sidecar stores it
        old = stored.get(key)
        changed = sorted(k for k in requested if old is not None and k in old and old[k] != requested[k])
        if changed:
            raise EvaluationError(f"the results file has {key} rows made with other parameters "
                                  f"({', '.join(f'{k}: {old[k]!r} then, {requested[k]!r} now' for k in changed)}); "
                                  "choose another output file.")
        stored.setdefault(key, requested)
    meta.setdefault("runs", []).append(run)


def run_jobs(model, evaluation: Sequence[Item], jobs: Sequence[tuple[str, UnitSettings]],
             clean_settings: UnitSettings, store, meta: dict, resume, progress: Progress | None
             ) -> tuple[dict[str, str], int]:
    """The sequential engine over (attack, settings) jobs, chunk by chunk: each chunk is loaded and
    classified once, its clean unit runs with ``clean_settings``, then every job's unit; each unit's
    rows are appended to the store as it finishes. Finished rows (``resume.done``) are skipped.

    Returns the unreadable files and the number of units computed. All jobs must share the
    settings that :func:`load_chunk` reads (``config.top_k``, ``batch_size``).
    """
    size = clean_settings.batch_size
    chunks = [evaluation[i:i + size] for i in range(0, len(evaluation), size)]
    all_jobs = [("clean", clean_settings), *jobs]
    keys = [f"{a}/{s.row_preset(a)}" for a, s in all_jobs]
    tracker = ProgressTracker([(ci, k, len(ch)) for ci, ch in enumerate(chunks) for k in keys], progress)
    unreadable: dict[str, str] = {}
    computed = 0
    for ci, items in enumerate(chunks):
        pending = [resume.pending(items, a, s) for a, s in all_jobs]
        if not any(pending):
            for k in keys:
                tracker.finish(ci, k, len(items), 0.0, skipped=True)
            continue
        chunk = load_chunk(model, items, clean_settings)
        unreadable.update(chunk.unreadable)
        resume.clean_known.update(chunk.clean_correct())
        for (attack, settings), key, todo in zip(all_jobs, keys, pending):
            todo = [it for it in todo if it.name in chunk.index]
            if not todo:
                tracker.finish(ci, key, len(items), 0.0, skipped=True)
                continue
            t0 = time.monotonic()
            unit = run_unit(model, chunk, attack, settings, items=todo, skip=resume.done,
                            report=lambda f, m, ci=ci, key=key: tracker.report((ci, key, f), m))
            meta.setdefault("failed_units", []).extend(failed_unit_records(unit, ci, attack, settings))
            if unit.rows:
                store.append_rows(unit.rows)
                store.write_meta(meta)
                resume.done.update((r["image"], r["attack"], r["preset"], r["defence"]) for r in unit.rows)
                computed += 1
            tracker.finish(ci, key, unit.images, time.monotonic() - t0, skipped=not unit.rows)
            tracker.report(message=f"{key}: chunk {ci + 1}/{len(chunks)} done")
    return unreadable, computed


def _evaluation_rows(rows, evaluation: Sequence[Item]):
    return rows[rows["image"].astype(str).isin({it.name for it in evaluation})]


def _kept(rows) -> int:
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    return int((clean["correct"].astype(int) == 1).sum())
