"""What every subcommand shares: the one error convention, the one JSON printer, and the loaders.

Error convention: a handler raises :class:`CliError` (anywhere, with one plain-language sentence);
:func:`pd_core.cli.main` catches it and :func:`fail` prints ``error: <sentence>`` as one line on
stderr and returns :data:`EXIT_BAD_INPUT` (2). Handlers never print tracebacks for bad input.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["EXIT_BAD_INPUT", "CliError", "fail", "print_json", "parse_value", "parse_param", "top5",
           "load_model", "load_image", "add_defence_options", "defence_config"]

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code 2."""


def fail(message: str) -> int:
    """Print ``error: message`` as one line on stderr; return the exit code for bad input (2)."""
    print(f"error: {' '.join(str(message).splitlines())}", file=sys.stderr)  # one line, always
    return EXIT_BAD_INPUT


def print_json(record, indent: int | None = None) -> None:
    """Print ``record`` as JSON on stdout: one line by default, ``indent`` spaces when given."""
    print(json.dumps(record, indent=indent))


def parse_value(text: str):
    """A ``--param key=value`` value as int, float, None or str (in that order of preference)."""
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_param(text: str) -> tuple[str, object]:
    """``"steps=20"`` -> ``("steps", 20)``; :class:`CliError` when there is no ``=`` or no name."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--param expects KEY=VALUE, got {text!r}")
    return key.strip(), parse_value(value.strip())


def top5(probs, k: int = 5) -> list[dict]:
    """The ``k`` most probable classes of a (1000,) probability vector, as JSON-able dicts."""
    from ..labels import label_name

    values, indices = probs.topk(k)
    return [{"index": int(i), "label": label_name(int(i)), "prob": round(float(v), 6)}
            for v, i in zip(values, indices)]


def load_model(name: str):
    """The model (threads set from ``PD_THREADS``); an unknown or unavailable one is a :class:`CliError`."""
    from ..models import ModelUnavailableError, load_model as load
    from ..runtime import configure_from_env

    configure_from_env()
    try:
        return load(name)
    except (ModelUnavailableError, ValueError) as exc:
        raise CliError(str(exc)) from None


def load_image(path: str, model):
    """The image at the model's input size and device; an unreadable file is a :class:`CliError`."""
    from ..images import ImageError, load_image as load

    try:
        return load(path, spec=model.spec, device=model.device)
    except ImageError as exc:
        raise CliError(f"{path}: {exc}") from None


def add_defence_options(p: argparse.ArgumentParser) -> None:
    """The defence's main parameters (paper §8 defaults): ``--deflections --window --sigma --no-map``."""
    p.add_argument("--deflections", type=int, default=100, help="K, pixels deflected (paper: 100)")
    p.add_argument("--window", type=int, default=10, help="r, deflection window apothem in pixels (paper: 10)")
    p.add_argument("--sigma", type=float, default=0.04, help="wavelet threshold noise level (paper: 0.04)")
    p.add_argument("--no-map", action="store_true", help="deflect uniformly instead of guided by R-CAM")


def defence_config(args):
    """The :class:`~pd_core.defence.DefenceConfig` of :func:`add_defence_options`' options."""
    from ..defence import DefenceConfig

    return DefenceConfig(deflections=args.deflections, window=args.window, sigma=args.sigma,
                         use_map=not args.no_map)
