"""SHIELD's stochastic local quantisation (SLQ), Das et al., KDD 2018 ("SHIELD: Fast, practical
defense and vaccination for deep learning using JPEG compression"), §3.

Each 8 × 8 block of the image is JPEG-compressed at a quality drawn uniformly, independently per
block, from {20, 40, 60, 80}. As in SHIELD, the whole image is compressed once at each quality
(Pillow's baseline JPEG, 4:2:0, :func:`pd_core.denoising.jpeg_compress`) and every block is taken
from the version at its drawn quality, so a block equals the Pillow codec's output for that block
of the whole image at that quality (JPEG's 8 × 8 grid, with the chroma of its 16 × 16 macroblock).
Blocks are aligned to the top-left corner; a partial block at the right or bottom edge draws like
the others. The per-block choice is one gather over the stacked versions, batch-first; the codec
itself runs image by image inside Pillow. Resolution: the blocks are 8 × 8 pixels of the model's
input (224²: 28 × 28 blocks), as JPEG's are. SHIELD's vaccinated (re-trained) models are not part
of this defence; the lab's classifiers are used as they are.

Randomised (the block qualities). Gradient: BPDA with the identity (quantisation has zero gradient
almost everywhere; the surrogate sees no draws, so no per-block differentiable codec applies).
"""
from __future__ import annotations

import torch

from ..denoising import jpeg_compress
from .base import Defence, DefenceError, DefenceInfo

__all__ = ["Shield", "draw_block_qualities", "INFO"]

BLOCK = 8


def draw_block_qualities(x: torch.Tensor, n_qualities: int, generator: torch.Generator | None) -> torch.Tensor:
    """Index of each image's block quality, ``(N, ceil(H/8), ceil(W/8))`` long, uniform in
    {0, …, n_qualities − 1}, on ``x``'s device."""
    n, _, h, w = x.shape
    shape = (n, -(-h // BLOCK), -(-w // BLOCK))
    device = generator.device if generator is not None else x.device
    return torch.randint(0, n_qualities, shape, generator=generator, device=device).to(x.device)


class Shield(Defence):
    """``qualities``: the JPEG qualities a block draws from (uniformly)."""

    def __init__(self, info: DefenceInfo, params):
        super().__init__(info, params)
        qualities = tuple(int(q) for q in self.params["qualities"])
        if not qualities or any(not 1 <= q <= 100 for q in qualities):
            raise DefenceError(f"SHIELD draws JPEG qualities from 1 to 100, got {self.params['qualities']!r}.")
        self.params["qualities"] = qualities

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        qualities = self.params["qualities"]
        choice = draw_block_qualities(x, len(qualities), generator)
        versions = torch.stack([jpeg_compress(x, quality=q) for q in qualities])  # (Q, N, C, H, W)
        h, w = x.shape[2:]
        per_pixel = choice.repeat_interleave(BLOCK, dim=1)[:, :h].repeat_interleave(BLOCK, dim=2)[:, :, :w]
        index = per_pixel[None, :, None].expand(1, -1, x.shape[1], -1, -1)
        return versions.gather(0, index)[0]


INFO = DefenceInfo(
    name="shield", title="SHIELD (random local JPEG)", short="SHIELD",
    citation="Das et al., KDD 2018 (arXiv:1802.06816), stochastic local quantisation: each 8×8 block at a "
             "quality drawn from {20, 40, 60, 80}",
    summary="Saves each small square of the photo as a JPEG of a randomly chosen quality, so the damage differs everywhere.",
    build=lambda model=None, **params: Shield(INFO, params),
    params={"qualities": (20, 40, 60, 80)}, randomised=True, gradient="bpda", surrogate="identity",
    group="zoo", aliases=("slq",))
