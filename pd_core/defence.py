"""The defence of paper §8 and its ten-copy ensemble (SPEC §1.4).

``defend(x) = denoise(deflect(x, R(x)))``: the robust activation map of the model's own top-5
prediction on ``x`` guides K deflections in a window r, then BayesShrink soft wavelet denoising in
YCbCr (σ = 0.04) softens both the deflection noise and the adversarial perturbation.
Stages can be switched off or a JPEG stage added for the ablations of Tables 3 and 4
(order: deflection → wavelet denoising → JPEG).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from .deflection import DeflectionRecord, deflect
from .randomness import make_generator
from .maps import robust_activation_map
from .models import Classifier

__all__ = ["DefenceConfig", "DefenceResult", "EnsembleResult", "DifferentiableDefence", "defend", "defend_batch",
           "defend_differentiable", "needs_map", "draw_log_prob", "sample_draws", "apply_draws", "ensemble_predict"]


@dataclass(frozen=True)
class DefenceConfig:
    """Parameters of the defence; the defaults are the paper's (Table 1 caption, §9.1).

    deflections: K, replacements per image (≥ 0).
    window: r, apothem of the deflection window in pixels (≥ 0).
    sigma: noise level of the wavelet threshold, in units of the [0, 1]-renormalised YCbCr channel.
    wavelet: "db1", "db2" or "haar". method: "bayes", "visu" or "sure". mode: "soft" or "hard".
    ycbcr: denoise in YCbCr (paper) rather than RGB.
    use_map: guide deflection with the robust activation map (R-CAM); off = uniform.
    top_k: classes combined in the R-CAM.
    deflect / denoise: switch the stages (ablation, Table 3).
    jpeg_quality: add a JPEG round trip at this quality after the other stages (None = no JPEG).
    """

    deflections: int = 100
    window: int = 10
    sigma: float = 0.04
    wavelet: str = "db1"
    method: str = "bayes"
    mode: str = "soft"
    ycbcr: bool = True
    use_map: bool = True
    top_k: int = 5
    deflect: bool = True
    denoise: bool = True
    jpeg_quality: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


PAPER_DEFAULTS = DefenceConfig()



class DefenceResult(NamedTuple):
    """The defended batch with its intermediate products (for display and analysis).

    logits: the model's logits on the *input* (the same pass that made the map).
    rmap: (N, H, W) or None when the map is off or deflection is off.
    record: where the deflections went (None when deflection is off).
    """

    defended: torch.Tensor
    deflected: torch.Tensor
    rmap: torch.Tensor | None
    logits: torch.Tensor | None
    record: DeflectionRecord | None


def _transform(images: torch.Tensor, rmap: torch.Tensor | None, config: DefenceConfig,
               generator: torch.Generator, return_record: bool = False):
    record = None
    out = images
    if config.deflect:
        out = deflect(out, rmap, config.deflections, config.window, generator=generator,
                      return_record=return_record)
        if return_record:
            out, record = out
    return _after_deflection(out, config), out, record


def _after_deflection(out: torch.Tensor, config: DefenceConfig) -> torch.Tensor:
    """The stages after deflection: wavelet denoising, then JPEG (when switched on)."""
    if config.denoise:
        from .denoising import wavelet_denoise

        out = wavelet_denoise(out, sigma=config.sigma, wavelet=config.wavelet, method=config.method,
                              mode=config.mode, ycbcr=config.ycbcr)
    if config.jpeg_quality is not None:
        from .denoising import jpeg_compress

        if torch.is_grad_enabled() and out.requires_grad:
            out = _JpegStraightThrough.apply(out, config.jpeg_quality)
        else:
            out = jpeg_compress(out, quality=config.jpeg_quality)
    return out


class _JpegStraightThrough(torch.autograd.Function):
    """JPEG forward, identity backward: JPEG quantisation is piecewise constant (gradient 0 almost
    everywhere), so the differentiable path passes the gradient through this one stage (BPDA,
    Athalye et al. 2018 §4.1); deflection and wavelet denoising keep their exact gradients."""

    @staticmethod
    def forward(ctx, images, quality):
        from .denoising import jpeg_compress

        return jpeg_compress(images, quality=quality)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def needs_map(config: DefenceConfig) -> bool:
    return config.deflect and config.use_map and config.deflections > 0


def defend(model: Classifier, images: torch.Tensor, config: DefenceConfig | None = None, *,
           generator: torch.Generator | None = None, seed: int | None = 0,
           rmap: torch.Tensor | None = None, return_details: bool = False):
    """Defend a batch: ``denoise(deflect(x, R(x)))`` (paper §8).

    images : (N, 3, S, S) in [0, 1] on the model's device.
    config : :class:`DefenceConfig` (paper defaults when None).
    generator / seed : randomness of the deflection; ``generator`` wins over ``seed``.
    rmap : a precomputed map (N, S, S) to skip the map's forward pass.
    Returns the defended batch, or a :class:`DefenceResult` with ``return_details=True``.
    """
    config = config or PAPER_DEFAULTS
    if generator is None:
        generator = make_generator(seed, images.device)
    logits = None
    if rmap is None and needs_map(config):
        maps = robust_activation_map(model, images, top_k=config.top_k)
        rmap, logits = maps.rmap, maps.logits
    out, deflected, record = _transform(images, rmap if config.use_map else None, config, generator,
                                        return_record=return_details)
    if return_details:
        return DefenceResult(out, deflected, rmap if config.use_map else None, logits, record)
    return out


def defend_batch(model: Classifier, images: torch.Tensor, copies: int, config: DefenceConfig | None = None,
                 *, generator: torch.Generator | None = None, seed: int | None = 0,
                 rmap: torch.Tensor | None = None) -> torch.Tensor:
    """``copies`` independent defended versions of each image as one batch (N·copies, 3, S, S),
    image-major (the copies of image i are rows i·copies … i·copies + copies − 1).
    The map is computed once per image: it depends on the input only."""
    config = config or PAPER_DEFAULTS
    if generator is None:
        generator = make_generator(seed, images.device)
    if rmap is None and needs_map(config):
        rmap = robust_activation_map(model, images, top_k=config.top_k).rmap
    rep = images.repeat_interleave(copies, dim=0)
    rep_map = rmap.repeat_interleave(copies, dim=0) if (rmap is not None and config.use_map) else None
    return _transform(rep, rep_map, config, generator)[0]


class DifferentiableDefence(NamedTuple):
    """Output of :func:`defend_differentiable`.

    defended: (N·copies, 3, S, S), bit-identical to :func:`defend_batch` (``copies=1``: to
        :func:`defend`), with the autograd graph back to the input.
    log_prob: (N·copies,) log-probability of each copy's deflection targets under its map, with
        the graph back to the input through the R-CAM (``map_gradient=True`` only, else None).
    """

    defended: torch.Tensor
    log_prob: torch.Tensor | None


def defend_differentiable(model: Classifier, images: torch.Tensor, config: DefenceConfig | None = None, *,
                          generator: torch.Generator | None = None, seed: int | None = 0, copies: int = 1,
                          rmap: torch.Tensor | None = None, map_gradient: bool = False) -> DifferentiableDefence:
    """The defence with its exact gradient (issue 14): ``defend_batch`` under autograd.

    With the random draws of one sample fixed, deflection is a gather of pixel values (a target
    channel value takes its source's value), BayesShrink soft thresholding is differentiable almost
    everywhere, its data-dependent threshold ``σ²/sqrt(max(mean(d²) − σ², ε))`` included, and YCbCr,
    the per-channel min-max renormalisation and the Haar transform are differentiable too. The
    forward pass is the very code of :func:`defend` (same draws for the same generator, same float
    operations), so ``defended`` equals ``defend_batch(model, images, copies, config, generator=g)``
    exactly; only a JPEG stage passes its gradient straight through (it is piecewise constant).

    The R-CAM map only decides *where* to deflect, so with the draws fixed the output does not
    depend on it: by default it is computed once per image, detached. With ``map_gradient=True``
    it keeps its graph (CAM heads only) and ``log_prob`` gives the log-probability of the drawn
    targets (i.i.d. ∝ 1 − R, see :func:`draw_log_prob`): the score-function term
    ``E[L·∇ log p]`` of the gradient of the expected loss then comes from the surrogate
    ``L + (L.detach() − baseline)·log_prob`` (Williams 1992).

    images : (N, 3, S, S) in [0, 1] on the model's device, usually with ``requires_grad``.
    copies : independent defended copies per image (EOT samples), image-major as in :func:`defend_batch`.
    No gradient is ever accumulated on the model's parameters (they do not require gradients).
    """
    config = config or PAPER_DEFAULTS
    copies = int(copies)
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}.")
    if map_gradient and model.cam_weights() is None:
        raise ValueError("map_gradient needs a classifier whose head is global average pooling and one "
                         "linear layer (its Grad-CAM map is always held constant).")
    if generator is None:
        generator = make_generator(seed, images.device)
    with torch.enable_grad():
        if rmap is None and needs_map(config):
            source = images if map_gradient else images.detach()
            rmap = robust_activation_map(model, source, top_k=config.top_k, differentiable=map_gradient).rmap
        elif rmap is not None and not map_gradient:
            rmap = rmap.detach()
        rep = images.repeat_interleave(copies, dim=0)
        rep_map = rmap.repeat_interleave(copies, dim=0) if (rmap is not None and config.use_map) else None
        out, _, record = _transform(rep, rep_map, config, generator, return_record=map_gradient)
        log_prob = None
        if map_gradient:
            log_prob = (draw_log_prob(record, rep_map, rep.shape) if record is not None and rep_map is not None
                        else rep.new_zeros(rep.shape[0]))
    return DifferentiableDefence(out, log_prob)


def sample_draws(model: Classifier, images: torch.Tensor, copies: int = 1, config: DefenceConfig | None = None,
                 *, generator: torch.Generator, rmap: torch.Tensor | None = None) -> DeflectionRecord | None:
    """Draw the deflections of ``copies`` defended copies of each image, without applying them.

    Consumes ``generator`` exactly as :func:`defend_batch` does (one map per image, then one
    deflection call on the N·copies rows), so ``apply_draws(x_rep, sample_draws(...), config)``
    equals ``defend_batch(model, x, copies, config, generator=g)`` for a generator in the same
    state. Returns None when deflection is off. Rows are image-major, as in :func:`defend_batch`.
    """
    config = config or PAPER_DEFAULTS
    if not config.deflect:
        return None
    with torch.no_grad():
        images = images.detach()
        if rmap is None and needs_map(config):
            rmap = robust_activation_map(model, images, top_k=config.top_k).rmap
        rep = images.repeat_interleave(copies, dim=0)
        rep_map = rmap.repeat_interleave(copies, dim=0) if (rmap is not None and config.use_map) else None
        _, record = deflect(rep, rep_map, config.deflections, config.window, generator=generator, return_record=True)
    return record


def apply_draws(images: torch.Tensor, record: DeflectionRecord | None, config: DefenceConfig | None = None
                ) -> torch.Tensor:
    """The defence with its draws fixed: replay ``record`` on ``images`` (one row per record row),
    then denoise (and JPEG). Differentiable: the exact gradient of one defence sample (issue 14);
    ``record.rows(...)`` selects a chunk of rows, so large EOT batches can be differentiated piecewise."""
    config = config or PAPER_DEFAULTS
    out = record.apply(images) if (config.deflect and record is not None) else images
    return _after_deflection(out, config)


def draw_log_prob(record: DeflectionRecord, rmap: torch.Tensor, shape) -> torch.Tensor:
    """(N,) log-probability of the K deflection targets of ``record`` under ``rmap`` (N, H, W).

    :func:`~pd_core.deflection.deflect` draws its targets i.i.d. with probability proportional to
    ``1 − R(p)``, so ``log p = Σ_k log(1 − R(p_k)) − K·log Σ_p (1 − R(p))``; the channels and the
    sources do not depend on the map. Differentiable in ``rmap``.
    """
    n, _, h, w = shape
    keep = (1.0 - rmap.clamp(0, 1)).reshape(n, h * w)
    drawn = keep.gather(1, record.y * w + record.x)
    k = record.y.shape[1]
    return drawn.log().sum(1) - k * keep.sum(1).log()


class EnsembleResult(NamedTuple):
    """Majority vote over n defended copies (SPEC §1.4).

    prediction: (N,) voted class; ties broken by the higher mean probability.
    mean_probs: (N, 1000) softmax averaged over the copies.
    votes: (N, n) each copy's top-1.
    agreement: (N,) fraction of copies voting for ``prediction``.
    """

    prediction: torch.Tensor
    mean_probs: torch.Tensor
    votes: torch.Tensor
    agreement: torch.Tensor


def vote(probs: torch.Tensor) -> EnsembleResult:
    """Majority vote of (N, n, classes) probabilities; ties broken by the higher mean probability."""
    n_img, n, classes = probs.shape
    votes = probs.argmax(-1)
    counts = torch.zeros(n_img, classes, device=probs.device, dtype=probs.dtype)
    counts.scatter_add_(1, votes, torch.ones_like(votes, dtype=probs.dtype))
    mean_probs = probs.mean(1)
    # mean probability < 1 and counts are integers: adding half of it only breaks ties.
    prediction = (counts + 0.5 * mean_probs).argmax(1)
    agreement = counts.gather(1, prediction[:, None])[:, 0] / n
    return EnsembleResult(prediction, mean_probs, votes, agreement)


def ensemble_predict(model: Classifier, images: torch.Tensor, n: int = 10, seed: int | None = 0,
                     config: DefenceConfig | None = None, *, generator: torch.Generator | None = None,
                     rmap: torch.Tensor | None = None, batch_size: int = 64) -> EnsembleResult:
    """Ens-10 of paper §10: the classifier's majority vote over ``n`` independently defended copies.

    The N·n copies are defended as one batch and classified in chunks of ``batch_size`` rows.
    """
    copies = defend_batch(model, images, n, config, generator=generator, seed=seed, rmap=rmap)
    probs = predict_probs(model, copies, batch_size)
    return vote(probs.view(images.shape[0], n, -1))


def predict_probs(model: Classifier, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax probabilities of a batch, evaluated in chunks without gradients."""
    with torch.no_grad():
        return torch.cat([model(chunk).softmax(-1) for chunk in images.split(batch_size)])
