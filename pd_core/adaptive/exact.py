"""EOT on the exact gradient through the defence (issue 14 item 1), a gradient estimator for the PGD loop.

BPDA (:mod:`.gradients`) replaces a defence by a surrogate in the backward pass because it is not
differentiable. A defence whose entry declares ``gradient == "exact"`` is: with the random draws of
one sample held fixed (:meth:`~pd_core.defences.base.Defence.draw`, then
:meth:`~pd_core.defences.base.Defence.replay`), it is differentiable almost everywhere. For pixel
deflection, deflection is then a gather and the wavelet denoiser (BayesShrink soft thresholding with
its data-dependent threshold, YCbCr, the min-max renormalisation, the Haar transform) is
differentiable (:func:`pd_core.defence.defend_differentiable`). The estimator below averages, over n
fresh defence samples per step (EOT, Athalye et al. 2018), the *exact* gradient of the attack loss
through each sample:

    g = (1/n) Σ_j ∇_x L(f(t_j(x)))   with t_j's draws fixed.

A deterministic defence has no draws (n = 1 is enough). On a ``"bpda"`` defence, ``replay`` passes
the gradient through its surrogate, so this estimator is then BPDA with replayed draws.

Pixel deflection's R-CAM map only decides where to deflect, so by default it is held constant
(recomputed on the current iterate at every step, forward only), like BPDA. With
``map_gradient=True`` the map's influence on the draws is differentiated too, by the score function
(Williams 1992): the targets are drawn i.i.d. with probability ∝ 1 − R(p), so
``∇E[L] = E[∇L | draws] + E[(L − b)·∇ log p]`` with ``log p`` from :func:`pd_core.defence.draw_log_prob`
through a differentiable R-CAM, and ``b`` the leave-one-out mean loss of the image's other samples
(a baseline that keeps it unbiased and lowers its variance). A JPEG stage, piecewise constant,
passes its gradient straight through.

Randomness: pixel deflection's ``draw`` consumes the generator exactly as its ``apply_copies``, so
for the same seed this estimator sees the *same* defence samples as
:class:`~.gradients.BpdaEotGradient`; only the backward pass differs. That makes "exact vs BPDA
with the same budget and seed" a like-for-like comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..defence import draw_log_prob
from ..defences.base import Defence
from ..defences.pixel_deflection import PixelDeflection
from ..maps import robust_activation_map
from ..models import Classifier
from .gradients import attack_loss, eot_chunks, eot_inputs, paper_defence

__all__ = ["exact_eot_gradient", "ExactEotGradient"]


def exact_eot_gradient(model: Classifier, images: torch.Tensor, labels: torch.Tensor, eot: int = 1,
                       defence: Defence | None = None, *, generator: torch.Generator | None = None,
                       seed: int | None = 0, targeted: bool = False, batch_size: int | None = None,
                       loss: str = "ce", map_gradient: bool = False):
    """EOT average of the exact gradient of the attack loss through n defence samples.

    Same parameters and returns as :func:`pd_core.adaptive.gradients.bpda_eot_gradient`, with
    ``grad = (1/n) Σ_j ∇_x loss(f(defend_j(x)))`` differentiated through deflection and denoising
    (draws of sample j fixed, :meth:`Defence.replay`) instead of the identity. The draws of all N·n samples are made at
    once; the backward passes go through chunks of whole images (``batch_size`` rows), so memory
    stays bounded. Gradients are taken with respect to the input only: nothing accumulates on the
    model's parameters. ``map_gradient``: add the score-function term of the map (module docstring;
    pixel deflection on CAM heads with the map on only, otherwise the term is zero and left out).
    """
    images, generator = eot_inputs(images, eot, loss, generator, seed)
    defence = paper_defence(model, defence)
    n = images.shape[0]
    record = defence.draw(images, eot, generator)  # rows image-major (N·eot); None: deterministic
    config = defence.config if isinstance(defence, PixelDeflection) else None
    score = (map_gradient and record is not None and config is not None and config.use_map
             and config.deflections > 0 and model.cam_weights() is not None)
    labels_rep = labels.repeat_interleave(eot)
    grads, losses, votes = [], [], []
    with torch.enable_grad():
        for start, stop, rows in eot_chunks(n, eot, batch_size, images.device):
            x = images[start:stop].clone().requires_grad_(True)
            chunk_record = record.rows(rows) if record is not None else None
            defended = defence.replay(x.repeat_interleave(eot, dim=0), chunk_record)
            logits = model(defended)
            per_sample = attack_loss(logits, labels_rep[rows], targeted, loss).view(stop - start, eot)
            value = per_sample.mean(1)
            objective = value
            if score:
                objective = value + _score_term(model, x, per_sample.detach(), chunk_record, config, eot)
            (grad,) = torch.autograd.grad(objective.sum(), x)
            grads.append(grad)
            losses.append(value.detach())
            votes.append(logits.detach().argmax(1).view(stop - start, eot))
    return torch.cat(grads), torch.cat(losses), torch.cat(votes)


def _score_term(model: Classifier, images: torch.Tensor, losses: torch.Tensor, record, config,
                eot: int) -> torch.Tensor:
    """(m,) surrogate whose gradient is the score-function estimate ``mean_j (L_j − b_j)·∇ log p_j``
    (``b_j``: mean loss of the image's other samples; none with one sample)."""
    rmap = robust_activation_map(model, images, top_k=config.top_k, differentiable=True).rmap
    rep = images.repeat_interleave(eot, dim=0)
    log_prob = draw_log_prob(record, rmap.repeat_interleave(eot, dim=0), rep.shape).view(-1, eot)
    if eot > 1:
        baseline = (losses.sum(1, keepdim=True) - losses) / (eot - 1)
        losses = losses - baseline
    return (losses * log_prob).mean(1)


@dataclass(frozen=True)
class ExactEotGradient:
    """The exact-gradient EOT estimator (:func:`exact_eot_gradient`) with its settings bound; plugs
    into :func:`pd_core.adaptive.attack.bpda_eot_attack` as ``gradient=``.

    eot : defence samples averaged per call. defence : the defence attacked (pixel deflection with
    the paper's parameters when None). loss : ``"ce"`` or ``"margin"``. batch_size : rows per forward+backward pass.
    map_gradient : add the score-function term of the R-CAM map (see the module docstring).
    """

    eot: int = 1
    defence: Defence | None = None
    loss: str = "ce"
    batch_size: int | None = None
    map_gradient: bool = False

    def __call__(self, model: Classifier, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return exact_eot_gradient(model, images, goal, self.eot, self.defence, generator=generator,
                                  targeted=targeted, batch_size=self.batch_size, loss=self.loss,
                                  map_gradient=self.map_gradient)
