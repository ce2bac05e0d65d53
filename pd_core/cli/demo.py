"""``python -m pd_core demo IMAGE ...``: the app's Attack & Defend story for one image.

Prints exactly the numbers the app shows for the same settings (:func:`pd_core.story.attack_and_defend`);
``--json`` prints the JSON the app downloads, whose ``command`` is the line that reproduces it.
``--defence`` picks any defence of the registry or your own ``FILE.py:FUNCTION`` (default: pixel
deflection, the paper's). The options come from :data:`pd_core.cli.options.DEMO_OPTIONS`, the same
table that writes the app's reproduce-commands.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, load_image, load_model, parse_param, print_json
from .options import DEMO_OPTIONS, add_options, defence_config_of, demo_command

HELP = "attack one image, defend it, Ens-10: the numbers the app shows"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    add_options(p, DEMO_OPTIONS)
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
    from ..defences import DefenceError
    from ..labels import label_name
    from ..story import STAGE_NAMES, attack_and_defend

    model = load_model(args.model)
    path, label = _resolve_image(args.image, args.label)
    x = load_image(path, model)
    params = dict(parse_param(t) for t in args.param)
    try:
        result = attack_and_defend(model, x, label, attack=args.attack, preset=args.preset,
                                   attack_params=params, config=defence_config_of(args), defence=args.defence,
                                   seed=args.seed, n_ensemble=args.ensemble, image_name=args.image,
                                   image_path=args.image)
    except (ValueError, DefenceError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result.to_dict(demo_command(result)), indent=2)  # what the app downloads
        return 0
    outcomes = result.outcomes()
    print(f"{args.image}  ({result.model}, seed {result.seed}); reference: {result.label} "
          f"{label_name(result.label)} ({result.label_source}); defence: {result.defence_title}")
    for stage in STAGE_NAMES:
        p = result.predictions[stage]
        print(f"  {stage:12s} {p:4d} {label_name(p):30s} {outcomes[stage]}")
    n = result.norms["adversarial"]
    print(f"  perturbation: normalised L2 {n['norm_l2']:.4f}, L2 {n['l2']:.3f}, "
          f"Linf {n['linf_255']:.1f}/255, PSNR {n['psnr']:.1f} dB")
    return 0
