"""The adaptive-attack ladder (issues 14 and 20): attacks of growing knowledge of any defence, and its checks.

Rungs (each an untargeted PGD, :func:`pd_core.adaptive.attack.bpda_eot_attack`, L∞ or normalised L2):

- ``transfer``: the attack made on the bare model (no defence in the loop), then evaluated through
  the defence: the setting of the paper's Table 1 ("looks robust");
- ``bpda``: BPDA (the defence's declared surrogate in the backward pass, the identity unless it
  says otherwise), one defence sample per step;
- ``bpda_eot``: BPDA averaged over k defence samples per step (EOT); only for a randomised defence
  (on a deterministic one the k samples are equal and the rung is ``bpda`` again);
- ``exact_eot``: the exact gradient through the defence (draws fixed per sample, :mod:`.exact`),
  averaged over k samples (one for a deterministic defence); only where the defence's entry declares
  ``gradient == "exact"``.

:func:`rungs_for` picks the rungs of a defence from its entry (``randomised``, ``gradient``), so the
ladder judges any registry entry or plugin. Each rung runs with each loss (cross-entropy,
Carlini–Wagner margin) at each ε; every adversarial image is judged by one defended run and by the
Ens-``ensemble`` vote (:func:`pd_core.defences.ensemble.ensemble_vote`), with randomness the attack
never saw (:func:`pd_core.adaptive.attack.fresh_seed`). The worst rung is the "is robust" figure.

Budgets (``steps``, ``eot``) are settings: small on a CPU, larger on a GPU (issue 14: 100 steps, k = 10).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..defences.base import Defence
from ..defences.ensemble import defended_logits, ensemble_vote
from ..defences.registry import create_defence
from ..evaluation.stats import wilson_interval
from ..models import Classifier
from ..randomness import make_generator
from . import checks
from .attack import AdaptiveResult, bpda_eot_attack, fresh_seed
from .evaluate import attackable_images
from .exact import ExactEotGradient
from .gradients import paper_defence
from .report_json import build_report, describe_defence, write_report
from .settings import RUNGS, ImageSelection, LadderSettings, PgdSettings

__all__ = ["LARGE_BUDGET", "rungs_for", "rung_eot", "attack_rung", "judge", "ladder_row", "clean_rows",
           "rung_rows", "run_ladder", "ladder_checks", "evaluate_ladder", "format_ladder", "write_ladder_csv",
           "LADDER_CSV_COLUMNS"]

LADDER_CSV_COLUMNS = ["rung", "loss", "eps_255", "defence", "n", "correct", "accuracy", "ci_low", "ci_high",
                      "steps", "eot", "attack_estimate"]
#: The budget of the "reaches zero" check, per threat model: 32/255 (L∞), a normalised L2 of 0.5.
LARGE_BUDGET = {"linf": 32.0, "l2": 0.5}


def rungs_for(defence: Defence, wanted: Sequence[str] = RUNGS) -> tuple[str, ...]:
    """The rungs of ``wanted`` that apply to ``defence``: transfer and BPDA always, BPDA+EOT for a
    randomised defence, exact+EOT where its entry declares an exact gradient."""
    applies = {"transfer": True, "bpda": True, "bpda_eot": defence.randomised,
               "exact_eot": defence.gradient == "exact"}
    return tuple(r for r in wanted if applies[r])


def rung_eot(rung: str, defence: Defence, settings: LadderSettings) -> int:
    """Defence samples per step on ``rung``: ``settings.eot`` on the EOT rungs of a randomised
    defence, else 1 (a deterministic defence's samples would all be equal)."""
    return settings.eot if rung.endswith("_eot") and defence.randomised else 1


def attack_rung(model: Classifier, images: torch.Tensor, labels: torch.Tensor, rung: str, defence: Defence,
                budget: PgdSettings, seed: int) -> AdaptiveResult:
    """Run one rung with ``budget`` (its ``eot`` is the rung's samples per step)."""
    if rung == "transfer":
        return bpda_eot_attack(model, images, labels, create_defence("none"), budget, seed=seed)
    if rung in ("bpda", "bpda_eot"):
        return bpda_eot_attack(model, images, labels, defence, budget, seed=seed)
    if rung == "exact_eot":
        gradient = ExactEotGradient(eot=budget.eot, defence=defence, loss=budget.loss)
        return bpda_eot_attack(model, images, labels, defence, budget, seed=seed, gradient=gradient)
    raise ValueError(f"rung must be one of {', '.join(RUNGS)}, got {rung!r}")


def judge(model: Classifier, images: torch.Tensor, labels: torch.Tensor, defence: Defence, *,
          ensemble: int, seed: int) -> dict[str, int]:
    """Correct predictions through one defended run (``single``) and the Ens vote (``ens``), with
    randomness derived from ``seed`` by :func:`fresh_seed` (never the attack's samples)."""
    device = images.device
    single = defended_logits(model, defence, images, make_generator(fresh_seed(seed), device)).argmax(1)
    voted = ensemble_vote(model, defence, images, n=ensemble, generator=make_generator(fresh_seed(seed + 1), device))
    return {"single": int((single == labels).sum()), "ens": int((voted.prediction == labels).sum())}


def ladder_row(rung: str, loss: str, eps_255: float, judged_by: str, correct: int, n: int, **extra) -> dict:
    """One row: accuracy of ``judged_by`` (``single`` or ``ens<k>``) with its Wilson 95% interval."""
    low, high = wilson_interval(correct, n)
    return {"rung": rung, "loss": loss, "eps_255": eps_255, "defence": judged_by, "n": n, "correct": correct,
            "accuracy": correct / n if n else float("nan"), "ci_low": low, "ci_high": high, **extra}


def clean_rows(model: Classifier, images: torch.Tensor, labels: torch.Tensor, defence: Defence,
               settings: LadderSettings) -> list[dict]:
    """The two rows without attack (``rung="clean"``, ε = 0): one defended run and the vote."""
    n, ens_name = images.shape[0], f"ens{settings.ensemble}"
    clean = judge(model, images, labels, defence, ensemble=settings.ensemble, seed=settings.seed)
    return [ladder_row("clean", "", 0.0, "single", clean["single"], n, steps=0, eot=0),
            ladder_row("clean", "", 0.0, ens_name, clean["ens"], n, steps=0, eot=0)]


def rung_rows(model: Classifier, images: torch.Tensor, labels: torch.Tensor, rung: str, loss: str, eps_255: float,
              defence: Defence, settings: LadderSettings) -> list[dict]:
    """The two rows (one defended run, the vote) of one (rung, loss, ε), with the attack's budget,
    its own success estimate (``attack_estimate``) and its ``loss_history``."""
    eot = rung_eot(rung, defence, settings)
    result = attack_rung(model, images, labels, rung, defence, settings.pgd(eps_255, eot=eot, loss=loss),
                         settings.seed)
    judged = judge(model, result.adversarial, labels, defence, ensemble=settings.ensemble, seed=settings.seed)
    extra = dict(steps=settings.steps, eot=eot, attack_estimate=float(result.eot_fooled.mean()),
                 loss_history=[float(v) for v in result.loss_history])
    n = images.shape[0]
    return [ladder_row(rung, loss, eps_255, "single", judged["single"], n, **extra),
            ladder_row(rung, loss, eps_255, f"ens{settings.ensemble}", judged["ens"], n, **extra)]


def run_ladder(model: Classifier, images: torch.Tensor, labels: torch.Tensor, defence: Defence | None = None,
               settings: LadderSettings = LadderSettings(), progress: Callable[[str], None] | None = None
               ) -> list[dict]:
    """Every rung of ``defence`` (:func:`rungs_for`) × loss × ε on ``images`` (N, 3, S, S) with true
    ``labels`` (N,); ``defence`` defaults to pixel deflection with the paper's parameters.

    Returns one row per (rung, loss, ε, judge ∈ {single, ens<k>}) plus the clean rows
    (``rung="clean"``, ε = 0): ``n, correct, accuracy, ci_low, ci_high`` (Wilson 95%), the budget
    (``steps``, ``eot``), ``attack_estimate`` (the attack's own success estimate on its last EOT
    samples) and ``loss_history``.
    """
    defence = paper_defence(model, defence)
    say = progress or (lambda msg: None)
    rows = clean_rows(model, images, labels, defence, settings)
    for loss in settings.losses:
        for rung in rungs_for(defence, settings.rungs):
            for eps_255 in settings.eps_255:
                say(f"{rung} · {loss} · ε {eps_255:g}" + ("/255" if settings.norm == "linf" else " (L2)"))
                rows += rung_rows(model, images, labels, rung, loss, eps_255, defence, settings)
    return rows


def _noise(images: torch.Tensor, budget: float, norm: str, seed: int) -> torch.Tensor:
    """Random noise of the attack's size: uniform in the L∞ ball, or a random direction at the
    normalised L2 radius; clipped to [0, 1]."""
    generator = torch.Generator(device=images.device).manual_seed(fresh_seed(seed + 2))
    noise = torch.rand(images.shape, generator=generator, device=images.device) * 2 - 1
    if norm == "linf":
        return (images + noise * (budget / 255)).clamp(0, 1)
    scale = budget * images.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (images + noise * scale.view(-1, 1, 1, 1)).clamp(0, 1)


def ladder_checks(model: Classifier, images: torch.Tensor, labels: torch.Tensor, rows: list[dict],
                  defence: Defence | None = None, settings: LadderSettings = LadderSettings(),
                  large_budget: float | None = None) -> list[checks.Check]:
    """The sanity checks (:mod:`.checks`) of a ladder's ``rows``, running the few extra attacks they
    need: the strongest rung at ``large_budget`` (default :data:`LARGE_BUDGET`), one single step, and
    random noise, at the ladder's largest ε. The strongest rung is the last of the defence's rungs
    with the first loss."""
    defence = paper_defence(model, defence)
    n, norm = images.shape[0], settings.norm
    large_budget = LARGE_BUDGET[norm] if large_budget is None else large_budget
    rung, loss = rungs_for(defence, settings.rungs)[-1], settings.losses[0]
    eot = rung_eot(rung, defence, settings)
    eps_top = max(settings.eps_255)
    single = [r for r in rows if r["defence"] == "single"]
    strongest = [r for r in single if r["rung"] == rung and r["loss"] == loss]
    top = next(r for r in strongest if r["eps_255"] == eps_top)
    clean = next(r for r in single if r["rung"] == "clean")

    def correct_after(attacked: torch.Tensor) -> int:
        return judge(model, attacked, labels, defence, ensemble=1, seed=settings.seed)["single"]

    found = []
    large = attack_rung(model, images, labels, rung, defence, settings.pgd(large_budget, eot=eot, loss=loss),
                        settings.seed)
    found.append(checks.reaches_zero(correct_after(large.adversarial), n, large_budget, norm=norm))
    found.append(checks.does_not_rise([r["eps_255"] for r in strongest], [r["correct"] for r in strongest], n))

    top_eps = eps_top / 255 if norm == "linf" else eps_top
    one_step = attack_rung(model, images, labels, rung, defence,
                           settings.pgd(eps_top, eot=eot, loss=loss, steps=1, step_size=top_eps), settings.seed)
    found.append(checks.iterative_beats_single_step(top["correct"], correct_after(one_step.adversarial), n))

    noise_correct = correct_after(_noise(images, eps_top, norm, settings.seed))
    found.append(checks.noise_costs_little(clean["correct"], noise_correct, top["correct"], n))

    found.append(checks.loss_converged(top["loss_history"]))
    found.append(checks.fresh_randomness_agrees(top["attack_estimate"], n - top["correct"], n))
    return found


def evaluate_ladder(model: Classifier, items, defence: Defence | None = None,
                    settings: LadderSettings = LadderSettings(), selection: ImageSelection = ImageSelection(), *,
                    report_path=None, progress: Callable[[str], None] | None = None):
    """The ladder and its checks on a labelled folder (the evaluation protocol's part, images the
    undefended model gets right), as ``(rows, checks, report)``; the report (:mod:`.report_json`) is
    also written to ``report_path`` when given."""
    from ..arena import timed_defence
    from .report_json import TIMING_BATCH

    defence = paper_defence(model, defence)
    say = progress or (lambda msg: None)
    data = attackable_images(model, items, selection, lambda frac, msg: say(msg))
    started = time.perf_counter()
    rows = run_ladder(model, data.images, data.labels, defence, settings, progress=say)
    say("sanity checks")
    found = ladder_checks(model, data.images, data.labels, rows, defence, settings)
    ladder_seconds = time.perf_counter() - started
    # The cost per image the leaderboard shows: one defended run, on a generator of its own (no row changes).
    batch = data.images[:TIMING_BATCH]
    _, seconds = timed_defence(defence, batch, make_generator(settings.seed, batch.device))
    timings = {"defence_seconds_per_image": seconds / batch.shape[0], "ladder_seconds": ladder_seconds,
               "device": str(batch.device)}
    report = build_report(rows, found, model_name=model.name, input_size=model.input_size,
                          defence=describe_defence(defence), settings=settings, timings=timings)
    if report_path is not None:
        write_report(report, report_path)
    return rows, found, report


def format_ladder(rows: Sequence[dict], found: Sequence[checks.Check] = ()) -> str:
    """A text table of the ladder (accuracy and 95% interval per rung, loss, ε, vote) and the checks."""
    lines = [f"{'rung':<10} {'loss':<6} {'eps/255':>7} {'defence':<7} {'accuracy':>8}  95% interval"]
    for r in rows:
        lines.append(f"{r['rung']:<10} {r['loss'] or '-':<6} {r['eps_255']:>7g} {r['defence']:<7} "
                     f"{r['accuracy']:>8.1%}  [{r['ci_low']:.1%}, {r['ci_high']:.1%}]")
    lines += [f"check {c.name}: {c.status} - {c.message}" for c in found]
    return "\n".join(lines)


def write_ladder_csv(rows: Sequence[dict], path) -> None:
    """One line per ladder row (columns :data:`LADDER_CSV_COLUMNS`; the loss history is left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LADDER_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
