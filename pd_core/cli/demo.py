"""``python -m pd_core demo IMAGE ...``: the app's Attack & Defend story for one image.

Prints exactly the numbers the app shows for the same settings (:func:`pd_core.demo.attack_and_defend`);
``--json`` prints the JSON the app downloads, whose ``command`` is the line that reproduces it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, load_image, load_model, parse_param, print_json

HELP = "attack one image, defend it, Ens-10: the numbers the app shows"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("image", metavar="IMAGE",
                   help="an image file, or a gallery photo's short name (e.g. imagenet_04_949, chelsea)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attack", default="fgsm")
    p.add_argument("--preset", default="interactive")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one attack parameter (e.g. eps=0.0157)")
    p.add_argument("--label", type=int, default=None,
                   help="true class index (default: the clean prediction is the reference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deflections", type=int, default=100, help="K (paper: 100)")
    p.add_argument("--window", type=int, default=10, help="r (paper: 10)")
    p.add_argument("--sigma", type=float, default=0.04, help="wavelet noise level (paper: 0.04)")
    p.add_argument("--wavelet", default="db1", choices=["db1", "db2", "haar"])
    p.add_argument("--method", default="bayes", choices=["bayes", "visu", "sure"])
    p.add_argument("--mode", default="soft", choices=["soft", "hard"])
    p.add_argument("--top-k", type=int, default=5, dest="top_k")
    p.add_argument("--rgb", action="store_true", help="denoise in RGB instead of YCbCr")
    p.add_argument("--no-map", action="store_true", help="deflect uniformly instead of guided by R-CAM")
    p.add_argument("--ensemble", type=int, default=10, metavar="N")
    p.add_argument("--json", action="store_true", help="print the JSON the app downloads")
    p.set_defaults(func=run)
    return p


def _resolve_image(image: str, label: int | None) -> tuple[str, int | None]:
    """A gallery photo's short name ("imagenet_04_949", "chelsea") -> its path and label."""
    if Path(image).exists():
        return image, label
    from ..images import ImageError, gallery_image

    try:
        entry = gallery_image(image)
    except ImageError:
        return image, label  # load_image will say what is wrong with the path
    return str(entry.path), entry.label_index if label is None else label


def run(args) -> int:
    """Run the story and print it (or its JSON); bad input raises :class:`CliError` (exit 2)."""
    from ..defence import DefenceConfig
    from ..demo import STAGE_NAMES, attack_and_defend
    from ..labels import label_name

    model = load_model(args.model)
    path, label = _resolve_image(args.image, args.label)
    x = load_image(path, model)
    params = dict(parse_param(t) for t in args.param)
    try:
        config = DefenceConfig(deflections=args.deflections, window=args.window, sigma=args.sigma,
                               wavelet=args.wavelet, method=args.method, mode=args.mode,
                               ycbcr=not args.rgb, use_map=not args.no_map, top_k=args.top_k)
        result = attack_and_defend(model, x, label, attack=args.attack, preset=args.preset,
                                   attack_params=params, config=config, seed=args.seed,
                                   n_ensemble=args.ensemble, image_name=args.image, image_path=args.image)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result.to_dict(), indent=2)  # what the app downloads (DemoResult.to_json)
        return 0
    verdicts = result.verdicts()
    print(f"{args.image}  ({result.model}, seed {result.seed}); reference: {result.label} "
          f"{label_name(result.label)} ({result.label_source})")
    for stage in STAGE_NAMES:
        p = result.predictions[stage]
        print(f"  {stage:12s} {p:4d} {label_name(p):30s} {verdicts[stage][0]}")
    n = result.norms["adversarial"]
    print(f"  perturbation: normalised L2 {n['norm_l2']:.4f}, L2 {n['l2']:.3f}, "
          f"Linf {n['linf_255']:.1f}/255, PSNR {n['psnr']:.1f} dB")
    return 0
