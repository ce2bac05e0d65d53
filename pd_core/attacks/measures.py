"""Perturbation size and the 8-bit grid: :func:`perturbation_norms`, :func:`quantize_to_grid`.

The paper reports perturbations as "|L2|" in its tables and as "normalized RMSE" in §9, without
saying in which space (issue 13). :func:`perturbation_norms` therefore reports three readings:

* ``norm_l2`` = ||delta||_2 / ||x||_2 with x, delta in [0, 1] pixel units (this project's |L2|);
* ``norm_l2_model`` = the same ratio in the classifier's input space, after its normalisation
  z = (x - mean) / std: ||delta / std||_2 / ||(x - mean) / std||_2. For mean = std = 0.5 (the
  EfficientNet-Lite family) the 1/std factors cancel and it is ||delta||_2 / ||x - 0.5||_2, larger
  than ``norm_l2`` because centring shrinks the image's norm; for per-channel std they do not cancel;
* ``rmse`` = sqrt(mean(delta^2)) in [0, 1] units; for FGSM it is eps except where clipping to
  [0, 1] shortened a step.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["perturbation_norms", "quantize_to_grid", "normalization_of"]


def normalization_of(model_or_spec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of a :class:`pd_core.models.Classifier` or ``ModelSpec``."""
    spec = getattr(model_or_spec, "spec", model_or_spec)
    try:
        return tuple(float(v) for v in spec.mean), tuple(float(v) for v in spec.std)
    except (AttributeError, TypeError):
        raise TypeError("normalization must be a Classifier, a ModelSpec or a (mean, std) pair") from None


def _channel_vector(values: Sequence[float], like: Tensor, name: str) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64, device=like.device).reshape(-1)
    if v.numel() not in (1, like.shape[1]):
        raise ValueError(f"{name} needs 1 or {like.shape[1]} values (one per channel), got {v.numel()}")
    return v.view(1, -1, *([1] * (like.ndim - 2)))


def perturbation_norms(clean: Tensor, adversarial: Tensor, normalization=None) -> dict[str, Tensor]:
    """Per-image size of ``adversarial - clean`` for batches (N, C, H, W) in [0, 1].

    Returns float32 tensors (N,) on the inputs' device:

    * ``norm_l2`` = ||delta||_2 / ||x||_2 (Guo et al. 2018's |L2| read in [0, 1] pixels; inf for an
      all-black clean image with delta != 0);
    * ``norm_l2_model`` = ||delta / std||_2 / ||(x - mean) / std||_2, the ratio in the model's input
      space; only when ``normalization`` is given: a Classifier, a ModelSpec or a ``(mean, std)``
      pair of per-channel values (inf where x equals the mean everywhere and delta != 0);
    * ``rmse`` = sqrt(mean(delta^2)) in [0, 1] units (the paper's §9 "normalized RMSE" read as
      the RMSE of [0, 1] images);
    * ``l2`` = ||delta||_2, ``linf_255`` = max |delta| * 255, ``psnr`` = 10 log10(1 / MSE) dB for a
      peak of 1 (inf when delta = 0) and ``l0`` = fraction of features with delta != 0.

    Computed in float64. See the module docstring for why three readings.
    """
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean and adversarial shapes differ: {tuple(clean.shape)} vs {tuple(adversarial.shape)}")
    if clean.ndim == 3:
        clean, adversarial = clean.unsqueeze(0), adversarial.unsqueeze(0)
    x = clean.detach().double()
    d = adversarial.detach().double() - x

    def ratio(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(num == 0, torch.zeros_like(num), num / den)

    l2 = d.flatten(1).norm(dim=1)
    mse = d.flatten(1).square().mean(dim=1)
    psnr = torch.where(mse == 0, torch.full_like(mse, math.inf), -10 * torch.log10(mse.clamp_min(1e-300)))
    out = {"norm_l2": ratio(l2, x.flatten(1).norm(dim=1)), "l2": l2, "rmse": mse.sqrt(),
           "linf_255": d.flatten(1).abs().amax(dim=1) * 255, "psnr": psnr,
           "l0": (d != 0).flatten(1).double().mean(dim=1)}
    if normalization is not None:
        if isinstance(normalization, (tuple, list)) and len(normalization) == 2:
            mean, std = normalization
        else:
            mean, std = normalization_of(normalization)
        mean, std = _channel_vector(mean, x, "mean"), _channel_vector(std, x, "std")
        out["norm_l2_model"] = ratio((d / std).flatten(1).norm(dim=1), ((x - mean) / std).flatten(1).norm(dim=1))
    return {k: v.float() for k, v in out.items()}


def quantize_to_grid(images: Tensor, clean: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    """Round to the 8-bit grid (multiples of 1/255 in [0, 1], what a PNG stores).

    With ``clean`` and ``eps`` (L-infinity budget in [0, 1] units), each value is rounded to the
    nearest multiple of 1/255 within ``eps`` of ``clean``. Where no multiple of 1/255 is that close
    (ε < 0.5/255 and ``clean`` off the grid) the clean value is kept. Used by the attacks and by the
    adaptive attack.

    The interval's ends get a slack of 1e-4 grid steps: clean photos are on the grid, but their
    float32 values k/255 are off by up to ~1e-5 steps and budgets such as 6/255 are stored rounded
    (0.02352941), so without it ``clean + eps`` would often round down one whole step. The L∞
    budget can therefore be exceeded by at most 1e-4/255 (float error), never by a grid step.
    """
    q = torch.round(images * 255)
    if eps is None:
        return q.clamp(0, 255) / 255
    if clean is None:
        raise ValueError("quantize_to_grid needs the clean images to respect eps")
    low = torch.ceil((clean - eps) * 255 - 1e-4)
    high = torch.floor((clean + eps) * 255 + 1e-4)
    q = torch.minimum(torch.maximum(q, low), high).clamp(0, 255) / 255
    return torch.where(low <= high, q, clean)
