"""The adaptive attack on one image, classified with and without the defence before and after (the app's page).

The attack is :func:`pd_core.adaptive.attack.bpda_eot_attack` (BPDA+EOT, SPEC §3); every defended
prediction uses fresh randomness (:func:`pd_core.adaptive.attack.fresh_seed`), never the samples the
attack saw.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..defence import predict_probs
from ..defences.base import Defence
from ..defences.ensemble import ensemble_vote
from ..defences.registry import create_defence
from ..models import Classifier
from ..randomness import make_generator
from .attack import AdaptiveResult, bpda_eot_attack, fresh_seed
from .exact import ExactEotGradient
from .gradients import paper_defence
from .settings import RUNGS, PgdSettings, RunHooks

__all__ = ["AdaptiveDemo", "adaptive_demo", "DEMO_BUDGET"]

#: The app's default budget for one photo: 4/255, 10 steps, 4 samples per step.
DEMO_BUDGET = PgdSettings(eps=4 / 255, steps=10, eot=4)


@dataclass
class AdaptiveDemo:
    """The adaptive attack on one image, with the defended predictions before and after.

    probs : stage -> (classes,) probabilities on the CPU, stages ``clean``, ``clean_single``,
        ``clean_ensemble`` (mean softmax of the vote), ``adversarial``, ``adversarial_single``,
        ``adversarial_ensemble``.
    predictions : the same stages -> top-1 class (the ensemble stages: the vote's answer).
    agreement : ``clean_ensemble`` / ``adversarial_ensemble`` -> fraction of copies voting for it.
    label : the reference class (the true one, or the clean prediction for an unlabelled photo).
    clean, adversarial : (3, S, S) on the CPU. attack : the :class:`AdaptiveResult`.
    """

    label: int
    label_source: str
    clean: torch.Tensor
    adversarial: torch.Tensor
    probs: dict
    predictions: dict
    agreement: dict
    attack: AdaptiveResult
    ensemble: int
    seed: int


def adaptive_demo(model: Classifier, image: torch.Tensor, label: int | None = None, defence: Defence | None = None,
                  settings: PgdSettings = DEMO_BUDGET, *, rung: str = "bpda_eot", target: int | None = None,
                  ensemble: int = 10, seed: int = 0, hooks: RunHooks = RunHooks()) -> AdaptiveDemo:
    """Run :func:`bpda_eot_attack` on one image and classify it with and without the defence,
    before and after. The defended predictions use fresh randomness (:func:`fresh_seed`), never the
    attack's EOT samples; ``label=None`` takes the clean prediction as the reference class.
    ``defence``: pixel deflection with the paper's parameters when None. ``settings``: the budget
    (``targeted`` aims at ``target``, default a random wrong class). ``rung``: the attacker's
    knowledge, a rung of :data:`pd_core.adaptive.settings.RUNGS` (``transfer`` attacks the bare
    model, ``bpda`` uses one sample per step, ``exact_eot`` the exact gradient)."""
    defence = paper_defence(model, defence)
    if rung not in RUNGS:
        raise ValueError(f"the attacker's knowledge must be one of {', '.join(RUNGS)}, got {rung!r}")
    x = image.detach().to(model.device, torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError("adaptive_demo takes one image, (3, S, S) or (1, 3, S, S)")
    report = hooks.progress or (lambda frac, msg: None)
    eval_seed = fresh_seed(seed)
    with torch.no_grad():
        clean_probs = model(x).softmax(-1)
    label_source = "dataset" if label is not None else "clean prediction"
    label = int(clean_probs.argmax(1)) if label is None else int(label)
    report(0.0, "defending the clean photo")
    probs, preds, agreement = {"clean": clean_probs[0]}, {"clean": int(clean_probs.argmax(1))}, {}

    def defended(images, stage):
        with torch.no_grad():
            single = predict_probs(model, defence.apply(images, make_generator(eval_seed, model.device)))
        ens = ensemble_vote(model, defence, images, n=ensemble, generator=make_generator(eval_seed + 1, model.device))
        probs[f"{stage}_single"], preds[f"{stage}_single"] = single[0], int(single.argmax(1))
        probs[f"{stage}_ensemble"], preds[f"{stage}_ensemble"] = ens.mean_probs[0], int(ens.prediction[0])
        agreement[f"{stage}_ensemble"] = float(ens.agreement[0])

    defended(x, "clean")
    labels = torch.tensor([label], device=model.device)
    budget = settings if rung.endswith("_eot") else replace(settings, eot=1)
    attacked = create_defence("none") if rung == "transfer" else defence
    gradient = ExactEotGradient(budget.eot, defence, budget.loss) if rung == "exact_eot" else None
    result = bpda_eot_attack(model, x, labels, attacked, budget, seed=seed,
                             target=None if target is None else [int(target)], gradient=gradient,
                             hooks=RunHooks(lambda f, m: report(0.05 + 0.9 * f, m), hooks.should_stop))
    if result.stopped:
        raise InterruptedError("the adaptive attack was stopped before it finished.")
    if hooks.should_stop is not None and hooks.should_stop():
        raise InterruptedError("the adaptive attack was stopped before its photo was defended.")
    report(0.95, "defending the attacked photo")
    adv = result.adversarial
    with torch.no_grad():
        adv_probs = model(adv).softmax(-1)
    probs["adversarial"], preds["adversarial"] = adv_probs[0], int(adv_probs.argmax(1))
    defended(adv, "adversarial")
    report(1.0, "done")
    return AdaptiveDemo(label=label, label_source=label_source, clean=x[0].cpu(), adversarial=adv[0].cpu(),
                        probs={k: v.detach().cpu() for k, v in probs.items()}, predictions=preds,
                        agreement=agreement, attack=result, ensemble=ensemble, seed=seed)
