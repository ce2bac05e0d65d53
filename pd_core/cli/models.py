"""``python -m pd_core models [--json]``: the models and whether their weights are available here.

``models --download resnet50 vgg19 inception_v3`` fetches torchvision's published weights into the
torch hub cache (``PD_WEIGHTS_MIRROR=URL``: from a mirror); ``models --from FILE --model resnet50``
installs a copy made by hand. Both check torchvision's hash (:mod:`pd_core.weights`).
"""
from __future__ import annotations

import argparse

from .common import CliError, print_json

HELP = "list the models and whether their weights are available here"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--json", action="store_true", help="one JSON list")
    _add_install_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.download or args.from_file or args.model:
        return _install(args)
    from ..models import list_models

    statuses = list_models()
    if args.json:
        print_json([s.__dict__ for s in statuses])
        return 0
    for s in statuses:
        print(f"{s.name:20s} {'available' if s.available else 'UNAVAILABLE'}  {s.title}"
              + ("" if s.available else f"\n{'':20s} {s.reason}"))
    return 0


def _add_install_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--download", nargs="+", metavar="MODEL",
                   help="fetch torchvision's published weights of these models into the torch hub cache, "
                        "hash-checked (PD_WEIGHTS_MIRROR=URL fetches URL/<file name> instead)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="install a weight file copied by hand (same hash check); needs --model")
    p.add_argument("--model", metavar="MODEL", help="the model whose weight file --from installs")


def _install(args) -> int:
    from ..weights import WeightsError, download, install_file, source_url

    if args.download and (args.from_file or args.model):
        raise CliError("use either --download MODEL ... or --from FILE --model MODEL, not both")
    if bool(args.from_file) != bool(args.model):
        raise CliError("--from FILE and --model MODEL go together (for example: "
                       "models --from resnet50-0676ba61.pth --model resnet50)")
    try:
        if args.download:
            for name in args.download:  # every name checked before anything is fetched
                source_url(name)
            installed = [(name, download(name)) for name in args.download]
        else:
            installed = [(args.model, install_file(args.model, args.from_file))]
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json([{"name": name, "path": str(path)} for name, path in installed])
    else:
        for name, path in installed:
            print(f"{name:20s} installed  {path}")
    return 0
