"""No defence: the classifier sees its input as it is (the baseline every defence is compared with)."""
from __future__ import annotations

import torch

from .base import Defence, DefenceInfo

__all__ = ["NoDefence", "INFO"]


class NoDefence(Defence):
    """The identity transformation; deterministic, exact (identity) gradient."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


INFO = DefenceInfo(
    name="none", title="No defence", short="No defence", citation="-",
    summary="The model sees the photo exactly as it is.",
    build=lambda model=None, **params: NoDefence(INFO, params),
    randomised=False, gradient="exact", surrogate="none needed (the identity is differentiable)",
    group="baseline", aliases=("undefended",))
