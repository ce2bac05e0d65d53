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
known powers of two per level that the thresholds absorb (see ``_HAAR_OUTPUT_SCALE``). Steps 2 and 4's
renormalisation is folded into σ (one σ per channel) instead of being passes over the data.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch

__all__ = [
    "wavelet_denoise",
    "jpeg_compress",
    "bayes_threshold",
    "visu_threshold",
    "sure_threshold",
    "wavelet_levels",
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


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def bayes_threshold(details: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """BayesShrink threshold of each detail sub-band (paper §7, eq. 6; Chang, Yu & Vetterli 2000).

    ``T = σ² / sqrt(max(mean(d²) − σ², ε))``, with ε the machine epsilon of ``details``' dtype,
    exactly as scikit-image's ``_bayes_thresh`` (``mean(d²)`` is the variance of the zero-mean
    sub-band, so ``mean(d²) − σ²`` estimates the variance of the clean signal).

    Parameters
    ----------
    details : torch.Tensor, shape (..., h, w)
        Detail coefficients; the last two axes are one sub-band, leading axes are batched.
    sigma : float or torch.Tensor of shape (...,)
        Noise standard deviation, in the units of the coefficients (≥ 0); a tensor gives each
        sub-band its own σ.

    Returns
    -------
    torch.Tensor, shape (...,)
        One threshold per sub-band, same dtype and device as ``details``.
    """
    var = _as_sigma(sigma, details).square()
    # ||d||² / n in one pass without a squared copy of the sub-band.
    mean_sq = torch.linalg.vector_norm(details, dim=(-2, -1)).square_().div_(details.shape[-2] * details.shape[-1])
    eps = torch.finfo(details.dtype).eps
    return var / torch.sqrt((mean_sq - var).clamp_min(eps))


def visu_threshold(num_pixels: int, sigma: float | torch.Tensor) -> float | torch.Tensor:
    """VisuShrink "universal" threshold ``σ·sqrt(2·log N)`` (Donoho & Johnstone 1994).

    ``N`` is the number of pixels of the channel being denoised (scikit-image's ``img.size``);
    the same threshold applies to every detail sub-band. Removes Gaussian noise of standard
    deviation σ with high probability, at the cost of a smoother image than BayesShrink.
    """
    factor = math.sqrt(2.0 * math.log(num_pixels))
    return sigma * factor if isinstance(sigma, torch.Tensor) else float(sigma) * factor


def sure_threshold(details: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """SUREShrink threshold of each detail sub-band (Donoho & Johnstone 1995).

    With ``x = d / σ`` (n coefficients), Stein's unbiased estimate of the risk of soft thresholding
    at ``t`` is ``SURE(t) = n − 2·#{i : |x_i| ≤ t} + Σ_i min(|x_i|, t)²``. Between two consecutive
    ``|x_i|`` it is increasing in ``t``, so its minimum over ``[0, sqrt(2·log n)]`` (the range of
    Donoho & Johnstone's definition, capped by the sub-band's universal threshold) is attained at
    ``t = 0`` or at one of the ``|x_i|`` in that range. Vectorised: sort ``|x|`` per sub-band, get
    every candidate's SURE from cumulative sums, take the argmin. The returned threshold is
    ``σ·t*``. Their "hybrid" rule (switching to the universal threshold for very sparse sub-bands)
    is not applied: this is the plain SURE minimiser. SURE is derived for soft thresholding; with
    ``mode="hard"`` the same threshold is used.

    Parameters
    ----------
    details : torch.Tensor, shape (..., h, w)
        Detail coefficients; the last two axes are one sub-band, leading axes are batched.
    sigma : float or torch.Tensor of shape (...,)
        Noise standard deviation, in the units of the coefficients (≥ 0); a tensor gives each
        sub-band its own σ (a sub-band with σ = 0 gets threshold 0).

    Returns
    -------
    torch.Tensor, shape (...,)
        One threshold per sub-band, same dtype and device as ``details``.
    """
    lead = details.shape[:-2]
    sigma = _as_sigma(sigma, details).expand(lead)
    safe_sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    x = details.reshape(*lead, -1).abs() / safe_sigma[..., None]
    n = x.shape[-1]
    a, _ = torch.sort(x, dim=-1)  # ascending |x|
    a2 = a.square()
    k = torch.arange(1, n + 1, device=x.device, dtype=x.dtype)  # #{|x_i| <= a_k}, ties aside
    # SURE at t = a_k: n - 2k + sum_{i<=k} a_i^2 + (n - k) a_k^2 (a tie's last index is its exact
    # count and has the smallest value, so the argmin is unaffected by ties).
    risk = n - 2.0 * k + torch.cumsum(a2, dim=-1) + (n - k) * a2
    t_max = math.sqrt(2.0 * math.log(n)) if n > 1 else 0.0
    risk = torch.where(a <= t_max, risk, torch.full_like(risk, math.inf))
    # t = 0: SURE(0) = n - 2·#{x_i == 0}; equal to the candidate at the last zero when zeros exist,
    # and n otherwise, so comparing with n covers it.
    best_risk, best_k = risk.min(dim=-1)
    t_star = torch.gather(a, -1, best_k.unsqueeze(-1)).squeeze(-1)
    t_star = torch.where((best_risk < n) & (sigma > 0), t_star, torch.zeros_like(t_star))
    return t_star * sigma


def _as_sigma(sigma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """σ as a tensor on ``like``'s device and dtype (a float becomes a 0-d tensor)."""
    return torch.as_tensor(sigma, dtype=like.dtype, device=like.device)


def _threshold_(d: torch.Tensor, t: torch.Tensor, mode: str) -> torch.Tensor:
    """Soft ``sign(d)·max(|d| − T, 0)`` or hard ``d·[|d| ≥ T]`` (pywt.threshold semantics), in
    place on ``d`` (a temporary sub-band of the transform)."""
    t = t[..., None, None]
    if mode == "soft":
        # d − clamp(d, −T, T) is sign(d)·max(|d| − T, 0). minimum/maximum rather than clamp: with
        # tensor bounds torch.clamp is several times slower on the CPU (not vectorised).
        clipped = torch.minimum(d, t)
        return d.sub_(torch.maximum(clipped, -t, out=clipped))
    return d.masked_fill_(d.abs() < t, 0)


# --------------------------------------------------------------------------------------------
# Discrete wavelet transforms (batched over the leading axes, last two axes are the image)
# --------------------------------------------------------------------------------------------

def wavelet_levels(height: int, width: int, wavelet: str = "db1") -> int:
    """Decomposition levels used: ``max(pywt.dwtn_max_level((H, W), wavelet) − 3, 1)``.

    scikit-image skips the three coarsest scales (224×224 with db1: 7 possible, 4 used;
    299×299: 8 possible, 5 used).
    """
    import pywt

    return max(pywt.dwtn_max_level((height, width), pywt.Wavelet(wavelet)) - 3, 1)


# The fast Haar path leaves out the 1/2 factors of the orthonormal transform (one pass over the
# data per factor and level): level l's detail sub-bands (l = 1 finest) come out multiplied by
# 2**(2 - l), the returned approximation carries the coarsest level's factor, and the inverse
# returns the signal multiplied by _HAAR_OUTPUT_SCALE. The thresholds are scale-equivariant
# (T(c·d, c·σ) = c·T(d, σ) for BayesShrink, VisuShrink and SURE; soft and hard thresholding
# commute with c > 0), so each level is thresholded with σ·2**(2 − l) and the result is the
# orthonormal one; the output factor is folded into the caller's final colour transform.
_HAAR_OUTPUT_SCALE = 4.0


def _haar_forward_scaled(x: torch.Tensor, levels: int):
    """2-D Haar DWT without normalisation factors (see above) -> ``(coeffs, scales)``.

    ``coeffs`` is ``[approximation, (d1, d2, d3) coarsest, ..., (d1, d2, d3) finest]`` like ptwt;
    ``scales[j]`` is the factor of ``coeffs[j + 1]`` relative to ``pywt.wavedec2(x, "db1",
    mode="symmetric")`` (and ``scales[0]`` also that of the approximation). An odd axis is extended
    by repeating its last sample (PyWavelets' symmetric extension by one sample), which gives
    ``ceil(n/2)`` coefficients as PyWavelets does. The order of the three details matches
    PyWavelets; their signs may differ, which thresholds do not see.
    """
    details = []
    a = x
    for level in range(1, levels + 1):
        if a.shape[-2] % 2:
            a = torch.cat([a, a[..., -1:, :]], dim=-2)
        if a.shape[-1] % 2:
            a = torch.cat([a, a[..., :, -1:]], dim=-1)
        lead, (h, w) = a.shape[:-2], a.shape[-2:]
        # Separable: sums and differences of row pairs (contiguous rows, vectorised), then of
        # column pairs. With p, q / r, s the 2×2 block's rows: a = p+q+r+s, rows = p+q−r−s,
        # columns = p−q+r−s, diagonal = p−q−r+s (twice the orthonormal coefficients).
        pairs = a.reshape(*lead, h // 2, 2, w)
        even, odd = pairs[..., 0, :], pairs[..., 1, :]
        row_sum, row_diff = even + odd, even - odd
        s0, s1 = row_sum[..., 0::2], row_sum[..., 1::2]
        d0, d1 = row_diff[..., 0::2], row_diff[..., 1::2]
        details.append((d0 + d1, s0 - s1, d0 - d1))
        a = s0 + s1
        if level < levels:
            a.mul_(0.25)  # the next level's input at half the scale of this level's details
    scales = [2.0 ** (2 - level) for level in range(levels, 0, -1)]
    return [a] + details[::-1], scales


def _haar_inverse_scaled(coeffs) -> torch.Tensor:
    """Inverse of :func:`_haar_forward_scaled` times ``_HAAR_OUTPUT_SCALE``; the approximation is
    cropped to each finer level's size as ``pywt.waverecn`` trims the extra sample of odd sizes."""
    a = coeffs[0]
    for d_rows, d_cols, d_diag in coeffs[1:]:
        h, w = d_rows.shape[-2:]
        a = a[..., :h, :w]
        lead = a.shape[:-2]
        # Column pairs first (written interleaved through strided outputs, no stack + reshape
        # copies), then row pairs into contiguous rows of the output.
        row_sum = a.new_empty(*lead, h, 2 * w)
        row_diff = a.new_empty(*lead, h, 2 * w)
        torch.add(a, d_cols, out=row_sum[..., 0::2])
        torch.sub(a, d_cols, out=row_sum[..., 1::2])
        torch.add(d_rows, d_diag, out=row_diff[..., 0::2])
        torch.sub(d_rows, d_diag, out=row_diff[..., 1::2])
        out = a.new_empty(*lead, h, 2, 2 * w)
        torch.add(row_sum, row_diff, out=out[..., 0, :])
        torch.sub(row_sum, row_diff, out=out[..., 1, :])
        a = out.view(*lead, 2 * h, 2 * w)
    return a


def _haar_forward(x: torch.Tensor, levels: int):
    """Orthonormal 2-D Haar DWT, equal to ``pywt.wavedec2(x, "db1", mode="symmetric")`` (for tests
    and analysis; the denoiser uses the scaled form directly)."""
    coeffs, scales = _haar_forward_scaled(x, levels)
    return [coeffs[0] / scales[0]] + [tuple(d / c for d in level) for level, c in zip(coeffs[1:], scales)]


def _haar_inverse(coeffs) -> torch.Tensor:
    """Inverse of :func:`_haar_forward` (orthonormal)."""
    levels = len(coeffs) - 1
    scales = [2.0 ** (2 - level) for level in range(levels, 0, -1)]
    scaled = [coeffs[0] * scales[0]] + [tuple(d * c for d in level) for level, c in zip(coeffs[1:], scales)]
    return _haar_inverse_scaled(scaled) / _HAAR_OUTPUT_SCALE


def _dwt(x: torch.Tensor, wavelet: str, levels: int):
    """``(coeffs, scales)``: the DWT of ``x`` and the factor of each detail level (see above)."""
    if _HAAR_FAST_PATH and wavelet in ("db1", "haar"):
        return _haar_forward_scaled(x, levels)
    import ptwt

    coeffs = ptwt.wavedec2(x, wavelet, mode="symmetric", level=levels)
    return [coeffs[0]] + [tuple(level) for level in coeffs[1:]], [1.0] * levels


def _idwt(coeffs, wavelet: str) -> tuple[torch.Tensor, float]:
    """``(signal × factor, factor)``: the inverse DWT of :func:`_dwt`'s coefficients."""
    if _HAAR_FAST_PATH and wavelet in ("db1", "haar"):
        return _haar_inverse_scaled(coeffs), _HAAR_OUTPUT_SCALE
    import ptwt

    return ptwt.waverec2([coeffs[0]] + [tuple(level) for level in coeffs[1:]], wavelet), 1.0


def _denoise_channels(channels: torch.Tensor, sigma: float | torch.Tensor, wavelet: str, method: str,
                      mode: str) -> tuple[torch.Tensor, float]:
    """Wavelet-threshold every (H, W) plane of ``channels`` (B, H, W) -> ``(denoised × factor,
    factor)``, no clipping. ``sigma``: a float or one σ per plane (B,). The input's sub-bands are
    thresholded in place (``channels`` itself is left as it is)."""
    height, width = channels.shape[-2:]
    coeffs, scales = _dwt(channels, wavelet, wavelet_levels(height, width, wavelet))
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.reshape(channels.shape[:-2])
    for level, factor in zip(coeffs[1:], scales):  # the approximation band is left untouched
        level_sigma = sigma * factor
        if method == "visu":
            t = visu_threshold(height * width, level_sigma)
            t = _as_sigma(t, channels).expand(channels.shape[:-2])
        for d in level:
            if method == "bayes":
                t = bayes_threshold(d, level_sigma)
            elif method == "sure":
                t = sure_threshold(d, level_sigma)
            _threshold_(d, t, mode)
    den, factor = _idwt(coeffs, wavelet)
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
    # On the CPU the batch goes through in blocks of a few images: the transform is memory-bound
    # and a block that stays in cache is ~1.5x faster than the whole batch at once (bench/
    # bench_denoise.py). Each block is still batched over images and channels. On a GPU: one block.
    if x.is_cuda:
        block = n
    else:
        block = max(1, _CPU_BLOCK_ELEMENTS // (3 * height * width))
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for start in range(0, n, block):  # each block writes straight into the output (no final cat)
        _denoise_images(x[start:start + block], sigma, wavelet, method, mode, ycbcr, out[start:start + block])
    return out.to(dtype)


def _denoise_images(
    x: torch.Tensor, sigma: float, wavelet: str, method: str, mode: str, ycbcr: bool, out: torch.Tensor
) -> torch.Tensor:
    """The body of :func:`wavelet_denoise` on one block of (n, 3, H, W) float32/float64 images,
    written into ``out`` (a contiguous block of the same shape)."""
    n, _, height, width = x.shape
    if not ycbcr:
        den, factor = _denoise_channels(x.reshape(n * 3, height, width), sigma, wavelet, method, mode)
        out.copy_(den.reshape(n, 3, height, width))
        if factor != 1:
            out.mul_(1.0 / factor)
        return out.clamp_(0, 1)
    # The min-max renormalisation of each YCbCr channel is folded into the transform instead of
    # being a pass over the data: the DWT is linear, so thresholding c = (y − lo)/s with σ equals
    # thresholding y with σ·s (the offset lo only moves the approximation band, which is not
    # thresholded), and clipping c to [0, 1] is clipping y to [lo, hi]. The YCbCr offset cancels in
    # the renormalisation as well, so it is never added: y = M·rgb, rgb = M⁻¹·y.
    ycc = _color_transform(x, _YCBCR_FROM_RGB)
    flat = ycc.view(n, 3, height * width)
    lo = flat.amin(dim=-1)
    hi = flat.amax(dim=-1)
    plane_sigma = (hi - lo).mul_(sigma).reshape(n * 3)
    den, factor = _denoise_channels(ycc.view(n * 3, height, width), plane_sigma, wavelet, method, mode)
    # A constant channel (hi = lo) has σ = 0: nothing is thresholded and it comes back as it was.
    den = torch.maximum(den, (lo * factor).reshape(n * 3, 1, 1), out=den)  # not clamp: see _threshold_
    den = torch.minimum(den, (hi * factor).reshape(n * 3, 1, 1), out=den)
    m_inv = torch.as_tensor(_RGB_FROM_YCBCR / factor, dtype=x.dtype, device=x.device)
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
    as_uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    as_uint8 = as_uint8.permute(0, 2, 3, 1).cpu().numpy()
    decoded = np.empty_like(as_uint8)
    for i, pixels in enumerate(as_uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as jpeg:
            decoded[i] = np.asarray(jpeg.convert("RGB"))
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype)
    return out / 255
