"""The adaptive attack against the defence: L∞ PGD with BPDA and EOT (SPEC §3).

Pixel deflection looks robust against attacks computed on the undefended classifier, but it is
neither a barrier to gradients nor a secret. Athalye & Carlini ("On the Robustness of the CVPR 2018
White-Box Adversarial Example Defenses", 2018) attacked it with

- **BPDA** (Backward Pass Differentiable Approximation, Athalye, Carlini & Wagner, ICML 2018):
  the defence ``defend(x) = denoise(deflect(x, R(x)))`` is run exactly in the forward pass, and
  in the backward pass it is replaced by the identity, since ``defend(x) ≈ x``. The gradient used
  for ``x`` is therefore the classifier's gradient evaluated *at the defended image*:
  ``∇_x L(f(defend(x))) ≈ ∇_z L(f(z)) |_{z = defend(x)}``. The R-CAM map is part of the
  defence: it is recomputed on the current adversarial image at every step (forward only).
- **EOT** (Expectation over Transformation, Athalye et al., ICML 2018): the defence is random, so
  the gradient of the expected loss is estimated by averaging the BPDA gradient over ``n``
  independent defence samples per step, all run as one batch of N·n images.

With ε = 4/255 this brought the defended accuracy to 0% (targeted success 97%). This module
reproduces the attack (:func:`bpda_eot_attack`) and the evaluation of the defence under it
(:func:`evaluate_adaptive`): accuracy of the undefended model, the single defended run and the
Ens-10 vote against ε, each evaluated with *fresh* randomness, never the samples the attack used.

Randomness: the EOT samples come from a ``torch.Generator`` seeded with ``seed`` and used for
nothing else, so an attack with ``eot=1`` follows exactly the plain BPDA loop with a single
defended sample per step. Random targets and random starts draw from a second generator
(:func:`_aux_seed`), and every evaluation of the result from a third (:func:`fresh_seed`).
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .attacks.core import perturbation_norms, quantize_to_grid
from .defence import DefenceConfig, defend, defend_batch, predict_probs
from .deflection import make_generator
from .maps import robust_activation_map
from .models import Classifier

__all__ = [
    "AdaptiveResult",
    "AdaptiveDemo",
    "adaptive_demo",
    "read_adaptive_csv",
    "accuracy_curve_figure",
    "bpda",
    "bpda_eot_gradient",
    "bpda_eot_attack",
    "fresh_seed",
    "evaluate_adaptive",
    "add_adaptive_parser",
    "ADAPTIVE_CSV_COLUMNS",
]

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


def _default_batch_size(device: torch.device) -> int:
    # Rows (defended copies) per forward+backward pass: bounds memory, not a Python loop per image.
    # On the CPU small batches stay in cache: 8 rows ran ~2x faster per image than 32 here.
    return 256 if device.type == "cuda" else 8


# --------------------------------------------------------------------------------------------
# BPDA and the EOT gradient
# --------------------------------------------------------------------------------------------

class _StraightThrough(torch.autograd.Function):
    """Forward: the defended image. Backward: the gradient passes to the input unchanged."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, defended: torch.Tensor) -> torch.Tensor:
        return defended.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


def bpda(images: torch.Tensor, defended: torch.Tensor) -> torch.Tensor:
    """BPDA with the identity: returns ``defended`` exactly, with the gradient of ``images``.

    ``defended`` must have been computed from ``images`` (same shape); its own graph, if any, is
    ignored. ``loss(model(bpda(x, defend(x)))).backward()`` puts the classifier's gradient at
    the defended image into ``x.grad``.
    """
    if images.shape != defended.shape:
        raise ValueError(f"images {tuple(images.shape)} and defended {tuple(defended.shape)} differ in shape")
    return _StraightThrough.apply(images, defended.detach())


LOSSES = ("ce", "margin")


def _attack_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, loss: str = "ce") -> torch.Tensor:
    """Per-row loss the attack *ascends*.

    ``"ce"``: cross-entropy of the true label (untargeted), or −cross-entropy of the target.
    ``"margin"`` (Carlini & Wagner 2017): ``max_{j≠y} z_j − z_y`` (untargeted) or
    ``z_t − max_{j≠t} z_j`` (targeted), in logits: positive exactly when the goal is met, and it
    keeps pushing towards one other class where cross-entropy can settle on a flat distribution
    that still ranks the true class first.
    """
    if loss == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if targeted else ce
    if loss == "margin":
        own = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        return own - others if targeted else others - own
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def bpda_eot_gradient(model: Classifier, images: torch.Tensor, labels: torch.Tensor, eot: int = 1,
                      config: DefenceConfig | None = None, *, generator: torch.Generator | None = None,
                      seed: int | None = 0, targeted: bool = False, batch_size: int | None = None,
                      loss: str = "ce"):
    """EOT average of the BPDA gradient of the attack loss, one defence batch of N·eot images.

    Parameters
    ----------
    images : (N, 3, S, S) in [0, 1] on the model's device (the current adversarial images).
    labels : (N,) int64, the true labels (untargeted: their CE is ascended) or the targets
        (``targeted=True``: their CE is descended; the returned gradient is that of −CE).
    eot : n ≥ 1 independent defence samples per image, drawn by :func:`defend_batch` (one R-CAM
        forward pass per image on ``images``, then n deflect + denoise samples).
    generator / seed : the randomness of the defence samples (``generator`` wins).
    batch_size : rows per forward+backward pass (memory bound); the default suits the device.
    loss : ``"ce"`` or ``"margin"`` (see :func:`_attack_loss`).

    Returns
    -------
    grad : (N, 3, S, S) ``(1/n) Σ_j ∇_z loss(f(z)) |_{z = defend_j(x)}``, the BPDA gradient.
    loss : (N,) the attack loss averaged over the n samples.
    votes : (N, n) top-1 class of the classifier on each defended sample.
    """
    if eot < 1:
        raise ValueError(f"eot must be at least 1, got {eot}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    n = images.shape[0]
    batch_size = batch_size or _default_batch_size(images.device)
    if generator is None:
        generator = make_generator(seed, images.device)
    images = images.detach()
    with torch.no_grad():
        defended = defend_batch(model, images, eot, config, generator=generator)  # (N·eot, ...)
    labels_rep = labels.repeat_interleave(eot)
    # Whole images per chunk, so each image's copies are averaged in one place.
    per_chunk = max(1, batch_size // eot)
    grads, losses, votes = [], [], []
    with torch.enable_grad():
        for start in range(0, n, per_chunk):
            stop = min(n, start + per_chunk)
            x = images[start:stop].clone().requires_grad_(True)
            rows = slice(start * eot, stop * eot)
            z = bpda(x.repeat_interleave(eot, dim=0), defended[rows])
            logits = model(z)
            value = _attack_loss(logits, labels_rep[rows], targeted, loss).view(stop - start, eot).mean(1)
            # Gradient w.r.t. the input only: the model's parameters are frozen and never get .grad.
            (grad,) = torch.autograd.grad(value.sum(), x)
            grads.append(grad)
            losses.append(value.detach())
            votes.append(logits.detach().argmax(1).view(stop - start, eot))
    return torch.cat(grads), torch.cat(losses), torch.cat(votes)


# --------------------------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------------------------

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


def _random_targets(labels: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly among the ``classes − 1`` others, per image."""
    offset = torch.randint(1, classes, labels.shape, generator=generator, device=labels.device)
    return (labels + offset) % classes


def bpda_eot_attack(model: Classifier, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 4 / 255,
                    step_size: float | None = None, steps: int = 40, eot: int = 10, targeted: bool = False,
                    target: torch.Tensor | int | None = None, config: DefenceConfig | None = None,
                    seed: int = 0, random_start: bool = False, quantize: bool = True,
                    batch_size: int | None = None, loss: str = "ce", progress: ProgressCallback | None = None,
                    should_stop: Callable[[], bool] | None = None) -> AdaptiveResult:
    """L∞ PGD through the defence with BPDA and EOT (Athalye & Carlini 2018; SPEC §3).

    Each step: n = ``eot`` fresh defence samples of the current adversarial images (R-CAM map
    recomputed on them, then deflection and denoising), one batch of N·n images; the classifier's
    gradient at each defended sample is passed straight through the defence (BPDA) and averaged
    over the n samples (EOT); then ``x ← clip_{x0, ε}(x + α · sign(g))`` (untargeted, ascends the
    cross-entropy of the true label) or ``x − α · sign(g)`` (targeted, descends the cross-entropy
    of the target).

    Parameters
    ----------
    model : a frozen :class:`Classifier`; images and labels on its device.
    images : (N, 3, S, S) clean images in [0, 1].
    labels : (N,) int64 true labels.
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
        logit margin, :func:`_attack_loss`).
    progress : ``progress(fraction, message)`` after every step.
    should_stop : checked before every step; when it returns True the attack stops and returns
        the current iterate (``stopped=True``).

    Returns
    -------
    :class:`AdaptiveResult`.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    eps, steps, eot = float(eps), int(steps), int(eot)
    if not (0 <= eps <= 1) or not math.isfinite(eps):
        raise ValueError(f"eps must be between 0 and 1 (e.g. 4/255), got {eps}")
    if steps < 0 or eot < 1:
        raise ValueError("steps must be ≥ 0 and eot ≥ 1")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    step_size = float(step_size)
    if step_size < 0 or not math.isfinite(step_size):
        raise ValueError(f"step_size must be a finite number ≥ 0, got {step_size}")
    config = config or DefenceConfig()
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
    classes = clean_logits.shape[1]

    targets = None
    if targeted:
        if target is None:
            targets = _random_targets(labels, classes, aux_gen)
        else:
            targets = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1).expand(n).clone()
        if bool(((targets < 0) | (targets >= classes)).any()):
            raise ValueError(f"target classes must be between 0 and {classes - 1}")
    goal = targets if targeted else labels

    adv = clean.clone()
    if random_start and eps > 0:
        noise = torch.rand(clean.shape, generator=aux_gen, device=device) * 2 - 1
        adv = (clean + eps * noise).clamp(0, 1)

    lower, upper = (clean - eps).clamp_min(0), (clean + eps).clamp_max(1)
    loss_history: list[float] = []
    eot_fooled = torch.zeros(n, device=device)
    steps_done, stopped = 0, False
    if n and eps > 0:
        for step in range(steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            grad, value, votes = bpda_eot_gradient(model, adv, goal, eot, config, generator=eot_gen,
                                                   targeted=targeted, batch_size=batch_size, loss=loss)
            met = (votes == goal[:, None]) if targeted else (votes != goal[:, None])
            eot_fooled = met.float().mean(1)
            # grad is of the loss to ascend (−CE for targeted), so the update is always "+".
            adv = torch.minimum(torch.maximum(adv + step_size * grad.sign(), lower), upper)
            loss_history.append(float(value.mean()))
            steps_done = step + 1
            if progress is not None:
                progress(steps_done / steps, f"step {steps_done}/{steps}: {float(eot_fooled.mean()):.0%} fooled")
    if quantize:
        adv = quantize_to_grid(adv, clean, eps)

    with torch.no_grad():
        adv_pred = model(adv).argmax(1) if n else labels.clone()
        if n:
            defended = defend(model, adv, config, generator=make_generator(fresh_seed(seed), device))
            defended_pred = model(defended).argmax(1)
        else:
            defended_pred = labels.clone()
    success = (defended_pred == goal) if targeted else (defended_pred != goal)
    norms = perturbation_norms(clean, adv)
    linf, l2n, psnr = norms["linf_255"] / 255, norms["norm_l2"], norms["psnr"]
    params = {"eps": eps, "eps_255": eps * 255, "step_size": step_size, "steps": steps, "eot": eot,
              "targeted": targeted, "loss": loss, "random_start": random_start, "quantize": quantize, "seed": seed,
              "model": getattr(model, "name", type(model).__name__), "defence": config.as_dict()}
    return AdaptiveResult(
        adversarial=adv, labels=labels, targets=targets, clean_pred=clean_logits.argmax(1),
        adversarial_pred=adv_pred, defended_pred=defended_pred, success=success, eot_fooled=eot_fooled,
        linf=linf, l2_normalised=l2n, psnr=psnr, loss_history=loss_history,
        seconds=time.perf_counter() - started, steps_done=steps_done, stopped=stopped, params=params)


# --------------------------------------------------------------------------------------------
# Evaluation against ε
# --------------------------------------------------------------------------------------------

ADAPTIVE_CSV_COLUMNS = ["eps_255", "defence", "n", "correct", "accuracy", "ci_low", "ci_high",
                        "mean_linf_255", "mean_l2_normalised", "steps", "eot", "loss", "step_size_255",
                        "copies", "seed", "model", "images", "dropped", "seconds"]


def evaluate_adaptive(model: Classifier, items, eps_list: Sequence[float] = (1, 2, 4, 8), eot: int = 10,
                      steps: int = 40, limit: int | None = None, seed: int = 0,
                      out_csv: Path | str | None = None, progress: ProgressCallback | None = None, *,
                      labels_csv: Path | str | None = None, config: DefenceConfig | None = None,
                      step_size_fraction: float | None = None, ensemble: int = 10, batch_images: int = 16,
                      include_clean: bool = True, tuning_fraction: float | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      per_image: list | None = None, loss: str = "ce") -> list[dict]:
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
    per_image : a list to which one dict per (image, ε) is appended: ``image, label, eps_255,
        pred_none, pred_single, pred_ens, agreement, linf_255`` (to find the images that survive).

    Returns
    -------
    One dict per (ε, defence), ε ascending, defences in the order none, single, ens10.
    """
    from .evaluation import (DEFAULT_TUNING_FRACTION, EvaluationError, defended_copies, load_labelled_images,
                             derive_seed, load_items, split_tuning, wilson_interval)
    from .defence import vote

    config = config or DefenceConfig()
    device = model.device
    if int(eot) < 1 or int(steps) < 1 or int(ensemble) < 1 or int(batch_images) < 1:
        raise EvaluationError("eot, steps, ensemble and batch_images must each be at least 1.")
    eps_values = sorted({float(e) for e in eps_list} | ({0.0} if include_clean else set()))
    if not eps_values or any(not (0 <= e <= 255) for e in eps_values):
        raise EvaluationError("each ε must be between 0 and 255 (in /255 units).")
    evaluation, _ = split_tuning(load_items(items, labels_csv),
                                 DEFAULT_TUNING_FRACTION if tuning_fraction is None else tuning_fraction)
    if limit is not None:
        if int(limit) < 1:
            raise EvaluationError("limit must be at least 1.")
        evaluation = evaluation[: int(limit)]
    if not evaluation:
        raise EvaluationError("no evaluation images (all went to the tuning subset).")
    report = progress or (lambda frac, msg: None)

    report(0.0, f"loading {len(evaluation)} images")
    images, good, unreadable = load_labelled_images(evaluation, model)
    if not good:
        raise EvaluationError("none of the images could be read.")
    labels = torch.tensor([it.label for it in good], dtype=torch.long, device=device)
    keep = predict_probs(model, images).argmax(1) == labels
    kept = [it for it, k in zip(good, keep.tolist()) if k]
    images, labels = images[keep], labels[keep]
    n = len(kept)
    if n == 0:
        raise EvaluationError("the undefended model misclassifies every image: nothing to attack.")

    attacked = [e for e in eps_values if e > 0]
    # Progress in units of one image-step; evaluating the defences costs about one step per image.
    total_units = len(attacked) * n * steps + len(eps_values) * n
    done_units = 0
    ens_name = f"ens{int(ensemble)}"
    rows: list[dict] = []
    for eps_255 in eps_values:
        eps = eps_255 / 255
        started = time.perf_counter()
        adv_parts, linf_parts, l2_parts = [], [], []
        for start in range(0, n, batch_images):
            chunk = slice(start, start + batch_images)
            names = [it.name for it in kept[chunk]]
            if eps_255 == 0:
                adv_parts.append(images[chunk])
                linf_parts.append(torch.zeros(len(names), device=device))
                l2_parts.append(torch.zeros(len(names), device=device))
                continue

            def on_step(frac, msg, base=done_units, size=len(names), lo=start):
                report(min(1.0, (base + frac * size * steps) / total_units),
                       f"ε {eps_255:g}/255 · images {lo + 1}-{lo + size}/{n} · {msg}")

            result = bpda_eot_attack(
                model, images[chunk], labels[chunk], eps=eps, steps=steps, eot=eot, config=config,
                step_size=None if step_size_fraction is None else step_size_fraction * eps,
                seed=derive_seed(seed, "adaptive-eot", eps_255, *names), progress=on_step,
                should_stop=should_stop, loss=loss)
            if result.stopped:
                raise InterruptedError("the adaptive evaluation was stopped.")
            adv_parts.append(result.adversarial)
            linf_parts.append(result.linf)
            l2_parts.append(result.l2_normalised)
            done_units += len(names) * steps
        adversarial = torch.cat(adv_parts)
        report(min(1.0, done_units / total_units), f"ε {eps_255:g}/255 · defending and classifying")
        pred_none, pred_single, pred_ens, agree = [], [], [], []
        with torch.no_grad():
            for start in range(0, n, batch_images):
                chunk = slice(start, start + batch_images)
                adv = adversarial[chunk]
                seeds = [derive_seed(seed, it.name, "adaptive-eval", eps_255) for it in kept[chunk]]
                if config.deflect and config.use_map and config.deflections > 0:
                    maps = robust_activation_map(model, adv, top_k=config.top_k)
                    logits, rmap = maps.logits, maps.rmap
                else:
                    logits, rmap = model(adv), None
                copies = defended_copies(model, adv, rmap, config, int(ensemble), seeds)
                voted = vote(predict_probs(model, copies).view(adv.shape[0], int(ensemble), -1))
                pred_none.append(logits.argmax(1))
                pred_single.append(voted.votes[:, 0])
                pred_ens.append(voted.prediction)
                agree.append(voted.agreement)
        done_units += n
        if per_image is not None:
            cols = [torch.cat(p).tolist() for p in (pred_none, pred_single, pred_ens, agree, linf_parts)]
            per_image.extend({"image": it.name, "label": it.label, "eps_255": eps_255, "pred_none": a,
                              "pred_single": b, "pred_ens": c, "agreement": d, "linf_255": round(e * 255, 3)}
                             for it, a, b, c, d, e in zip(kept, *cols))
        seconds = time.perf_counter() - started
        # k/255 in float32 carries ~1e-5 (/255) of rounding: report L-inf to 1e-3 of a level.
        mean_linf = round(float(torch.cat(linf_parts).double().mean()) * 255, 3)
        mean_l2 = float(torch.cat(l2_parts).mean())
        step_255 = 0.0 if eps_255 == 0 else (
            2.5 * eps_255 / steps if step_size_fraction is None else step_size_fraction * eps_255)
        for name, pred in (("none", pred_none), ("single", pred_single), (ens_name, pred_ens)):
            correct = int((torch.cat(pred) == labels).sum())
            lo, hi = wilson_interval(correct, n)
            rows.append({"eps_255": eps_255, "defence": name, "n": n, "correct": correct,
                         "accuracy": correct / n, "ci_low": lo, "ci_high": hi,
                         "mean_linf_255": mean_linf, "mean_l2_normalised": mean_l2,
                         "steps": 0 if eps_255 == 0 else int(steps), "eot": 0 if eps_255 == 0 else int(eot),
                         "loss": "" if eps_255 == 0 else loss,
                         "step_size_255": step_255, "copies": 1 if name != ens_name else int(ensemble),
                         "seed": int(seed), "model": model.name, "images": len(evaluation),
                         "dropped": len(good) - n + len(unreadable), "seconds": round(seconds, 1)})
        report(min(1.0, done_units / total_units),
               f"ε {eps_255:g}/255 · accuracy {rows[-3]['accuracy']:.0%} / {rows[-2]['accuracy']:.0%} / "
               f"{rows[-1]['accuracy']:.0%}")
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows


def write_csv(rows: list[dict], path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ADAPTIVE_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def format_table(rows: list[dict]) -> str:
    """Accuracy against ε, one line per ε, as percentages with their 95% Wilson intervals."""
    by_eps: dict[float, dict[str, dict]] = {}
    defences: list[str] = []
    for row in rows:
        by_eps.setdefault(float(row["eps_255"]), {})[row["defence"]] = row
        if row["defence"] not in defences:
            defences.append(row["defence"])
    if not rows:
        return "no results"
    first = rows[0]
    lines = [f"Accuracy under BPDA+EOT (L-inf PGD, {max(r['steps'] for r in rows)} steps, "
             f"EOT {max(r['eot'] for r in rows)}), {first['model']}, n = {first['n']} images the undefended "
             f"model classifies correctly (of {first['images']}); [95% Wilson interval]",
             f"{'eps/255':>8}  " + "  ".join(f"{name:>21}" for name in defences)]
    for eps_255 in sorted(by_eps):
        cells = []
        for name in defences:
            r = by_eps[eps_255].get(name)
            cells.append(f"{'-':>21}" if r is None else
                         f"{r['accuracy']:6.1%} [{r['ci_low']:5.1%},{r['ci_high']:6.1%}]".rjust(21))
        lines.append(f"{eps_255:>8g}  " + "  ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# One image (the app's page) and the saved curve
# --------------------------------------------------------------------------------------------

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


def adaptive_demo(model: Classifier, image: torch.Tensor, label: int | None = None, *, eps: float = 4 / 255,
                  steps: int = 10, eot: int = 4, targeted: bool = False, target: int | None = None, loss: str = "ce",
                  config: DefenceConfig | None = None, seed: int = 0, ensemble: int = 10,
                  progress: ProgressCallback | None = None,
                  should_stop: Callable[[], bool] | None = None) -> AdaptiveDemo:
    """Run :func:`bpda_eot_attack` on one image and classify it with and without the defence,
    before and after. The defended predictions use fresh randomness (:func:`fresh_seed`), never the
    attack's EOT samples; ``label=None`` takes the clean prediction as the reference class."""
    from .defence import ensemble_predict

    config = config or DefenceConfig()
    x = image.detach().to(model.device, torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError("adaptive_demo takes one image, (3, S, S) or (1, 3, S, S)")
    report = progress or (lambda frac, msg: None)
    eval_seed = fresh_seed(seed)
    with torch.no_grad():
        clean_probs = model(x).softmax(-1)
    label_source = "dataset" if label is not None else "clean prediction"
    label = int(clean_probs.argmax(1)) if label is None else int(label)
    report(0.0, "defending the clean photo")
    probs, preds, agreement = {"clean": clean_probs[0]}, {"clean": int(clean_probs.argmax(1))}, {}

    def defended(images, stage):
        single = predict_probs(model, defend(model, images, config, generator=make_generator(eval_seed,
                                                                                            model.device)))
        ens = ensemble_predict(model, images, n=ensemble, config=config,
                               generator=make_generator(eval_seed + 1, model.device))
        probs[f"{stage}_single"], preds[f"{stage}_single"] = single[0], int(single.argmax(1))
        probs[f"{stage}_ensemble"], preds[f"{stage}_ensemble"] = ens.mean_probs[0], int(ens.prediction[0])
        agreement[f"{stage}_ensemble"] = float(ens.agreement[0])

    defended(x, "clean")
    labels = torch.tensor([label], device=model.device)
    result = bpda_eot_attack(model, x, labels, eps=eps, steps=steps, eot=eot, targeted=targeted, loss=loss,
                             target=None if target is None else [int(target)], config=config, seed=seed,
                             progress=lambda f, m: report(0.05 + 0.9 * f, m), should_stop=should_stop)
    if result.stopped:
        raise InterruptedError("the adaptive attack was stopped before it finished.")
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


def read_adaptive_csv(source) -> list[dict]:
    """Rows of a CSV written by :func:`evaluate_adaptive` (path or text stream), numbers parsed.

    Raises ``ValueError`` with a one-sentence message when it is not such a file.
    """
    import io

    try:
        if isinstance(source, (str, Path)):
            text = Path(source).read_text()
        else:
            raw = source.read()
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        rows = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"the results file cannot be read ({exc.__class__.__name__}).") from None
    needed = {"eps_255", "defence", "n", "accuracy", "ci_low", "ci_high"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError("this is not an adaptive-attack results file: it needs the columns "
                         + ", ".join(sorted(needed)) + ".")
    out = []
    for row in rows:
        try:
            parsed = dict(row)
            for key in ("eps_255", "accuracy", "ci_low", "ci_high"):
                parsed[key] = float(row[key])
            parsed["n"] = int(float(row["n"]))
            for key in ("steps", "eot", "images", "correct"):
                if row.get(key) not in (None, ""):
                    parsed[key] = int(float(row[key]))
        except (ValueError, OverflowError):  # OverflowError: int(float("inf")) in a hostile file
            raise ValueError("the results file has a row whose numbers cannot be read.") from None
        out.append(parsed)
    return out


DEFENCE_TITLES = {"none": "no defence", "single": "defended, one run", "ens10": "Ens-10 (vote of 10 runs)"}


def accuracy_curve_figure(rows: list[dict], title: str | None = None, height: int = 360):
    """Plotly figure: accuracy (%) against ε (/255), one line per defence, Wilson 95% error bars."""
    import plotly.graph_objects as go

    colours = {"none": "#7986a8", "single": "#c62828", "ens10": "#2e7d32"}
    fig = go.Figure()
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    for name in defences:
        pts = sorted((r for r in rows if r["defence"] == name), key=lambda r: r["eps_255"])
        acc = [100 * r["accuracy"] for r in pts]
        fig.add_trace(go.Scatter(
            x=[r["eps_255"] for r in pts], y=acc, mode="lines+markers", name=DEFENCE_TITLES.get(name, name),
            line=dict(color=colours.get(name)),
            error_y=dict(type="data", symmetric=False,
                         array=[100 * r["ci_high"] - a for r, a in zip(pts, acc)],
                         arrayminus=[a - 100 * r["ci_low"] for r, a in zip(pts, acc)]),
            customdata=[[r["n"], 100 * r["ci_low"], 100 * r["ci_high"]] for r in pts],
            hovertemplate="ε %{x:g}/255: %{y:.1f}% [95%: %{customdata[1]:.1f}–%{customdata[2]:.1f}%], "
                          "n = %{customdata[0]}<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=dict(text=title) if title else None, height=height,
                      margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      xaxis=dict(title="attack budget ε (/255)", tickmode="array",
                                 tickvals=sorted({r["eps_255"] for r in rows})),
                      yaxis=dict(title="accuracy (%)", range=[-3, 103]),
                      legend=dict(orientation="h", y=-0.25))
    return fig


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parse_eps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps must be numbers in /255 separated by commas (e.g. 1,2,4,8), got {text!r}") from None
    if not values or any(v < 0 or v > 255 or not math.isfinite(v) for v in values):
        raise ValueError(f"--eps values must be between 0 and 255 (in /255 units), got {text!r}")
    return values


def _cmd_adaptive(args) -> int:
    import sys

    from .cli import CliError, _load_model
    from .evaluation import progress_bar

    try:
        eps_list = _parse_eps(args.eps)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.step_fraction is not None and not (0 < args.step_fraction <= 10):
        raise CliError("--step-fraction must be a number above 0 (a fraction of eps, e.g. 0.25)")
    model = _load_model(args.model)
    config = DefenceConfig(deflections=args.deflections, window=args.window, sigma=args.sigma,
                           use_map=not args.no_map)
    update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
    try:
        rows = evaluate_adaptive(model, args.images, eps_list, eot=args.eot, steps=args.steps, limit=args.limit,
                                 seed=args.seed, out_csv=args.out, progress=update, labels_csv=args.labels,
                                 config=config, step_size_fraction=args.step_fraction, ensemble=args.ensemble,
                                 batch_images=args.batch_images, tuning_fraction=args.tuning_fraction,
                                 loss=args.loss)
    except (ValueError, OSError) as exc:  # EvaluationError is a ValueError
        raise CliError(str(exc)) from None
    finally:
        close()
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


def add_adaptive_parser(sub) -> None:
    """Register ``python -m pd_core adaptive`` (see :func:`evaluate_adaptive`)."""
    from .cli import _add_defence_options

    p = sub.add_parser("adaptive", help="accuracy of the defence under the adaptive BPDA+EOT attack, against ε",
                       description="Untargeted L-inf PGD through the defence with BPDA (identity backward pass) "
                                   "and EOT (gradient averaged over N defence samples per step), on the images "
                                   "the undefended model classifies correctly; accuracy of the undefended model, "
                                   "one defended run and the Ens-10 vote, with 95%% Wilson intervals.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of labelled images")
    p.add_argument("--labels", default=None, metavar="CSV", help="labels file (default: labels.csv in DIR)")
    p.add_argument("--eps", default="1,2,4,8", help="L-inf budgets in /255, comma separated (default 1,2,4,8)")
    p.add_argument("--eot", type=int, default=10, metavar="N", help="defence samples averaged per step (default 10)")
    p.add_argument("--steps", type=int, default=40, metavar="S", help="PGD steps (default 40)")
    p.add_argument("--loss", choices=LOSSES, default="ce",
                   help="what the attack ascends: cross-entropy of the true class (ce, default) or the "
                        "Carlini-Wagner logit margin (margin, stronger where ce stalls on a flat prediction)")
    p.add_argument("--step-fraction", type=float, default=None, metavar="F",
                   help="step size as a fraction of eps (default 2.5/steps)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N evaluation images (the evaluation protocol's hash order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the ensemble vote (default 10)")
    p.add_argument("--batch-images", type=int, default=16, metavar="B", help="images attacked together")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--out", required=True, metavar="CSV", help="result table (one row per eps and defence)")
    p.add_argument("--tuning-fraction", type=float, default=None, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    _add_defence_options(p)
    p.set_defaults(func=_cmd_adaptive)
