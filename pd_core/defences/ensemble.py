"""Judging through any defence: one defended run, and the Ens-n majority vote (SPEC §1.4).

Ens-n (paper §10) is the classifier's majority vote over n independently defended copies, ties
broken by the higher mean probability (:func:`pd_core.defence.vote`); the copies are one batch
(:meth:`~pd_core.defences.base.Defence.apply_copies`), classified in chunks. For pixel deflection
with the same generator this is exactly :func:`pd_core.defence.ensemble_predict`.
"""
from __future__ import annotations

import torch

from ..defence import EnsembleResult, predict_probs, vote
from .base import Defence

__all__ = ["defended_logits", "ensemble_vote"]


def defended_logits(model, defence: Defence, x: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """The classifier's logits on one defended run of ``x`` (no gradients)."""
    with torch.no_grad():
        return model(defence.apply(x, generator))


def ensemble_vote(model, defence: Defence, x: torch.Tensor, n: int = 10, generator: torch.Generator | None = None,
                  *, batch_size: int = 64) -> EnsembleResult:
    """The Ens-``n`` vote of the classifier over ``n`` defended copies of each image of ``x``."""
    with torch.no_grad():
        copies = defence.apply_copies(x, int(n), generator)
    probs = predict_probs(model, copies, batch_size)
    return vote(probs.view(x.shape[0], int(n), -1))
