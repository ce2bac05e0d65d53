"""Command line: ``python -m pd_core <command> ...``.

Every command that reads an image turns a bad file into exit code 2 and one line on stderr.
Each subcommand's handler imports its module lazily so ``python -m pd_core models`` stays fast.
Pattern for adding a subcommand: an ``_add_<name>(sub)`` function that builds the parser and
sets ``func`` to a handler ``(args) -> int`` (the exit code).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code 2."""


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _top5(probs, k: int = 5) -> list[dict]:
    from .labels import label_name

    values, indices = probs.topk(k)
    return [{"index": int(i), "label": label_name(int(i)), "prob": round(float(v), 6)}
            for v, i in zip(values, indices)]


def _load_model(name: str):
    from .models import ModelUnavailableError, load_model
    from .runtime import configure_from_env

    configure_from_env()
    try:
        return load_model(name)
    except (ModelUnavailableError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _load_image(path: str, model):
    from .images import ImageError, load_image

    try:
        return load_image(path, spec=model.spec, device=model.device)
    except ImageError as exc:
        raise CliError(f"{path}: {exc}") from None


def _defence_config(args):
    from .defence import DefenceConfig

    return DefenceConfig(deflections=args.deflections, window=args.window, sigma=args.sigma,
                         use_map=not args.no_map)


def _add_defence_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deflections", type=int, default=100, help="K, pixels deflected (paper: 100)")
    p.add_argument("--window", type=int, default=10, help="r, deflection window apothem in pixels (paper: 10)")
    p.add_argument("--sigma", type=float, default=0.04, help="wavelet threshold noise level (paper: 0.04)")
    p.add_argument("--no-map", action="store_true", help="deflect uniformly instead of guided by R-CAM")


# --- models -----------------------------------------------------------------------------------

def _cmd_models(args) -> int:
    from .models import list_models

    statuses = list_models()
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses]))
    else:
        for s in statuses:
            print(f"{s.name:20s} {'available' if s.available else 'UNAVAILABLE'}  {s.title}"
                  + ("" if s.available else f"\n{'':20s} {s.reason}"))
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the models and whether their weights are available here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)


# --- classify ---------------------------------------------------------------------------------

def _cmd_classify(args) -> int:
    import torch

    from .defence import ensemble_predict, defend

    model = _load_model(args.model)
    config = _defence_config(args)
    status = 0
    for path in args.images:
        try:
            x = _load_image(path, model)
        except CliError as exc:
            status = _fail(str(exc))
            continue
        with torch.no_grad():
            probs = model(x).softmax(-1)[0]
        record = {"image": path, "model": model.name, "top5": _top5(probs)}
        if args.defend:
            defended = defend(model, x, config, seed=args.seed)
            with torch.no_grad():
                record["defended_top5"] = _top5(model(defended).softmax(-1)[0])
        if args.ensemble:
            ens = ensemble_predict(model, x, n=args.ensemble, seed=args.seed, config=config)
            record["ensemble"] = {"n": args.ensemble, "prediction": _top5(ens.mean_probs[0], 1)[0]
                                  | {"index": int(ens.prediction[0])},
                                  "agreement": float(ens.agreement[0]),
                                  "mean_top5": _top5(ens.mean_probs[0])}
            from .labels import label_name
            record["ensemble"]["prediction"]["label"] = label_name(int(ens.prediction[0]))
        if args.json:
            print(json.dumps(record))
        else:
            _print_classification(record)
    return status


def _print_classification(record: dict) -> None:
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


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="top-5 predictions, optionally after the defence")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--defend", action="store_true", help="also classify the defended image (single run)")
    p.add_argument("--ensemble", type=int, default=0, metavar="N", help="also the Ens-N majority vote")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    _add_defence_options(p)
    p.set_defaults(func=_cmd_classify)


# --- defend -----------------------------------------------------------------------------------

def _cmd_defend(args) -> int:
    from .defence import defend
    from .images import to_png_bytes

    model = _load_model(args.model)
    x = _load_image(args.image, model)
    defended = defend(model, x, _defence_config(args), seed=args.seed)
    Path(args.out).write_bytes(to_png_bytes(defended[0]))
    print(f"wrote {args.out}")
    return 0


def _add_defend(sub) -> None:
    p = sub.add_parser("defend", help="write the defended image (lossless PNG)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="OUT.png")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0)
    _add_defence_options(p)
    p.set_defaults(func=_cmd_defend)


# --- wiring -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pd_core",
                                     description="Pixel Deflection Lab: defence, attacks and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _add_lazy(module: str, function: str):
    """Register a subcommand whose parser lives in another module (attacks, evaluation, adaptive)."""
    def add(sub):
        import importlib

        getattr(importlib.import_module(f"pd_core.{module}"), function)(sub)
    return add


_SUBCOMMANDS = [_add_models, _add_classify, _add_defend]
_SUBCOMMANDS.append(_add_lazy("attacks", "add_attack_parser"))
_SUBCOMMANDS.append(_add_lazy("evaluation", "add_evaluate_parser"))
_SUBCOMMANDS.append(_add_lazy("adaptive", "add_adaptive_parser"))
_SUBCOMMANDS.append(_add_lazy("demo", "add_demo_parser"))  # the app's Attack & Defend story


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
