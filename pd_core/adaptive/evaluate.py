"""Accuracy of a defence under the adaptive attack, against ε (SPEC §3; issue 5's protocol).

For each budget ε the untargeted attack (:func:`pd_core.adaptive.attack.bpda_eot_attack`) runs on
the images the undefended model classifies correctly; the adversarial images are then classified
by the undefended model, by one defended run and by the Ens-10 vote, each with *fresh* randomness,
never the samples the attack used. Any defence of the registry, or a plugin, is judged the same
way (:class:`~pd_core.defences.base.Defence`).

The pieces (:func:`attackable_images`, :func:`attack_chunks`, :func:`classify_defended`,
:func:`curve_rows`) are public because the Ray engine (:mod:`.work_units`) computes its units with
them: the same functions, so the same rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..defence import predict_probs, vote
from ..defences.base import Defence
from ..evaluation.data import (DEFAULT_TUNING_FRACTION, EvaluationError, evaluation_part, load_items,
                               load_labelled_images)
from ..evaluation.stats import wilson_interval
from ..maps import robust_activation_map
from ..models import Classifier
from ..randomness import derive_seed
from .attack import ProgressCallback, bpda_eot_attack
from .exact import ExactEotGradient
from .gradients import BpdaEotGradient, paper_defence
from .report import write_csv
from .settings import AdaptiveSettings, ImageSelection, PgdSettings, RunHooks, check_gradient

__all__ = ["evaluate_adaptive", "AttackableImages", "ImageStepProgress", "attackable_images", "make_estimator",
           "attack_chunks", "classify_defended", "curve_rows", "reads_map"]


@dataclass
class AttackableImages:
    """The evaluation images the undefended model gets right, and the counts the rows report."""

    images: torch.Tensor
    labels: torch.Tensor
    items: list
    listed: int  # evaluation images after the split and ``limit``
    dropped: int  # misclassified by the undefended model, or unreadable


class ImageStepProgress:
    """Progress in units of one image-step; evaluating the defences costs about one step per image."""

    def __init__(self, report: ProgressCallback, total: int):
        self.report, self.total, self.done = report, max(1, total), 0

    def __call__(self, message: str, extra: float = 0.0) -> None:
        self.report(min(1.0, (self.done + extra) / self.total), message)


def attackable_images(model: Classifier, items, selection: ImageSelection, report: ProgressCallback
                      ) -> AttackableImages:
    """The protocol's evaluation part (hash order, first ``limit``), kept where the model is right."""
    fraction = DEFAULT_TUNING_FRACTION if selection.tuning_fraction is None else selection.tuning_fraction
    evaluation = evaluation_part(load_items(items, selection.labels_csv), fraction, selection.limit)
    report(0.0, f"loading {len(evaluation)} images")
    images, good, unreadable = load_labelled_images(evaluation, model)
    if not good:
        raise EvaluationError("none of the images could be read.")
    labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
    keep = predict_probs(model, images).argmax(1) == labels
    kept = [it for it, k in zip(good, keep.tolist()) if k]
    if not kept:
        raise EvaluationError("the undefended model misclassifies every image: nothing to attack.")
    return AttackableImages(images=images[keep], labels=labels[keep], items=kept, listed=len(evaluation),
                            dropped=len(good) - len(kept) + len(unreadable))


def make_estimator(gradient: str, eot: int, defence: Defence, loss: str):
    """The gradient estimator named ``gradient`` (``"bpda"`` or ``"exact"``) on ``defence``; the exact
    one only where the defence declares an exact gradient (:class:`EvaluationError` otherwise)."""
    check_gradient(gradient)
    if gradient == "exact" and defence.gradient != "exact":
        raise EvaluationError(f"{defence.title} has no exact gradient (its entry declares BPDA through "
                              f"{defence.info.surrogate}): use the bpda gradient.")
    return (ExactEotGradient if gradient == "exact" else BpdaEotGradient)(eot=eot, defence=defence, loss=loss)


def reads_map(defence: Defence) -> bool:
    """Whether judging through ``defence`` needs the activation maps of its input (a randomised
    defence that reads the classifier, and whose ``use_map`` parameter, if any, is on)."""
    return bool(defence.info.needs_model and defence.randomised and defence.params.get("use_map", True))


def attack_chunks(model: Classifier, data: AttackableImages, eps_255: float, defence: Defence,
                  settings: AdaptiveSettings, progress: ImageStepProgress,
                  should_stop: Callable[[], bool] | None = None):
    """Adversarial images at ε (/255) in chunks of ``settings.batch_images``, with their L∞ and |L2| (N,).

    ε = 0 returns the clean images. The attack's EOT samples of a chunk are seeded by
    ``derive_seed(seed, "adaptive-eot", ε, chunk's image names)``.
    """
    n, device = len(data.items), model.device
    if eps_255 == 0:
        zeros = torch.zeros(n, device=device)
        return data.images[:n], zeros, zeros.clone()
    pgd: PgdSettings = settings.pgd(eps_255)
    estimator = make_estimator(settings.gradient, settings.eot, defence, settings.loss)
    adv_parts, linf_parts, l2_parts = [], [], []
    for start in range(0, n, settings.batch_images):
        chunk = slice(start, start + settings.batch_images)
        names = [it.name for it in data.items[chunk]]

        def on_step(frac, msg, size=len(names), lo=start):
            progress(f"ε {eps_255:g}/255 · images {lo + 1}-{lo + size}/{n} · {msg}", frac * size * settings.steps)

        result = bpda_eot_attack(model, data.images[chunk], data.labels[chunk], defence, pgd,
                                 seed=derive_seed(settings.seed, "adaptive-eot", eps_255, *names),
                                 gradient=estimator, hooks=RunHooks(on_step, should_stop))
        if result.stopped:
            raise InterruptedError("the adaptive evaluation was stopped.")
        adv_parts.append(result.adversarial)
        linf_parts.append(result.linf)
        l2_parts.append(result.l2_normalised)
        progress.done += len(names) * settings.steps
    return torch.cat(adv_parts), torch.cat(linf_parts), torch.cat(l2_parts)


def classify_defended(model: Classifier, adversarial: torch.Tensor, items: list, eps_255: float,
                      defence: Defence, settings: AdaptiveSettings) -> dict[str, torch.Tensor]:
    """Top-1 of the undefended model (``none``), of one defended copy (``single``, the first of the
    ensemble's, as in Table 1) and of the ``ensemble`` vote (``ens``), with the vote's agreement.

    The copies of an image are seeded by ``derive_seed(seed, image, "adaptive-eval", ε)``
    (:meth:`~pd_core.defences.base.Defence.apply_seeded`: a row never depends on its batch).
    """
    parts: dict[str, list[torch.Tensor]] = {"none": [], "single": [], "ens": [], "agreement": []}
    ensemble, batch = settings.ensemble, settings.batch_images
    with torch.no_grad():
        for start in range(0, adversarial.shape[0], batch):
            chunk = slice(start, start + batch)
            adv = adversarial[chunk]
            seeds = [derive_seed(settings.seed, it.name, "adaptive-eval", eps_255) for it in items[chunk]]
            maps = robust_activation_map(model, adv, top_k=defence.params.get("top_k", 5)) if reads_map(defence) else None
            logits = maps.logits if maps is not None else model(adv)
            copies = defence.apply_seeded(adv, ensemble, seeds, maps=maps)
            voted = vote(predict_probs(model, copies).view(adv.shape[0], ensemble, -1))
            parts["none"].append(logits.argmax(1))
            parts["single"].append(voted.votes[:, 0])
            parts["ens"].append(voted.prediction)
            parts["agreement"].append(voted.agreement)
    return {key: torch.cat(values) for key, values in parts.items()}


def curve_rows(model_name: str, data: AttackableImages, eps_255: float, preds: dict, linf: torch.Tensor,
               l2: torch.Tensor, seconds: float, settings: AdaptiveSettings) -> list[dict]:
    """The three rows (none, single, ens<ensemble>) of one ε: accuracy, Wilson 95% interval, settings
    (with the gradient estimator, ``"bpda"`` or ``"exact"``; empty at ε = 0, where nothing is attacked)."""
    n = len(data.items)
    s = settings
    # k/255 in float32 carries ~1e-5 (/255) of rounding: report L-inf to 1e-3 of a level.
    mean_linf = round(float(linf.double().mean()) * 255, 3)
    mean_l2 = float(l2.mean())
    step_255 = 0.0 if eps_255 == 0 else (
        2.5 * eps_255 / s.steps if s.step_size_fraction is None else s.step_size_fraction * eps_255)
    ens_name = f"ens{s.ensemble}"
    rows = []
    for name, pred in (("none", preds["none"]), ("single", preds["single"]), (ens_name, preds["ens"])):
        correct = int((pred == data.labels).sum())
        lo, hi = wilson_interval(correct, n)
        rows.append({"eps_255": eps_255, "defence": name, "n": n, "correct": correct,
                     "accuracy": correct / n, "ci_low": lo, "ci_high": hi,
                     "mean_linf_255": mean_linf, "mean_l2_normalised": mean_l2,
                     "steps": 0 if eps_255 == 0 else s.steps, "eot": 0 if eps_255 == 0 else s.eot,
                     "loss": "" if eps_255 == 0 else s.loss, "gradient": "" if eps_255 == 0 else s.gradient,
                     "step_size_255": step_255, "copies": 1 if name != ens_name else s.ensemble,
                     "seed": int(s.seed), "model": model_name, "images": data.listed,
                     "dropped": data.dropped, "seconds": round(seconds, 1)})
    return rows


def evaluate_adaptive(model: Classifier, items, settings: AdaptiveSettings = AdaptiveSettings(),
                      defence: Defence | None = None, *, selection: ImageSelection = ImageSelection(),
                      out_csv: Path | str | None = None, hooks: RunHooks = RunHooks(),
                      per_image: list | None = None) -> list[dict]:
    """Accuracy under the adaptive attack against ε, on labelled images (issue 5's protocol).

    Protocol (:mod:`pd_core.evaluation`): the folder's evaluation part (its deterministic tuning
    part is held apart), in hash order, first ``selection.limit`` images; only the images the
    *undefended* model classifies correctly count (``n``). For each ε (in /255) the untargeted
    attack (:func:`bpda_eot_attack` with ``settings``' estimator, steps and EOT samples) runs on
    chunks of ``batch_images`` images, then the adversarial images are classified by the undefended
    model (``none``), by one defended copy (``single``, the first of the ensemble's copies, as in
    Table 1) and by the majority vote of ``ensemble`` copies (``ens10``). The defended copies use
    fresh randomness: per image ``derive_seed(seed, image, "adaptive-eval", ε)``, while the
    attack's EOT samples come from ``derive_seed(seed, "adaptive-eot", ε, chunk images)``.
    Accuracy is the fraction still classified as the true label, with its Wilson 95% interval.
    ``settings.include_clean`` adds an ε = 0 row (no attack): the clean accuracy of each defence.

    Parameters
    ----------
    items : a folder (labels from ``selection.labels_csv``, its ``labels.csv`` or WordNet-id
        prefixes) or a list of ``(path, class index)`` pairs.
    settings : :class:`~pd_core.adaptive.settings.AdaptiveSettings` (validated there).
    defence : the defence judged (pixel deflection with the paper's parameters when None).
    out_csv : write the rows there (columns :data:`~pd_core.adaptive.report.ADAPTIVE_CSV_COLUMNS`).
    hooks : ``progress(fraction, message)``; ``should_stop`` checked before every attack step
        (returning True raises ``InterruptedError``).
    per_image : a list to which one dict per (image, ε) is appended: ``image, label, eps_255,
        pred_none, pred_single, pred_ens, agreement, linf_255`` (to find the images that survive).

    Returns
    -------
    One dict per (ε, defence), ε ascending, defences in the order none, single, ens10.
    """
    defence = paper_defence(model, defence)
    make_estimator(settings.gradient, settings.eot, defence, settings.loss)  # fails before any work
    report = hooks.progress or (lambda frac, msg: None)
    data = attackable_images(model, items, selection, report)
    n, steps = len(data.items), settings.steps
    tracker = ImageStepProgress(report, len([e for e in settings.eps_255 if e > 0]) * n * steps
                                + len(settings.eps_255) * n)
    rows: list[dict] = []
    for eps_255 in settings.eps_255:
        started = time.perf_counter()
        adversarial, linf, l2 = attack_chunks(model, data, eps_255, defence, settings, tracker, hooks.should_stop)
        tracker(f"ε {eps_255:g}/255 · defending and classifying")
        preds = classify_defended(model, adversarial, data.items, eps_255, defence, settings)
        tracker.done += n
        if per_image is not None:
            cols = [t.tolist() for t in (preds["none"], preds["single"], preds["ens"], preds["agreement"], linf)]
            per_image.extend({"image": it.name, "label": it.label, "eps_255": eps_255, "pred_none": a,
                              "pred_single": b, "pred_ens": c, "agreement": d, "linf_255": round(e * 255, 3)}
                             for it, a, b, c, d, e in zip(data.items, *cols))
        rows += curve_rows(model.name, data, eps_255, preds, linf, l2, time.perf_counter() - started, settings)
        tracker(f"ε {eps_255:g}/255 · accuracy {rows[-3]['accuracy']:.0%} / {rows[-2]['accuracy']:.0%} / "
                f"{rows[-1]['accuracy']:.0%}")
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows
