"""Benchmark: batched ``pd_core.wavelet_denoise`` against the per-image scikit-image oracle (SPEC §1.3).

64 photos from ../shared/imagenet-dev (bicubic resize of the short side to 256, centre crop 224),
float32, the paper's settings (σ = 0.04, db1, BayesShrink, soft, YCbCr). Prints ms/image for the
oracle loop (``skimage.color.rgb2ycbcr`` + per-channel ``denoise_wavelet(..., rescale_sigma=False)``),
for ``wavelet_denoise`` with its reshape-based Haar fast path, and for ``wavelet_denoise`` forced
through ``ptwt`` (the general path, used for db2), with ratios against the oracle run in the same
process. Also checks that all three agree.

    PD_THREADS=2 python bench/bench_denoise.py [--n 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pd_core import denoising  # noqa: E402
from pd_core.denoising import wavelet_denoise  # noqa: E402

DEV_DIR = ROOT.parent / "shared" / "imagenet-dev"


def load_batch(n: int, size: int = 224) -> np.ndarray:
    """(n, size, size, 3) float32 in [0, 1]: resize short side to 256 (bicubic), centre crop."""
    with open(DEV_DIR / "labels.csv", newline="") as f:
        files = [row["file"] for row in csv.DictReader(f)][:n]
    images = []
    for name in files:
        with Image.open(DEV_DIR / name) as im:
            im = im.convert("RGB")
            w, h = im.size
            short = 256 * size // 224
            im = im.resize((short, round(h * short / w)) if w < h else (round(w * short / h), short),
                           Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            images.append(np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255)
    return np.stack(images)


def oracle(img: np.ndarray) -> np.ndarray:
    """SPEC §1.3 oracle on one (H, W, 3) image."""
    import skimage.color
    from skimage.restoration import denoise_wavelet

    ycc = skimage.color.rgb2ycbcr(img)
    for i in range(3):
        lo, hi = ycc[..., i].min(), ycc[..., i].max()
        if hi > lo:
            ch = (ycc[..., i] - lo) / (hi - lo)
            ch = denoise_wavelet(ch, sigma=0.04, wavelet="db1", mode="soft",
                                 method="BayesShrink", rescale_sigma=False)
            ycc[..., i] = np.clip(ch, 0, 1) * (hi - lo) + lo
    return np.clip(skimage.color.ycbcr2rgb(ycc), 0, 1)


def best_times(fns: dict, repeats: int) -> dict:
    """Best wall time (s) of each function over ``repeats`` rounds, after one warm-up each.

    The functions are run in turn within each round, so load from other processes on a shared
    machine affects all of them alike.
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def _ptwt_path(x: torch.Tensor) -> torch.Tensor:
    """wavelet_denoise with the Haar fast path switched off (db1 through ptwt)."""
    denoising._HAAR_FAST_PATH = False
    try:
        return wavelet_denoise(x)
    finally:
        denoising._HAAR_FAST_PATH = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = int(os.environ.get("PD_THREADS", "2"))
    torch.set_num_threads(threads)
    from pd_core.runtime import keep_freed_memory

    keep_freed_memory()  # as every entry point does (pd_core.runtime.configure_from_env)

    batch = load_batch(args.n)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    n = len(batch)

    times = best_times({
        "oracle": lambda: [oracle(img.copy()) for img in batch],
        "fast": lambda: wavelet_denoise(x),
        "ptwt": lambda: _ptwt_path(x),
    }, args.repeats)
    t_oracle, t_fast, t_ptwt = times["oracle"], times["fast"], times["ptwt"]
    out_fast, out_ptwt = wavelet_denoise(x), _ptwt_path(x)
    ref = torch.from_numpy(np.stack([oracle(img.copy()) for img in batch])).permute(0, 3, 1, 2)

    print(f"wavelet denoise, {n} images 224x224 float32, sigma=0.04 db1 BayesShrink soft YCbCr, "
          f"torch threads={threads}, best of {args.repeats} interleaved rounds")
    print(f"  oracle (skimage, per image)     : {1e3 * t_oracle / n:7.2f} ms/image  (1.00x)")
    print(f"  wavelet_denoise (Haar fast path): {1e3 * t_fast / n:7.2f} ms/image  "
          f"({t_oracle / t_fast:.2f}x the oracle's speed)")
    print(f"  wavelet_denoise (ptwt path)     : {1e3 * t_ptwt / n:7.2f} ms/image  "
          f"({t_oracle / t_ptwt:.2f}x the oracle's speed)")
    print(f"  fast path vs ptwt path: {t_ptwt / t_fast:.2f}x")
    print(f"  max |fast - oracle| = {(out_fast - ref).abs().max().item():.2e}, "
          f"max |ptwt - oracle| = {(out_ptwt - ref).abs().max().item():.2e} (float32)")


if __name__ == "__main__":
    main()
