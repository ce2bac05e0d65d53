"""Latency of every attack at its interactive preset on one 224x224 image on the CPU.

    PD_THREADS=2 python bench/bench_attacks.py [--repeats 3] [--image imagenet_00_243]

The unit is one forward + backward pass of EfficientNet-Lite0 at batch 1 (the cost of one input
gradient), re-measured right before each attack (the CPU here is shared, so its speed drifts);
each attack's time is printed in seconds and in units of that adjacent measurement, next to the
issue's target. One untimed FGSM call first pays the one-off Foolbox import. The fast attacks
(FGSM, IGSM, PGD, DeepFool) are timed ``--repeats`` times (minimum, the least disturbed run);
the slow ones once. Then the table of presets with the mean normalised L2 they achieved
on the dev set (``ATTACKS[name].achieved``, from ``bench/calibrate_attacks.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PD_THREADS", "2")

from pd_core.attacks import ATTACKS, PAPER_NORMS, attack  # noqa: E402
from pd_core.images import gallery_image, load_image  # noqa: E402
from pd_core.models import load_model  # noqa: E402
from pd_core.runtime import configure_from_env  # noqa: E402

TARGET_SECONDS = {"fgsm": 0.3, "igsm": 1.5, "pgd": 2.0, "deepfool": 3.0, "cw": 15.0, "lbfgs": 30.0, "jsma": 60.0}
FAST = {"fgsm", "igsm", "pgd", "deepfool"}


def unit_seconds(model, x, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats + 1):
        xg = x.clone().requires_grad_(True)
        t = time.perf_counter()
        (g,) = torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image", default="imagenet_00_243")
    args = ap.parse_args(argv)
    configure_from_env()
    model = load_model(device="cpu")
    item = gallery_image(args.image)
    x = load_image(item.path, spec=model)
    label = torch.tensor([item.label_index])
    t = time.perf_counter()
    attack(model, x, label, "fgsm")
    print(f"CPU, {torch.get_num_threads()} threads, image {item.path.name} (label {item.label_index}); "
          f"first call (imports Foolbox): {time.perf_counter() - t:.2f} s")
    print(f"{'attack':9s} {'seconds':>8s} {'unit ms':>8s} {'units':>7s} {'target s':>8s} {'ok':>4s} "
          f"{'success':>8s} {'|L2|':>8s} {'Linf/255':>8s}  parameters")
    for name in ATTACKS:
        unit = unit_seconds(model, x)
        runs = []
        for _ in range(args.repeats if name in FAST else 1):
            r = attack(model, x, label, name, preset="interactive", seed=0)
            runs.append(r.seconds)
        s = min(runs)
        print(f"{name:9s} {s:8.2f} {unit * 1000:8.1f} {s / unit:7.1f} {TARGET_SECONDS[name]:8.1f} "
              f"{'yes' if s <= TARGET_SECONDS[name] else 'NO':>4s} {str(bool(r.success[0])):>8s} "
              f"{float(r.norm_l2[0]):8.4f} {float(r.linf_255[0]):8.1f}  {r.params}", flush=True)
    print()
    print("Mean normalised L2 ||delta||_2/||x||_2 on the dev set (correctly classified images of the "
          "calibration subset), paper Table 1 in brackets:")
    print(f"{'attack':9s} {'n':>3s} {'interactive':>12s} {'paper':>16s} {'large':>16s}")
    for name, info in ATTACKS.items():
        cells = []
        for preset in ("interactive", "paper", "large"):
            value = info.achieved.get(preset)
            paper = PAPER_NORMS[name].get(preset)
            cell = "-" if value is None else f"{value:.4f}"
            if paper is not None:
                cell += f" ({paper:.2f})"
            cells.append(cell)
        print(f"{name:9s} {info.calibration_images:3d} {cells[0]:>12s} {cells[1]:>16s} {cells[2]:>16s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
