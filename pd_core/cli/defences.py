"""``python -m pd_core defences [--json] [--defence SPEC]``: the defence registry.

Lists every defence the lab can judge (:data:`pd_core.defences.DEFENCES`): its name (what
``--defence`` takes), title, source, published parameters, whether it is randomised and how an
adaptive attack gets its gradient, plus the plugins installed in the ``pdlab.defences`` entry-point
group (not loaded). ``--defence FILE.py:FUNCTION`` loads a plugin first, to check it registers.
"""
from __future__ import annotations

import argparse

from .common import CliError, print_json

HELP = "list the defences (built in, zoo, plugins) with their sources and settings"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("defences", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--json", action="store_true", help="one JSON object with every entry")
    p.add_argument("--defence", default=None, metavar="SPEC",
                   help="also load these plugins (FILE.py:FUNCTION or module:FUNCTION, comma-separated)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..defences import DEFENCES, DefenceError, resolve_defences
    from ..defences.plugins import entry_point_names

    if args.defence:
        try:
            resolve_defences(args.defence)
        except DefenceError as exc:
            raise CliError(str(exc)) from None
    installed = [n for n in entry_point_names() if n not in DEFENCES]
    if args.json:
        print_json({"defences": [info.describe() for info in DEFENCES.values()], "installed_plugins": installed},
                   indent=2)
        return 0
    print(f"{'name':<20} {'random':<6} {'gradient':<8} title (source)")
    for info in DEFENCES.values():
        print(f"{info.name:<20} {'yes' if info.randomised else 'no':<6} {info.gradient:<8} "
              f"{info.title} ({info.citation})")
        if info.params:
            print(" " * 37 + ", ".join(f"{k}={v}" for k, v in info.params.items()))
    if installed:
        print("installed plugins (pdlab.defences entry points): " + ", ".join(installed))
    print("Use a name with --defence; your own: --defence FILE.py:FUNCTION (docs/defences.md).")
    return 0
