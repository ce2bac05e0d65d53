"""Command line: ``python -m pd_core <command> ...``, one module per subcommand.

===========  ==========================================================================
models       :mod:`.models`: the models and whether their weights are available here
defences     :mod:`.defences`: the defence registry (built in, zoo, plugins)
classify     :mod:`.classify`: top-5 predictions, optionally after the defence
defend       :mod:`.defend`: the defended image as a lossless PNG
attack       :mod:`.attack`: attack one image and write the adversarial PNG
demo         :mod:`.demo`: the app's Attack & Defend story for one image
evaluate     :mod:`.evaluate`: the paper's Tables 1, 3, 4 and Figure 5 on a folder
adaptive     :mod:`.adaptive`: accuracy under the adaptive BPDA+EOT attack, against ε
sweep        :mod:`.sweep`: accuracy against perturbation size (a grid of attack strengths)
dose         :mod:`.dose`: accuracy against the number of deflections K, with/without denoiser
leaderboard  :mod:`.leaderboard`: one table and one figure of every defence from the ladder's reports
===========  ==========================================================================

Each subcommand module exposes ``HELP`` (one line, listed by ``python -m pd_core --help``),
``add_parser(subparsers)`` and ``run(args) -> int`` (the exit code). The modules import nothing
heavy at the top; only the chosen subcommand builds its full parser and imports what it needs, so
``python -m pd_core models`` never loads Foolbox, Plotly, scikit-image or Streamlit.

Errors: a handler raises :class:`~pd_core.cli.common.CliError`; :func:`main` prints it as one
line on stderr and returns 2 (see :mod:`.common`). To add a subcommand, write ``pd_core/cli/<name>.py``
with those three names and add ``<name>`` to :data:`SUBCOMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..runtime import wait_passively

wait_passively()  # before any subcommand imports torch (pd_core.runtime says why)

from .common import EXIT_BAD_INPUT, CliError, fail  # noqa: E402

__all__ = ["main", "build_parser", "SUBCOMMANDS", "CliError", "EXIT_BAD_INPUT"]

#: The subcommands in the order ``--help`` lists them (module ``pd_core.cli.<name>`` each).
SUBCOMMANDS = ("models", "defences", "classify", "defend", "attack", "demo", "evaluate", "adaptive", "sweep", "dose", "leaderboard")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


#: The name ``--help`` and usage errors print: the installed console script's (``pdlab``); ``python -m pd_core``
#: passes its own (see ``pd_core/__main__.py``).
PROG = "pdlab"


def build_parser(command: str | None = None, prog: str = PROG) -> argparse.ArgumentParser:
    """The ``pdlab`` / ``python -m pd_core`` parser.

    command : the subcommand whose full parser is built; the others are listed with their
        ``HELP`` only (so their dependencies are not imported). ``None`` builds every one.
    prog : the command's name as the user typed it, shown in the usage line.
    """
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Pixel Deflection Lab: defence, attacks and evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _module(name)
        if command is None or name == command:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return parser


def _chosen_command(argv: list[str]) -> str:
    """The subcommand named on the command line ("" when none is: only the listing is built)."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in SUBCOMMANDS else ""


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    prog : the name in the usage line (``pdlab``, the console script; ``python -m pd_core`` from ``__main__``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_chosen_command(argv), prog=prog).parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`pdlab defences | head`): not an error of ours. Point stdout at /dev/null so that
        # the interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
