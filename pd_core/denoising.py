"""Wavelet denoising (paper §7, §8) and the JPEG baseline transform (paper Table 3), batched in torch.

The defence's second stage, ``wavelet_denoise``, reproduces the semantics of scikit-image 0.13/0.14
``denoise_wavelet(img, sigma=0.04, mode="soft", multichannel=True, convert2ycbcr=True)`` that gave the
paper its numbers (SPEC §1.3), on a whole batch at once and on any device:

1. RGB -> YCbCr exactly as ``skimage.color.rgb2ycbcr`` (Y in [16, 235], Cb/Cr in [16, 240]).
2. Each channel of each image min-max renormalised to [0, 1] (a constant channel is left as it is).
3. ``pywt.wavedecn``-style DWT (mode "symmetric") with ``max(dwt_max_level - 3, 1)`` levels, one
   threshold per detail sub-band, soft (or hard) thresholding, approximation untouched, inverse DWT,
   crop to the input size, clip to [0, 1].
4. Renormalisation undone, YCbCr -> RGB (``skimage.color.ycbcr2rgb``), clip to [0, 1].

σ is in the units of the renormalised channel: today's scikit-image divides a user-given σ by each
channel's YCbCr range, which makes σ = 0.04 almost a no-op (SPEC §1.3 "Trap"); this module does not.

The DWT goes through ``ptwt`` (PyWavelets conventions, runs on the GPU). For db1/haar a
reshape-based Haar transform is used instead when it is faster (see ``_HAAR_FAST_PATH`` and
``bench/bench_denoise.py``); it equals PyWavelets' "symmetric" mode, odd sizes included, up to
known powers of two per level that the thresholds absorb (see ``HAAR_OUTPUT_SCALE``). Steps 2 and 4's
renormalisation is folded into σ (one σ per channel) instead of being passes over the data.

The thresholds and the Haar transform are in :mod:`pd_core.wavelets` (re-exported here). The
denoiser is autograd-capable: when the input requires gradients it performs the same operations
without in-place writes (bit-identical values), and its gradient is that of steps 1–4 above,
through the data-dependent BayesShrink threshold and the min-max renormalisation included
(differentiable almost everywhere; issue 14).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch

from .wavelets import (HAAR_OUTPUT_SCALE, as_sigma, bayes_threshold, haar_forward_scaled, haar_inverse_scaled, shrink,
                       sure_threshold, tracks_grad, visu_threshold, wavelet_levels)

__all__ = [
    "wavelet_denoise",
    "jpeg_compress",
    "WAVELETS",
    "METHODS",
    "MODES",
]

WAVELETS = ("db1", "db2", "haar")
METHODS = ("bayes", "visu", "sure")
MODES = ("soft", "hard")

# skimage.color.colorconv.ycbcr_from_rgb (ITU-R BT.601, studio swing, for RGB in [0, 1]).
_YCBCR_FROM_RGB = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
)
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_FROM_RGB)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])

# db1/haar use the reshape-based Haar transform below instead of ptwt: bench/bench_denoise.py
# measured it several times faster on CPU, with identical results (tests/test_denoising.py).
_HAAR_FAST_PATH = True
# Elements (n·3·H·W) per block of images on the CPU: about 8 images of 224×224 (see wavelet_denoise).
_CPU_BLOCK_ELEMENTS = 1_250_000


def _dwt(x: torch.Tensor, wavelet: str, levels: int):
    """``(coeffs, scales)``: the DWT of ``x`` and the factor of each detail level (see above)."""
    if _HAAR_FAST_PATH and wavelet in ("db1", "haar"):
        return haar_forward_scaled(x, levels)
    import ptwt

    coeffs = ptwt.wavedec2(x, wavelet, mode="symmetric", level=levels)
    return [coeffs[0]] + [tuple(level) for level in coeffs[1:]], [1.0] * levels


def _idwt(coeffs, wavelet: str) -> tuple[torch.Tensor, float]:
    """``(signal × factor, factor)``: the inverse DWT of :func:`_dwt`'s coefficients."""
    if _HAAR_FAST_PATH and wavelet in ("db1", "haar"):
        return haar_inverse_scaled(coeffs), HAAR_OUTPUT_SCALE
    import ptwt

    return ptwt.waverec2([coeffs[0]] + [tuple(level) for level in coeffs[1:]], wavelet), 1.0


def _denoise_channels(channels: torch.Tensor, sigma: float | torch.Tensor, wavelet: str, method: str,
                      mode: str) -> tuple[torch.Tensor, float]:
    """Wavelet-threshold every (H, W) plane of ``channels`` (B, H, W) -> ``(denoised × factor,
    factor)``, no clipping. ``sigma``: a float or one σ per plane (B,). The input's sub-bands are
    thresholded in place (``channels`` itself is left as it is), or out of place with the same
    values when autograd tracks ``channels`` or ``sigma``."""
    height, width = channels.shape[-2:]
    inplace = not (tracks_grad(channels) or (isinstance(sigma, torch.Tensor) and tracks_grad(sigma)))
    coeffs, scales = _dwt(channels, wavelet, wavelet_levels(height, width, wavelet))
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.reshape(channels.shape[:-2])
    thresholded = [coeffs[0]]  # the approximation band is left untouched
    for level, factor in zip(coeffs[1:], scales):
        level_sigma = sigma * factor
        if method == "visu":
            t = visu_threshold(height * width, level_sigma)
            t = as_sigma(t, channels).expand(channels.shape[:-2])
        bands = []
        for d in level:
            if method == "bayes":
                t = bayes_threshold(d, level_sigma)
            elif method == "sure":
                t = sure_threshold(d, level_sigma)
            bands.append(shrink(d, t, mode, inplace))
        thresholded.append(tuple(bands))
    den, factor = _idwt(thresholded, wavelet)
    return den[..., :height, :width], factor


# --------------------------------------------------------------------------------------------
# Public transforms
# --------------------------------------------------------------------------------------------

def _check_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of shape (N, 3, H, W), got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (N, 3, H, W) (a batch of RGB images), got {tuple(images.shape)}."
        )
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float values in [0, 1], got dtype {images.dtype}.")


def _color_transform(x: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    # A (3, 3) @ (N, 3, H·W) matmul: several times faster on CPU than einsum or a 1×1 conv.
    m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    return (m @ x.reshape(x.shape[0], 3, -1)).reshape(x.shape)


def rgb_to_ycbcr(images: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2ycbcr`` on (N, 3, H, W): Y in [16, 235], Cb/Cr in [16, 240] for [0, 1]."""
    offset = torch.as_tensor(_YCBCR_OFFSET, dtype=images.dtype, device=images.device)
    return _color_transform(images, _YCBCR_FROM_RGB) + offset[:, None, None]


def ycbcr_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """``skimage.color.ycbcr2rgb`` on (N, 3, H, W) (no clipping)."""
    offset = torch.as_tensor(_YCBCR_OFFSET, dtype=images.dtype, device=images.device)
    return _color_transform(images - offset[:, None, None], _RGB_FROM_YCBCR)


def wavelet_denoise(
    images: torch.Tensor,
    sigma: float = 0.04,
    wavelet: str = "db1",
    method: str = "bayes",
    mode: str = "soft",
    ycbcr: bool = True,
) -> torch.Tensor:
    """Wavelet-threshold denoising of a batch of RGB images (paper §7 and §8; SPEC §1.3).

    With the defaults this is the paper's denoiser: scikit-image 0.13/0.14
    ``denoise_wavelet(img, sigma=0.04, mode="soft", multichannel=True, convert2ycbcr=True)``
    (BayesShrink, db1), with σ in the units of each renormalised YCbCr channel. Every image and
    channel of the batch is processed at once (no Python loop over images), on ``images``' device.

    Parameters
    ----------
    images : torch.Tensor, shape (N, 3, H, W)
        RGB images, float in [0, 1], any device. Any H, W ≥ 2 (odd sizes such as 299 included).
    sigma : float
        Noise standard deviation assumed by the thresholds (≥ 0). With ``ycbcr=True`` it is in the
        units of the channel renormalised to [0, 1]; with ``ycbcr=False`` in RGB units [0, 1].
    wavelet : {"db1", "db2", "haar"}
        Wavelet (PyWavelets names; db1 and haar are the same wavelet).
    method : {"bayes", "visu", "sure"}
        Threshold per detail sub-band: BayesShrink (:func:`bayes_threshold`, paper eq. 6),
        VisuShrink (:func:`visu_threshold`, one threshold for all sub-bands) or SUREShrink
        (:func:`sure_threshold`).
    mode : {"soft", "hard"}
        Soft ``sign(d)·max(|d| − T, 0)`` or hard ``d·[|d| ≥ T]`` thresholding.
    ycbcr : bool
        True (paper): denoise in YCbCr, each channel renormalised to [0, 1] first. False: each RGB
        channel is denoised directly with σ, without renormalisation (scikit-image's
        ``convert2ycbcr=False`` path on float input).

    Returns
    -------
    torch.Tensor, shape (N, 3, H, W)
        Denoised images clipped to [0, 1], same dtype and device as ``images``. float16/bfloat16
        are computed in float32.

    Notes
    -----
    Decomposition levels: ``max(dwt_max_level − 3, 1)`` (:func:`wavelet_levels`), mode "symmetric";
    odd sizes are cropped back after the inverse transform as scikit-image does. Each denoised
    channel is clipped to [0, 1] before the renormalisation is undone, and the RGB result clipped
    to [0, 1] again.
    """
    _check_images(images)
    if wavelet not in WAVELETS:
        raise ValueError(f"wavelet must be one of {', '.join(WAVELETS)}; got {wavelet!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be 'soft' or 'hard'; got {mode!r}.")
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a number, got {sigma!r}.") from None
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number ≥ 0, got {sigma}.")
    n, _, height, width = images.shape
    if height < 2 or width < 2:
        raise ValueError(f"images must be at least 2×2 pixels to be wavelet-denoised, got {height}×{width}.")
    if n == 0:
        return images.clone()

    dtype = images.dtype
    x = images if dtype in (torch.float32, torch.float64) else images.float()
    return _denoise_blocks(x, sigma, wavelet, method, mode, ycbcr).to(dtype)


def _denoise_blocks(x: torch.Tensor, sigma: float, wavelet: str, method: str, mode: str, ycbcr: bool) -> torch.Tensor:
    """:func:`_denoise_images` over a float32/float64 batch, in blocks of a few images on the CPU.

    The transform is memory-bound and a block that stays in cache is ~1.5x faster than the whole
    batch at once (bench/bench_denoise.py); each block is still batched over images and channels.
    On a GPU: one block. Under autograd (exact gradient of the defence, issue 14) the same blocks
    go through the same arithmetic without in-place or ``out=`` writes: bit-identical values.
    """
    n, _, height, width = x.shape
    block = n if x.is_cuda else max(1, _CPU_BLOCK_ELEMENTS // (3 * height * width))
    if tracks_grad(x):
        return torch.cat([_denoise_images(x[start:start + block], sigma, wavelet, method, mode, ycbcr, None)
                          for start in range(0, n, block)])
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for start in range(0, n, block):  # each block writes straight into the output (no final cat)
        _denoise_images(x[start:start + block], sigma, wavelet, method, mode, ycbcr, out[start:start + block])
    return out


def _denoise_images(
    x: torch.Tensor, sigma: float, wavelet: str, method: str, mode: str, ycbcr: bool, out: torch.Tensor | None
) -> torch.Tensor:
    """The body of :func:`wavelet_denoise` on one block of (n, 3, H, W) float32/float64 images,
    written into ``out`` (a contiguous block of the same shape), or returned as a new tensor when
    ``out`` is None (the autograd form: same operations, no in-place writes).

    The min-max renormalisation of each YCbCr channel is folded into the transform instead of being
    a pass over the data: the DWT is linear, so thresholding c = (y − lo)/s with σ equals
    thresholding y with σ·s (the offset lo only moves the approximation band, which is not
    thresholded), and clipping c to [0, 1] is clipping y to [lo, hi]. The YCbCr offset cancels in
    the renormalisation as well, so it is never added: y = M·rgb, rgb = M⁻¹·y. The folded form is
    the same function of the input as the textbook steps, so its autograd gradient is theirs: it
    flows through lo and hi both in σ·s and in the clipping bounds (min/max are differentiable
    almost everywhere).
    """
    n, _, height, width = x.shape
    if not ycbcr:
        den, factor = _denoise_channels(x.reshape(n * 3, height, width), sigma, wavelet, method, mode)
        den = den.reshape(n, 3, height, width)
        if out is None:
            return (den * (1.0 / factor) if factor != 1 else den).clamp(0, 1)
        out.copy_(den)
        if factor != 1:
            out.mul_(1.0 / factor)
        return out.clamp_(0, 1)
    ycc = _color_transform(x, _YCBCR_FROM_RGB)
    flat = ycc.view(n, 3, height * width)
    lo = flat.amin(dim=-1)
    hi = flat.amax(dim=-1)
    plane_sigma = (hi - lo).mul(sigma).reshape(n * 3)
    den, factor = _denoise_channels(ycc.view(n * 3, height, width), plane_sigma, wavelet, method, mode)
    # A constant channel (hi = lo) has σ = 0: nothing is thresholded and it comes back as it was.
    m_inv = torch.as_tensor(_RGB_FROM_YCBCR / factor, dtype=x.dtype, device=x.device)
    lower, upper = (lo * factor).reshape(n * 3, 1, 1), (hi * factor).reshape(n * 3, 1, 1)
    if out is None:
        den = torch.minimum(torch.maximum(den, lower), upper)
        return torch.matmul(m_inv, den.reshape(n, 3, height * width)).reshape(n, 3, height, width).clamp(0, 1)
    den = torch.maximum(den, lower, out=den)  # not clamp: see wavelets.shrink
    den = torch.minimum(den, upper, out=den)
    torch.matmul(m_inv, den.reshape(n, 3, height * width), out=out.view(n, 3, height * width))
    return out.clamp_(0, 1)


def jpeg_compress(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG round trip with Pillow, the baseline input transform of paper Table 3.

    Each image is quantised to 8 bits (``round(255·x)`` after clipping to [0, 1]), saved as a
    baseline JPEG at ``quality`` with Pillow's default settings (4:2:0 chroma subsampling), decoded,
    and divided by 255. Pillow works one image
    at a time, so this loops over the batch internally (it is not on the defence's hot path).

    Parameters
    ----------
    images : torch.Tensor, shape (N, 3, H, W)
        RGB images, float in [0, 1], any device.
    quality : int
        JPEG quality, 1 (worst) to 100 (Pillow advises ≤ 95). Default 75, as in the paper.

    Returns
    -------
    torch.Tensor, shape (N, 3, H, W)
        Decoded images, multiples of 1/255, same dtype and device as ``images``.
    """
    from PIL import Image

    _check_images(images)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be a whole number from 1 to 100, got {quality!r}.")
    # Pillow's encode and decode are under half of the time (bench/bench_zoo.py, "codec alone"); the
    # rest is kept small by quantising in place, handing Pillow contiguous 8-bit rows, and skipping a
    # copy-only convert (the same bits).
    as_uint8 = images.detach().float().clamp(0, 1).mul_(255).round_().to(torch.uint8)
    as_uint8 = as_uint8.cpu().permute(0, 2, 3, 1).contiguous().numpy()
    decoded = np.empty_like(as_uint8)
    for i, pixels in enumerate(as_uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer, formats=("JPEG",)) as jpeg:
            decoded[i] = np.asarray(jpeg if jpeg.mode == "RGB" else jpeg.convert("RGB"))
    out = torch.empty(images.shape, dtype=images.dtype, device=images.device)
    return out.copy_(torch.from_numpy(decoded).permute(0, 3, 1, 2)).div_(255)
