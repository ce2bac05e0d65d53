"""Jacobian-based Saliency Map Attack (Papernot et al., 2016) as a Foolbox 3 attack.

Foolbox 3 has no JSMA, so it is written here with Foolbox's call convention::

    raw, clipped, success = SaliencyMapAttack(gamma=0.1)(fmodel, images, criterion, epsilons=None)

The original algorithm ranks *pairs* of features with the saliency map of both the target logit
and the sum of the other logits; on a 224x224x3 image that is a 150528 x 150528 pair matrix
(about 90 GB), so it is not an option. This implementation keeps memory linear in the number of
features: every iteration it computes, in one forward and two backward passes,

    alpha = dZ_t / dx                      (gradient of the target logit)
    beta  = d(sum_{j != t} Z_j) / dx       (gradient of the sum of the other logits)

and ranks single features by the JSMA saliency ``S = alpha * |beta|`` where ``alpha > 0`` and
``beta < 0`` (raising the feature raises the target and lowers the others; signs flip when
``theta < 0``). The ``features_per_step`` best features are raised by ``theta`` (clipped to the
bounds) and leave the search domain, as in Papernot et al. When no feature satisfies both sign
conditions the ranking falls back to ``alpha - beta`` (the gradient of ``Z_t - sum_{j != t} Z_j``),
the usual relaxation. Logits (JSMA-Z, as Carlini & Wagner 2017 recommend) are used rather than
softmax probabilities, whose gradients vanish on confident ImageNet predictions.

The attack is targeted. With a :class:`foolbox.criteria.Misclassification` criterion the target
of each image is the most likely class other than its label (for a correctly classified image:
the second most likely class). It stops for an image as soon as the target is the top-1 class or
when ``gamma`` of the features have been changed (so at most ``floor(gamma * n)`` features ever
differ from the input).
"""
from __future__ import annotations

from typing import Any, Optional

import eagerpy as ep
import torch
from foolbox.attacks.base import MinimizationAttack, get_criterion, raise_if_kwargs, verify_input_bounds
from foolbox.criteria import Misclassification, TargetedMisclassification
from foolbox.distances import l0

__all__ = ["SaliencyMapAttack", "most_likely_other_class"]


def most_likely_other_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Index of the highest logit that is not ``labels`` (the default target of targeted attacks)."""
    masked = logits.detach().clone()
    masked.scatter_(1, labels.view(-1, 1).long(), float("-inf"))
    return masked.argmax(dim=1)


def resolve_targets(model, x: ep.Tensor, criterion) -> torch.Tensor:
    """Target classes (int64, on the inputs' device) for a targeted-only attack."""
    if isinstance(criterion, TargetedMisclassification):
        return criterion.target_classes.raw.long()
    if isinstance(criterion, Misclassification):
        with torch.no_grad():
            logits = model(x).raw
        return most_likely_other_class(logits, criterion.labels.raw)
    raise ValueError("this attack supports Misclassification and TargetedMisclassification criteria only")


class SaliencyMapAttack(MinimizationAttack):
    """JSMA with memory linear in the number of features (see the module docstring).

    Args:
        gamma: largest fraction of the features (pixels x channels) that may change, in (0, 1].
        theta: change applied to a selected feature, in units of the model bounds (``1.0`` with
            bounds (0, 1) sets the feature to the maximum, as in Papernot et al.). Negative values
            lower features instead.
        features_per_step: features changed per iteration (Papernot et al. change a pair, i.e. 2;
            more per step is proportionally faster and changes slightly more features).
    """

    distance = l0

    def __init__(self, *, gamma: float = 0.1, theta: float = 1.0, features_per_step: int = 8):
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if theta == 0:
            raise ValueError("theta must not be 0")
        if features_per_step < 1:
            raise ValueError(f"features_per_step must be at least 1, got {features_per_step}")
        self.gamma = float(gamma)
        self.theta = float(theta)
        self.features_per_step = int(features_per_step)

    def run(self, model, inputs, criterion, *, early_stop: Optional[float] = None, **kwargs: Any):
        raise_if_kwargs(kwargs)
        x0_ep, restore_type = ep.astensor_(inputs)
        del inputs, kwargs
        verify_input_bounds(x0_ep, model)
        criterion = get_criterion(criterion)
        targets = resolve_targets(model, x0_ep, criterion)

        x0 = x0_ep.raw
        lower, upper = model.bounds
        n_images, shape = x0.shape[0], x0.shape[1:]
        n_features = x0[0].numel()
        budget = int(self.gamma * n_features)
        sign = 1.0 if self.theta > 0 else -1.0

        x = x0.detach().flatten(1).clone()
        # Features that may still move in the direction of theta (the JSMA search domain).
        searchable = x < upper if sign > 0 else x > lower
        changed = torch.zeros(n_images, dtype=torch.long, device=x.device)
        finished = torch.zeros(n_images, dtype=torch.bool, device=x.device)
        steps = torch.arange(self.features_per_step, device=x.device)

        while True:
            active = (~finished & (changed < budget)).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa = x[active].view(-1, *shape).requires_grad_(True)
            logits = model(ep.astensor(xa)).raw
            t = targets[active]
            reached = logits.argmax(dim=1) == t
            target_logit = logits.gather(1, t.view(-1, 1)).sum()
            (alpha,) = torch.autograd.grad(target_logit, xa, retain_graph=True)
            (total,) = torch.autograd.grad(logits.sum(), xa)
            alpha = alpha.flatten(1) * sign
            beta = total.flatten(1) * sign - alpha
            del total, logits, xa

            domain = searchable[active]
            strict = domain & (alpha > 0) & (beta < 0)
            score = torch.where(strict, alpha * (-beta), torch.full_like(alpha, float("-inf")))
            relaxed = ~strict.any(dim=1)
            if relaxed.any():
                fallback = alpha[relaxed] - beta[relaxed]
                score[relaxed] = torch.where(domain[relaxed] & (fallback > 0), fallback,
                                             torch.full_like(fallback, float("-inf")))
            k = min(self.features_per_step, n_features)
            values, chosen = score.topk(k, dim=1)
            remaining = (budget - changed[active]).view(-1, 1)
            keep = torch.isfinite(values) & (steps[:k].view(1, -1) < remaining) & ~reached.view(-1, 1)

            rows = active.view(-1, 1).expand_as(chosen)[keep]
            cols = chosen[keep]
            x[rows, cols] = (x[rows, cols] + self.theta).clamp(lower, upper)
            searchable[rows, cols] = False
            n_kept = keep.sum(dim=1)
            changed[active] += n_kept
            # Done: target reached, or no feature left that could help.
            finished[active] |= reached | (n_kept == 0)

        return restore_type(ep.astensor(x.view_as(x0)))
