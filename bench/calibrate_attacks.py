"""Calibrate the attack presets: mean normalised L2 of each preset on the first N dev images.

    PD_THREADS=1 nice python bench/calibrate_attacks.py --images 16 [--attacks fgsm,igsm] \
        [--presets paper,large] [--set overshoot=12]

Prints, per attack and preset, the success rate and the mean normalised L2 ||delta||_2/||x||_2
(over the images the model classifies correctly, after quantisation to 1/255) that ``pd_core/attacks/registry.py`` records in
``ATTACKS[name].achieved``. The dev set is ``../shared/imagenet-dev`` (never copied into the repo).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pd_core.attacks import ATTACKS, PAPER_NORMS, attack  # noqa: E402
from pd_core.cli.common import parse_value  # noqa: E402
from pd_core.models import load_model  # noqa: E402
from pd_core.runtime import configure_from_env  # noqa: E402

DEV = Path(os.environ.get("PD_DEV_SET", Path(__file__).resolve().parents[2] / "shared" / "imagenet-dev"))


def load_dev(model, n: int):
    from pd_core.images import load_image

    rows = list(csv.DictReader(open(DEV / "labels.csv")))[:n]
    images = torch.cat([load_image(str(DEV / r["file"]), spec=model.spec, device=model.device) for r in rows])
    labels = torch.tensor([int(r["class_index"]) for r in rows])
    return images, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--presets", default="paper,large")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    configure_from_env()
    model = load_model(device="cpu")
    images, labels = load_dev(model, args.images)
    with torch.no_grad():
        correct = model(images).argmax(1) == labels
    n_all = len(images)
    images, labels = images[correct], labels[correct]
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    print(f"dev set: the {len(images)} correctly classified of the first {n_all} images of {DEV}, "
          f"threads {torch.get_num_threads()}, overrides {overrides or 'none'}")
    print(f"{'attack':9s} {'preset':12s} {'n':>3s} {'success':>8s} {'mean|L2|':>9s} {'median':>8s} "
          f"{'paper':>6s} {'Linf/255':>9s} {'|L2|mdl':>8s} {'RMSE255':>8s} {'s/img':>6s}")
    for name in args.attacks.split(","):
        for preset in args.presets.split(","):
            if preset not in ATTACKS[name].presets:
                continue  # e.g. IGSM's "budget", FGSM's "minimal"
            params = {k: v for k, v in overrides.items() if k in ATTACKS[name].presets[preset]}
            t0 = time.perf_counter()
            r = attack(model, images, labels, name, preset=preset, batch_size=args.batch_size, **params)
            per_image = (time.perf_counter() - t0) / len(images)
            target = PAPER_NORMS[name].get(preset)
            print(f"{name:9s} {preset:12s} {len(images):3d} {r.success_rate:8.0%} {r.norm_l2.mean():9.4f} "
                  f"{r.norm_l2.median():8.4f} {target if target is not None else '-':>6} "
                  f"{r.linf_255.mean():9.2f} {r.norm_l2_model.mean():8.4f} {r.rmse.mean() * 255:8.2f} "
                  f"{per_image:6.1f}   {r.params}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
