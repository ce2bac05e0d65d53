"""``python -m pd_core defend IMAGE --out OUT.png``: the defended image as a lossless PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_defence_options, defence_config, load_image, load_model

HELP = "write the defended image (lossless PNG)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("defend", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="OUT.png")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0)
    add_defence_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..defence import defend
    from ..images import to_png_bytes

    model = load_model(args.model)
    x = load_image(args.image, model)
    defended = defend(model, x, defence_config(args), seed=args.seed)
    Path(args.out).write_bytes(to_png_bytes(defended[0]))
    print(f"wrote {args.out}")
    return 0
