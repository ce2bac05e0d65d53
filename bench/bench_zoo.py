"""Benchmark: each zoo defence against its counterpart in the Adversarial Robustness Toolbox 1.20,
on the same batch of 224² ImageNet-dev photos, one thread, in one run.

Counterparts (ART, NumPy, one image at a time where ART loops): FeatureSqueezing (bit depth),
SpatialSmoothing (median), JpegCompression (JPEG), TotalVarMin (TVM: ``prob = 0.5``,
``lamb = 0.03``, ``norm = 2``, ``max_iter = 10``, its default solver L-BFGS-B). Random resizing
and padding, SHIELD, wavelet denoising and image quilting have no ART counterpart; their time is printed
alone. The defences are the registry's ``zoo`` group, so a new zoo entry is timed without editing this file. Prints ms per image
for both sides and the ratio ART / ours (targets: ≥ 5×, ≥ 20× for TVM). ART's TotalVarMin runs on
the first ``--tvm-n`` photos only (it takes most of a second per image); the per-image times are
comparable because both sides loop or vectorise over the same images. Two last rows: TVM with its
CPU cache blocks switched off, the baseline of that optimisation in the same run; and Pillow's JPEG
encode and decode alone (no conversions), the floor under any Pillow-based JPEG, ours or ART's.

    PD_THREADS=1 OMP_NUM_THREADS=1 python bench/bench_zoo.py [--n 16] [--tvm-n 4]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pd_core.defences import create_defence, defence_names  # noqa: E402
from pd_core.images import load_batch  # noqa: E402
from pd_core.randomness import make_generator  # noqa: E402

DEV_DIR = ROOT.parent / "shared" / "imagenet-dev"


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def art_counterparts():
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing, TotalVarMin

    clip = (0.0, 1.0)
    return {
        "bit_depth": FeatureSqueezing(clip_values=clip, bit_depth=5),
        "bit_depth_3": FeatureSqueezing(clip_values=clip, bit_depth=3),
        "median": SpatialSmoothing(window_size=2, channels_first=True, clip_values=clip),
        "median_3x3": SpatialSmoothing(window_size=3, channels_first=True, clip_values=clip),
        "jpeg": JpegCompression(clip_values=clip, quality=75, channels_first=True),
        "tvm": TotalVarMin(prob=0.5, norm=2, lamb=0.03, max_iter=10, clip_values=clip),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="photos in the batch")
    parser.add_argument("--tvm-n", type=int, default=4, help="photos for ART's TotalVarMin (slow)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import art

    paths = sorted(glob.glob(str(DEV_DIR / "*.JPEG")))[:args.n]
    x = load_batch(paths, size=224)
    x_np = x.numpy()
    x_hwc = np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))  # TotalVarMin wants channels last
    peers = art_counterparts()
    print(f"bench_zoo: {len(x)} photos at 224², torch {torch.__version__}, ART {art.__version__}, "
          f"1 thread, best of {args.repeats}")
    print(f"{'defence':<18} {'ours ms/img':>12} {'ART ms/img':>11} {'ART/ours':>9}")
    for name in defence_names(groups=("zoo",)):  # every zoo entry of the registry, in its order
        defence = create_defence(name)
        ours = timed(lambda: defence.apply(x, make_generator(0)), args.repeats) / len(x) * 1000
        peer = peers.get(name)
        if peer is None:
            print(f"{name:<18} {ours:>12.2f} {'-':>11} {'-':>9}  (no ART counterpart)")
            continue
        if name == "tvm":
            batch = x_hwc[:args.tvm_n]
            theirs = timed(lambda: peer(batch), args.repeats) / len(batch) * 1000
        else:
            theirs = timed(lambda: peer(x_np), args.repeats) / len(x) * 1000
        print(f"{name:<18} {ours:>12.2f} {theirs:>11.2f} {theirs / ours:>8.1f}×")
    print(f"tvm, one block     {tvm_as_one_block(x, args.repeats):>12.2f} {'-':>11} {'-':>9}  "
          "(the whole batch at once: the CPU cache blocks' baseline)")
    print(f"jpeg, codec alone  {pillow_codec_alone(x, args.repeats):>12.2f} {'-':>11} {'-':>9}  "
          "(Pillow's encode + decode at quality 75 only: the floor of both JPEG rows)")
    return 0


def pillow_codec_alone(x: torch.Tensor, repeats: int) -> float:
    """ms per image of Pillow's JPEG encode and decode alone, on ready 8-bit images."""
    import io

    from PIL import Image

    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    images = [Image.fromarray(p) for p in pixels]

    def round_trip():
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=75)
            buffer.seek(0)
            with Image.open(buffer, formats=("JPEG",)) as jpeg:
                jpeg.load()

    return timed(round_trip, repeats) / len(x) * 1000


def tvm_as_one_block(x: torch.Tensor, repeats: int) -> float:
    """TVM's ms per image with its CPU cache blocking switched off (same output, bit for bit)."""
    from pd_core.defences import tvm

    defence, saved = create_defence("tvm"), tvm._CPU_BLOCK_BYTES
    tvm._CPU_BLOCK_BYTES = 1 << 62
    try:
        return timed(lambda: defence.apply(x, make_generator(0)), repeats) / len(x) * 1000
    finally:
        tvm._CPU_BLOCK_BYTES = saved


if __name__ == "__main__":
    sys.exit(main())
