"""The adaptive-attack ladder (issue 14 item 2): attacks of growing knowledge of the defence, and its checks.

Rungs (each an untargeted L∞ PGD, :func:`pd_core.adaptive.attack.bpda_eot_attack`):

- ``transfer``: the attack made on the bare model (no defence in the loop), then evaluated through
  the defence: the setting of the paper's Table 1;
- ``bpda``: BPDA (identity backward pass through the defence), one defence sample per step;
- ``bpda_eot``: BPDA averaged over k defence samples per step (EOT);
- ``exact_eot``: the exact gradient through the defence (draws fixed per sample,
  :mod:`pd_core.adaptive.exact`), averaged over k samples.

Each rung runs with each loss (cross-entropy, Carlini–Wagner margin) at each ε; every adversarial
image is judged by one defended run and by the Ens-``ensemble`` vote, with randomness the attack
never saw (:func:`pd_core.adaptive.attack.fresh_seed`). The same harness evaluates the baselines
(:data:`BASELINES`): the undefended model and JPEG at quality 75, so that "looks robust"
(transfer) and "is robust" (the adaptive rungs) can be compared for every defence.

Budgets (``steps``, ``eot``) are parameters: small on a CPU, larger on a GPU (issue 14: 100 steps,
k = 10).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..defence import PAPER_DEFAULTS, TABLE3_DEFENCES, DefenceConfig, defend, ensemble_predict
from ..evaluation.stats import wilson_interval
from ..models import Classifier
from . import checks
from .attack import bpda_eot_attack, fresh_seed
from .exact import ExactEotGradient

__all__ = ["RUNGS", "BASELINES", "LadderSettings", "run_ladder", "ladder_checks", "attack_rung",
           "judge", "worst_case", "evaluate_ladder", "format_ladder", "write_ladder_csv", "LADDER_CSV_COLUMNS",
           "UNDEFENDED"]

RUNGS = ("transfer", "bpda", "bpda_eot", "exact_eot")
#: No stage at all: ``defend`` returns its input (the undefended model, and the transfer rung's loop).
UNDEFENDED = DefenceConfig(deflect=False, denoise=False)
#: Defences the ladder can judge: the paper's, and the two baselines of issue 14 item 5.
BASELINES: dict[str, DefenceConfig] = {"pixel_deflection": PAPER_DEFAULTS, "jpeg75": TABLE3_DEFENCES["jpeg"],
                                       "undefended": UNDEFENDED}


LADDER_CSV_COLUMNS = ["rung", "loss", "eps_255", "defence", "n", "correct", "accuracy", "ci_low", "ci_high",
                      "steps", "eot", "attack_estimate"]


@dataclass(frozen=True)
class LadderSettings:
    """The ladder's budget: ε in /255, PGD ``steps``, ``eot`` samples for the EOT rungs, the losses,
    the ensemble size for the vote, the rungs to run and the seed."""

    eps_255: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)
    steps: int = 10
    eot: int = 4
    losses: tuple[str, ...] = ("ce", "margin")
    ensemble: int = 10
    rungs: tuple[str, ...] = RUNGS
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def attack_rung(model: Classifier, images: torch.Tensor, labels: torch.Tensor, rung: str, *, eps: float,
                steps: int, eot: int, loss: str, config: DefenceConfig, seed: int, step_size: float | None = None):
    """Run one rung at budget ``eps`` ([0, 1] units); returns the attack's ``AdaptiveResult``."""
    common = dict(eps=eps, steps=steps, loss=loss, seed=seed, step_size=step_size)
    if rung == "transfer":
        return bpda_eot_attack(model, images, labels, eot=1, config=UNDEFENDED, **common)
    if rung == "bpda":
        return bpda_eot_attack(model, images, labels, eot=1, config=config, **common)
    if rung == "bpda_eot":
        return bpda_eot_attack(model, images, labels, eot=eot, config=config, **common)
    if rung == "exact_eot":
        return bpda_eot_attack(model, images, labels, eot=eot, config=config,
                               gradient=ExactEotGradient(eot=eot, config=config, loss=loss), **common)
    raise ValueError(f"rung must be one of {', '.join(RUNGS)}, got {rung!r}")


def judge(model: Classifier, images: torch.Tensor, labels: torch.Tensor, config: DefenceConfig, *,
          ensemble: int, seed: int) -> dict[str, int]:
    """Correct predictions through one defended run (``single``) and the Ens vote (``ens``), with
    randomness derived from ``seed`` by :func:`fresh_seed` (never the attack's samples)."""
    with torch.no_grad():
        single = model(defend(model, images, config, seed=fresh_seed(seed))).argmax(1)
        vote = ensemble_predict(model, images, n=ensemble, seed=fresh_seed(seed + 1), config=config).prediction
    return {"single": int((single == labels).sum()), "ens": int((vote == labels).sum())}


def _row(rung: str, loss: str, eps_255: float, defence: str, correct: int, n: int, **extra) -> dict:
    low, high = wilson_interval(correct, n)
    return {"rung": rung, "loss": loss, "eps_255": eps_255, "defence": defence, "n": n, "correct": correct,
            "accuracy": correct / n if n else float("nan"), "ci_low": low, "ci_high": high, **extra}


def run_ladder(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
               settings: LadderSettings = LadderSettings(), config: DefenceConfig = PAPER_DEFAULTS,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every rung × loss × ε on ``images`` (N, 3, S, S) with true ``labels`` (N,).

    Returns one row per (rung, loss, ε, defence ∈ {single, ens<k>}) plus the clean rows
    (``rung="clean"``, ε = 0): ``n, correct, accuracy, ci_low, ci_high`` (Wilson 95%), the budget
    (``steps``, ``eot``), ``attack_estimate`` (the attack's own success estimate on its last EOT
    samples) and ``loss_history``.
    """
    say = progress or (lambda msg: None)
    n, ens_name = images.shape[0], f"ens{settings.ensemble}"
    clean = judge(model, images, labels, config, ensemble=settings.ensemble, seed=settings.seed)
    rows = [_row("clean", "", 0.0, "single", clean["single"], n, steps=0, eot=0),
            _row("clean", "", 0.0, ens_name, clean["ens"], n, steps=0, eot=0)]
    for loss in settings.losses:
        for rung in settings.rungs:
            eot = settings.eot if rung.endswith("_eot") else 1
            for eps_255 in settings.eps_255:
                say(f"{rung} · {loss} · ε {eps_255:g}/255")
                result = attack_rung(model, images, labels, rung, eps=eps_255 / 255, steps=settings.steps,
                                     eot=settings.eot, loss=loss, config=config, seed=settings.seed)
                verdict = judge(model, result.adversarial, labels, config, ensemble=settings.ensemble,
                                seed=settings.seed)
                extra = dict(steps=settings.steps, eot=eot, attack_estimate=float(result.eot_fooled.mean()),
                             loss_history=[float(v) for v in result.loss_history])
                rows.append(_row(rung, loss, eps_255, "single", verdict["single"], n, **extra))
                rows.append(_row(rung, loss, eps_255, ens_name, verdict["ens"], n, **extra))
    return rows


def ladder_checks(model: Classifier, images: torch.Tensor, labels: torch.Tensor, rows: list[dict],
                  settings: LadderSettings = LadderSettings(), config: DefenceConfig = PAPER_DEFAULTS,
                  large_eps_255: float = 32.0) -> list[checks.Check]:
    """The sanity checks (:mod:`.checks`) of a ladder's ``rows``, running the few extra attacks they
    need: the strongest rung at ``large_eps_255``, one single step, and random noise, at the ladder's
    largest ε. The strongest rung is the last of ``settings.rungs`` with the first loss."""
    n = images.shape[0]
    rung, loss = settings.rungs[-1], settings.losses[0]
    eps_top = max(settings.eps_255)
    single = [r for r in rows if r["defence"] == "single"]
    strongest = [r for r in single if r["rung"] == rung and r["loss"] == loss]
    top = next(r for r in strongest if r["eps_255"] == eps_top)
    clean = next(r for r in single if r["rung"] == "clean")
    found = []

    large = attack_rung(model, images, labels, rung, eps=large_eps_255 / 255, steps=settings.steps,
                        eot=settings.eot, loss=loss, config=config, seed=settings.seed)
    large_correct = judge(model, large.adversarial, labels, config, ensemble=1, seed=settings.seed)["single"]
    found.append(checks.reaches_zero(large_correct, n, large_eps_255))
    found.append(checks.does_not_rise([r["eps_255"] for r in strongest], [r["correct"] for r in strongest], n))

    one_step = attack_rung(model, images, labels, rung, eps=eps_top / 255, steps=1, eot=settings.eot, loss=loss,
                           config=config, seed=settings.seed, step_size=eps_top / 255)
    one_step_correct = judge(model, one_step.adversarial, labels, config, ensemble=1, seed=settings.seed)["single"]
    found.append(checks.iterative_beats_single_step(top["correct"], one_step_correct, n))

    noise_gen = torch.Generator(device=images.device).manual_seed(fresh_seed(settings.seed + 2))
    noise = (torch.rand(images.shape, generator=noise_gen, device=images.device) * 2 - 1) * (eps_top / 255)
    noisy = (images + noise).clamp(0, 1)
    noise_correct = judge(model, noisy, labels, config, ensemble=1, seed=settings.seed)["single"]
    found.append(checks.noise_costs_little(clean["correct"], noise_correct, top["correct"], n))

    found.append(checks.loss_converged(top["loss_history"]))
    found.append(checks.fresh_randomness_agrees(top["attack_estimate"], n - top["correct"], n))
    return found


def worst_case(rows: Sequence[dict], defence: str = "single") -> dict[float, dict]:
    """Per ε, the row of the strongest attack (lowest accuracy) over rungs and losses (the robust
    accuracy a leaderboard reports: an evaluation is as strong as its best attack)."""
    best: dict[float, dict] = {}
    for row in rows:
        if row["defence"] != defence or row["rung"] == "clean":
            continue
        if row["eps_255"] not in best or row["correct"] < best[row["eps_255"]]["correct"]:
            best[row["eps_255"]] = row
    return dict(sorted(best.items()))



def evaluate_ladder(model: Classifier, items, settings: LadderSettings = LadderSettings(),
                    config: DefenceConfig = PAPER_DEFAULTS, *, defence_name: str = "pixel_deflection",
                    labels_csv=None, tuning_fraction: float | None = None, limit: int | None = None,
                    report_path=None, progress: Callable[[str], None] | None = None):
    """The ladder and its checks on a labelled folder (the evaluation protocol's part, images the
    undefended model gets right), as ``(rows, checks, report)``; the report (:mod:`.report_json`) is
    also written to ``report_path`` when given."""
    from .evaluate import _attackable_images
    from .report_json import build_report, write_report

    say = progress or (lambda msg: None)
    data = _attackable_images(model, items, labels_csv, tuning_fraction, limit, lambda frac, msg: say(msg))
    rows = run_ladder(model, data.images, data.labels, settings, config, progress=say)
    say("sanity checks")
    found = ladder_checks(model, data.images, data.labels, rows, settings, config)
    report = build_report(rows, found, model_name=model.name, input_size=model.input_size,
                          defence_name=defence_name, config=config, settings=settings)
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
    import csv
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LADDER_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
