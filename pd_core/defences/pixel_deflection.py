"""Pixel deflection (Prakash et al., CVPR 2018) and the ablation variants of its Tables 3 and 4.

``defend(x) = denoise(deflect(x, R(x)))``: the robust activation map of the classifier's own
top-5 prediction guides K = 100 deflections in a window r = 10, then BayesShrink soft wavelet
denoising in YCbCr (σ = 0.04); :mod:`pd_core.defence` holds the functions, this module their
registry entries. Parameters are the fields of :class:`pd_core.defence.DefenceConfig` (the paper's
defaults). The variants switch stages on or off (``fixed``): deflection only ("PD"), with JPEG,
and the thresholds of Table 4 (hard, VisuShrink, SUREShrink).

Randomised (the deflections) unless K = 0 or deflection is off. Gradient: exact — with the draws
of a sample fixed, deflection is a gather and the denoiser is differentiable almost everywhere
(:func:`pd_core.defence.defend_differentiable`); a JPEG stage passes its gradient straight through.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..defence import (PAPER_DEFAULTS, DefenceConfig, apply_draws, defend, defend_batch, needs_map,
                       sample_draws)
from ..deflection import deflect
from ..randomness import make_generator
from .base import Defence, DefenceError, DefenceInfo

__all__ = ["PixelDeflection", "INFO", "VARIANTS", "defended_copies"]

CITATION = "Prakash et al., CVPR 2018 (arXiv:1801.08926)"


class PixelDeflection(Defence):
    """Pixel deflection bound to the classifier whose activation map guides it.

    ``config``: the :class:`~pd_core.defence.DefenceConfig` built from the parameters with the
    variant's ``fixed`` switches applied on top.
    """

    def __init__(self, info: DefenceInfo, params: dict, model=None, fixed: dict | None = None):
        super().__init__(info, params)
        unknown = sorted(set(self.params) - set(PAPER_DEFAULTS.as_dict()))
        if unknown:
            raise DefenceError(f"{info.title} has no parameter {unknown[0]!r}; "
                               f"its parameters are {', '.join(PAPER_DEFAULTS.as_dict())}.")
        self.config = replace(DefenceConfig(**self.params), **(fixed or {}))
        self.params = self.config.as_dict()
        if model is None and needs_map(self.config):
            raise DefenceError(f"{info.title} reads the classifier's activation map: build it with a model.")
        self.model = model

    @property
    def randomised(self) -> bool:
        return self.config.deflect and self.config.deflections > 0

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return defend(self.model, x, self.config, generator=generator)

    def _given_map(self, maps) -> torch.Tensor | None:
        """The R-CAM of ``maps`` (the pass that classified the input) when this defence reads it."""
        return maps.rmap if (maps is not None and self.config.use_map and needs_map(self.config)) else None

    def apply_copies(self, x: torch.Tensor, copies: int, generator: torch.Generator | None = None, *,
                     maps=None) -> torch.Tensor:
        if not self.randomised:
            return super().apply_copies(x, copies, generator)
        return defend_batch(self.model, x, copies, self.config, generator=generator, rmap=self._given_map(maps))

    def apply_seeded(self, x: torch.Tensor, copies: int, seeds: Sequence[int], *, maps=None) -> torch.Tensor:
        rmap = self._given_map(maps)
        if rmap is None and needs_map(self.config):
            from ..maps import robust_activation_map

            with torch.no_grad():
                rmap = robust_activation_map(self.model, x, top_k=self.config.top_k).rmap
        return defended_copies(self.model, x, rmap, self.config, copies, seeds)

    def draw(self, x: torch.Tensor, copies: int, generator: torch.Generator, *, maps=None):
        return sample_draws(self.model, x, copies, self.config, generator=generator, rmap=self._given_map(maps))

    def replay(self, x_copies: torch.Tensor, draws) -> torch.Tensor:
        return apply_draws(x_copies, draws, self.config)


def defended_copies(model, x: torch.Tensor, rmap: torch.Tensor | None, config: DefenceConfig,
                    copies: int, seeds: Sequence[int]) -> torch.Tensor:
    """``copies`` defended versions of each image, image-major (N·copies, 3, S, S).

    Deflection is drawn per image with its own generator (seeded from the image's name, so the
    result does not depend on the batch); the map was computed for the whole batch in one pass, and
    the denoising / JPEG stages run on the whole batch at once through :func:`defend_batch`.
    """
    if config.deflect and config.deflections > 0:
        parts = []
        for i, s in enumerate(seeds):
            gen = make_generator(s, x.device)
            rep = x[i:i + 1].expand(copies, -1, -1, -1)
            m = None if (rmap is None or not config.use_map) else rmap[i:i + 1].expand(copies, -1, -1)
            parts.append(deflect(rep, m, config.deflections, config.window, generator=gen))
        out = torch.cat(parts)
    else:
        out = x.repeat_interleave(copies, dim=0) if copies > 1 else x
    if config.denoise or config.jpeg_quality is not None:
        out = defend_batch(model, out, 1, replace(config, deflect=False), seed=0)
    return out


def _entry(name: str, title: str, short: str, summary: str, fixed: dict, *, group: str = "ablation",
           aliases: tuple[str, ...] = ()) -> DefenceInfo:
    params = replace(PAPER_DEFAULTS, **fixed).as_dict()
    random = params["deflect"] and params["deflections"] > 0
    jpeg = params["jpeg_quality"] is not None
    info = DefenceInfo(
        name=name, title=title, short=short, citation=CITATION, summary=summary,
        build=lambda model=None, **p: PixelDeflection(info, p, model, fixed),
        params=params, randomised=random, gradient="exact",
        surrogate=("exact through deflection and denoising; identity through the JPEG stage" if jpeg else
                   "none needed (exact, with the deflection draws held fixed)"),
        needs_model=params["deflect"] and params["use_map"], group=group, aliases=aliases)
    return info


INFO = _entry("pixel_deflection", "Pixel deflection (the paper's defence)", "WD+PD",
              "Moves 100 random pixels to a random neighbour, away from what the model looks at, then "
              "smooths the photo with wavelet denoising.", {}, group="paper", aliases=("wd+pd", "bayes"))

#: The paper's ablation columns (Tables 3 and 4) other than the full defence, as registry entries.
VARIANTS = (
    _entry("pd", "Pixel deflection without denoising", "PD",
           "Moves 100 random pixels to a random neighbour, with no smoothing after.", {"denoise": False}),
    _entry("pd+jpeg", "Pixel deflection, then JPEG", "PD+JPG",
           "Moves 100 random pixels, then saves the photo as a JPEG.", {"denoise": False, "jpeg_quality": 75}),
    _entry("wd+pd+jpeg", "Pixel deflection, denoising, then JPEG", "WD+PD+JPG",
           "The paper's defence followed by a JPEG round trip.", {"jpeg_quality": 75}),
    _entry("hard", "Pixel deflection with hard thresholding", "Hard",
           "The paper's defence with hard instead of soft wavelet thresholding.", {"mode": "hard"}),
    _entry("visu", "Pixel deflection with VisuShrink", "VISU",
           "The paper's defence with the VisuShrink threshold.", {"method": "visu"}),
    _entry("sure", "Pixel deflection with SUREShrink", "SURE",
           "The paper's defence with the SUREShrink threshold.", {"method": "sure"}),
)
