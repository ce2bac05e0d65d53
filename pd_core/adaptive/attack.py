"""The adaptive attack: PGD (L∞ or normalised L2) through any defence with a gradient estimator, BPDA+EOT by default (SPEC §3).

Athalye & Carlini ("On the Robustness of the CVPR 2018 White-Box Adversarial Example Defenses",
2018) brought pixel deflection's accuracy to 0% at ε = 4/255 (targeted success 97%) with PGD whose
gradient is the BPDA+EOT estimate (:mod:`pd_core.adaptive.gradients`).

Randomness: the estimator's samples come from a ``torch.Generator`` seeded with ``seed`` and used
for nothing else, so an attack with ``eot=1`` follows exactly the plain BPDA loop with a single
defended sample per step. Random targets and random starts draw from a second generator
(:func:`aux_seed`), and the evaluation of the result from a third (:func:`fresh_seed`).

The threat models and the reading of ε for L2 (Guo et al.'s normalised L2): :mod:`.settings`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..attacks.measures import perturbation_norms, quantize_to_grid
from ..defences.base import Defence
from ..models import Classifier
from ..randomness import make_generator
from .gradients import BpdaEotGradient, GradientEstimator, paper_defence
from .settings import PgdSettings, RunHooks

__all__ = ["AdaptiveResult", "ProgressCallback", "bpda_eot_attack", "fresh_seed", "aux_seed", "random_targets"]

ProgressCallback = Callable[[float, str], None]

# Large odd constants that separate the seed streams (EOT samples / targets & random start /
# evaluation). Seeds are reduced modulo 2**63 to stay valid for torch.Generator.manual_seed.
AUX_SALT = 0x2545F4914F6CDD1D
EVAL_SALT = 0x9E3779B97F4A7C15


def aux_seed(seed: int) -> int:
    """Seed of the generator for random targets and the random start (not the EOT samples)."""
    return (int(seed) * 1_000_003 + AUX_SALT) % (2 ** 63)


def fresh_seed(seed: int) -> int:
    """Seed for evaluating an adversarial image: a stream different from the attack's EOT samples."""
    return (int(seed) * 998_244_353 + EVAL_SALT) % (2 ** 63)


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
    linf : (N,) L∞ of the perturbation, in [0, 1] units (×255 for /255); for an L2 attack the
        budget is ``l2_normalised`` ≤ ε.
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


def random_targets(labels: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly among the ``classes − 1`` others, per image."""
    offset = torch.randint(1, classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % classes


def _choose_targets(labels: torch.Tensor, target, classes: int, generator: torch.Generator) -> torch.Tensor:
    """The (N,) target classes: ``target`` (one int or N) or, when None, random wrong classes."""
    if target is None:
        targets = random_targets(labels, classes, generator)
    else:
        n = labels.shape[0]
        targets = torch.as_tensor(target, dtype=torch.long, device=labels.device).reshape(-1).expand(n).clone()
    if bool(((targets < 0) | (targets >= classes)).any()):
        raise ValueError(f"target classes must be between 0 and {classes - 1}")
    return targets


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1) L2 norm of each image of ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


class _Ball:
    """The threat model's ball around the clean images, in [0, 1] pixels.

    L∞: ``|δ| ≤ ε`` per value. L2: ``‖δ‖₂ ≤ ε·‖x‖₂`` per image (the normalised L2 of
    :mod:`.settings`). ``step`` moves along the steepest ascent direction of the norm (the sign of
    the gradient, or the gradient over its L2 norm) and ``project`` goes back into the ball and
    into [0, 1]; clipping to [0, 1] after the L2 projection only brings values nearer the clean
    ones, so it never leaves the ball.
    """

    def __init__(self, clean: torch.Tensor, settings: PgdSettings):
        self.clean, self.norm = clean, settings.norm
        if self.norm == "linf":
            self.radius = torch.full((clean.shape[0], 1, 1, 1), settings.eps, device=clean.device)
            self.lower, self.upper = (clean - settings.eps).clamp_min(0), (clean + settings.eps).clamp_max(1)
        else:
            self.radius = settings.eps * _flat_norm(clean)
        self.alpha = settings.step_size if self.norm == "linf" else settings.step_size * _flat_norm(clean)

    def step(self, adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return torch.minimum(torch.maximum(adv + self.alpha * grad.sign(), self.lower), self.upper)
        direction = grad / _flat_norm(grad).clamp_min(1e-12)
        return self.project(adv + self.alpha * direction)

    def project(self, adv: torch.Tensor) -> torch.Tensor:
        delta = adv - self.clean
        if self.norm == "l2":
            scale = (self.radius / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * scale
        else:
            delta = delta.clamp(-self.radius, self.radius)
        return (self.clean + delta).clamp(0, 1)

    def random_point(self, generator: torch.Generator) -> torch.Tensor:
        """A uniform point of the L∞ ball; for L2, a random direction at a radius uniform in [0, ε]."""
        noise = torch.rand(self.clean.shape, generator=generator, device=self.clean.device) * 2 - 1
        if self.norm == "linf":
            return (self.clean + self.radius * noise).clamp(0, 1)
        u = torch.rand((self.clean.shape[0], 1, 1, 1), generator=generator, device=self.clean.device)
        return self.project(self.clean + noise / _flat_norm(noise).clamp_min(1e-12) * self.radius * u)


def _pgd(model: Classifier, ball: _Ball, start: torch.Tensor, goal: torch.Tensor,
         gradient: GradientEstimator, *, steps: int, targeted: bool, generator: torch.Generator,
         hooks: RunHooks) -> _PgdRun:
    """``steps`` steepest-ascent steps from ``start``, each projected on the ball around the clean images.

    L∞: ``x ← clip_{x0, ε}(x + α · sign(g))`` where ``g`` is the estimator's gradient of the loss to
    ascend (−CE of the target when targeted, so the update is always "+"); L2: :class:`_Ball`.
    """
    clean = ball.clean
    n = clean.shape[0]
    run = _PgdRun(adversarial=start, eot_fooled=torch.zeros(n, device=clean.device))
    if not n or float(ball.radius.max()) <= 0:
        return run
    adv = start
    for step in range(steps):
        if hooks.should_stop is not None and hooks.should_stop():
            run.stopped = True
            break
        grad, value, votes = gradient(model, adv, goal, targeted=targeted, generator=generator)
        met = (votes == goal[:, None]) if targeted else (votes != goal[:, None])
        run.eot_fooled = met.float().mean(1)
        adv = ball.step(adv, grad)
        run.loss_history.append(float(value.mean()))
        run.steps_done = step + 1
        if hooks.progress is not None:
            fooled = float(run.eot_fooled.mean())
            hooks.progress(run.steps_done / steps, f"step {run.steps_done}/{steps}: {fooled:.0%} fooled")
    run.adversarial = adv
    return run


def _judge(model: Classifier, adv: torch.Tensor, labels: torch.Tensor, defence: Defence, seed: int):
    """Top-1 of the undefended model and of one fresh defended run (:func:`fresh_seed`) on ``adv``."""
    with torch.no_grad():
        if not adv.shape[0]:
            return labels.clone(), labels.clone()
        adv_pred = model(adv).argmax(1)
        defended = defence.apply(adv, make_generator(fresh_seed(seed), adv.device))
        return adv_pred, model(defended).argmax(1)


def bpda_eot_attack(model: Classifier, images: torch.Tensor, labels: torch.Tensor, defence: Defence | None = None,
                    settings: PgdSettings = PgdSettings(), *, seed: int = 0,
                    target: torch.Tensor | int | None = None, gradient: GradientEstimator | None = None,
                    hooks: RunHooks = RunHooks()) -> AdaptiveResult:
    """PGD through the defence with BPDA and EOT (Athalye & Carlini 2018; SPEC §3).

    Each step: n = ``settings.eot`` fresh defence samples of the current adversarial images (a
    defence that reads the classifier, as pixel deflection's R-CAM map, reads it on them), one batch
    of N·n images; the classifier's gradient at each defended sample is passed back through the
    defence's surrogate (BPDA, the identity by default) and averaged over the n samples (EOT); then
    ``x ← clip_{x0, ε}(x + α · sign(g))`` (L∞; untargeted, ascends the loss of the true label;
    targeted, descends the cross-entropy of the target) or the L2 step of :mod:`.settings`.

    Parameters
    ----------
    model : a frozen :class:`Classifier`. images : (N, 3, S, S) clean images in [0, 1] and
        labels : (N,) int64 true labels, on the model's device.
    defence : the :class:`~pd_core.defences.base.Defence` attacked and judging the result (pixel
        deflection with the paper's parameters when None).
    settings : the budget (:class:`~pd_core.adaptive.settings.PgdSettings`: norm, ε, steps, step
        size, EOT samples, loss, targeted, random start, quantisation).
    seed : seeds the EOT samples; targets and the random start use a derived stream
        (:func:`aux_seed`), the final defended prediction a third (:func:`fresh_seed`).
    target : (N,) or one int, when targeted; default a class drawn uniformly among the 999 wrong
        ones per image (seeded), as in Athalye & Carlini's targeted evaluation (random target, 97%).
    gradient : the estimator (:class:`~pd_core.adaptive.gradients.GradientEstimator`); default
        :class:`BpdaEotGradient` with ``settings.eot``, the defence and ``settings.loss``. Another brings
        its own settings: ``settings.eot`` and ``loss`` are then only recorded in ``params``.
    hooks : progress after every step, a stop check before every step (then ``stopped=True`` and
        the current iterate is returned).

    Returns
    -------
    :class:`AdaptiveResult`.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    defence = paper_defence(model, defence)
    if gradient is None:
        gradient = BpdaEotGradient(eot=settings.eot, defence=defence, loss=settings.loss)
    device = model.device
    clean = images.detach().to(device=device, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    n = clean.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")

    started = time.perf_counter()
    eot_gen = make_generator(seed, device)
    aux_gen = make_generator(aux_seed(seed), device)
    with torch.no_grad():
        clean_logits = model(clean) if n else torch.zeros(0, 1000, device=device)
    targets = _choose_targets(labels, target, clean_logits.shape[1], aux_gen) if settings.targeted else None
    goal = targets if settings.targeted else labels

    ball = _Ball(clean, settings)
    start = (ball.random_point(aux_gen) if settings.random_start and settings.eps > 0 else clean.clone())
    run = _pgd(model, ball, start, goal, gradient, steps=settings.steps, targeted=settings.targeted,
               generator=eot_gen, hooks=hooks)
    adv = run.adversarial
    if settings.quantize and settings.norm == "linf":
        adv = quantize_to_grid(adv, clean, settings.eps)

    adv_pred, defended_pred = _judge(model, adv, labels, defence, seed)
    success = (defended_pred == goal) if settings.targeted else (defended_pred != goal)
    norms = perturbation_norms(clean, adv)
    eps = settings.eps
    params = {"eps": eps, "eps_255": eps * 255, "step_size": settings.step_size, "steps": settings.steps,
              "eot": settings.eot, "targeted": settings.targeted, "loss": settings.loss,
              "random_start": settings.random_start, "quantize": settings.quantize, "seed": seed,
              "model": getattr(model, "name", type(model).__name__), "defence": defence.identity(),
              **({"norm": settings.norm} if settings.norm != "linf" else {})}
    return AdaptiveResult(
        adversarial=adv, labels=labels, targets=targets, clean_pred=clean_logits.argmax(1),
        adversarial_pred=adv_pred, defended_pred=defended_pred, success=success, eot_fooled=run.eot_fooled,
        linf=norms["linf_255"] / 255, l2_normalised=norms["norm_l2"], psnr=norms["psnr"],
        loss_history=run.loss_history, seconds=time.perf_counter() - started, steps_done=run.steps_done,
        stopped=run.stopped, params=params)
