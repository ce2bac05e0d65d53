"""JPEG compression as a defence (Das et al. 2017; Guo et al., ICLR 2018; paper Table 3's "JPG").

The batch is quantised to 8 bits and round-tripped through Pillow's baseline JPEG at ``quality``
(4:2:0 chroma subsampling), :func:`pd_core.denoising.jpeg_compress`. Published setting: quality 75
(the paper's Table 3, and Athalye et al.'s re-implementation of Guo et al.). Deterministic.
Gradient: BPDA with the identity, as in Athalye, Carlini & Wagner (ICML 2018): quantisation is
piecewise constant, so its true gradient is zero almost everywhere.
"""
from __future__ import annotations

import torch

from ..denoising import jpeg_compress
from .base import Defence, DefenceInfo

__all__ = ["Jpeg", "INFO"]


class Jpeg(Defence):
    """``quality``: 1 (worst) to 100."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return jpeg_compress(x, quality=int(self.params["quality"]))


INFO = DefenceInfo(
    name="jpeg", title="JPEG, quality 75", short="JPG",
    citation="Das et al. 2017, arXiv:1705.02900; Guo et al., ICLR 2018 (quality 75 as re-implemented by "
             "Athalye et al., ICML 2018)",
    summary="Saves the photo as a JPEG file and reads it back: compression throws away fine detail.",
    build=lambda model=None, **params: Jpeg(INFO, params),
    params={"quality": 75}, randomised=False, gradient="bpda", surrogate="identity",
    group="zoo", aliases=("jpeg75",))
