"""EOT on the exact gradient through the defence (issue 14 item 1), a gradient estimator for the PGD loop.

BPDA (:mod:`.gradients`) replaces the defence by the identity in the backward pass because the
original implementation was not differentiable. Ours is: with the random draws of one sample held
fixed, deflection is a gather, and the wavelet denoiser (BayesShrink soft thresholding with its
data-dependent threshold, YCbCr, the min-max renormalisation, the Haar transform) is differentiable
almost everywhere (:func:`pd_core.defence.defend_differentiable`). The estimator below averages,
over n fresh defence samples per step (EOT, Athalye et al. 2018), the *exact* gradient of the
attack loss through each sample:

    g = (1/n) Σ_j ∇_x L(f(defend_j(x)))   with defend_j's deflection draws fixed.

The R-CAM map only decides where to deflect, so it is held constant (recomputed on the current
iterate at every step, forward only), like BPDA. A JPEG stage, piecewise constant, passes its
gradient straight through.

Randomness: :func:`pd_core.defence.sample_draws` consumes the generator exactly as
:func:`pd_core.defence.defend_batch`, so for the same seed this estimator sees the *same* defence
samples as :class:`~.gradients.BpdaEotGradient`; only the backward pass differs. That makes
"exact vs BPDA with the same budget and seed" a like-for-like comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..defence import PAPER_DEFAULTS, DefenceConfig, apply_draws, sample_draws
from ..deflection import make_generator
from ..models import Classifier
from .gradients import _attack_loss, _default_batch_size, check_loss

__all__ = ["exact_eot_gradient", "ExactEotGradient"]


def exact_eot_gradient(model: Classifier, images: torch.Tensor, labels: torch.Tensor, eot: int = 1,
                       config: DefenceConfig | None = None, *, generator: torch.Generator | None = None,
                       seed: int | None = 0, targeted: bool = False, batch_size: int | None = None,
                       loss: str = "ce"):
    """EOT average of the exact gradient of the attack loss through n defence samples.

    Same parameters and returns as :func:`pd_core.adaptive.gradients.bpda_eot_gradient`, with
    ``grad = (1/n) Σ_j ∇_x loss(f(defend_j(x)))`` differentiated through deflection and denoising
    (draws of sample j fixed) instead of the identity. The draws of all N·n samples are made at
    once; the backward passes go through chunks of whole images (``batch_size`` rows), so memory
    stays bounded. Gradients are taken with respect to the input only: nothing accumulates on the
    model's parameters.
    """
    if eot < 1:
        raise ValueError(f"eot must be at least 1, got {eot}")
    check_loss(loss)
    config = config or PAPER_DEFAULTS
    n = images.shape[0]
    batch_size = batch_size or _default_batch_size(images.device)
    if generator is None:
        generator = make_generator(seed, images.device)
    images = images.detach()
    record = sample_draws(model, images, eot, config, generator=generator)  # rows image-major (N·eot)
    labels_rep = labels.repeat_interleave(eot)
    per_chunk = max(1, batch_size // eot)
    grads, losses, votes = [], [], []
    with torch.enable_grad():
        for start in range(0, n, per_chunk):
            stop = min(n, start + per_chunk)
            x = images[start:stop].clone().requires_grad_(True)
            rows = slice(start * eot, stop * eot)
            chunk_record = record.rows(rows) if record is not None else None
            defended = apply_draws(x.repeat_interleave(eot, dim=0), chunk_record, config)
            logits = model(defended)
            value = _attack_loss(logits, labels_rep[rows], targeted, loss).view(stop - start, eot).mean(1)
            (grad,) = torch.autograd.grad(value.sum(), x)
            grads.append(grad)
            losses.append(value.detach())
            votes.append(logits.detach().argmax(1).view(stop - start, eot))
    return torch.cat(grads), torch.cat(losses), torch.cat(votes)


@dataclass(frozen=True)
class ExactEotGradient:
    """The exact-gradient EOT estimator (:func:`exact_eot_gradient`) with its settings bound; plugs
    into :func:`pd_core.adaptive.attack.bpda_eot_attack` as ``gradient=``.

    eot : defence samples averaged per call. config : the defence attacked (paper defaults when
    None). loss : ``"ce"`` or ``"margin"``. batch_size : rows per forward+backward pass.
    """

    eot: int = 1
    config: DefenceConfig | None = None
    loss: str = "ce"
    batch_size: int | None = None

    def __call__(self, model: Classifier, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return exact_eot_gradient(model, images, goal, self.eot, self.config, generator=generator,
                                  targeted=targeted, batch_size=self.batch_size, loss=self.loss)
