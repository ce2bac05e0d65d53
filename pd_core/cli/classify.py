"""``python -m pd_core classify IMAGE... [--defend] [--defence NAME] [--ensemble N] [--json]``: top-5 predictions.

The defended predictions go through ``--defence`` (default: pixel deflection, the paper's; naming
one implies ``--defend``). A bad image, or a defence that fails on an image, prints one line on
stderr and the others are still classified; the exit code is then 2.
"""
from __future__ import annotations

import argparse

from .common import (CliError, add_defence_choice, add_defence_options, build_defence, fail, load_image, load_model,
                     print_json, top5)

HELP = "top-5 predictions, optionally after the defence"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("classify", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--defend", action="store_true", help="also classify the defended image (single run)")
    p.add_argument("--ensemble", type=int, default=0, metavar="N", help="also the Ens-N majority vote")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_defence_choice(p)
    add_defence_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..defences import DefenceError

    model = load_model(args.model)
    defence = build_defence(args, model) if (args.defend or args.defence or args.ensemble) else None
    status = 0
    for path in args.images:
        try:
            x = load_image(path, model)
            record = classify_record(model, x, path, args, defence)
        except (CliError, DefenceError) as exc:
            status = fail(str(exc))
            continue
        if args.json:
            print_json(record)
        else:
            _print(record)
    return status


def classify_record(model, x, path: str, args, defence=None) -> dict:
    """The JSON record of one image: ``top5``, and ``defended_top5`` / ``ensemble`` (through
    ``defence``, seeded with ``--seed``) when asked."""
    import torch

    from ..defences.ensemble import defended_logits, ensemble_vote
    from ..labels import label_name
    from ..randomness import make_generator

    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    record = {"image": path, "model": model.name, "top5": top5(probs)}
    if defence is not None:
        record["defence"] = defence.name
    if args.defend or args.defence:
        logits = defended_logits(model, defence, x, make_generator(args.seed, x.device))
        record["defended_top5"] = top5(logits.softmax(-1)[0])
    if args.ensemble:
        ens = ensemble_vote(model, defence, x, args.ensemble, make_generator(args.seed, x.device))
        prediction = int(ens.prediction[0])
        record["ensemble"] = {"n": args.ensemble,
                              "prediction": top5(ens.mean_probs[0], 1)[0] | {"index": prediction,
                                                                            "label": label_name(prediction)},
                              "agreement": float(ens.agreement[0]),
                              "mean_top5": top5(ens.mean_probs[0])}
    return record


def _print(record: dict) -> None:
    print(f"{record['image']}  ({record['model']})")
    for key, title in (("top5", "clean"), ("defended_top5", "defended")):
        if key in record:
            print(f"  {title}:")
            for item in record[key]:
                print(f"    {item['prob']:7.2%}  {item['index']:4d} {item['label']}")
    if "ensemble" in record:
        e = record["ensemble"]
        print(f"  Ens-{e['n']}: {e['prediction']['index']} {e['prediction']['label']} "
              f"({e['agreement']:.0%} of copies agree)")
