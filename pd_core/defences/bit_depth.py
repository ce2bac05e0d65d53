"""Bit-depth reduction ("feature squeezing"), Xu, Evans & Qi, NDSS 2018, §4.1.

Each colour value in [0, 1] is rounded to the nearest of ``2**bits`` evenly spaced levels:
``round(x · (2**bits − 1)) / (2**bits − 1)`` (round half to even, as ``numpy.rint``; ART's
``FeatureSqueezing`` computes the same). Published settings:

- ``bit_depth``: 5 bits, Xu et al.'s setting for ImageNet (their Table 3);
- ``bit_depth_3``: 3 bits, Guo et al. (ICLR 2018) as re-implemented and broken by Athalye,
  Carlini & Wagner (ICML 2018, "inputtransformations").

Resolution-free, so it applies unchanged at the 224² input of the lab's models. Deterministic.
Gradient: BPDA with the identity (Athalye et al. §4.1): rounding is piecewise constant, its true
gradient is zero almost everywhere.
"""
from __future__ import annotations

import torch

from .base import Defence, DefenceError, DefenceInfo

__all__ = ["BitDepthReduction", "reduce_bit_depth", "INFO", "INFO_3"]


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` (any shape, values in [0, 1]) rounded to ``2**bits`` levels; same dtype and device."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise DefenceError(f"Bit-depth reduction keeps 1 to 16 bits, got {bits!r}.")
    levels = float(2 ** bits - 1)
    out = x.clamp(0, 1)  # a new tensor: the rest runs in place on it
    return out.mul_(levels).round_().div_(levels)


class BitDepthReduction(Defence):
    """``bits``: how many bits each colour channel keeps (1 to 16)."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return reduce_bit_depth(x, int(self.params["bits"]))


_CITATION_XU = "Xu, Evans & Qi, NDSS 2018 (arXiv:1704.01155), §4.1: 5 bits for ImageNet"
_CITATION_GUO = ("Guo et al., ICLR 2018 (arXiv:1711.00117), 3 bits as re-implemented by Athalye, Carlini & "
                 "Wagner, ICML 2018")

INFO = DefenceInfo(
    name="bit_depth", title="Bit-depth reduction, 5 bits", short="Bits-5", citation=_CITATION_XU,
    summary="Keeps 32 shades per colour instead of 256, so faint changes to a colour are rounded away.",
    build=lambda model=None, **params: BitDepthReduction(INFO, params),
    params={"bits": 5}, randomised=False, gradient="bpda", surrogate="identity", group="zoo",
    aliases=("bit_depth_5", "feature_squeezing"))

INFO_3 = DefenceInfo(
    name="bit_depth_3", title="Bit-depth reduction, 3 bits", short="Bits-3", citation=_CITATION_GUO,
    summary="Keeps only 8 shades per colour, so small changes to a colour are rounded away.",
    build=lambda model=None, **params: BitDepthReduction(INFO_3, params),
    params={"bits": 3}, randomised=False, gradient="bpda", surrogate="identity", group="zoo")
