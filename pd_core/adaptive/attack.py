"""The adaptive attack: L∞ PGD through the defence with a gradient estimator, BPDA+EOT by default (SPEC §3).

Athalye & Carlini ("On the Robustness of the CVPR 2018 White-Box Adversarial Example Defenses",
2018) brought pixel deflection's accuracy to 0% at ε = 4/255 (targeted success 97%) with PGD whose
gradient is the BPDA+EOT estimate (:mod:`pd_core.adaptive.gradients`).

Randomness: the estimator's samples come from a ``torch.Generator`` seeded with ``seed`` and used
for nothing else, so an attack with ``eot=1`` follows exactly the plain BPDA loop with a single
defended sample per step. Random targets and random starts draw from a second generator
(:func:`_aux_seed`), and the evaluation of the result from a third (:func:`fresh_seed`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..attacks.core import perturbation_norms, quantize_to_grid
from ..defence import DefenceConfig, defend
from ..randomness import make_generator
from ..models import Classifier
from .gradients import BpdaEotGradient, GradientEstimator, check_loss

ProgressCallback = Callable[[float, str], None]

# Large odd constants that separate the seed streams (EOT samples / targets & random start /
# evaluation). Seeds are reduced modulo 2**63 to stay valid for torch.Generator.manual_seed.
_AUX_SALT = 0x2545F4914F6CDD1D
_EVAL_SALT = 0x9E3779B97F4A7C15


def _aux_seed(seed: int) -> int:
    """Seed of the generator for random targets and the random start (not the EOT samples)."""
    return (int(seed) * 1_000_003 + _AUX_SALT) % (2 ** 63)


def fresh_seed(seed: int) -> int:
    """Seed for evaluating an adversarial image: a stream different from the attack's EOT samples."""
    return (int(seed) * 998_244_353 + _EVAL_SALT) % (2 ** 63)


@dataclass
class AdaptiveResult:
    """Outcome of :func:`bpda_eot_attack` on a batch of N images.

    adversarial : (N, 3, S, S) in [0, 1], ``‖adversarial − clean‖∞ ≤ eps``; multiples of 1/255
        when ``quantize`` (see :func:`pd_core.attacks.core.quantize_to_grid`).
    labels, targets : (N,) true labels and, when targeted, the target classes (else None).
    clean_pred / adversarial_pred : (N,) top-1 of the *undefended* model.
    defended_pred : (N,) top-1 after one run of the defence on the adversarial image, with fresh
        randomness (:func:`fresh_seed`), never a sample the attack saw.
    success : (N,) bool, the attack's goal reached under that fresh defended run
        (untargeted: ``defended_pred != label``; targeted: ``defended_pred == target``).
    eot_fooled : (N,) fraction of the last step's n EOT samples that met the goal (the attack's
        own estimate, before the last update).
    linf : (N,) L∞ of the perturbation, in [0, 1] units (×255 for /255).
    l2_normalised : (N,) ``‖δ‖₂ / ‖x‖₂`` (the paper's |L2|, SPEC §2).
    psnr : (N,) dB (inf for a zero perturbation).
    loss_history : per step, the mean attack loss over the batch (the quantity ascended, see ``loss``).
    seconds : wall time. steps_done : steps actually run (fewer when stopped). stopped : stopped early.
    params : the attack's parameters, for records.
    """

    adversarial: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None
    clean_pred: torch.Tensor
    adversarial_pred: torch.Tensor
    defended_pred: torch.Tensor
    success: torch.Tensor
    eot_fooled: torch.Tensor
    linf: torch.Tensor
    l2_normalised: torch.Tensor
    psnr: torch.Tensor
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps_done: int = 0
    stopped: bool = False
    params: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else float("nan")


@dataclass
class _PgdRun:
    """The iterate of :func:`_pgd` and what it recorded on the way."""

    adversarial: torch.Tensor
    eot_fooled: torch.Tensor
    loss_history: list[float] = field(default_factory=list)
    steps_done: int = 0
    stopped: bool = False


def _check_settings(images: torch.Tensor, eps, steps, eot, loss: str, step_size) -> tuple[float, int, int, float]:
    """Validate the attack's settings; returns ``eps, steps, eot, step_size`` as numbers.

    The default step size is ``2.5 · ε / steps`` (Madry et al. 2018).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    eps, steps, eot = float(eps), int(steps), int(eot)
    if not (0 <= eps <= 1) or not math.isfinite(eps):
        raise ValueError(f"eps must be between 0 and 1 (e.g. 4/255), got {eps}")
    if steps < 0 or eot < 1:
        raise ValueError("steps must be ≥ 0 and eot ≥ 1")
    check_loss(loss)
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    step_size = float(step_size)
    if step_size < 0 or not math.isfinite(step_size):
        raise ValueError(f"step_size must be a finite number ≥ 0, got {step_size}")
    return eps, steps, eot, step_size


def _random_targets(labels: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly among the ``classes − 1`` others, per image."""
    offset = torch.randint(1, classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % classes


def _choose_targets(labels: torch.Tensor, target, classes: int, generator: torch.Generator) -> torch.Tensor:
    """The (N,) target classes: ``target`` (one int or N) or, when None, random wrong classes."""
    if target is None:
        targets = _random_targets(labels, classes, generator)
    else:
        n = labels.shape[0]
        targets = torch.as_tensor(target, dtype=torch.long, device=labels.device).reshape(-1).expand(n).clone()
    if bool(((targets < 0) | (targets >= classes)).any()):
        raise ValueError(f"target classes must be between 0 and {classes - 1}")
    return targets


def _random_start(clean: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A uniform point of the ε-ball around ``clean``, clipped to [0, 1]."""
    noise = torch.rand(clean.shape, generator=generator, device=clean.device) * 2 - 1
    return (clean + eps * noise).clamp(0, 1)


def _pgd(model: Classifier, clean: torch.Tensor, start: torch.Tensor, goal: torch.Tensor,
         gradient: GradientEstimator, *, eps: float, step_size: float, steps: int, targeted: bool,
         generator: torch.Generator, progress: ProgressCallback | None,
         should_stop: Callable[[], bool] | None) -> _PgdRun:
    """``steps`` signed-gradient steps from ``start``, each projected on the ε-ball around ``clean``.

    ``x ← clip_{x0, ε}(x + α · sign(g))`` where ``g`` is the estimator's gradient of the loss to
    ascend (−CE of the target when targeted, so the update is always "+").
    """
    n = clean.shape[0]
    run = _PgdRun(adversarial=start, eot_fooled=torch.zeros(n, device=clean.device))
    if not n or eps <= 0:
        return run
    lower, upper = (clean - eps).clamp_min(0), (clean + eps).clamp_max(1)
    adv = start
    for step in range(steps):
        if should_stop is not None and should_stop():
            run.stopped = True
            break
        grad, value, votes = gradient(model, adv, goal, targeted=targeted, generator=generator)
        met = (votes == goal[:, None]) if targeted else (votes != goal[:, None])
        run.eot_fooled = met.float().mean(1)
        adv = torch.minimum(torch.maximum(adv + step_size * grad.sign(), lower), upper)
        run.loss_history.append(float(value.mean()))
        run.steps_done = step + 1
        if progress is not None:
            fooled = float(run.eot_fooled.mean())
            progress(run.steps_done / steps, f"step {run.steps_done}/{steps}: {fooled:.0%} fooled")
    run.adversarial = adv
    return run


def _judge(model: Classifier, adv: torch.Tensor, labels: torch.Tensor, config: DefenceConfig, seed: int):
    """Top-1 of the undefended model and of one fresh defended run (:func:`fresh_seed`) on ``adv``."""
    with torch.no_grad():
        if not adv.shape[0]:
            return labels.clone(), labels.clone()
        adv_pred = model(adv).argmax(1)
        defended = defend(model, adv, config, generator=make_generator(fresh_seed(seed), adv.device))
        return adv_pred, model(defended).argmax(1)


def bpda_eot_attack(model: Classifier, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 4 / 255,
                    step_size: float | None = None, steps: int = 40, eot: int = 10, targeted: bool = False,
                    target: torch.Tensor | int | None = None, config: DefenceConfig | None = None,
                    seed: int = 0, random_start: bool = False, quantize: bool = True,
                    batch_size: int | None = None, loss: str = "ce", progress: ProgressCallback | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    gradient: GradientEstimator | None = None) -> AdaptiveResult:
    """L∞ PGD through the defence with BPDA and EOT (Athalye & Carlini 2018; SPEC §3).

    Each step: n = ``eot`` fresh defence samples of the current adversarial images (R-CAM map
    recomputed on them, then deflection and denoising), one batch of N·n images; the classifier's
    gradient at each defended sample is passed straight through the defence (BPDA) and averaged
    over the n samples (EOT); then ``x ← clip_{x0, ε}(x + α · sign(g))`` (untargeted, ascends the
    cross-entropy of the true label) or ``x − α · sign(g)`` (targeted, descends the cross-entropy
    of the target).

    Parameters
    ----------
    model : a frozen :class:`Classifier`. images : (N, 3, S, S) clean images in [0, 1] and
        labels : (N,) int64 true labels, on the model's device.
    eps : L∞ budget in [0, 1] units (4/255 is Athalye & Carlini's setting).
    step_size : α per step in [0, 1] units; default ``2.5 · ε / steps`` (Madry et al. 2018), so
        the iterate can cross the ε-ball in the first 40% of the steps and refine afterwards.
    steps : PGD iterations (≥ 0). eot : n defence samples per step (≥ 1).
    targeted : aim at ``target`` instead of any wrong class.
    target : (N,) or one int; default a class drawn uniformly among the 999 wrong ones per image
        (seeded), as in Athalye & Carlini's targeted evaluation (random target, 97% success).
    config : the defence attacked (paper defaults when None).
    seed : seeds the EOT samples; targets and the random start use a derived stream, the final
        defended prediction a third (:func:`fresh_seed`).
    random_start : start from a uniform point of the ε-ball instead of the clean image.
    quantize : round the final adversarial to multiples of 1/255 inside the ε-ball (PNG-safe).
    batch_size : rows (defended copies) per forward+backward pass; bounds memory only.
    loss : ``"ce"`` (cross-entropy, the usual PGD loss) or ``"margin"`` (Carlini–Wagner
        logit margin, :func:`pd_core.adaptive.gradients._attack_loss`).
    progress : ``progress(fraction, message)`` after every step.
    should_stop : checked before every step; when it returns True the attack stops and returns
        the current iterate (``stopped=True``).
    gradient : the estimator (:class:`~pd_core.adaptive.gradients.GradientEstimator`); default
        :class:`BpdaEotGradient` with ``eot``, ``config``, ``loss``, ``batch_size``. Another brings its
        own settings: ``config`` still sets the defence judging the result, ``eot`` and ``loss`` are
        only recorded in ``params``.

    Returns
    -------
    :class:`AdaptiveResult`.
    """
    eps, steps, eot, step_size = _check_settings(images, eps, steps, eot, loss, step_size)
    config = config or DefenceConfig()
    if gradient is None:
        gradient = BpdaEotGradient(eot=eot, config=config, loss=loss, batch_size=batch_size)
    device = model.device
    clean = images.detach().to(device=device, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    n = clean.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")

    started = time.perf_counter()
    eot_gen = make_generator(seed, device)
    aux_gen = make_generator(_aux_seed(seed), device)
    with torch.no_grad():
        clean_logits = model(clean) if n else torch.zeros(0, 1000, device=device)
    targets = _choose_targets(labels, target, clean_logits.shape[1], aux_gen) if targeted else None
    goal = targets if targeted else labels

    start = _random_start(clean, eps, aux_gen) if random_start and eps > 0 else clean.clone()
    run = _pgd(model, clean, start, goal, gradient, eps=eps, step_size=step_size, steps=steps, targeted=targeted,
               generator=eot_gen, progress=progress, should_stop=should_stop)
    adv = quantize_to_grid(run.adversarial, clean, eps) if quantize else run.adversarial

    adv_pred, defended_pred = _judge(model, adv, labels, config, seed)
    success = (defended_pred == goal) if targeted else (defended_pred != goal)
    norms = perturbation_norms(clean, adv)
    params = {"eps": eps, "eps_255": eps * 255, "step_size": step_size, "steps": steps, "eot": eot,
              "targeted": targeted, "loss": loss, "random_start": random_start, "quantize": quantize, "seed": seed,
              "model": getattr(model, "name", type(model).__name__), "defence": config.as_dict()}
    return AdaptiveResult(
        adversarial=adv, labels=labels, targets=targets, clean_pred=clean_logits.argmax(1),
        adversarial_pred=adv_pred, defended_pred=defended_pred, success=success, eot_fooled=run.eot_fooled,
        linf=norms["linf_255"] / 255, l2_normalised=norms["norm_l2"], psnr=norms["psnr"],
        loss_history=run.loss_history, seconds=time.perf_counter() - started, steps_done=run.steps_done,
        stopped=run.stopped, params=params)
