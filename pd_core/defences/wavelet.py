"""Wavelet denoising alone (paper §7 and Table 3's "WD"): BayesShrink soft thresholding in YCbCr.

:func:`pd_core.denoising.wavelet_denoise` with the paper's σ = 0.04 (in units of the min-max
renormalised YCbCr channel, SPEC §1.3), db1, BayesShrink, soft thresholding. Deterministic and
differentiable almost everywhere (the data-dependent threshold included), so an adaptive attack
gets its exact gradient.
"""
from __future__ import annotations

import torch

from ..denoising import wavelet_denoise
from .base import Defence, DefenceInfo

__all__ = ["WaveletDenoising", "INFO"]


class WaveletDenoising(Defence):
    """``sigma`` (renormalised channel units), ``wavelet`` (db1, db2, haar), ``method`` (bayes, visu,
    sure), ``mode`` (soft, hard), ``ycbcr`` (denoise in YCbCr rather than RGB)."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        return wavelet_denoise(x, sigma=float(p["sigma"]), wavelet=p["wavelet"], method=p["method"],
                               mode=p["mode"], ycbcr=bool(p["ycbcr"]))


INFO = DefenceInfo(
    name="wavelet", title="Wavelet denoising", short="WD",
    citation="Prakash et al., CVPR 2018, §7 (BayesShrink: Chang, Yu & Vetterli 2000)",
    summary="Smooths away the fine, noise-like part of the photo while keeping its edges.",
    build=lambda model=None, **params: WaveletDenoising(INFO, params),
    params={"sigma": 0.04, "wavelet": "db1", "method": "bayes", "mode": "soft", "ycbcr": True},
    randomised=False, gradient="exact", surrogate="none needed (differentiable almost everywhere)",
    group="zoo", aliases=("wd",))
