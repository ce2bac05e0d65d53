"""JPEG compression as a defence (Das et al. 2017; Guo et al., ICLR 2018; paper Table 3's "JPG").

The batch is quantised to 8 bits and round-tripped through Pillow's baseline JPEG at ``quality``
(4:2:0 chroma subsampling), :func:`pd_core.denoising.jpeg_compress`. Published setting: quality 75
(the paper's Table 3, and Athalye et al.'s re-implementation of Guo et al.). Deterministic.
Gradient: BPDA (Athalye, Carlini & Wagner, ICML 2018): quantisation is piecewise constant, so its
true gradient is zero almost everywhere. The forward value is Pillow's, bit for bit; the backward
pass goes through kornia's differentiable JPEG at the same quality
(``kornia.enhance.jpeg_codec_differentiable``, Reich et al. 2024: the same colour transform, 4:2:0
subsampling, DCT and quality-scaled tables, with a smooth stand-in for rounding), which is closer
to the codec than the identity Athalye et al. used (the forward value, and so the
run's identity, is unchanged by the choice of surrogate).
"""
from __future__ import annotations

import torch

from ..denoising import jpeg_compress
from .base import Defence, DefenceInfo

__all__ = ["Jpeg", "differentiable_jpeg", "INFO"]


class Jpeg(Defence):
    """``quality``: 1 (worst) to 100."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return jpeg_compress(x, quality=int(self.params["quality"]))

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        return differentiable_jpeg(x, int(self.params["quality"]))


def differentiable_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """kornia's differentiable JPEG of ``x`` ``(N, 3, H, W)`` in [0, 1] at ``quality`` (same shape,
    device and dtype; kornia pads to whole macroblocks and crops back itself)."""
    from kornia.enhance import jpeg_codec_differentiable

    q = torch.tensor([float(quality)], device=x.device, dtype=x.dtype)
    return jpeg_codec_differentiable(x, q)


INFO = DefenceInfo(
    name="jpeg", title="JPEG, quality 75", short="JPG",
    citation="Das et al. 2017, arXiv:1705.02900; Guo et al., ICLR 2018 (quality 75 as re-implemented by "
             "Athalye et al., ICML 2018)",
    summary="Saves the photo as a JPEG file and reads it back: compression throws away fine detail.",
    build=lambda model=None, **params: Jpeg(INFO, params),
    params={"quality": 75}, randomised=False, gradient="bpda",
    surrogate="kornia's differentiable JPEG at the same quality (kornia.enhance.jpeg_codec_differentiable)",
    group="zoo", aliases=("jpeg75",))
