"""Pixel deflection, paper §5 (Algorithm 1) and §8, batched (SPEC §1.2).

One deflection draws a pixel p and a channel uniformly; with probability R(p) the draw is
skipped (salient pixels are kept); otherwise the channel value at p is replaced by the same
channel's value at a source pixel drawn uniformly from the (2r+1)² square centred at p, restricted
to pixels inside the image (p itself included, as in Algorithm 1). K counts performed
replacements, not draws.

Vectorised form: the rejection loop runs in parallel (uniform candidates, each kept with
probability 1 − R(p); the first K kept are the targets), so the targets are i.i.d. with
probability proportional to 1 − R(p), exactly K replacements, no per-deflection Python loop. All sources
are read from the pre-deflection image; with K ≪ H·W a source is itself a target with
probability about K/(H·W) (0.2% at the defaults on 224²), so the difference from the sequential
loop is negligible. Where two replacements hit the same channel value, the later draw wins, as
in the sequential loop.

Gradients: with the draws fixed, a deflection is a gather (the target channel value takes the
source's value), so autograd differentiates :func:`deflect` exactly when ``images`` requires
gradients (the replaced values get the gradient of their sources; issue 14). The map only steers the
draws and gets no gradient here (see ``pd_core.defence.draw_log_prob`` for the score function).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .randomness import make_generator

__all__ = ["deflect", "DeflectionRecord"]


class DeflectionRecord(NamedTuple):
    """Where the K replacements of each image went, shape (N, K) each (int64)."""

    channel: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    source_y: torch.Tensor
    source_x: torch.Tensor

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Replay these replacements on ``images`` (N, C, H, W) -> a new tensor (differentiable).

        Each target channel value takes its source's value in ``images``; where two draws hit the
        same channel value the later one wins. This is the very code :func:`deflect` runs after its
        draws, so replaying a record on the image it was drawn for gives ``deflect``'s output bit
        for bit, and autograd sees a gather (the exact gradient with the draws held fixed)."""
        n, c, h, w = images.shape
        images = images.contiguous()
        out = images.clone()
        if self.y.shape[1] == 0:
            return out
        device = images.device
        base = torch.arange(n, device=device).view(n, 1) * (c * h * w) + self.channel * (h * w)
        target = (base + self.y * w + self.x).reshape(-1)
        source = (base + self.source_y * w + self.source_x).reshape(-1)
        # Keep the last draw per target so duplicates resolve as in the sequential loop and the
        # scatter is deterministic on every device.
        order = torch.arange(target.numel(), device=device)
        unique, inverse = torch.unique(target, return_inverse=True)
        last = torch.full((unique.numel(),), -1, dtype=torch.long, device=device)
        last.scatter_reduce_(0, inverse, order, reduce="amax")
        out.view(-1)[target[last]] = images.view(-1)[source[last]]
        return out

    def rows(self, index) -> "DeflectionRecord":
        """The record of some images only (``index``: a slice or index tensor over N)."""
        return DeflectionRecord(*(field[index] for field in self))

    def mask(self, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """(N, H, W) count of replacements at each pixel (for the "where pixels were deflected" view)."""
        n, _, h, w = shape
        counts = torch.zeros(n, h * w, device=self.y.device)
        counts.scatter_add_(1, self.y * w + self.x, torch.ones_like(self.y, dtype=counts.dtype))
        return counts.view(n, h, w)


def deflect(images: torch.Tensor, rmap: torch.Tensor | None = None, deflections: int = 100,
            window: int = 10, generator: torch.Generator | None = None,
            return_record: bool = False):
    """Pixel deflection of a batch (paper Algorithm 1).

    Parameters
    ----------
    images : (N, C, H, W) float in [0, 1].
    rmap : (N, H, W) or (H, W) map in [0, 1]; the probability of *keeping* a drawn pixel.
        ``None`` means all zeros (uniform deflection).
    deflections : K ≥ 0, the number of performed replacements per image (paper default 100).
    window : r ≥ 0, the apothem of the source square in pixels (paper default 10: a 21×21 square).
    generator : torch.Generator on ``images.device``; the same seed gives the same output.
    return_record : also return a :class:`DeflectionRecord` of the replacements.

    Returns
    -------
    The deflected batch (a new tensor), and the record when asked.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    deflections, window = int(deflections), int(window)
    if deflections < 0 or window < 0:
        raise ValueError("deflections and window must be non-negative")
    n, c, h, w = images.shape
    device = images.device
    if generator is None:
        generator = make_generator(None, device)

    if rmap is None:
        keep_weight = torch.ones(n, h * w, device=device)
    else:
        rmap = rmap.to(device=device, dtype=torch.float32)
        if rmap.ndim == 2:
            rmap = rmap.expand(n, h, w)
        if rmap.shape != (n, h, w):
            raise ValueError(f"rmap must be (N, H, W) = {(n, h, w)}, got {tuple(rmap.shape)}")
        keep_weight = (1.0 - rmap.clamp(0, 1)).reshape(n, h * w)
        if bool((keep_weight.sum(1) <= 0).any()):
            raise ValueError("the map is 1 everywhere for some image: no pixel can be deflected")

    if deflections == 0:
        empty = torch.zeros(n, 0, dtype=torch.long, device=device)
        record = DeflectionRecord(empty, empty, empty, empty, empty)
        return (record.apply(images), record) if return_record else record.apply(images)

    pix = _draw_targets(keep_weight.detach(), deflections, generator)  # (N, K); the map only steers the draws
    y, x = pix // w, pix % w
    channel = torch.randint(0, c, (n, deflections), generator=generator, device=device)
    source_y = _uniform_in_window(y, window, h, generator)
    source_x = _uniform_in_window(x, window, w, generator)
    record = DeflectionRecord(channel, y, x, source_y, source_x)
    out = record.apply(images)
    return (out, record) if return_record else out


def _draw_targets(keep_weight: torch.Tensor, k: int, generator: torch.Generator, rounds: int = 4) -> torch.Tensor:
    """K pixel indices per row, i.i.d. with probability ∝ ``keep_weight`` (N, H·W).

    This is the paper's rejection loop run in parallel: candidates are drawn uniformly and kept with
    probability ``keep_weight``; the first K kept per row are the targets. A few rounds of 2K/rate
    candidates suffice for any map seen in practice; rows still short (a map that keeps almost
    nothing) fall back to ``torch.multinomial``, which draws from the same distribution.
    """
    n, hw = keep_weight.shape
    device = keep_weight.device
    rate = keep_weight.mean(1).clamp_min(1e-3)
    m = int(min(max(2.0 * k / float(rate.min()), 2 * k), 64 * k))
    kept = []
    have = torch.zeros(n, dtype=torch.long, device=device)
    for _ in range(rounds):
        cand = torch.randint(0, hw, (n, m), generator=generator, device=device)
        ok = torch.rand(n, m, generator=generator, device=device) < keep_weight.gather(1, cand)
        kept.append(torch.where(ok, cand, -1))
        have += ok.sum(1)
        if bool((have >= k).all()):
            break
    cand = torch.cat(kept, 1)
    # stable sort puts accepted candidates first, in draw order
    order = torch.sort((cand < 0).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    pix = cand.gather(1, order)
    short = have < k
    if bool(short.any()):
        pix[short] = torch.multinomial(keep_weight[short], k, replacement=True, generator=generator)
    return pix


def _uniform_in_window(centre: torch.Tensor, window: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform integer in [centre − r, centre + r] ∩ [0, size − 1] (independent per axis, so the
    pair is uniform over the square restricted to the image)."""
    lo = (centre - window).clamp_min(0)
    hi = (centre + window).clamp_max(size - 1)
    u = torch.rand(centre.shape, generator=generator, device=centre.device)
    return lo + (u * (hi - lo + 1).to(u.dtype)).long().clamp_max(hi - lo)
