"""The paper's evaluation protocol (§9–10): :func:`evaluate` and its unit of work.

Protocol (paper §9 and §10, SPEC §2, issue 5)
--------------------------------------------
1. Images come from a folder (labels from ``labels.csv`` or a WordNet-id prefix, see
   :func:`pd_core.images.read_labelled_folder`) or from a list of ``(path, label)``.
2. The folder is split **deterministically** into an evaluation part and a held-apart tuning part
   (:func:`split_tuning`: an image is a tuning image when the SHA-256 of its name falls in the
   lowest ``tuning_fraction`` of the hash range). :func:`evaluate` only ever sees the evaluation
   part and :func:`tuning_grid` (Figure 5) only the tuning part, so hyper-parameters are never
   chosen on evaluation images (paper §9.1). The order of the evaluation images is the hash order,
   so ``limit=N`` takes a deterministic, class-mixed prefix, and a larger ``limit`` extends it.
3. Only images the undefended model classifies correctly count ("Clean, no defence" is 100% by
   construction); the others are dropped and reported.
4. For each attack: the adversarial batch (:func:`pd_core.attacks.attack`), then the predictions
   with no defence, one defended copy ("single") and the majority vote of ``ensemble`` copies
   ("ens10"), or the Table 3 / Table 4 defence variants. The clean row (attack ``"clean"``) goes
   through the same defences.

Results are appended to a CSV, one row per (image, attack, defence), as each (batch of images ×
attack) finishes, with a JSON sidecar ``<csv>.meta.json`` recording the model, the parameters,
the library versions, the seed and the date. A restarted run reads the CSV and skips finished rows.

Reproducibility. The deflection randomness of an image comes from its own generator seeded with
``derive_seed(seed, image name, attack)`` (never from its position in a batch), and the same seed
is used for every defence variant of that (image, attack) — common random numbers, so Table 3's
PD, PD+JPEG and WD+PD see the same deflections. Attacks run on fixed chunks of ``batch_size``
images (chunk i is always the same images), seeded from the chunk's image names, so a resumed run
recomputes exactly what an uninterrupted one does; keep ``batch_size`` when resuming (the CSV
sidecar records it) because batched floating point may differ in the last bits between batch
compositions. Raising ``limit`` later extends the same prefix of images and reuses the finished
rows; with a ``limit`` that is a multiple of ``batch_size`` the rows are exactly those of a single
run with the larger limit (otherwise the last, partial chunk is attacked in a different batch,
which changes PGD's random start).

Accuracies carry their sample size and a Wilson 95% interval (:func:`wilson_interval`).
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import torch

from .data import TUNING_SALT, EvaluationError, Item, evaluation_part, load_items
from .progress import Progress, ProgressTracker
from .result import EvaluationResult
from .resume import ResumeState
from .sidecar import library_versions, now_iso
from .stats import summarize
from .store import open_store
from .settings import ProtocolSettings
from .tables import ATTACK_TITLES
from .units import UnitSettings, describe_columns, failed_unit_records, load_chunk, run_unit

__all__ = ["evaluate"]


def evaluate(model, images, settings: ProtocolSettings | None = None, *,
             out_csv: str | os.PathLike | None = None, labels_csv: str | os.PathLike | None = None,
             progress: Progress | None = None) -> EvaluationResult:
    """Run the paper's protocol (§9–10) on labelled images and return accuracies with intervals.

    Parameters
    ----------
    model : a :class:`pd_core.models.Classifier`; everything runs on its device.
    images : a folder (labels from ``labels_csv``, its ``labels.csv``, or WordNet-id prefixes) or a
        list of ``(path, label)``. Only its evaluation part is used (:func:`split_tuning` with
        ``settings.tuning_fraction``; 0 uses every image).
    settings : what to run (:class:`~pd_core.evaluation.settings.ProtocolSettings`: attacks,
        preset, table or defences, ensemble, limit, seed, chunk size, defence settings); the
        paper's Table 1 with its six attacks when None. Every table also records the undefended
        prediction (``defence = "none"``); Table 1's single-run column is the first of the
        ensemble's copies, Tables 3/4 report the vote for randomised variants.
    out_csv : results file; rows are appended as each (chunk × attack) finishes and a restarted run
        skips the finished rows. ``None``: keep results in memory only.
    progress : ``callback(fraction, message)``; may raise to stop the run (finished rows stay).

    A defence that fails on a unit (a plugin that raises or returns a bad batch) loses only its
    own rows of that unit; the run goes on and the result's (and the sidecar's) ``failed_units``
    say which, with the reason. Run the same call again to retry them.

    Returns
    -------
    :class:`~pd_core.evaluation.result.EvaluationResult`.
    """
    started = time.monotonic()
    settings = settings or ProtocolSettings()
    units = settings.unit_settings()
    evaluation = evaluation_part(load_items(images, labels_csv), settings.tuning_fraction, settings.limit)
    store = open_store(out_csv)
    identity = settings.identity(model.name)
    meta = store.read_meta(identity)
    resume = ResumeState.of(store.read_rows())
    attacks = list(settings.attacks)
    run = {"date": now_iso(), "table": settings.table, "preset": settings.preset, "attacks": attacks,
           "limit": settings.limit, "batch_size": settings.batch_size, "images": len(evaluation),
           "device": str(model.device), "torch_threads": torch.get_num_threads()}
    if settings.defences:
        run["defences"] = list(settings.defences)
    _start_meta(meta, model, identity, run, attacks, units)
    store.write_meta(meta)
    unreadable = _run_chunks(model, evaluation, attacks, units, store, meta, resume, progress)
    result = _result(store, evaluation, meta, unreadable, units, settings.table, started)
    result.columns = tuple(settings.defences)
    return result


def _start_meta(meta: dict, model, identity: dict, run: dict, attacks: Sequence[str],
                settings: UnitSettings) -> None:
    """Record this run in the sidecar ``meta`` (in place); refuse attack parameters that differ from
    those the file's rows were made with."""
    meta.setdefault("created", run["date"])
    meta["settings"] = identity
    meta["model"] = {"name": model.name, "title": model.spec.title, "source": model.spec.source}
    meta["versions"] = library_versions()
    run["versions"] = meta["versions"]
    meta.setdefault("attack_params", {})
    _check_attack_params(meta["attack_params"], attacks, settings)
    meta.setdefault("runs", []).append(run)
    meta["failed_units"] = []  # this run's: it retries those of earlier runs
    key = f"defences {','.join(settings.defences)}" if settings.defences else f"table {settings.table}"
    meta.setdefault("defences", {})[key] = describe_columns(model, settings)
    meta["protocol"] = ("images the undefended model misclassifies are dropped; per image and attack the "
                        "deflection seed is derive_seed(seed, image, attack) (SHA-256); tuning split: "
                        f"SHA-256('{TUNING_SALT}|name') < tuning_fraction")


def _check_attack_params(stored_params: dict, attacks: Sequence[str], settings: UnitSettings) -> None:
    """Rows of one file must come from one setting of each attack: a preset edited since the file
    was started (or other overrides) would silently mix two attacks in one row of the table."""
    from ..attacks import ATTACKS

    preset = settings.preset
    for name in attacks:
        requested = json.loads(json.dumps({**ATTACKS[name].preset(preset), **settings.attack_params.get(name, {})},
                                          default=str))  # as the sidecar stores it (tuples -> lists)
        stored = stored_params.get(f"{name}/{preset}")
        if stored is not None:
            changed = sorted(k for k in requested if k in stored and stored[k] != requested[k])
            if changed:
                raise EvaluationError(
                    f"the results file has {name} '{preset}' rows made with other parameters "
                    f"({', '.join(f'{k}: {stored[k]!r} then, {requested[k]!r} now' for k in changed)}); "
                    "choose another output file.")


def _run_chunks(model, evaluation: Sequence[Item], attacks: Sequence[str], settings: UnitSettings, store,
                meta: dict, resume: ResumeState, progress: Progress | None) -> dict[str, str]:
    """The sequential engine: every (chunk × attack) unit not finished yet, in chunk order; each
    unit's rows are appended to the store as it finishes. Returns the unreadable files."""
    size = settings.batch_size
    chunks = [evaluation[i:i + size] for i in range(0, len(evaluation), size)]
    all_attacks = ["clean", *attacks]
    tracker = ProgressTracker([(ci, a, len(ch)) for ci, ch in enumerate(chunks) for a in all_attacks], progress)
    unreadable: dict[str, str] = {}
    tracker.report(message=f"{len(evaluation)} images, {len(all_attacks)} rows")
    for ci, items in enumerate(chunks):
        pending = {a: resume.pending(items, a, settings) for a in all_attacks}
        if not any(pending.values()):
            for a in all_attacks:
                tracker.finish(ci, a, len(items), 0.0, skipped=True)
            tracker.report(message=f"chunk {ci + 1}/{len(chunks)} already done")
            continue
        chunk = load_chunk(model, items, settings)
        unreadable.update(chunk.unreadable)
        resume.clean_known.update(chunk.clean_correct())
        for a in all_attacks:
            t0 = time.monotonic()
            unit = run_unit(model, chunk, a, settings, items=[it for it in pending[a] if it.name in chunk.index],
                            skip=resume.done, report=lambda f, m, ci=ci, a=a: tracker.report((ci, a, f), m))
            if unit.attack_params is not None:
                meta["attack_params"].setdefault(f"{a}/{settings.preset}", unit.attack_params)
            meta["failed_units"] += failed_unit_records(unit, ci, a, settings)
            if not unit.rows:
                tracker.finish(ci, a, len(items), 0.0, skipped=True)
                continue
            store.append_rows(unit.rows)
            store.write_meta(meta)
            resume.done.update((r["image"], r["attack"], r["preset"], r["defence"]) for r in unit.rows)
            tracker.finish(ci, a, unit.images, time.monotonic() - t0, skipped=False)
            tracker.report(message=f"{ATTACK_TITLES.get(a, a)}: chunk {ci + 1}/{len(chunks)} done")
    return unreadable


def _result(store, evaluation: Sequence[Item], meta: dict, unreadable: dict[str, str], settings: UnitSettings,
            table: int, started: float) -> EvaluationResult:
    """The rows of the evaluation images (this run's and earlier ones), counted and summarised."""
    rows = store.read_rows()
    names = {it.name for it in evaluation}
    rows_eval = rows[rows["image"].astype(str).isin(names)]
    clean = rows_eval[(rows_eval["attack"] == "clean") & (rows_eval["defence"] == "none")]
    dropped = sorted(clean.loc[clean["correct"].astype(int) == 0, "image"])
    kept = int((clean["correct"].astype(int) == 1).sum())
    seconds = time.monotonic() - started
    failed = meta.get("failed_units", [])
    meta["runs"][-1].update({"finished": now_iso(), "seconds": round(seconds, 1), "kept": kept,
                             "dropped": len(dropped), "unreadable": unreadable, "failed_units": len(failed)})
    store.write_meta(meta)
    return EvaluationResult(rows=rows_eval, summary=summarize(rows_eval), images=len(evaluation), kept=kept,
                            dropped=dropped, unreadable=unreadable, meta=meta, csv_path=store.path, table=table,
                            preset=settings.preset, ensemble=settings.ensemble, seconds=seconds,
                            failed_units=list(failed))
