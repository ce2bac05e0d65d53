"""Benchmark the defence (deflection + wavelet denoising) against a reference-style baseline.

    PD_THREADS=1 python bench/bench_defence.py [--images 64] [--repeats 3]

Both sides get the same 64 dev images (224×224) and the same robust activation maps, computed once.
- baseline: the authors' style, per image: a per-deflection Python loop (draw pixel and channel, skip with
  probability R, copy from the window) and scikit-image's ``denoise_wavelet`` via the SPEC §1.3 construction.
- pd_core: ``defend`` with the maps given, i.e. ``wavelet_denoise(deflect(...))`` on the whole batch.
The entry point's CPU settings apply to both sides (``pd_core.runtime.configure_from_env``: PD_THREADS
and glibc's allocator thresholds; ``PD_MALLOC_TUNING=0`` to compare without the latter).
Then the defended Ens-10 prediction of one image against the ten forward passes alone (one batch of ten, the
strictest baseline). Prints per-image times and the ratios; targets: ≥ 5× and ≤ 1.5×.
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pd_core.defence import defend, ensemble_predict  # noqa: E402
from pd_core.deflection import deflect
from pd_core.randomness import make_generator  # noqa: E402
from pd_core.denoising import wavelet_denoise  # noqa: E402
from pd_core.images import load_batch  # noqa: E402
from pd_core.maps import robust_activation_map  # noqa: E402
from pd_core.models import load_model  # noqa: E402
from pd_core.runtime import configure_from_env  # noqa: E402

DEV = Path(__file__).resolve().parents[2] / "shared" / "imagenet-dev"


def reference_deflect(img: np.ndarray, rmap: np.ndarray, deflections: int, window: int, rng: random.Random):
    """The per-deflection loop of the authors' script (H, W, C numpy)."""
    img = img.copy()
    h, w, c = img.shape
    while deflections > 0:
        for ch in range(c):
            y, x = rng.randint(0, h - 1), rng.randint(0, w - 1)
            if rng.uniform(0, 1) < rmap[y, x]:
                continue
            sy = rng.randint(max(0, y - window), min(h - 1, y + window))
            sx = rng.randint(max(0, x - window), min(w - 1, x + window))
            img[y, x, ch] = img[sy, sx, ch]
            deflections -= 1
            if deflections == 0:
                break
    return img


def reference_denoise(img: np.ndarray) -> np.ndarray:
    """The SPEC §1.3 oracle: scikit-image per renormalised YCbCr channel."""
    from skimage.color import rgb2ycbcr, ycbcr2rgb
    from skimage.restoration import denoise_wavelet

    ycc = rgb2ycbcr(img)
    for i in range(3):
        lo, hi = ycc[..., i].min(), ycc[..., i].max()
        if hi > lo:
            ch = (ycc[..., i] - lo) / (hi - lo)
            ch = denoise_wavelet(ch, sigma=0.04, wavelet="db1", mode="soft", method="BayesShrink",
                                 rescale_sigma=False)
            ycc[..., i] = np.clip(ch, 0, 1) * (hi - lo) + lo
    return np.clip(ycbcr2rgb(ycc), 0, 1)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_from_env()
    model = load_model("efficientnet_lite0", device="cpu")
    with open(DEV / "labels.csv") as f:
        files = [DEV / row["file"] for row in csv.DictReader(f)][: args.images]
    x = load_batch(files, spec=model.spec)
    rmap = torch.cat([robust_activation_map(model, chunk).rmap for chunk in x.split(32)])
    n = x.shape[0]
    print(f"{n} images {tuple(x.shape[1:])}, torch threads = {torch.get_num_threads()}")

    x_np = x.permute(0, 2, 3, 1).double().numpy()
    r_np = rmap.double().numpy()

    def baseline():
        rng = random.Random(0)
        for i in range(n):
            reference_denoise(reference_deflect(x_np[i], r_np[i], 100, 10, rng))

    def ours():
        defend(model, x, rmap=rmap, generator=make_generator(0))

    # defend with the maps given is exactly the two public stages (no map pass inside the timing)
    assert torch.equal(defend(model, x, rmap=rmap, generator=make_generator(0)),
                       wavelet_denoise(deflect(x, rmap, 100, 10, generator=make_generator(0))))
    ours()  # warm-up
    t_base = best_of(baseline, max(1, args.repeats - 1)) / n
    t_ours = best_of(ours, args.repeats) / n
    print(f"defence, reference-style loop : {t_base * 1e3:7.2f} ms/image")
    print(f"defence, pd_core defend       : {t_ours * 1e3:7.2f} ms/image")
    print(f"speed-up                      : {t_base / t_ours:7.1f}x   (target >= 5x)")

    one = x[:1]
    copies = one.repeat(10, 1, 1, 1)

    def forwards():
        with torch.no_grad():
            model(copies)

    def ensemble():
        ensemble_predict(model, one, n=10, seed=0)

    ensemble()
    forwards()
    t_fwd = best_of(forwards, args.repeats + 2)
    t_ens = best_of(ensemble, args.repeats + 2)
    print(f"ten forward passes (one batch): {t_fwd * 1e3:7.1f} ms")
    print(f"defended Ens-10 of one image  : {t_ens * 1e3:7.1f} ms")
    print(f"Ens-10 / forwards             : {t_ens / t_fwd:7.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
