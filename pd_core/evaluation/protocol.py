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

import datetime as _dt
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..defence import (PAPER_DEFAULTS, TABLE3_DEFENCES, TABLE4_DEFENCES, DefenceConfig,
                       defend_batch, vote)
from ..deflection import deflect, make_generator
from .batching import FastLayoutModel, activation_maps, classify, model_batch
from .data import (DEFAULT_TUNING_FRACTION, TUNING_SALT, EvaluationError, Item, load_items,
                   load_labelled_images, split_tuning)
from .paper import ATTACK_TITLES, PAPER_ATTACKS, TABLE_DEFENCES, _ens_name, format_table
from .progress import Progress, _Tracker
from .stats import derive_seed, summarize
from .store import (CSV_COLUMNS, _append_rows, _check_meta, _meta_path, _repair_tail, _versions,
                    read_results)

__all__ = ["evaluate", "EvaluationResult", "defended_copies"]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    rows: every CSV row (pandas DataFrame), including those of earlier runs into the same file.
    summary: one row per (attack, preset, defence) over the counted images (:func:`summarize`).
    images: evaluation images considered; kept: correctly classified before any attack;
    dropped: names of the images the undefended model misclassified; unreadable: name -> reason.
    meta: the sidecar's content. csv_path: where the rows are (None for an in-memory run).
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

    def format_table(self, table: int | None = None, preset: str | None = None, paper: bool = True) -> str:
        return format_table(self, table=table or self.table, preset=preset or self.preset, paper=paper)


def _defences_for(table: int, ensemble: int, config: DefenceConfig) -> dict[str, tuple[DefenceConfig, int]]:
    """Defence name -> (config, copies) for one table. Deterministic variants (no deflection) need
    one copy; random ones ``ensemble`` copies (Tables 3/4 report the Ens-n vote, as the paper's
    WD+PD and Bayes columns equal its Ens-10 column)."""
    copies = max(1, int(ensemble))
    if table == 1:
        return {"ens": (config, copies)}
    variants = TABLE3_DEFENCES if table == 3 else TABLE4_DEFENCES
    # The variants are stage switches on the paper's defaults; apply them to ``config`` so a
    # non-default σ/K/r passed by the caller is honoured in the ablation too.
    base = PAPER_DEFAULTS
    out = {}
    for name, variant in variants.items():
        changes = {k: getattr(variant, k) for k in variant.as_dict() if getattr(variant, k) != getattr(base, k)}
        cfg = replace(config, **changes)
        random = cfg.deflect and cfg.deflections > 0
        out[name] = (cfg, copies if random else 1)
    return out


def defended_copies(model, x: torch.Tensor, rmap: torch.Tensor | None, config: DefenceConfig,
                     copies: int, seeds: Sequence[int]) -> torch.Tensor:
    """``copies`` defended versions of each image, image-major (N·copies, 3, S, S).

    Deflection is drawn per image with its own generator (seeded from the image's name, so the
    result does not depend on the batch); the map was computed for the whole batch in one pass, and
    the denoising / JPEG stages run on the whole batch at once through :func:`defend_batch`.
    """
    if config.deflect and config.deflections > 0:
        parts = []
        for i, s in enumerate(seeds):
            gen = make_generator(s, x.device)
            rep = x[i:i + 1].expand(copies, -1, -1, -1)
            m = None if (rmap is None or not config.use_map) else rmap[i:i + 1].expand(copies, -1, -1)
            parts.append(deflect(rep, m, config.deflections, config.window, generator=gen))
        out = torch.cat(parts)
    else:
        out = x.repeat_interleave(copies, dim=0) if copies > 1 else x
    if config.denoise or config.jpeg_quality is not None:
        out = defend_batch(model, out, 1, replace(config, deflect=False), seed=0)
    return out


def _ranks(clean_top5: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``cls`` (N,) within each row of ``clean_top5`` (N, 5); 0 when absent (Fig. 6)."""
    hit = clean_top5 == cls[:, None]
    pos = torch.arange(1, clean_top5.shape[1] + 1, device=clean_top5.device)
    return (hit * pos).sum(1)


def _run_unit(model, x, labels, clean_top5, clean_pred, index, todo, attack_name, preset, defences, ensemble,
              table, seed, batch_size, config, run_attack, attack_params, meta, done, report,
              clean_maps=None) -> list[dict]:
    """One (chunk × attack) unit: the adversarial batch, then every defence; returns the CSV rows."""
    sel = torch.tensor([index[it.name] for it in todo], device=x.device)
    xs, ys = x[sel], labels[sel]
    n = len(todo)
    pre = "none" if attack_name == "clean" else preset
    attack_seed = derive_seed(seed, attack_name, preset, *[it.name for it in todo])
    if attack_name == "clean":
        adv = xs
        norm_l2 = norm_l2_model = rmse = torch.zeros(n)
        linf = torch.zeros(n)
        psnr = torch.full((n,), math.inf)
    else:
        res = run_attack(FastLayoutModel(model), xs, ys, attack_name, preset=preset, seed=attack_seed,
                         batch_size=model_batch(model, batch_size),
                         progress=lambda f, m="": report(0.8 * float(f), f"{ATTACK_TITLES.get(attack_name, attack_name)}: {m}"),
                         **attack_params.get(attack_name, {}))
        adv = res.adversarial.to(x.device).contiguous()  # NCHW for deflection
        norm_l2 = torch.as_tensor(res.norm_l2).detach().float().cpu().reshape(n)
        norm_l2_model = torch.as_tensor(res.norm_l2_model).detach().float().cpu().reshape(n)
        rmse = torch.as_tensor(res.rmse).detach().float().cpu().reshape(n)
        linf = torch.as_tensor(res.linf_255).detach().float().cpu().reshape(n)
        psnr = torch.as_tensor(res.psnr).detach().float().cpu().reshape(n)
        meta["attack_params"].setdefault(f"{attack_name}/{preset}", dict(res.params))
    # One pass gives the undefended prediction and the robust activation map (SPEC §1.1).
    if attack_name == "clean" and clean_maps is not None:
        maps = type(clean_maps)(*(t[sel] for t in clean_maps[:4]), clean_maps.gradcam)
    else:
        maps = activation_maps(model, adv, config.top_k, batch_size)
    adv_pred = maps.logits.argmax(1)
    adv_top5 = maps.logits.topk(5, dim=1).indices
    rank_adv = _ranks(clean_top5[sel], adv_pred).cpu()
    rank_true = _ranks(adv_top5, ys).cpu()
    seeds = [derive_seed(seed, it.name, attack_name) for it in todo]
    success = (adv_pred != ys).cpu()

    preds: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}
    ones = torch.ones(n)
    preds["none"] = (adv_pred.cpu(), ones, (adv_pred == ys).cpu(), 1)
    for j, (name, (cfg, copies)) in enumerate(defences.items()):
        report(0.8 + 0.2 * j / max(len(defences), 1), f"{ATTACK_TITLES.get(attack_name, attack_name)}: defending")
        rmap = maps.rmap if (cfg.deflect and cfg.use_map) else None
        defended = defended_copies(model, adv, rmap, cfg, copies, seeds)
        probs = classify(model, defended, 4 * batch_size).view(n, copies, -1)
        voted = vote(probs)
        single = voted.votes[:, 0]
        if table == 1:
            preds["single"] = (single.cpu(), ones, (single == ys).cpu(), 1)
            if ensemble > 1:
                preds[_ens_name(ensemble)] = (voted.prediction.cpu(), voted.agreement.cpu(),
                                              (voted.prediction == ys).cpu(), copies)
        else:
            preds[name] = (voted.prediction.cpu(), voted.agreement.cpu(), (voted.prediction == ys).cpu(), copies,
                           (single == ys).cpu())
    rows = []
    for i, it in enumerate(todo):
        for name, value in preds.items():
            key = (it.name, attack_name, pre, name)
            if key in done:
                continue
            pred, agree, correct, copies = value[:4]
            single_correct = value[4][i] if len(value) > 4 else correct[i]
            rows.append({"image": it.name, "label": it.label, "attack": attack_name, "preset": pre,
                         "defence": name, "prediction": int(pred[i]), "correct": int(correct[i]),
                         "norm_l2": float(norm_l2[i]), "linf_255": float(linf[i]), "psnr": float(psnr[i]),
                         "norm_l2_model": float(norm_l2_model[i]), "rmse": float(rmse[i]),
                         "seed": seeds[i], "attack_seed": attack_seed, "copies": copies,
                         "agreement": float(agree[i]), "single_correct": int(single_correct),
                         "attack_success": int(success[i]), "adv_rank_in_clean_top5": int(rank_adv[i]),
                         "true_rank_in_adv_top5": int(rank_true[i])})
    return rows


def _dropped_row(it: Item, prediction: int, seed: int) -> dict:
    return {"image": it.name, "label": it.label, "attack": "clean", "preset": "none", "defence": "none",
            "prediction": prediction, "correct": 0, "norm_l2": 0.0, "linf_255": 0.0, "psnr": math.inf,
            "norm_l2_model": 0.0, "rmse": 0.0,
            "seed": seed, "attack_seed": "", "copies": 1, "agreement": 1.0, "single_correct": 0,
            "attack_success": "", "adv_rank_in_clean_top5": "", "true_rank_in_adv_top5": ""}


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
    import pandas as pd

    from ..attacks import ATTACKS, attack as run_attack

    started = time.monotonic()
    config = config or PAPER_DEFAULTS
    attacks = [a.strip().lower() for a in attacks if a and a.strip()]
    attacks = [a for a in attacks if a != "clean"]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise EvaluationError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(ATTACKS)}.")
    attacks = list(dict.fromkeys(attacks))
    if table not in (1, 3, 4):
        raise EvaluationError(f"table must be 1, 3 or 4, not {table!r}.")
    if int(ensemble) < 1:
        raise EvaluationError("ensemble must be at least 1.")
    if int(batch_size) < 1:
        raise EvaluationError("batch_size must be at least 1.")
    ensemble, batch_size = int(ensemble), int(batch_size)
    attack_params = attack_params or {}

    items = load_items(images, labels_csv)
    evaluation, _ = split_tuning(items, tuning_fraction)
    if limit is not None:
        if int(limit) < 1:
            raise EvaluationError("limit must be at least 1.")
        evaluation = evaluation[: int(limit)]
    if not evaluation:
        raise EvaluationError("no evaluation images (all went to the tuning subset); lower tuning_fraction.")

    defences = _defences_for(table, ensemble, config)
    names_out = TABLE_DEFENCES(table, ensemble)

    settings = {"model": model.name, "seed": int(seed), "ensemble": ensemble, "defence": config.as_dict(),
                "tuning_fraction": tuning_fraction, "tuning_salt": TUNING_SALT}
    csv_path = Path(out_csv) if out_csv is not None else None
    meta = {}
    existing = pd.DataFrame(columns=list(CSV_COLUMNS))
    if csv_path is not None:
        if csv_path.exists() and csv_path.is_dir():
            raise EvaluationError(f"{csv_path} is a folder; give a file name for the results.")
        if not csv_path.parent.exists():
            raise EvaluationError(f"the folder {csv_path.parent} does not exist.")
        meta = _check_meta(_meta_path(csv_path), settings)
        _repair_tail(csv_path)
        existing = read_results(csv_path)
    done = set(zip(existing["image"].astype(str), existing["attack"].astype(str),
                   existing["preset"].astype(str), existing["defence"].astype(str)))
    clean_known = {r.image: int(r.correct) for r in existing[(existing["attack"] == "clean")
                                                             & (existing["defence"] == "none")].itertuples()}

    run_record = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "table": table,
                  "preset": preset, "attacks": attacks, "limit": limit, "batch_size": batch_size,
                  "images": len(evaluation), "device": str(model.device),
                  "torch_threads": torch.get_num_threads()}
    meta.setdefault("created", run_record["date"])
    meta["settings"] = settings
    meta["model"] = {"name": model.name, "title": model.spec.title, "source": model.spec.source}
    meta["versions"] = _versions()
    run_record["versions"] = meta["versions"]
    meta.setdefault("attack_params", {})
    # Rows of one file must come from one setting of each attack: a preset edited since the file
    # was started (or other overrides) would silently mix two attacks in one row of the table.
    for name in attacks:
        requested = json.loads(json.dumps({**ATTACKS[name].preset(preset), **attack_params.get(name, {})},
                                          default=str))  # as the sidecar stores it (tuples -> lists)
        stored = meta["attack_params"].get(f"{name}/{preset}")
        if stored is not None:
            changed = sorted(k for k in requested if k in stored and stored[k] != requested[k])
            if changed:
                raise EvaluationError(
                    f"the results file has {name} '{preset}' rows made with other parameters "
                    f"({', '.join(f'{k}: {stored[k]!r} then, {requested[k]!r} now' for k in changed)}); "
                    "choose another output file.")
    meta.setdefault("runs", []).append(run_record)
    meta.setdefault("defences", {})[f"table {table}"] = {name: {"config": cfg.as_dict(), "copies": c}
                                                          for name, (cfg, c) in defences.items()}
    meta["protocol"] = ("images the undefended model misclassifies are dropped; per image and attack the "
                        "deflection seed is derive_seed(seed, image, attack) (SHA-256); tuning split: "
                        f"SHA-256('{TUNING_SALT}|name') < tuning_fraction")

    def write_meta():
        if csv_path is not None:
            _meta_path(csv_path).write_text(json.dumps(meta, indent=2, default=str))

    write_meta()

    chunks = [evaluation[i:i + batch_size] for i in range(0, len(evaluation), batch_size)]
    all_attacks = ["clean", *attacks]
    units = [(ci, a, len(ch)) for ci, ch in enumerate(chunks) for a in all_attacks]
    tracker = _Tracker(units, progress)
    new_rows: list[dict] = []
    unreadable: dict[str, str] = {}

    def needed(it: Item, attack: str) -> list[tuple]:
        """The rows (image, attack, preset, defence) this run must have for ``it``: a dropped image
        has only its clean, undefended row."""
        if clean_known.get(it.name) == 0:
            return [(it.name, "clean", "none", "none")] if attack == "clean" else []
        pre = "none" if attack == "clean" else preset
        return [(it.name, attack, pre, d) for d in names_out]

    tracker.report(message=f"{len(evaluation)} images, {len(all_attacks)} rows")
    for ci, chunk in enumerate(chunks):
        # Which units of this chunk still have rows to write?
        pending = {a: [it for it in chunk if any(k not in done for k in needed(it, a))] for a in all_attacks}
        if not any(pending.values()):
            for a in all_attacks:
                tracker.finish(ci, a, len(chunk), 0.0, skipped=True)
            tracker.report(message=f"chunk {ci + 1}/{len(chunks)} already done")
            continue
        x, good, bad = load_labelled_images(chunk, model)
        unreadable.update(bad)
        index = {it.name: i for i, it in enumerate(good)}
        labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
        with torch.no_grad():
            # One pass per image gives the clean prediction (to drop misclassified images) and the
            # map that the clean row's defence uses.
            clean_maps = activation_maps(model, x, config.top_k, batch_size) if len(good) else None
        clean_logits = clean_maps.logits if clean_maps is not None else torch.empty(0, 1000, device=model.device)
        clean_pred = clean_logits.argmax(1)
        clean_top5 = clean_logits.topk(5, dim=1).indices
        for it in good:
            clean_known[it.name] = int(clean_pred[index[it.name]] == it.label)

        for a in all_attacks:
            t0 = time.monotonic()
            todo = [it for it in pending[a] if it.name in index]
            rows = []
            if a == "clean":
                # The clean, undefended row of a misclassified image records that it was dropped
                # (a resumed run reads it instead of classifying the image again).
                for it in todo:
                    if clean_known[it.name] == 0 and (it.name, "clean", "none", "none") not in done:
                        i = index[it.name]
                        rows.append(_dropped_row(it, int(clean_pred[i]), derive_seed(seed, it.name, "clean")))
            todo = [it for it in todo if clean_known[it.name] == 1]
            if todo:
                rows += _run_unit(model, x, labels, clean_top5, clean_pred, index, todo, a, preset, defences,
                             ensemble, table, seed, batch_size, config, run_attack, attack_params, meta,
                             done, lambda f, m, ci=ci, a=a: tracker.report((ci, a, f), m), clean_maps)
            if not rows:
                tracker.finish(ci, a, len(chunk), 0.0, skipped=True)
                continue
            if csv_path is not None:
                _append_rows(csv_path, rows)
                write_meta()
            new_rows.extend(rows)
            done.update((r["image"], r["attack"], r["preset"], r["defence"]) for r in rows)
            tracker.finish(ci, a, len(todo), time.monotonic() - t0, skipped=False)
            tracker.report(message=f"{ATTACK_TITLES.get(a, a)}: chunk {ci + 1}/{len(chunks)} done")

    rows = read_results(csv_path) if csv_path is not None else pd.DataFrame(new_rows, columns=list(CSV_COLUMNS))
    names = {it.name for it in evaluation}
    rows_eval = rows[rows["image"].astype(str).isin(names)]
    clean = rows_eval[(rows_eval["attack"] == "clean") & (rows_eval["defence"] == "none")]
    dropped = sorted(clean.loc[clean["correct"].astype(int) == 0, "image"])
    kept = int((clean["correct"].astype(int) == 1).sum())
    seconds = time.monotonic() - started
    meta["runs"][-1].update({"finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                             "seconds": round(seconds, 1), "kept": kept, "dropped": len(dropped),
                             "unreadable": unreadable})
    write_meta()
    return EvaluationResult(rows=rows_eval, summary=summarize(rows_eval), images=len(evaluation), kept=kept,
                            dropped=dropped, unreadable=unreadable, meta=meta, csv_path=csv_path, table=table,
                            preset=preset, ensemble=ensemble, seconds=seconds)
