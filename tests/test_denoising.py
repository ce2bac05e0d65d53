"""Tests of pd_core.denoising against the SPEC §1.3 oracle (scikit-image), PyWavelets and Pillow.

Every comparison is on real photos (Foolbox's ImageNet samples, scikit-image's chelsea and camera)
unless it checks a formula on random data. float64 inputs must agree with the oracles to 1e-4
(in practice ~1e-15).
"""
from __future__ import annotations

import glob
import io
import math
import os

import numpy as np
import pytest
import pywt
import skimage.color
import skimage.data
import torch
from PIL import Image
from skimage.restoration import denoise_wavelet

from pd_core import denoising, wavelets
from pd_core.denoising import jpeg_compress, wavelet_denoise
from pd_core.wavelets import bayes_threshold, sure_threshold, visu_threshold, wavelet_levels

SIGMA = 0.04
SKIMAGE_METHOD = {"bayes": "BayesShrink", "visu": "VisuShrink"}


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _resize_crop(im: Image.Image, size: int) -> np.ndarray:
    """Model preprocessing: bicubic resize of the short side to 256·size/224, centre crop."""
    im = im.convert("RGB")
    w, h = im.size
    short = 256 * size // 224
    im = im.resize((short, round(h * short / w)) if w < h else (round(w * short / h), short),
                   Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float64) / 255


def _foolbox_files():
    import foolbox

    files = sorted(glob.glob(os.path.join(os.path.dirname(foolbox.__file__), "data", "imagenet_*.jpg")))
    assert len(files) >= 4, "Foolbox's ImageNet samples are missing"
    return files


@pytest.fixture(scope="module")
def photos_224() -> np.ndarray:
    """(6, 224, 224, 3) float64: four Foolbox ImageNet photos, chelsea, and camera (gray as RGB)."""
    images = [_resize_crop(Image.open(f), 224) for f in _foolbox_files()[:4]]
    images.append(_resize_crop(Image.fromarray(skimage.data.chelsea()), 224))
    images.append(_resize_crop(Image.fromarray(skimage.data.camera()), 224))  # Cb, Cr ~ constant
    return np.stack(images)


@pytest.fixture(scope="module")
def photos_299() -> np.ndarray:
    """(2, 299, 299, 3) float64: odd size, as for Inception-v3."""
    return np.stack([_resize_crop(Image.open(f), 299) for f in _foolbox_files()[4:6]])


def _to_torch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def _to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).cpu().double().numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / np.mean((a - b) ** 2))


# --------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------

def spec_oracle(img: np.ndarray, wavelet="db1", method="BayesShrink", mode="soft") -> np.ndarray:
    """SPEC §1.3 oracle, verbatim: skimage on each renormalised YCbCr channel (img (H, W, 3))."""
    ycc = skimage.color.rgb2ycbcr(img)
    for i in range(3):
        lo, hi = ycc[..., i].min(), ycc[..., i].max()
        if hi > lo:
            ch = (ycc[..., i] - lo) / (hi - lo)
            ch = denoise_wavelet(ch, sigma=SIGMA, wavelet=wavelet, mode=mode,
                                 method=method, rescale_sigma=False)
            ycc[..., i] = np.clip(ch, 0, 1) * (hi - lo) + lo
    return np.clip(skimage.color.ycbcr2rgb(ycc), 0, 1)


def sure_risk(x: np.ndarray, t) -> np.ndarray:
    """Stein's unbiased risk estimate of soft thresholding x (unit noise) at each t."""
    ax = np.abs(x.ravel())
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
    return ax.size - 2 * np.sum(ax <= t, axis=1) + np.sum(np.minimum(ax, t) ** 2, axis=1)


def brute_force_sure_threshold(d: np.ndarray, sigma: float) -> float:
    """Minimise SURE by evaluating it directly at t = 0 and at every |x_i| ≤ sqrt(2 log n)."""
    x = d.ravel() / sigma
    t_max = math.sqrt(2 * math.log(x.size))
    candidates = np.concatenate([[0.0], np.abs(x)[np.abs(x) <= t_max]])
    return sigma * candidates[np.argmin(sure_risk(x, candidates))]


def pywt_channel(ch: np.ndarray, sigma: float, wavelet: str, method: str, mode: str) -> np.ndarray:
    """One channel with pywt.wavedecn + pywt.threshold and the thresholds written out in numpy."""
    levels = max(pywt.dwtn_max_level(ch.shape, wavelet) - 3, 1)
    coeffs = pywt.wavedecn(ch, wavelet, mode="symmetric", level=levels)
    out = [coeffs[0]]
    for level in coeffs[1:]:
        new = {}
        for key, d in level.items():
            if method == "bayes":
                t = sigma ** 2 / np.sqrt(max(np.mean(d * d) - sigma ** 2, np.finfo(np.float64).eps))
            elif method == "visu":
                t = sigma * np.sqrt(2 * np.log(ch.size))
            else:
                t = brute_force_sure_threshold(d, sigma)
            new[key] = pywt.threshold(d, value=t, mode=mode)
        out.append(new)
    return pywt.waverecn(out, wavelet)[: ch.shape[0], : ch.shape[1]]


def pywt_oracle(img: np.ndarray, wavelet="db1", method="bayes", mode="soft") -> np.ndarray:
    """The SPEC §1.3 construction (YCbCr, renormalised channels) with :func:`pywt_channel`."""
    ycc = skimage.color.rgb2ycbcr(img)
    for i in range(3):
        lo, hi = ycc[..., i].min(), ycc[..., i].max()
        if hi > lo:
            ch = pywt_channel((ycc[..., i] - lo) / (hi - lo), SIGMA, wavelet, method, mode)
            ycc[..., i] = np.clip(ch, 0, 1) * (hi - lo) + lo
    return np.clip(skimage.color.ycbcr2rgb(ycc), 0, 1)


# --------------------------------------------------------------------------------------------
# The paper's denoiser against the SPEC oracle
# --------------------------------------------------------------------------------------------

def test_matches_spec_oracle_batched_224(photos_224):
    out = wavelet_denoise(_to_torch(photos_224))  # the whole batch in one call
    assert out.dtype == torch.float64 and out.shape == (6, 3, 224, 224)
    ref = np.stack([spec_oracle(img.copy()) for img in photos_224])
    assert np.abs(_to_numpy(out) - ref).max() <= 1e-4


def test_matches_spec_oracle_odd_size_299(photos_299):
    assert wavelet_levels(299, 299, "db1") == 5 and wavelet_levels(224, 224, "db1") == 4
    out = wavelet_denoise(_to_torch(photos_299))
    ref = np.stack([spec_oracle(img.copy()) for img in photos_299])
    assert np.abs(_to_numpy(out) - ref).max() <= 1e-4


def test_sigma_is_not_divided_by_the_channel_range(photos_224):
    """The SPEC trap: σ = 0.04 in renormalised units denoises visibly (PSNR ~30-40 dB), whereas
    today's skimage with convert2ycbcr=True, rescale_sigma=False barely changes the image."""
    x = photos_224[:5]
    out = _to_numpy(wavelet_denoise(_to_torch(x)))
    psnrs = [_psnr(o, i) for o, i in zip(out, x)]
    assert all(25 < p < 50 for p in psnrs), psnrs
    trap = denoise_wavelet(x[0], sigma=SIGMA, mode="soft", channel_axis=-1, convert2ycbcr=True,
                           rescale_sigma=False)
    assert _psnr(np.clip(trap, 0, 1), x[0]) > 60
    assert np.abs(out[0] - trap).max() > 0.05


@pytest.mark.parametrize("wavelet", ["db2", "haar"])
def test_other_wavelets_match_spec_oracle(photos_224, photos_299, wavelet):
    for images in (photos_224[:3], photos_299[:1]):
        out = wavelet_denoise(_to_torch(images), wavelet=wavelet)
        ref = np.stack([spec_oracle(img.copy(), wavelet=wavelet) for img in images])
        assert np.abs(_to_numpy(out) - ref).max() <= 1e-4


@pytest.mark.parametrize("method,mode,wavelet", [
    ("visu", "soft", "db1"), ("visu", "hard", "db1"), ("bayes", "hard", "db1"),
    ("visu", "hard", "db2"), ("bayes", "hard", "db2"),
])
def test_visushrink_and_hard_match_pywt_oracle(photos_224, photos_299, method, mode, wavelet):
    for images in (photos_224[:2], photos_299[:1]):
        out = _to_numpy(wavelet_denoise(_to_torch(images), wavelet=wavelet, method=method, mode=mode))
        ref = np.stack([pywt_oracle(img.copy(), wavelet, method, mode) for img in images])
        assert np.abs(out - ref).max() <= 1e-4
        # and scikit-image agrees with the pywt oracle (the oracle itself is right)
        sk = spec_oracle(images[0].copy(), wavelet, SKIMAGE_METHOD[method], mode)
        assert np.abs(sk - ref[0]).max() <= 1e-10


def test_methods_and_modes_differ(photos_224):
    """Each option changes the result, in the expected direction (VisuShrink smooths most)."""
    x = _to_torch(photos_224[:2])
    results = {(m, mo): _to_numpy(wavelet_denoise(x, method=m, mode=mo))
               for m in ("bayes", "visu", "sure") for mo in ("soft", "hard")}
    keys = list(results)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert np.abs(results[a] - results[b]).max() > 1e-3, (a, b)
    img = photos_224[:2]
    assert _psnr(results["visu", "soft"], img) < _psnr(results["bayes", "soft"], img)
    assert _psnr(results["bayes", "soft"], img) < _psnr(results["bayes", "hard"], img)


def test_rgb_path_matches_skimage_per_channel(photos_224, photos_299):
    for images in (photos_224[:3], photos_299[:1]):
        out = _to_numpy(wavelet_denoise(_to_torch(images), ycbcr=False))
        ref = np.stack([
            np.clip(np.stack([denoise_wavelet(img[..., c], sigma=SIGMA, wavelet="db1", mode="soft",
                                              method="BayesShrink", rescale_sigma=False)
                              for c in range(3)], axis=-1), 0, 1)
            for img in images
        ])
        assert np.abs(out - ref).max() <= 1e-4
    # no renormalisation on this path: it differs from the YCbCr path
    assert np.abs(out - _to_numpy(wavelet_denoise(_to_torch(images)))).max() > 1e-2


def test_float32_close_to_float64_oracle(photos_224):
    x = photos_224[:3]
    out = wavelet_denoise(_to_torch(x).float())
    assert out.dtype == torch.float32
    ref = np.stack([spec_oracle(img.copy()) for img in x])
    assert np.abs(_to_numpy(out) - ref).max() < 1e-3


def test_batch_blocks_do_not_mix_images(photos_224):
    """10 images span two CPU blocks; each image's result must be the one it gets alone."""
    x = _to_torch(np.concatenate([photos_224, photos_224[:4, ::-1]])).float()
    assert x.shape[0] * 3 * 224 * 224 > denoising._CPU_BLOCK_ELEMENTS
    batched = wavelet_denoise(x)
    alone = torch.cat([wavelet_denoise(x[i:i + 1]) for i in range(x.shape[0])])
    assert torch.allclose(batched, alone, atol=1e-6, rtol=0)


def test_constant_image_is_unchanged():
    """Every YCbCr channel is constant: skimage skips them all, so the image comes back."""
    x = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)[None, :, None, None].expand(2, 3, 16, 16)
    out = wavelet_denoise(x.contiguous())
    assert torch.allclose(out, x, atol=1e-12, rtol=0)


def test_small_sizes_and_empty_batch():
    rng = np.random.default_rng(3)
    imgs = rng.random((2, 7, 5, 3))
    out = _to_numpy(wavelet_denoise(_to_torch(imgs)))
    ref = np.stack([spec_oracle(img.copy()) for img in imgs])
    assert np.abs(out - ref).max() <= 1e-4
    assert wavelet_denoise(torch.zeros(0, 3, 8, 8)).shape == (0, 3, 8, 8)


# --------------------------------------------------------------------------------------------
# The transforms and thresholds themselves
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(224, 224), (299, 299), (33, 64), (7, 5)])
def test_haar_fast_path_equals_pywt(shape):
    x = np.random.default_rng(0).random(shape)
    levels = wavelet_levels(*shape, "db1")
    ref = pywt.wavedec2(x, "db1", mode="symmetric", level=levels)
    ours = wavelets.haar_forward(torch.from_numpy(x)[None], levels)
    assert np.abs(ours[0][0].numpy() - ref[0]).max() < 1e-12
    for mine, theirs in zip(ours[1:], ref[1:]):
        for m, t in zip(mine, theirs):  # same order (rows, columns, diagonal); signs may differ
            m = m[0].numpy()
            assert min(np.abs(m - t).max(), np.abs(m + t).max()) < 1e-12
    rec = wavelets.haar_inverse(ours)[0, : shape[0], : shape[1]].numpy()
    assert np.abs(rec - x).max() < 1e-12


def test_ptwt_path_gives_the_same_db1_result(photos_299, monkeypatch):
    x = _to_torch(photos_299[:1])
    fast = wavelet_denoise(x, method="sure")
    monkeypatch.setattr(denoising, "_HAAR_FAST_PATH", False)
    assert torch.allclose(wavelet_denoise(x, method="sure"), fast, atol=1e-10, rtol=0)


def test_threshold_formulas():
    rng = np.random.default_rng(1)
    d = rng.normal(0, 0.1, (3, 4, 20, 30))
    t = bayes_threshold(torch.from_numpy(d), SIGMA).numpy()
    assert t.shape == (3, 4)
    mean_sq = (d ** 2).mean(axis=(-2, -1))
    np.testing.assert_allclose(t, SIGMA ** 2 / np.sqrt(mean_sq - SIGMA ** 2), rtol=1e-12)
    # signal variance below σ²: clamped to eps, so everything is thresholded away
    tiny = bayes_threshold(torch.full((1, 4, 4), 0.01, dtype=torch.float64), SIGMA)
    assert tiny.item() == pytest.approx(SIGMA ** 2 / math.sqrt(np.finfo(np.float64).eps))
    assert visu_threshold(224 * 224, SIGMA) == pytest.approx(SIGMA * math.sqrt(2 * math.log(224 * 224)))


def test_sure_threshold_is_the_brute_force_minimiser():
    rng = np.random.default_rng(2)
    sigma = 0.05
    n_h, n_w = 12, 15
    noise = rng.normal(0, sigma, (6, n_h, n_w))
    signal = np.zeros_like(noise)
    signal[0] = rng.normal(0, 0.5, (n_h, n_w))         # dense, strong signal: threshold near 0
    signal[1:3, :3] = rng.normal(0, 1.0, (2, 3, n_w))  # sparse signal
    signal[3] = rng.normal(0, 0.05, (n_h, n_w))       # comparable to the noise
    # signal[4:]: pure noise: SURE prefers a large threshold
    d = signal + noise
    ours = sure_threshold(torch.from_numpy(d), sigma).numpy()
    t_max = math.sqrt(2 * math.log(n_h * n_w))
    for band, t in zip(d, ours):
        brute = brute_force_sure_threshold(band, sigma)
        assert t == pytest.approx(brute, rel=1e-12, abs=1e-15)
        grid = np.linspace(0, t_max, 4001)
        assert sure_risk(band / sigma, t / sigma)[0] <= sure_risk(band / sigma, grid).min() + 1e-9
    assert ours[0] < 0.5 * sigma
    assert ours[4] > 1.0 * sigma and ours[5] > 1.0 * sigma
    # A tiny sub-band whose unconstrained SURE minimiser (the largest |x|) lies above the cap
    # sqrt(2 log n) of Donoho & Johnstone's definition: the cap must hold.
    small = np.array([[[1.03336033, 1.3450406], [1.47228693, 1.71908556]]])
    cap = math.sqrt(2 * math.log(4))
    assert np.abs(small).max() > cap and np.argmin(sure_risk(small, np.abs(small).ravel())) == 3
    t_small = sure_threshold(torch.from_numpy(small), 1.0).item()
    assert t_small <= cap and t_small == pytest.approx(brute_force_sure_threshold(small, 1.0))
    # all coefficients huge: SURE(t) = n − 2·#{|x| ≤ t} + Σ min(|x|, t)² is minimal at t = 0
    assert sure_threshold(torch.full((1, 5, 5), 10.0, dtype=torch.float64), 1.0).item() == 0.0


def test_thresholds_take_one_sigma_per_sub_band():
    """The denoiser folds each channel's renormalisation and each level's scale into σ, so the
    thresholds get one σ per sub-band: it must equal calling them band by band with a float."""
    rng = np.random.default_rng(3)
    d = torch.from_numpy(rng.normal(0, 0.2, (5, 16, 18)))
    sigmas = torch.tensor([0.0, 0.01, 0.04, 0.1, 0.3], dtype=torch.float64)
    for fn in (bayes_threshold, sure_threshold):
        together = fn(d, sigmas)
        alone = torch.stack([fn(d[i:i + 1], float(sigmas[i]))[0] for i in range(5)])
        torch.testing.assert_close(together, alone, rtol=1e-12, atol=0)
    assert bayes_threshold(d, sigmas)[0] == 0 and sure_threshold(d, sigmas)[0] == 0
    torch.testing.assert_close(visu_threshold(288, sigmas), sigmas * math.sqrt(2 * math.log(288)))


def test_renormalisation_folded_into_sigma_keeps_constant_channels_exact():
    """A constant channel (σ·range = 0) must come back as it was (up to the colour round trip's
    rounding), and a constant image unchanged."""
    grey = torch.full((2, 3, 32, 40), 0.25, dtype=torch.float64)
    assert (wavelet_denoise(grey) - grey).abs().max() < 1e-12
    x = torch.from_numpy(np.random.default_rng(4).random((1, 3, 32, 40)))
    x[:, :] = x[:, :1]  # R = G = B: Cb and Cr are constant, Y is not
    out = wavelet_denoise(x)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-12) and torch.allclose(out[:, 0], out[:, 2], atol=1e-12)
    assert (out - x).abs().max() > 1e-3  # Y was denoised


def test_sureshrink_denoise_matches_pywt_oracle(photos_224):
    crops = photos_224[:2, 80:144, 60:124]  # 64×64: 3 levels, small enough for the brute force
    out = _to_numpy(wavelet_denoise(_to_torch(crops), method="sure"))
    ref = np.stack([pywt_oracle(img.copy(), "db1", "sure", "soft") for img in crops])
    assert np.abs(out - ref).max() <= 1e-4


# --------------------------------------------------------------------------------------------
# JPEG baseline, errors, devices
# --------------------------------------------------------------------------------------------

def test_jpeg_equals_direct_pillow_round_trip(photos_224):
    as_uint8 = np.round(photos_224[:3] * 255).astype(np.uint8)
    x = _to_torch(as_uint8.astype(np.float64) / 255).float()
    out = jpeg_compress(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    for i, pixels in enumerate(as_uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        got = out[i].permute(1, 2, 0).numpy() * 255
        assert np.array_equal(np.round(got).astype(np.uint8), expected)
        assert np.abs(got - np.round(got)).max() < 1e-3  # multiples of 1/255
    assert np.abs(out.numpy() - x.numpy()).max() > 0.02  # JPEG does change the image
    assert not torch.equal(jpeg_compress(x, quality=10), out)


@pytest.mark.parametrize("call,kind", [
    (lambda: wavelet_denoise(np.zeros((1, 3, 8, 8))), TypeError),
    (lambda: wavelet_denoise(torch.zeros(3, 8, 8)), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 4, 8, 8)), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), TypeError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 1, 8)), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 8, 8), wavelet="sym9"), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 8, 8), method="BayesShrink"), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 8, 8), mode="garrote"), ValueError),
    (lambda: wavelet_denoise(torch.zeros(1, 3, 8, 8), sigma=-1), ValueError),
    (lambda: jpeg_compress(torch.zeros(1, 3, 8, 8), quality=0), ValueError),
    (lambda: jpeg_compress(torch.zeros(1, 3, 8, 8), quality=75.5), ValueError),
])
def test_bad_input_gets_a_plain_error(call, kind):
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message


@pytest.mark.gpu
def test_gpu_matches_cpu(photos_224, photos_299):
    for images in (photos_224[:4], photos_299[:1]):
        x = _to_torch(images).float()
        for kwargs in ({}, {"wavelet": "db2"}, {"method": "sure"}, {"method": "visu", "mode": "hard"}):
            cpu = wavelet_denoise(x, **kwargs)
            gpu = wavelet_denoise(x.cuda(), **kwargs)
            assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
            assert (gpu.cpu() - cpu).abs().max().item() < 1e-4
        assert jpeg_compress(x.cuda()).device.type == "cuda"
