"""Median smoothing ("spatial smoothing"), Xu, Evans & Qi, NDSS 2018, §4.2.

Each colour channel is replaced by its median over a ``size × size`` window. Published settings:
``median`` is 2×2, Xu et al.'s setting for ImageNet (their Table 3); ``median_3x3`` is the 3×3
filter of their MNIST/CIFAR experiments, also used on ImageNet by later work.

The convention is scipy.ndimage's, which Xu et al.'s code (``median_filter(x, size=(1, k, k, 1),
mode='reflect')``) and ART's ``SpatialSmoothing`` use:

- the window of output pixel (i, j) covers rows ``i − size//2 … i − size//2 + size − 1`` (for 2×2:
  offsets −1 and 0, the pixel and its upper-left neighbours; for 3×3: centred);
- the value is the element of rank ``size²//2`` (0-based) of the sorted window, so a 2×2 window
  gives the upper of its two middle values, not their mean;
- borders are ``mode='reflect'`` (half-sample symmetric). For a window reaching at most one pixel
  past the border (sizes 2 and 3) that is edge replication, which is what this uses.

kornia's ``median_blur`` does not fit: it pads with zeros and takes odd windows only. Resolution:
applied at the model's input (224²) unchanged; the window is in pixels of that input.
Deterministic. Gradient: exact — the output is one element of the window, so the gradient flows to
that element (a network of elementwise minima and maxima under autograd); the function is piecewise linear and
differentiable wherever the window has no ties.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Defence, DefenceError, DefenceInfo

__all__ = ["MedianSmoothing", "median_filter", "INFO", "INFO_3X3"]


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel ``size × size`` median of ``x`` ``(N, C, H, W)``, scipy.ndimage's window, rank and
    ``'reflect'`` borders (see the module docstring); differentiable (the gradient goes to the
    selected element). ``size`` is 1, 2 or 3 (1 is the identity)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 3:
        raise DefenceError(f"Median smoothing takes a window of 1, 2 or 3 pixels, got {size!r}.")
    if size == 1:
        return x
    before = size // 2  # rows/columns of the window before the pixel (scipy's origin 0)
    after = size - 1 - before
    # one-pixel 'reflect' (half-sample symmetric) padding is edge replication
    padded = F.pad(x, (before, after, before, after), mode="replicate")
    h, w = x.shape[2:]
    if size == 2:  # the upper median of four: the second largest
        p = [padded[:, :, i:i + h, j:j + w] for i in range(2) for j in range(2)]
        high = torch.maximum(torch.minimum(torch.maximum(p[0], p[1]), torch.maximum(p[2], p[3])),
                             torch.maximum(torch.minimum(p[0], p[1]), torch.minimum(p[2], p[3])))
        return high
    return _median_of_nine(padded, h, w)


def _median_of_nine(padded: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """3×3 median of a one-pixel-padded ``(N, C, h + 2, w + 2)`` tensor, by sorting each column of
    three once and sharing it between the three windows that contain it: with the columns sorted
    into ``low ≤ mid ≤ high``, the median of the nine is the median of (the largest of the three
    lows, the median of the three mids, the smallest of the three highs) — the classic column-sorting
    median filter; tests/test_zoo_oracles.py checks it against scipy.ndimage. 18 elementwise
    minima/maxima per output pixel instead of the 38 of a 19-exchange sorting network, and the
    gradient still flows to the one selected input element."""
    top, centre, bottom = padded[:, :, 0:h], padded[:, :, 1:h + 1], padded[:, :, 2:h + 2]
    # sort each vertical triplet: three compare-exchanges
    smaller, larger = torch.minimum(top, centre), torch.maximum(top, centre)
    low, rest = torch.minimum(smaller, bottom), torch.maximum(smaller, bottom)
    mid, high = torch.minimum(larger, rest), torch.maximum(larger, rest)

    def columns(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return t[..., 0:w], t[..., 1:w + 1], t[..., 2:w + 2]

    lows, highs = columns(low), columns(high)
    largest_low = torch.maximum(torch.maximum(lows[0], lows[1]), lows[2])
    smallest_high = torch.minimum(torch.minimum(highs[0], highs[1]), highs[2])
    return _median_of_three(largest_low, _median_of_three(*columns(mid)), smallest_high)


def _median_of_three(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


class MedianSmoothing(Defence):
    """``size``: the window's side in pixels (1 to 3)."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return median_filter(x, int(self.params["size"]))


_CITATION = "Xu, Evans & Qi, NDSS 2018 (arXiv:1704.01155), §4.2"

INFO = DefenceInfo(
    name="median", title="Median smoothing, 2×2", short="Median-2", citation=_CITATION + ": 2×2 for ImageNet",
    summary="Replaces each pixel by the middle value of its small neighbourhood, which wipes out isolated specks.",
    build=lambda model=None, **params: MedianSmoothing(INFO, params),
    params={"size": 2}, randomised=False, gradient="exact",
    surrogate="none needed (the median selects one input element; the gradient flows to it)",
    group="zoo", aliases=("median_2x2", "spatial_smoothing"))

INFO_3X3 = DefenceInfo(
    name="median_3x3", title="Median smoothing, 3×3", short="Median-3", citation=_CITATION + ": 3×3",
    summary="Replaces each pixel by the middle value of the 3×3 square around it, which wipes out specks.",
    build=lambda model=None, **params: MedianSmoothing(INFO_3X3, params),
    params={"size": 3}, randomised=False, gradient="exact",
    surrogate="none needed (the median selects one input element; the gradient flows to it)",
    group="zoo")
