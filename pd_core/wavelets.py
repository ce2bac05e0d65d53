"""Wavelet thresholds and the fast 2-D Haar transform used by the denoiser (paper §7, SPEC §1.3).

Split out of :mod:`pd_core.denoising` (every name stays importable from there). Everything here is
batched over leading axes and written without in-place writes to tensors that autograd tracks, so
the denoiser can be differentiated (issue 14): BayesShrink and soft thresholding are
differentiable almost everywhere, including through the data-dependent threshold, and the Haar
transform is linear. Where the input does not require gradients the fast in-place/``out=`` forms
are used; both forms perform the same floating-point operations, so their results are bit-identical.
"""
from __future__ import annotations

import math

import torch

__all__ = ["bayes_threshold", "visu_threshold", "sure_threshold", "wavelet_levels", "tracks_grad", "as_sigma", "shrink",
           "haar_forward", "haar_inverse", "haar_forward_scaled", "haar_inverse_scaled", "HAAR_OUTPUT_SCALE"]


def tracks_grad(tensor: torch.Tensor) -> bool:
    """True when autograd records operations on ``tensor`` (then no in-place or ``out=`` writes)."""
    return torch.is_grad_enabled() and tensor.requires_grad

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
    var = as_sigma(sigma, details).square()
    # ||d||² / n in one pass without a squared copy of the sub-band (out of place: the norm's
    # backward needs the norm; the values are the same as in place).
    mean_sq = torch.linalg.vector_norm(details, dim=(-2, -1)).square().div(details.shape[-2] * details.shape[-1])
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

    Parameters and returns are those of :func:`bayes_threshold` (``details`` (..., h, w), ``sigma``
    float or (...,), one threshold per sub-band); a sub-band with σ = 0 gets threshold 0.
    """
    lead = details.shape[:-2]
    sigma = as_sigma(sigma, details).expand(lead)
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


def as_sigma(sigma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """σ as a tensor on ``like``'s device and dtype (a float becomes a 0-d tensor)."""
    return torch.as_tensor(sigma, dtype=like.dtype, device=like.device)


def shrink(d: torch.Tensor, t: torch.Tensor, mode: str, inplace: bool = True) -> torch.Tensor:
    """Soft ``sign(d)·max(|d| − T, 0)`` or hard ``d·[|d| ≥ T]`` (pywt.threshold semantics).

    ``inplace=True`` overwrites ``d`` (a temporary sub-band of the transform); ``inplace=False``
    returns a new tensor with the same values, for autograd (the soft rule's gradient reaches both
    ``d`` and, through the clipped coefficients, the threshold ``T``)."""
    t = t[..., None, None]
    if mode == "soft":
        # d − clamp(d, −T, T) is sign(d)·max(|d| − T, 0). minimum/maximum rather than clamp: with
        # tensor bounds torch.clamp is several times slower on the CPU (not vectorised).
        clipped = torch.minimum(d, t)
        if not inplace:
            return d - torch.maximum(clipped, -t)
        return d.sub_(torch.maximum(clipped, -t, out=clipped))
    if not inplace:
        return d.masked_fill(d.abs() < t, 0)
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
# returns the signal multiplied by HAAR_OUTPUT_SCALE. The thresholds are scale-equivariant
# (T(c·d, c·σ) = c·T(d, σ) for BayesShrink, VisuShrink and SURE; soft and hard thresholding
# commute with c > 0), so each level is thresholded with σ·2**(2 − l) and the result is the
# orthonormal one; the output factor is folded into the caller's final colour transform.
HAAR_OUTPUT_SCALE = 4.0


def haar_forward_scaled(x: torch.Tensor, levels: int):
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


def haar_inverse_scaled(coeffs) -> torch.Tensor:
    """Inverse of :func:`haar_forward_scaled` times ``HAAR_OUTPUT_SCALE``; the approximation is
    cropped to each finer level's size as ``pywt.waverecn`` trims the extra sample of odd sizes."""
    a = coeffs[0]
    for d_rows, d_cols, d_diag in coeffs[1:]:
        h, w = d_rows.shape[-2:]
        a = a[..., :h, :w]
        lead = a.shape[:-2]
        if tracks_grad(a) or any(tracks_grad(d) for d in (d_rows, d_cols, d_diag)):
            # The same sums and differences, interleaved by stack + reshape (``out=`` writes are
            # not differentiable).
            row_sum = torch.stack((a + d_cols, a - d_cols), dim=-1).reshape(*lead, h, 2 * w)
            row_diff = torch.stack((d_rows + d_diag, d_rows - d_diag), dim=-1).reshape(*lead, h, 2 * w)
            a = torch.stack((row_sum + row_diff, row_sum - row_diff), dim=-2).reshape(*lead, 2 * h, 2 * w)
            continue
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


def haar_forward(x: torch.Tensor, levels: int):
    """Orthonormal 2-D Haar DWT, equal to ``pywt.wavedec2(x, "db1", mode="symmetric")`` (for tests
    and analysis; the denoiser uses the scaled form directly)."""
    coeffs, scales = haar_forward_scaled(x, levels)
    return [coeffs[0] / scales[0]] + [tuple(d / c for d in level) for level, c in zip(coeffs[1:], scales)]


def haar_inverse(coeffs) -> torch.Tensor:
    """Inverse of :func:`haar_forward` (orthonormal)."""
    levels = len(coeffs) - 1
    scales = [2.0 ** (2 - level) for level in range(levels, 0, -1)]
    scaled = [coeffs[0] * scales[0]] + [tuple(d * c for d in level) for level, c in zip(coeffs[1:], scales)]
    return haar_inverse_scaled(scaled) / HAAR_OUTPUT_SCALE
