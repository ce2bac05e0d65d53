"""``python -m pd_core defend IMAGE --out OUT.png [--defence NAME]``: the defended image as a lossless PNG.

``--defence`` picks any defence of the registry or your own ``FILE.py:FUNCTION`` (default: pixel
deflection, the paper's); ``--seed`` fixes its randomness."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, add_defence_choice, add_defence_options, build_defence, load_image, load_model

HELP = "write the defended image (lossless PNG)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("defend", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="OUT.png")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0)
    add_defence_choice(p)
    add_defence_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..defences import DefenceError
    from ..images import to_png_bytes
    from ..randomness import make_generator

    model = load_model(args.model)
    defence = build_defence(args, model)
    x = load_image(args.image, model)
    try:
        defended = defence.apply(x, make_generator(args.seed, x.device))
    except DefenceError as exc:
        raise CliError(str(exc)) from None
    Path(args.out).write_bytes(to_png_bytes(defended[0]))
    print(f"wrote {args.out}")
    return 0
