"""Box-constrained L-BFGS attack (Szegedy et al., "Intriguing properties of neural networks",
ICLR 2014) as a Foolbox 3 attack.

Foolbox 3 dropped it, so it is written here with Foolbox's call convention::

    raw, clipped, success = LBFGSAttack()(fmodel, images, criterion, epsilons=None)

Szegedy et al. minimise ``c * ||delta||^2 + loss_f(x + delta, t)`` subject to ``x + delta`` in the
box, with L-BFGS-B, and search over the constant c. Choices made here:

* Box constraint: ``torch.optim.LBFGS`` has no bounds, so the box is enforced by the change of
  variables ``x_adv = lower + (upper - lower) * (tanh(w) + 1) / 2`` (as in Carlini & Wagner), which
  keeps every iterate inside the box without projection.
* Loss: cross-entropy of the target class ``t`` (Szegedy's ``loss_f``), with ``||delta||^2`` the
  squared L2 norm in pixel units. The attack is targeted; with a ``Misclassification`` criterion
  the target is the most likely class other than the label (an untargeted use that still follows
  the paper's targeted formulation).
* Search over c (per image): a larger c weighs the distortion more, so it yields smaller
  perturbations. Starting from ``initial_const``, c is multiplied by 10 after a success and
  divided by 10 after a failure until both a success and a failure are known, then bisected
  geometrically. The successful adversarial with the smallest L2 over all searched c is returned
  (the last attempt where none succeeded).
* The batch is optimised jointly (one L-BFGS state over the sum of the independent per-image
  objectives): the objectives are separable, so the minimiser is the same as image by image.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import eagerpy as ep
import torch
import torch.nn.functional as F
from foolbox.attacks.base import MinimizationAttack, get_criterion, raise_if_kwargs, verify_input_bounds
from foolbox.distances import l2

from .jsma import resolve_targets

__all__ = ["LBFGSAttack"]


class LBFGSAttack(MinimizationAttack):
    """Szegedy et al.'s box-constrained L-BFGS attack (see the module docstring).

    Args:
        initial_const: first value of c (weight of ``||delta||^2``, pixel units squared).
        search_steps: number of values of c tried (each one is a full L-BFGS run).
        max_iter: L-BFGS iterations per value of c (each costs about 1.25 forward+backward passes).
        history_size: L-BFGS memory.
        confidence: logit margin ``Z_t - max_{j != t} Z_j`` the target must reach for a value of c
            to count as a success (0: being the top-1 class is enough). As C&W's confidence, it
            asks for confident adversarials and so larger perturbations (the knob the presets
            calibrate).
    """

    distance = l2

    def __init__(self, *, initial_const: float = 0.1, search_steps: int = 4, max_iter: int = 15,
                 history_size: int = 10, confidence: float = 0.0):
        if initial_const <= 0:
            raise ValueError(f"initial_const must be positive, got {initial_const}")
        if search_steps < 1 or max_iter < 1:
            raise ValueError("search_steps and max_iter must be at least 1")
        self.initial_const = float(initial_const)
        self.search_steps = int(search_steps)
        self.max_iter = int(max_iter)
        self.history_size = int(history_size)
        if confidence < 0:
            raise ValueError(f"confidence must be at least 0, got {confidence}")
        self.confidence = float(confidence)

    def run(self, model, inputs, criterion, *, early_stop: Optional[float] = None, **kwargs: Any):
        raise_if_kwargs(kwargs)
        x0_ep, restore_type = ep.astensor_(inputs)
        del inputs, kwargs
        verify_input_bounds(x0_ep, model)
        criterion = get_criterion(criterion)
        targets = resolve_targets(model, x0_ep, criterion)

        x0 = x0_ep.raw.detach()
        lower, upper = model.bounds
        n = x0.shape[0]
        dims = tuple(range(1, x0.ndim))

        def to_box(w: torch.Tensor) -> torch.Tensor:
            return lower + (upper - lower) * (torch.tanh(w) + 1) / 2

        w0 = torch.atanh(((x0 - lower) / (upper - lower) * 2 - 1) * 0.999999)
        const = torch.full((n,), self.initial_const, dtype=x0.dtype, device=x0.device)
        c_success = torch.zeros_like(const)          # largest c known to give an adversarial
        c_failure = torch.full_like(const, math.inf)  # smallest c known to fail
        best = x0.clone()
        best_norm = torch.full_like(const, math.inf)
        last = x0.clone()

        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=self.max_iter,
                                          history_size=self.history_size, line_search_fn="strong_wolfe",
                                          tolerance_grad=1e-9, tolerance_change=1e-12)
            c_view = const.view(-1, *([1] * (x0.ndim - 1)))

            def closure():
                optimizer.zero_grad()
                xa = to_box(w)
                logits = model(ep.astensor(xa)).raw
                loss = (c_view * (xa - x0).square()).sum() + F.cross_entropy(logits, targets, reduction="sum")
                loss.backward()
                return loss

            optimizer.step(closure)
            with torch.no_grad():
                xa = to_box(w)
                logits = model(ep.astensor(xa)).raw
                target_logit = logits.gather(1, targets.view(-1, 1)).squeeze(1)
                others = logits.scatter(1, targets.view(-1, 1), float("-inf")).amax(dim=1)
                margin = target_logit - others
                success = (margin > 0) & (margin >= self.confidence)
                norms = (xa - x0).square().sum(dim=dims).sqrt()
                better = success & (norms < best_norm)
                best[better] = xa[better]
                best_norm[better] = norms[better]
                last = xa
                c_success = torch.where(success, torch.maximum(c_success, const), c_success)
                c_failure = torch.where(success, c_failure, torch.minimum(c_failure, const))
                const = torch.where(
                    torch.isinf(c_failure), const * 10,
                    torch.where(c_success == 0, const / 10, torch.sqrt(c_success * c_failure)))

        found = torch.isfinite(best_norm).view(-1, *([1] * (x0.ndim - 1)))
        return restore_type(ep.astensor(torch.where(found, best, last)))
