"""Gradient estimators through any defence of the registry: BPDA, EOT and the losses they ascend (SPEC §3).

A defence ``t`` is a :class:`~pd_core.defences.base.Defence`; the attacked function is ``f(t(x))``.

- **BPDA** (Backward Pass Differentiable Approximation, Athalye, Carlini & Wagner, ICML 2018):
  the defence runs exactly in the forward pass (:meth:`~pd_core.defences.base.Defence.apply_copies`),
  and in the backward pass it is replaced by its declared surrogate ``g ≈ t``
  (:meth:`~pd_core.defences.base.Defence.surrogate`, the identity unless the defence says otherwise),
  through :func:`~pd_core.defences.base.straight_through`. With the identity, the gradient used for
  ``x`` is the classifier's gradient *at the defended image*: ``∇_z L(f(z)) |_{z = t(x)}``. A defence
  that reads the classifier (pixel deflection's R-CAM map) recomputes what it reads on the current
  iterate at every call (forward only).
- **EOT** (Expectation over Transformation, Athalye et al., ICML 2018): a random defence is averaged
  over ``n`` independent samples, all run as one batch of N·n images.

The exact-gradient estimator (draws fixed, autograd through the defence) is in :mod:`.exact`. A
gradient estimator is anything with the signature of :class:`GradientEstimator`; the attack loop
(:func:`pd_core.adaptive.attack.bpda_eot_attack`) takes one as a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from ..defences.base import Defence, straight_through
from ..defences.registry import create_defence
from ..models import Classifier
from ..randomness import make_generator
from .settings import check_at_least_one, check_loss

__all__ = ["GradientEstimator", "BpdaEotGradient", "bpda", "bpda_eot_gradient", "attack_loss",
           "default_batch_size", "eot_chunks", "eot_inputs", "paper_defence"]


def default_batch_size(device: torch.device) -> int:
    """Rows (defended copies) per forward+backward pass: bounds memory, not a Python loop per image.
    On the CPU small batches stay in cache: 8 rows ran ~2x faster per image than 32 here."""
    return 256 if device.type == "cuda" else 8


def paper_defence(model: Classifier, defence: Defence | None) -> Defence:
    """``defence``, or pixel deflection with the paper's parameters on ``model`` when None."""
    return defence if defence is not None else create_defence("pixel_deflection", model)


def eot_inputs(images: torch.Tensor, eot: int, loss: str, generator: torch.Generator | None,
               seed: int | None) -> tuple[torch.Tensor, torch.Generator]:
    """What every EOT estimator checks and defaults first: n ≥ 1 samples, a known loss, the
    generator (``generator`` wins over ``seed``); returns the detached images and the generator."""
    check_at_least_one(eot=eot)
    check_loss(loss)
    if generator is None:
        generator = make_generator(seed, images.device)
    return images.detach(), generator


def eot_chunks(n: int, eot: int, batch_size: int | None, device: torch.device):
    """``(start, stop, rows)`` over the N images in chunks of whole images (about ``batch_size``
    defended rows, default :func:`default_batch_size`), so each image's n copies are averaged in
    one place; ``rows`` is the chunk's slice of the image-major N·n defended rows."""
    per_chunk = max(1, (batch_size or default_batch_size(device)) // eot)
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        yield start, stop, slice(start * eot, stop * eot)


def bpda(images: torch.Tensor, defended: torch.Tensor) -> torch.Tensor:
    """BPDA with the identity: returns ``defended`` exactly, with the gradient of ``images``.

    ``defended`` must have been computed from ``images`` (same shape); its own graph, if any, is
    ignored. ``loss(model(bpda(x, defend(x)))).backward()`` puts the classifier's gradient at
    the defended image into ``x.grad``.
    """
    return straight_through(images, defended)


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, loss: str = "ce") -> torch.Tensor:
    """Per-row loss the attack *ascends*.

    ``"ce"``: cross-entropy of the true label (untargeted), or −cross-entropy of the target.
    ``"margin"`` (Carlini & Wagner 2017): ``max_{j≠y} z_j − z_y`` (untargeted) or
    ``z_t − max_{j≠t} z_j`` (targeted), in logits: positive exactly when the goal is met, and it
    keeps pushing towards one other class where cross-entropy can settle on a flat distribution
    that still ranks the true class first.
    """
    check_loss(loss)
    if loss == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if targeted else ce
    own = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - others if targeted else others - own


def bpda_eot_gradient(model: Classifier, images: torch.Tensor, labels: torch.Tensor, eot: int = 1,
                      defence: Defence | None = None, *, generator: torch.Generator | None = None,
                      seed: int | None = 0, targeted: bool = False, batch_size: int | None = None,
                      loss: str = "ce"):
    """EOT average of the BPDA gradient of the attack loss, one defence batch of N·eot images.

    Parameters
    ----------
    images : (N, 3, S, S) in [0, 1] on the model's device (the current adversarial images).
    labels : (N,) int64, the true labels (untargeted: their loss is ascended) or the targets
        (``targeted=True``: the returned gradient is that of −CE).
    eot : n ≥ 1 defence samples per image (:meth:`Defence.apply_copies`; a deterministic defence
        gives n equal copies).
    defence : the defence attacked (default: pixel deflection with the paper's parameters).
    generator / seed : the randomness of the defence samples (``generator`` wins).
    batch_size : rows per forward+backward pass (memory bound); the default suits the device.
    loss : ``"ce"`` or ``"margin"`` (see :func:`attack_loss`).

    Returns
    -------
    grad : (N, 3, S, S) ``(1/n) Σ_j ∇_x loss(f(g(x))) |`` with ``f`` evaluated at ``t_j(x)`` (BPDA).
    loss : (N,) the attack loss averaged over the n samples.
    votes : (N, n) top-1 class of the classifier on each defended sample.
    """
    images, generator = eot_inputs(images, eot, loss, generator, seed)
    defence = paper_defence(model, defence)
    n = images.shape[0]
    with torch.no_grad():
        defended = defence.apply_copies(images, eot, generator)  # (N·eot, ...), image-major
    labels_rep = labels.repeat_interleave(eot)
    grads, losses, votes = [], [], []
    with torch.enable_grad():
        for start, stop, rows in eot_chunks(n, eot, batch_size, images.device):
            x = images[start:stop].clone().requires_grad_(True)
            z = straight_through(defence.surrogate(x.repeat_interleave(eot, dim=0)), defended[rows])
            logits = model(z)
            value = attack_loss(logits, labels_rep[rows], targeted, loss).view(stop - start, eot).mean(1)
            # Gradient w.r.t. the input only: the model's parameters are frozen and never get .grad.
            (grad,) = torch.autograd.grad(value.sum(), x)
            grads.append(grad)
            losses.append(value.detach())
            votes.append(logits.detach().argmax(1).view(stop - start, eot))
    return torch.cat(grads), torch.cat(losses), torch.cat(votes)


class GradientEstimator(Protocol):
    """What the attack loop asks of a gradient estimator (the seam for other estimators).

    Called once per PGD step with the current adversarial images (N, 3, S, S), the goal classes
    (N,) (true labels, or targets when ``targeted``) and the attack's generator for the
    estimator's randomness; returns ``(grad, loss, votes)``: the (N, 3, S, S) gradient of the
    loss to *ascend*, that loss (N,), and (N, n) top-1 classes of the n defended samples the
    estimate saw (n ≥ 1), from which the attack reports the fraction that met its goal.
    """

    def __call__(self, model: Classifier, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class BpdaEotGradient:
    """The BPDA+EOT estimator (:func:`bpda_eot_gradient`) with its settings bound.

    eot : defence samples averaged per call. defence : the defence attacked (pixel deflection with
    the paper's parameters when None). loss : ``"ce"`` or ``"margin"``. batch_size : rows per
    forward+backward pass.
    """

    eot: int = 1
    defence: Defence | None = None
    loss: str = "ce"
    batch_size: int | None = None

    def __call__(self, model: Classifier, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return bpda_eot_gradient(model, images, goal, self.eot, self.defence, generator=generator,
                                 targeted=targeted, batch_size=self.batch_size, loss=self.loss)
