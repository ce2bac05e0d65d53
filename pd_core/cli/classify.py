"""``python -m pd_core classify IMAGE... [--defend] [--ensemble N] [--json]``: top-5 predictions.

A bad image prints one line on stderr and the others are still classified; the exit code is then 2.
"""
from __future__ import annotations

import argparse

from .common import CliError, add_defence_options, defence_config, fail, load_image, load_model, print_json, top5

HELP = "top-5 predictions, optionally after the defence"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("classify", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--defend", action="store_true", help="also classify the defended image (single run)")
    p.add_argument("--ensemble", type=int, default=0, metavar="N", help="also the Ens-N majority vote")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_defence_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    model = load_model(args.model)
    status = 0
    for path in args.images:
        try:
            x = load_image(path, model)
        except CliError as exc:
            status = fail(str(exc))
            continue
        record = classify_record(model, x, path, args)
        if args.json:
            print_json(record)
        else:
            _print(record)
    return status


def classify_record(model, x, path: str, args) -> dict:
    """The JSON record of one image: ``top5``, and ``defended_top5`` / ``ensemble`` when asked."""
    import torch

    from ..defence import defend, ensemble_predict
    from ..labels import label_name

    config = defence_config(args)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    record = {"image": path, "model": model.name, "top5": top5(probs)}
    if args.defend:
        defended = defend(model, x, config, seed=args.seed)
        with torch.no_grad():
            record["defended_top5"] = top5(model(defended).softmax(-1)[0])
    if args.ensemble:
        ens = ensemble_predict(model, x, n=args.ensemble, seed=args.seed, config=config)
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
