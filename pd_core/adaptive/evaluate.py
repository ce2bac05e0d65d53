"""Accuracy of the defence under the adaptive attack, against ε (SPEC §3; issue 5's protocol).

For each budget ε the untargeted attack (:func:`pd_core.adaptive.attack.bpda_eot_attack`) runs on
the images the undefended model classifies correctly; the adversarial images are then classified
by the undefended model, by one defended run and by the Ens-10 vote, each with *fresh* randomness,
never the samples the attack used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..defence import DefenceConfig, predict_probs, vote
from ..defences.pixel_deflection import defended_copies
from ..evaluation.data import (DEFAULT_TUNING_FRACTION, EvaluationError, evaluation_part, load_items,
                               load_labelled_images)
from ..evaluation.stats import wilson_interval
from ..randomness import derive_seed
from ..maps import robust_activation_map
from ..models import Classifier
from .attack import ProgressCallback, bpda_eot_attack
from .report import write_csv


@dataclass
class _Attackable:
    """The evaluation images the undefended model gets right, and the counts the rows report."""

    images: torch.Tensor
    labels: torch.Tensor
    items: list
    listed: int  # evaluation images after the split and ``limit``
    dropped: int  # misclassified by the undefended model, or unreadable


class _Progress:
    """Progress in units of one image-step; evaluating the defences costs about one step per image."""

    def __init__(self, report: ProgressCallback, total: int):
        self.report, self.total, self.done = report, total, 0

    def __call__(self, message: str, extra: float = 0.0) -> None:
        self.report(min(1.0, (self.done + extra) / self.total), message)


def _attackable_images(model: Classifier, items, labels_csv, tuning_fraction: float | None, limit: int | None,
                       report: ProgressCallback) -> _Attackable:
    """The protocol's evaluation part (hash order, first ``limit``), kept where the model is right."""
    evaluation = evaluation_part(load_items(items, labels_csv),
                                 DEFAULT_TUNING_FRACTION if tuning_fraction is None else tuning_fraction, limit)
    report(0.0, f"loading {len(evaluation)} images")
    images, good, unreadable = load_labelled_images(evaluation, model)
    if not good:
        raise EvaluationError("none of the images could be read.")
    labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
    keep = predict_probs(model, images).argmax(1) == labels
    kept = [it for it, k in zip(good, keep.tolist()) if k]
    if not kept:
        raise EvaluationError("the undefended model misclassifies every image: nothing to attack.")
    return _Attackable(images=images[keep], labels=labels[keep], items=kept, listed=len(evaluation),
                       dropped=len(good) - len(kept) + len(unreadable))


def _estimator(gradient: str, eot: int, config: DefenceConfig, loss: str):
    """The gradient estimator named ``gradient`` ("bpda" or "exact") with the attack's settings."""
    from .exact import ExactEotGradient
    from .gradients import BpdaEotGradient

    if gradient not in ("bpda", "exact"):
        raise EvaluationError(f"gradient must be 'bpda' or 'exact', got {gradient!r}.")
    return (ExactEotGradient if gradient == "exact" else BpdaEotGradient)(eot=eot, config=config, loss=loss)


def _attack_all(model: Classifier, data: _Attackable, eps_255: float, progress: _Progress, *, steps: int,
                eot: int, config: DefenceConfig, step_size_fraction: float | None, seed: int, batch_images: int,
                should_stop: Callable[[], bool] | None, loss: str, gradient: str = "bpda"):
    """Adversarial images at ε (/255) in chunks of ``batch_images``, with their L∞ and |L2| (N,).

    ε = 0 returns the clean images. The attack's EOT samples of a chunk are seeded by
    ``derive_seed(seed, "adaptive-eot", ε, chunk's image names)``.
    """
    n, device = len(data.items), model.device
    if eps_255 == 0:
        zeros = torch.zeros(n, device=device)
        return data.images[:n], zeros, zeros.clone()
    eps = eps_255 / 255
    adv_parts, linf_parts, l2_parts = [], [], []
    for start in range(0, n, batch_images):
        chunk = slice(start, start + batch_images)
        names = [it.name for it in data.items[chunk]]

        def on_step(frac, msg, size=len(names), lo=start):
            progress(f"ε {eps_255:g}/255 · images {lo + 1}-{lo + size}/{n} · {msg}", frac * size * steps)

        result = bpda_eot_attack(
            model, data.images[chunk], data.labels[chunk], eps=eps, steps=steps, eot=eot, config=config,
            step_size=None if step_size_fraction is None else step_size_fraction * eps,
            seed=derive_seed(seed, "adaptive-eot", eps_255, *names), progress=on_step,
            should_stop=should_stop, loss=loss, gradient=_estimator(gradient, eot, config, loss))
        if result.stopped:
            raise InterruptedError("the adaptive evaluation was stopped.")
        adv_parts.append(result.adversarial)
        linf_parts.append(result.linf)
        l2_parts.append(result.l2_normalised)
        progress.done += len(names) * steps
    return torch.cat(adv_parts), torch.cat(linf_parts), torch.cat(l2_parts)


def _classify_defended(model: Classifier, adversarial: torch.Tensor, items: list, eps_255: float, *,
                       config: DefenceConfig, ensemble: int, seed: int, batch_images: int) -> dict[str, torch.Tensor]:
    """Top-1 of the undefended model (``none``), of one defended copy (``single``, the first of the
    ensemble's, as in Table 1) and of the ``ensemble`` vote (``ens``), with the vote's agreement.

    The copies of an image are seeded by ``derive_seed(seed, image, "adaptive-eval", ε)``.
    """
    parts: dict[str, list[torch.Tensor]] = {"none": [], "single": [], "ens": [], "agreement": []}
    with torch.no_grad():
        for start in range(0, adversarial.shape[0], batch_images):
            chunk = slice(start, start + batch_images)
            adv = adversarial[chunk]
            seeds = [derive_seed(seed, it.name, "adaptive-eval", eps_255) for it in items[chunk]]
            if config.deflect and config.use_map and config.deflections > 0:
                maps = robust_activation_map(model, adv, top_k=config.top_k)
                logits, rmap = maps.logits, maps.rmap
            else:
                logits, rmap = model(adv), None
            copies = defended_copies(model, adv, rmap, config, ensemble, seeds)
            voted = vote(predict_probs(model, copies).view(adv.shape[0], ensemble, -1))
            parts["none"].append(logits.argmax(1))
            parts["single"].append(voted.votes[:, 0])
            parts["ens"].append(voted.prediction)
            parts["agreement"].append(voted.agreement)
    return {key: torch.cat(values) for key, values in parts.items()}


def _rows_at(model: Classifier, data: _Attackable, eps_255: float, preds: dict, linf: torch.Tensor,
             l2: torch.Tensor, seconds: float, *, steps: int, eot: int, loss: str,
             step_size_fraction: float | None, ensemble: int, seed: int, gradient: str = "bpda") -> list[dict]:
    """The three rows (none, single, ens<ensemble>) of one ε: accuracy, Wilson 95% interval, settings
    (with the gradient estimator, ``"bpda"`` or ``"exact"``; empty at ε = 0, where nothing is attacked)."""
    n = len(data.items)
    # k/255 in float32 carries ~1e-5 (/255) of rounding: report L-inf to 1e-3 of a level.
    mean_linf = round(float(linf.double().mean()) * 255, 3)
    mean_l2 = float(l2.mean())
    step_255 = 0.0 if eps_255 == 0 else (
        2.5 * eps_255 / steps if step_size_fraction is None else step_size_fraction * eps_255)
    ens_name = f"ens{ensemble}"
    rows = []
    for name, pred in (("none", preds["none"]), ("single", preds["single"]), (ens_name, preds["ens"])):
        correct = int((pred == data.labels).sum())
        lo, hi = wilson_interval(correct, n)
        rows.append({"eps_255": eps_255, "defence": name, "n": n, "correct": correct,
                     "accuracy": correct / n, "ci_low": lo, "ci_high": hi,
                     "mean_linf_255": mean_linf, "mean_l2_normalised": mean_l2,
                     "steps": 0 if eps_255 == 0 else steps, "eot": 0 if eps_255 == 0 else eot,
                     "loss": "" if eps_255 == 0 else loss, "gradient": "" if eps_255 == 0 else gradient,
                     "step_size_255": step_255, "copies": 1 if name != ens_name else ensemble,
                     "seed": int(seed), "model": model.name, "images": data.listed,
                     "dropped": data.dropped, "seconds": round(seconds, 1)})
    return rows


def evaluate_adaptive(model: Classifier, items, eps_list: Sequence[float] = (1, 2, 4, 8), eot: int = 10,
                      steps: int = 40, limit: int | None = None, seed: int = 0,
                      out_csv: Path | str | None = None, progress: ProgressCallback | None = None, *,
                      labels_csv: Path | str | None = None, config: DefenceConfig | None = None,
                      step_size_fraction: float | None = None, ensemble: int = 10, batch_images: int = 16,
                      include_clean: bool = True, tuning_fraction: float | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      per_image: list | None = None, loss: str = "ce", gradient: str = "bpda") -> list[dict]:
    """Accuracy under the adaptive attack against ε, on labelled images (issue 5's protocol).

    Protocol (:mod:`pd_core.evaluation`): the folder's evaluation part (its deterministic tuning
    part is held apart), in hash order, first ``limit`` images; only the images the *undefended*
    model classifies correctly count (``n``). For each ε (in /255) the untargeted BPDA+EOT attack
    (:func:`bpda_eot_attack`, ``steps``, ``eot`` samples per step) runs on chunks of
    ``batch_images`` images, then the adversarial images are classified by the undefended model
    (``none``), by one defended copy (``single``, the first of the ensemble's copies, as in
    Table 1) and by the majority vote of ``ensemble`` copies (``ens10``). The defended copies use
    fresh randomness: per image ``derive_seed(seed, image, "adaptive-eval", ε)``, while the
    attack's EOT samples come from ``derive_seed(seed, "adaptive-eot", ε, chunk images)``.
    Accuracy is the fraction still classified as the true label, with its Wilson 95% interval.
    ``include_clean`` adds an ε = 0 row (no attack): the clean accuracy of each defence.

    Parameters
    ----------
    items : a folder (labels from ``labels_csv``, its ``labels.csv`` or WordNet-id prefixes) or a
        list of ``(path, class index)`` pairs.
    eps_list : budgets in /255 units (e.g. 1, 2, 4, 8).
    step_size_fraction : α as a fraction of ε (default: the attack's ``2.5 / steps``).
    out_csv : write the rows there (columns :data:`ADAPTIVE_CSV_COLUMNS`).
    progress : ``progress(fraction, message)``; should_stop : checked before every attack step
        (returning True raises ``InterruptedError``).
    tuning_fraction : share held apart for tuning (default: the evaluation module's, 0.2).
    loss : the attack's loss, ``"ce"`` or ``"margin"`` (:func:`bpda_eot_attack`).
    gradient : ``"bpda"`` (identity backward pass) or ``"exact"`` (the exact gradient through the
        defence, :mod:`pd_core.adaptive.exact`), each averaged over ``eot`` samples per step.
    per_image : a list to which one dict per (image, ε) is appended: ``image, label, eps_255,
        pred_none, pred_single, pred_ens, agreement, linf_255`` (to find the images that survive).

    Returns
    -------
    One dict per (ε, defence), ε ascending, defences in the order none, single, ens10.
    """
    config = config or DefenceConfig()
    if int(eot) < 1 or int(steps) < 1 or int(ensemble) < 1 or int(batch_images) < 1:
        raise EvaluationError("eot, steps, ensemble and batch_images must each be at least 1.")
    eot, steps, ensemble, batch_images = int(eot), int(steps), int(ensemble), int(batch_images)
    eps_values = sorted({float(e) for e in eps_list} | ({0.0} if include_clean else set()))
    if not eps_values or any(not (0 <= e <= 255) for e in eps_values):
        raise EvaluationError("each ε must be between 0 and 255 (in /255 units).")
    report = progress or (lambda frac, msg: None)
    data = _attackable_images(model, items, labels_csv, tuning_fraction, limit, report)
    n = len(data.items)
    tracker = _Progress(report, len([e for e in eps_values if e > 0]) * n * steps + len(eps_values) * n)
    rows: list[dict] = []
    for eps_255 in eps_values:
        started = time.perf_counter()
        adversarial, linf, l2 = _attack_all(
            model, data, eps_255, tracker, steps=steps, eot=eot, config=config,
            step_size_fraction=step_size_fraction, seed=seed, batch_images=batch_images,
            should_stop=should_stop, loss=loss, gradient=gradient)
        tracker(f"ε {eps_255:g}/255 · defending and classifying")
        preds = _classify_defended(model, adversarial, data.items, eps_255, config=config, ensemble=ensemble,
                                   seed=seed, batch_images=batch_images)
        tracker.done += n
        if per_image is not None:
            cols = [t.tolist() for t in (preds["none"], preds["single"], preds["ens"], preds["agreement"], linf)]
            per_image.extend({"image": it.name, "label": it.label, "eps_255": eps_255, "pred_none": a,
                              "pred_single": b, "pred_ens": c, "agreement": d, "linf_255": round(e * 255, 3)}
                             for it, a, b, c, d, e in zip(data.items, *cols))
        rows += _rows_at(model, data, eps_255, preds, linf, l2, time.perf_counter() - started, steps=steps,
                         eot=eot, loss=loss, step_size_fraction=step_size_fraction, ensemble=ensemble, seed=seed,
                         gradient=gradient)
        tracker(f"ε {eps_255:g}/255 · accuracy {rows[-3]['accuracy']:.0%} / {rows[-2]['accuracy']:.0%} / "
                f"{rows[-1]['accuracy']:.0%}")
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows
