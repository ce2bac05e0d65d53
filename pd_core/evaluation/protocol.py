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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..defence import PAPER_DEFAULTS, DefenceConfig
from .data import DEFAULT_TUNING_FRACTION, TUNING_SALT, EvaluationError, Item, evaluation_part, load_items
from .progress import Progress, ProgressTracker
from .result import EvaluationResult
from .resume import ResumeState
from .sidecar import library_versions, now_iso
from .stats import summarize
from .store import open_store
from .tables import ATTACK_TITLES, PAPER_ATTACKS
from .units import UnitSettings, describe_columns, load_chunk, run_unit

__all__ = ["evaluate"]


def evaluate(model, images, *, attacks: Iterable[str] = PAPER_ATTACKS, preset: str = "paper",
             table: int = 1, ensemble: int = 10, limit: int | None = None, seed: int = 0,
             out_csv: str | os.PathLike | None = None, progress: Progress | None = None,
             batch_size: int = 16, labels_csv: str | os.PathLike | None = None,
             config: DefenceConfig | None = None,
             tuning_fraction: float = DEFAULT_TUNING_FRACTION,
             attack_params: dict[str, dict] | None = None) -> EvaluationResult:
    """Run the paper's protocol (§9–10) on labelled images and return accuracies with intervals.

    Parameters
    ----------
    model : a :class:`pd_core.models.Classifier`; everything runs on its device.
    images : a folder (labels from ``labels_csv``, its ``labels.csv``, or WordNet-id prefixes) or a
        list of ``(path, label)``. Only its evaluation part is used (:func:`split_tuning` with
        ``tuning_fraction``; 0 uses every image).
    attacks : names from :data:`pd_core.attacks.ATTACKS`; the clean row is always added.
    preset : attack strength, ``"paper"``, ``"large"`` or ``"interactive"``.
    table : 1 (no defence / single / Ens-n), 3 (JPEG, WD, PD, ... ablation) or 4 (thresholds).
        Every table also records the undefended prediction (``defence = "none"``).
    ensemble : copies in the majority vote (paper: 10). Table 1's single-run column is the first
        of these copies; Tables 3/4 report the vote for randomised variants.
    limit : use the first ``limit`` evaluation images (hash order) before dropping misclassified ones.
    seed : base seed; per-image seeds are :func:`derive_seed` (seed, image name, attack).
    out_csv : results file; rows are appended as each (chunk × attack) finishes and a restarted run
        skips the finished rows. ``None``: keep results in memory only.
    progress : ``callback(fraction, message)``; may raise to stop the run (finished rows stay).
    batch_size : images per chunk (attacks run on one chunk at a time; copies are classified in
        batches of ``4·batch_size``). Keep it when resuming.
    config : the defence (paper defaults when None). Never retune it on evaluation images.
    attack_params : per-attack overrides of the preset's parameters, ``{"cw": {"steps": 50}}``.

    Returns
    -------
    :class:`EvaluationResult`.
    """
    started = time.monotonic()
    attacks = _checked_attacks(attacks, table, ensemble, batch_size, preset)
    settings = UnitSettings(preset=preset, table=table, ensemble=int(ensemble), seed=int(seed),
                            batch_size=int(batch_size), config=config or PAPER_DEFAULTS,
                            attack_params=attack_params or {})
    evaluation = evaluation_part(load_items(images, labels_csv), tuning_fraction, limit)
    store = open_store(out_csv)
    identity = {"model": model.name, "seed": settings.seed, "ensemble": settings.ensemble,
                "defence": settings.config.as_dict(), "tuning_fraction": tuning_fraction, "tuning_salt": TUNING_SALT}
    meta = store.read_meta(identity)
    resume = ResumeState.of(store.read_rows())
    run = {"date": now_iso(), "table": table, "preset": preset, "attacks": attacks, "limit": limit,
           "batch_size": settings.batch_size, "images": len(evaluation), "device": str(model.device),
           "torch_threads": torch.get_num_threads()}
    _start_meta(meta, model, identity, run, attacks, settings)
    store.write_meta(meta)
    unreadable = _run_chunks(model, evaluation, attacks, settings, store, meta, resume, progress)
    return _result(store, evaluation, meta, unreadable, settings, table, started)


def _checked_attacks(attacks: Iterable[str], table: int, ensemble: int, batch_size: int,
                     preset: str = "paper") -> list[str]:
    """The attack names, lower case, without "clean" and duplicates; bad arguments raise."""
    from ..attacks import ATTACKS

    attacks = [a.strip().lower() for a in attacks if a and a.strip()]
    attacks = [a for a in attacks if a != "clean"]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise EvaluationError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(ATTACKS)}.")
    lacking = [a for a in attacks if preset not in ATTACKS[a].presets]
    if lacking:
        raise EvaluationError(f"{lacking[0]} has no preset {preset!r} (it has: "
                              f"{', '.join(ATTACKS[lacking[0]].presets)}); run it with another --preset.")
    if table not in (1, 3, 4):
        raise EvaluationError(f"table must be 1, 3 or 4, not {table!r}.")
    if int(ensemble) < 1:
        raise EvaluationError("ensemble must be at least 1.")
    if int(batch_size) < 1:
        raise EvaluationError("batch_size must be at least 1.")
    return list(dict.fromkeys(attacks))


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
    meta.setdefault("defences", {})[f"table {settings.table}"] = describe_columns(model, settings)
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
    meta["runs"][-1].update({"finished": now_iso(), "seconds": round(seconds, 1), "kept": kept,
                             "dropped": len(dropped), "unreadable": unreadable})
    store.write_meta(meta)
    return EvaluationResult(rows=rows_eval, summary=summarize(rows_eval), images=len(evaluation), kept=kept,
                            dropped=dropped, unreadable=unreadable, meta=meta, csv_path=store.path, table=table,
                            preset=settings.preset, ensemble=settings.ensemble, seconds=seconds)
