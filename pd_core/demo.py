"""The one-image story the app tells, as plain functions: attack, defend, Ens-10, maps, norms.

:func:`attack_and_defend` runs, for one image: the clean prediction with its maps (one forward
pass), an attack, the adversarial prediction with its R-CAM (one pass), the defence of paper §8
on the adversarial image (single run) and on the clean image, and Ens-10 (SPEC §1.4), the last
three as **one batch** through the classifier, and :func:`defence_stages` the effect of each stage
(paper Table 3). Paper Fig. 2 (class probabilities against the number of deflections) is
:func:`pd_core.evaluation.probability_curve`, the same for the app and the evaluation.

Every number depends only on the inputs and the seed, so the command line
``python -m pd_core demo IMAGE ...`` (:mod:`pd_core.cli.demo`; :func:`demo_cli_command` writes the
line for a result) prints exactly what the app shows for the same settings.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import torch

from .defence import DefenceConfig, defend_batch, predict_probs, vote
from .randomness import make_generator
from .maps import robust_activation_map
from .models import Classifier

__all__ = [
    "DemoResult",
    "attack_and_defend",
    "verdict",
    "StageResult",
    "defence_stages",
    "STAGES",
    "demo_cli_command",
]

STAGE_NAMES = ("clean", "adversarial", "defended", "ensemble")


def _norms(clean: torch.Tensor, other: torch.Tensor, model: Classifier) -> dict[str, float]:
    from .attacks import perturbation_norms

    return {k: float(v[0]) for k, v in perturbation_norms(clean, other, model).items()}


@dataclass
class DemoResult:
    """Everything the Attack & Defend page shows, for one image (tensors on the CPU).

    label: the reference class the verdicts use; ``label_source`` says where it came from
    ("dataset" for a labelled image, "clean prediction" for an upload).
    images: clean, adversarial, defended (single run on the adversarial image), defended_clean,
    each (3, S, S) in [0, 1].
    probs: stage -> (1000,) probabilities; "ensemble" is the mean softmax of the n copies.
    predictions: stage -> class; "ensemble" is the majority vote (ties: higher mean probability).
    maps: "clean_rcam", "clean_cam", "adversarial_rcam", "adversarial_cam" -> (S, S) in [0, 1];
    the CAMs are of each image's own top-1 class.
    deflections: the single run's replacements, "y", "x", "source_y", "source_x", "channel" (K,).
    norms: "adversarial", "defended", "defended_vs_adversarial" -> norm_l2, l2, linf_255, psnr, l0
    of (adversarial − clean), (defended − clean), (defended − adversarial).
    """

    model: str
    image_name: str
    label: int
    label_source: str
    attack: str
    preset: str
    attack_params: dict
    seed: int
    config: DefenceConfig
    n_ensemble: int
    images: dict[str, torch.Tensor]
    probs: dict[str, torch.Tensor]
    predictions: dict[str, int]
    ensemble_votes: list[int]
    ensemble_agreement: float
    maps: dict[str, torch.Tensor]
    gradcam: bool
    deflections: dict[str, torch.Tensor]
    norms: dict[str, dict[str, float]]
    attack_success: bool
    seconds: dict[str, float] = field(default_factory=dict)
    image_path: str | None = None
    device: str = "cpu"

    def verdicts(self) -> dict[str, tuple[str, str]]:
        """stage -> (kind, sentence); kind is "correct", "wrong", "fooled", "resisted",
        "recovered" or "still fooled"."""
        return {stage: verdict(stage, self.predictions[stage], self.label)
                for stage in STAGE_NAMES}

    def cli_command(self) -> str:
        return demo_cli_command(self.image_path or "IMAGE", model=self.model, attack=self.attack,
                                preset=self.preset, params=self.attack_params, seed=self.seed,
                                config=self.config, n_ensemble=self.n_ensemble,
                                label=self.label if self.label_source == "dataset" else None)

    def to_dict(self) -> dict:
        """All the numbers as plain JSON-able values (no images)."""
        from .labels import label_name

        def top(probs: torch.Tensor, k: int = 5) -> list[dict]:
            values, indices = probs.topk(k)
            return [{"index": int(i), "label": label_name(int(i)), "prob": round(float(v), 6)}
                    for v, i in zip(values, indices)]

        verdicts = self.verdicts()
        return {
            "image": self.image_name,
            "model": self.model,
            "device": self.device,
            "seed": self.seed,
            "reference_label": {"index": self.label, "label": label_name(self.label),
                                "source": self.label_source},
            "attack": {"name": self.attack, "preset": self.preset,
                       "params": {k: _jsonable(v) for k, v in self.attack_params.items()},
                       "success": self.attack_success},
            "defence": self.config.as_dict(),
            "ensemble": {"n": self.n_ensemble, "votes": self.ensemble_votes,
                         "agreement": round(self.ensemble_agreement, 6)},
            "stages": {
                stage: {"prediction": {"index": self.predictions[stage],
                                       "label": label_name(self.predictions[stage])},
                        "prob_reference": round(float(self.probs[stage][self.label]), 6),
                        "top5": top(self.probs[stage]),
                        "verdict": verdicts[stage][0]}
                for stage in STAGE_NAMES
            },
            "defended_clean": {"prediction": {"index": self.predictions["defended_clean"],
                                              "label": label_name(self.predictions["defended_clean"])},
                               "top5": top(self.probs["defended_clean"])},
            "norms": {name: {k: _jsonable(v) for k, v in values.items()} for name, values in self.norms.items()},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "command": self.cli_command(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return None
        return round(value, 8)
    return value


def verdict(stage: str, prediction: int, label: int) -> tuple[str, str]:
    """Plain-language verdict of one column of the story (kind, sentence).

    clean: "correct" / "wrong"; adversarial: "fooled" / "resisted" (the attack did not change the
    answer away from the label); defended and ensemble: "recovered" / "still fooled".
    """
    from .labels import label_name

    right = prediction == label
    name = f"“{label_name(prediction)}”"
    if stage == "clean":
        return ("correct", f"The model says {name}.") if right else \
               ("wrong", f"Wrong even before any attack: the model says {name}.")
    if stage == "adversarial":
        return ("resisted", f"The attack failed: still {name}.") if right else \
               ("fooled", f"The model now says {name}.")
    return ("recovered", f"Back to {name}.") if right else \
           ("still fooled", f"The model says {name}.")


def attack_and_defend(model: Classifier, image: torch.Tensor, label: int | None = None, *,
                      attack: str = "fgsm", preset: str = "interactive", attack_params: Mapping | None = None,
                      config: DefenceConfig | None = None, seed: int = 0, n_ensemble: int = 10,
                      image_name: str = "image", image_path: str | None = None,
                      progress: Callable[[float, str], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> DemoResult:
    """Attack one image and defend it: the whole story of the Attack & Defend page.

    image : (1, 3, S, S) or (3, S, S) in [0, 1] at the model's resolution (moved to its device).
    label : the true class; ``None`` uses the clean prediction as the reference (uploads).
    attack, preset, attack_params : as :func:`pd_core.attacks.attack` (params override the preset).
    config : the defence (paper defaults when None); seed : the attack's and the defence's seed
        (the single defended run and Ens-n draw from ``seed``: same seed, same numbers).
    progress(fraction, message) : called during the attack (fractions 0–0.8) and after each step.
    """
    from .attacks import attack as run_attack

    config = config or DefenceConfig()
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

    t = time.perf_counter()
    adv_maps = robust_activation_map(model, adv, top_k=config.top_k)
    single, defended_clean, record, probs, ensemble = _defend_story(model, x, adv, clean_maps, adv_maps, config,
                                                                    seed, n_ensemble)
    seconds["defence"] = time.perf_counter() - t
    report(0.95, "defence and Ens-10 done")

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
    if record is not None:
        deflections = {k: getattr(record, k)[0].to(cpu) for k in ("y", "x", "source_y", "source_x", "channel")}
    else:
        deflections = {k: torch.zeros(0, dtype=torch.long) for k in ("y", "x", "source_y", "source_x", "channel")}
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
        deflections=deflections, norms=norms, attack_success=bool(result.success[0]),
        seconds=seconds, image_path=image_path, device=str(model.device),
    )


def _defend_story(model: Classifier, x: torch.Tensor, adv: torch.Tensor, clean_maps, adv_maps,
                  config: DefenceConfig, seed: int, n_ensemble: int):
    """The defended adversarial image (single run, with its deflection record), the defended clean
    image and the Ens-n vote on the adversarial image, all classified as one batch:
    [defended(adv), defended(clean), n × defended(adv)]. Returns (single, defended_clean, record,
    probs, vote)."""
    uses_map = config.deflect and config.use_map
    single, record = _defend_one(adv, adv_maps.rmap if uses_map else None, config,
                                 make_generator(seed, model.device))
    defended_clean, _ = _defend_one(x, clean_maps.rmap if uses_map else None, config,
                                    make_generator(seed, model.device))
    copies = defend_batch(model, adv, n_ensemble, config, seed=seed,
                          rmap=adv_maps.rmap if uses_map else None)
    probs = predict_probs(model, torch.cat([single, defended_clean, copies]))
    return single, defended_clean, record, probs, vote(probs[2:].view(1, n_ensemble, -1))


def _defend_one(x: torch.Tensor, rmap: torch.Tensor | None, config: DefenceConfig,
                generator: torch.Generator):
    """The defence of :func:`pd_core.defence.defend` with a given map, returning the record too."""
    from .defence import _transform

    out, _, record = _transform(x, rmap, config, generator, return_record=True)
    return out, record


# --- paper Table 3: the stages separately ------------------------------------------------------

STAGES: dict[str, str] = {
    "none": "No defence",
    "deflection": "Deflection only",
    "denoising": "Wavelet denoising only",
    "both": "Both (the defence)",
    "jpeg": "JPEG (quality 75)",
}


@dataclass
class StageResult:
    """One stage applied to the image: its output (3, S, S) and probabilities (1000,) on the CPU."""

    name: str
    title: str
    image: torch.Tensor
    probs: torch.Tensor

    @property
    def prediction(self) -> int:
        return int(self.probs.argmax())


def defence_stages(model: Classifier, image: torch.Tensor, config: DefenceConfig | None = None, *,
                   seed: int = 0, jpeg_quality: int = 75) -> list[StageResult]:
    """The image after each stage of the defence separately (paper Table 3), one classifier batch.

    Stages: none, deflection only, wavelet denoising only, both (the configured defence), JPEG only.
    The deflection stages use ``config``'s K, window and map, with the same seed.
    """
    config = config or DefenceConfig()
    x = (image if image.ndim == 4 else image[None]).to(model.device, torch.float32).contiguous()
    rmap = robust_activation_map(model, x, top_k=config.top_k).rmap if config.use_map else None
    from .defence import _transform

    variants = {
        "deflection": replace(config, deflect=True, denoise=False, jpeg_quality=None),
        "denoising": replace(config, deflect=False, denoise=True, jpeg_quality=None),
        "both": replace(config, deflect=True, denoise=True, jpeg_quality=None),
        "jpeg": replace(config, deflect=False, denoise=False, jpeg_quality=jpeg_quality),
    }
    outputs = [x]
    for variant in variants.values():
        outputs.append(_transform(x, rmap, variant, make_generator(seed, model.device))[0])
    probs = predict_probs(model, torch.cat(outputs)).cpu()
    names = ["none", *variants]
    return [StageResult(name, STAGES[name], out[0].detach().cpu(), p)
            for name, out, p in zip(names, outputs, probs)]


# --- the command line that reproduces a result -------------------------------------------------

def demo_cli_command(image: str, *, model: str, attack: str, preset: str, params: Mapping, seed: int,
                     config: DefenceConfig, n_ensemble: int = 10, label: int | None = None) -> str:
    """The ``python -m pd_core demo ...`` line that reproduces a :class:`DemoResult`."""
    import shlex

    default = DefenceConfig()
    parts = ["python", "-m", "pd_core", "demo", shlex.quote(image), "--model", model,
             "--attack", attack, "--preset", preset]
    from .attacks import ATTACKS

    preset_params = ATTACKS[attack].preset(preset) if attack in ATTACKS else {}
    for key, value in params.items():
        if preset_params.get(key) != value:
            parts += ["--param", f"{key}={value}"]
    if label is not None:
        parts += ["--label", str(label)]
    parts += ["--seed", str(seed)]
    for key, flag in (("deflections", "--deflections"), ("window", "--window"), ("sigma", "--sigma"),
                      ("wavelet", "--wavelet"), ("method", "--method"), ("mode", "--mode"),
                      ("top_k", "--top-k")):
        if getattr(config, key) != getattr(default, key):
            parts += [flag, str(getattr(config, key))]
    if not config.ycbcr:
        parts.append("--rgb")
    if not config.use_map:
        parts.append("--no-map")
    if n_ensemble != 10:
        parts += ["--ensemble", str(n_ensemble)]
    parts.append("--json")
    return " ".join(parts)
