"""The story's computation: :func:`attack_and_defend` and :func:`defence_stages`.

Both go through the defence registry (:mod:`pd_core.defences`): any entry, or a user's plugin,
defends; the maps the story computes anyway to show them (one forward pass per image) are handed
to a defence that reads the classifier, so pixel deflection never recomputes them.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import torch

from ..defence import DefenceConfig, predict_probs, vote
from ..defences import Defence, create_defence, resolve_defences
from ..maps import robust_activation_map
from ..models import Classifier
from ..randomness import make_generator
from .record import DemoResult, StageResult

__all__ = ["attack_and_defend", "defence_stages", "build_story_defence", "DEFAULT_DEFENCE", "STAGE_DEFENCES"]

#: The defence of the story unless another is named: the paper's (§8).
DEFAULT_DEFENCE = "pixel_deflection"

#: Paper Table 3, one stage at a time, as registry entries: none, deflection only, wavelet
#: denoising only, both (the paper's defence), JPEG only.
STAGE_DEFENCES: tuple[str, ...] = ("none", "pd", "wavelet", "pixel_deflection", "jpeg")

_RECORD_FIELDS = ("y", "x", "source_y", "source_x", "channel")


def build_story_defence(model: Classifier, defence: Defence | str | None, config: DefenceConfig) -> Defence:
    """The story's defence: a :class:`~pd_core.defences.Defence` as given, or the entry (or plugin
    spec ``FILE.py:FUNCTION``) named, built with the run-wide settings ``config``."""
    if isinstance(defence, Defence):
        return defence
    names = resolve_defences(defence or DEFAULT_DEFENCE)
    if len(names) != 1:
        raise ValueError(f"the story takes one defence, got {defence!r}")
    return create_defence(names[0], model, config=config)


def _maps_for(defence: Defence, maps) -> dict:
    """``maps=`` for the defence's calls: only a defence that reads the classifier is given them
    (a plugin written before the keyword existed need not accept it)."""
    return {"maps": maps} if defence.info.needs_model else {}


def _norms(clean: torch.Tensor, other: torch.Tensor, model: Classifier) -> dict[str, float]:
    from ..attacks import perturbation_norms

    return {k: float(v[0]) for k, v in perturbation_norms(clean, other, model).items()}


def attack_and_defend(model: Classifier, image: torch.Tensor, label: int | None = None, *,
                      attack: str = "fgsm", preset: str = "interactive", attack_params: Mapping | None = None,
                      config: DefenceConfig | None = None, defence: Defence | str | None = None, seed: int = 0,
                      n_ensemble: int = 10, image_name: str = "image", image_path: str | None = None,
                      progress: Callable[[float, str], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> DemoResult:
    """Attack one image and defend it: the whole story of the Attack & Defend page.

    image : (1, 3, S, S) or (3, S, S) in [0, 1] at the model's resolution (moved to its device).
    label : the true class; ``None`` uses the clean prediction as the reference (uploads).
    attack, preset, attack_params : as :func:`pd_core.attacks.attack` (params override the preset).
    config : the run-wide defence settings (paper defaults when None); they reach every defence
        that has the parameter (:func:`pd_core.defences.registry.params_from_config`).
    defence : a registry name, a plugin spec or a built :class:`~pd_core.defences.Defence`
        (default: pixel deflection, the paper's).
    seed : the attack's and the defence's seed: the single defended run, the defended clean image
        and Ens-n each draw from a generator seeded with ``seed`` (same seed, same numbers).
    progress(fraction, message) : called during the attack (fractions 0–0.8) and after each step.
    should_stop() : polled at every forward pass of the attack and once more before the defence;
        when true, :class:`pd_core.attacks.AttackCancelled` is raised.
    """
    from ..attacks import attack as run_attack, stop_if_asked

    config = config or DefenceConfig()
    spec = defence if isinstance(defence, str) else None
    defence = build_story_defence(model, defence, config)
    x = (image if image.ndim == 4 else image[None]).to(model.device, torch.float32).contiguous()
    if x.shape[0] != 1:
        raise ValueError("attack_and_defend takes one image")
    seconds: dict[str, float] = {}
    report = progress or (lambda fraction, message: None)

    t = time.perf_counter()
    clean_maps = robust_activation_map(model, x, top_k=config.top_k)
    clean_pred = int(clean_maps.logits[0].argmax())
    label_source = "dataset" if label is not None else "clean prediction"
    label = clean_pred if label is None else int(label)
    seconds["clean"] = time.perf_counter() - t
    report(0.05, "classified the clean image")

    t = time.perf_counter()
    result = run_attack(model, x, torch.tensor([label], device=model.device), attack, preset=preset,
                        seed=seed, should_stop=should_stop,
                        progress=(lambda f, m: report(0.05 + 0.75 * f, m)),
                        **dict(attack_params or {}))
    # contiguous: deflect() writes through a flat view of its input's clone.
    adv = result.adversarial.to(model.device).contiguous()
    seconds["attack"] = time.perf_counter() - t
    report(0.8, "attack done; defending")
    stop_if_asked(should_stop, "after the attack")

    t = time.perf_counter()
    adv_maps = robust_activation_map(model, adv, top_k=config.top_k)
    defended = _defend_story(model, defence, x, adv, clean_maps, adv_maps, seed, n_ensemble)
    seconds["defence"] = time.perf_counter() - t
    report(0.95, f"defence and Ens-{n_ensemble} done")

    single, defended_clean, deflections, probs, ensemble = defended
    cpu = torch.device("cpu")
    clean_probs = clean_maps.logits[0].softmax(-1)
    adv_probs = adv_maps.logits[0].softmax(-1)
    images = {"clean": x[0], "adversarial": adv[0], "defended": single[0], "defended_clean": defended_clean[0]}
    all_probs = {"clean": clean_probs, "adversarial": adv_probs, "defended": probs[0],
                 "defended_clean": probs[1], "ensemble": ensemble.mean_probs[0]}
    predictions = {"clean": clean_pred, "adversarial": int(adv_probs.argmax()),
                   "defended": int(probs[0].argmax()), "defended_clean": int(probs[1].argmax()),
                   "ensemble": int(ensemble.prediction[0])}
    maps = {"clean_rcam": clean_maps.rmap[0], "clean_cam": clean_maps.cams[0, 0],
            "adversarial_rcam": adv_maps.rmap[0], "adversarial_cam": adv_maps.cams[0, 0]}
    norms = {"adversarial": _norms(x, adv, model), "defended": _norms(x, single, model),
             "defended_vs_adversarial": _norms(adv, single, model)}
    seconds["total"] = sum(seconds.values())
    report(1.0, "done")
    return DemoResult(
        model=model.name, image_name=image_name, label=label, label_source=label_source,
        attack=attack, preset=preset, attack_params=dict(result.params), seed=int(seed), config=config,
        n_ensemble=n_ensemble,
        images={k: v.detach().to(cpu) for k, v in images.items()},
        probs={k: v.detach().to(cpu) for k, v in all_probs.items()},
        predictions=predictions, ensemble_votes=[int(v) for v in ensemble.votes[0]],
        ensemble_agreement=float(ensemble.agreement[0]),
        maps={k: v.detach().to(cpu) for k, v in maps.items()}, gradcam=clean_maps.gradcam,
        deflections={k: v.to(cpu) for k, v in deflections.items()}, norms=norms,
        attack_success=bool(result.success[0]), seconds=seconds, image_path=image_path, device=str(model.device),
        defence=spec or defence.name, defence_title=defence.title, defence_params=dict(defence.params),
    )


def _defend_story(model: Classifier, defence: Defence, x: torch.Tensor, adv: torch.Tensor, clean_maps, adv_maps,
                  seed: int, n_ensemble: int):
    """The defended adversarial image (single run, with where it deflected), the defended clean
    image and the Ens-n vote on the adversarial image, all classified as one batch:
    [defended(adv), defended(clean), n × defended(adv)].

    The single run is the defence's draws then their replay (:meth:`~pd_core.defences.Defence.draw`,
    :meth:`~pd_core.defences.Defence.replay`), which equals ``apply`` with the same generator and
    keeps pixel deflection's record of what moved where. Returns (single, defended_clean,
    deflections, probs, vote)."""
    with torch.no_grad():
        single, deflections = _one_run(defence, adv, adv_maps, make_generator(seed, model.device))
        defended_clean, _ = _one_run(defence, x, clean_maps, make_generator(seed, model.device))
        copies = defence.apply_copies(adv, n_ensemble, make_generator(seed, model.device),
                                      **_maps_for(defence, adv_maps))
    probs = predict_probs(model, torch.cat([single, defended_clean, copies]))
    return single, defended_clean, deflections, probs, vote(probs[2:].view(1, n_ensemble, -1))


def _one_run(defence: Defence, x: torch.Tensor, maps, generator: torch.Generator):
    """One defended run of ``x`` and, when the defence deflects pixels, its record as a dict."""
    from ..deflection import DeflectionRecord

    draws = defence.draw(x, 1, generator, **_maps_for(defence, maps))
    if draws is None:  # deterministic: nothing drawn
        out = defence.apply(x, generator)
    else:
        out = defence.replay(x, draws)
    if isinstance(draws, DeflectionRecord):
        record = {k: getattr(draws, k)[0] for k in _RECORD_FIELDS}
    else:
        record = {k: torch.zeros(0, dtype=torch.long) for k in _RECORD_FIELDS}
    return out, record


def defence_stages(model: Classifier, image: torch.Tensor, config: DefenceConfig | None = None, *,
                   seed: int = 0, stages: Sequence[str] = STAGE_DEFENCES) -> list[StageResult]:
    """The image after each of ``stages`` (registry entries; default: paper Table 3 one stage at a
    time), classified as one batch. Each stage is built with the run-wide settings ``config`` (K,
    r, σ, ...) and run with a generator seeded from ``seed``; the clean image's map is computed once
    and given to every stage that reads it."""
    config = config or DefenceConfig()
    x = (image if image.ndim == 4 else image[None]).to(model.device, torch.float32).contiguous()
    defences = [create_defence(name, model, config=config) for name in resolve_defences(list(stages))]
    maps = None
    if any(d.info.needs_model for d in defences):
        maps = robust_activation_map(model, x, top_k=config.top_k)
    with torch.no_grad():
        outputs = [d.apply_copies(x, 1, make_generator(seed, model.device), **_maps_for(d, maps))
                   for d in defences]
    probs = predict_probs(model, torch.cat(outputs)).cpu()
    return [StageResult(d.name, d.title, out[0].detach().cpu(), p) for d, out, p in zip(defences, outputs, probs)]
