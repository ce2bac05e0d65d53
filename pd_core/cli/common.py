"""What every subcommand shares: the one error convention, the one JSON printer, and the loaders.

Error convention: a handler raises :class:`CliError` (anywhere, with one plain-language sentence);
:func:`pd_core.cli.main` catches it and :func:`fail` prints ``error: <sentence>`` as one line on
stderr and returns :data:`EXIT_BAD_INPUT` (2). Handlers never print tracebacks for bad input.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["EXIT_BAD_INPUT", "CliError", "fail", "print_json", "parse_value", "parse_param", "parse_number_list",
           "top5", "load_model", "load_image", "add_defence_options", "defence_config", "add_defence_choice",
           "build_defence", "add_folder_options", "add_protocol_options", "add_defence_list", "run_settings",
           "failed_units_exit", "add_progress_options", "wants_progress", "summary_of_folder_run", "write_figures"]

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


def parse_number_list(text: str, option: str, cast=float, kind: str = "numbers") -> list:
    """``"1,2,4"`` -> ``[1.0, 2.0, 4.0]`` (each part through ``cast``, empty parts skipped);
    :class:`CliError` naming ``option`` for a part that is not one of ``kind`` or an empty list."""
    values = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        try:
            values.append(cast(part))
        except ValueError:
            raise CliError(f"{option} expects {kind} separated by commas, got {part!r}") from None
    if not values:
        raise CliError(f"{option} is empty.")
    return values


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
    """The defence's main parameters (paper §8 defaults): ``--deflections --window --sigma --no-map``
    (:data:`pd_core.cli.options.DEFENCE_OPTIONS`)."""
    from .options import DEFENCE_OPTIONS, add_options

    add_options(p, DEFENCE_OPTIONS)


def defence_config(args):
    """The :class:`~pd_core.defence.DefenceConfig` of :func:`add_defence_options`' options."""
    from .options import defence_config_of

    return defence_config_of(args)


def add_defence_choice(p: argparse.ArgumentParser) -> None:
    """``--defence SPEC``: one defence of the registry (``pdlab defences`` lists them) or your own
    ``FILE.py:FUNCTION`` / ``module:FUNCTION``; with :func:`add_defence_options` (σ, K, r reach every
    defence that has them) (:data:`pd_core.cli.options.DEFENCE_CHOICE`)."""
    from .options import DEFENCE_CHOICE

    DEFENCE_CHOICE.add_to(p)


def build_defence(args, model):
    """The :class:`~pd_core.defences.Defence` of ``--defence`` with the defence options applied;
    an unknown name, a broken plugin or a bad parameter is a :class:`CliError`."""
    from ..defences import DefenceError, create_defence, resolve_defences

    try:
        names = resolve_defences(args.defence or "pixel_deflection")
        if len(names) != 1:
            raise CliError(f"--defence takes one defence here, got {args.defence!r}")
        return create_defence(names[0], model, config=defence_config(args))
    except DefenceError as exc:
        raise CliError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# The folder subcommands (evaluate, sweep, dose): their shared options and their shared run
# --------------------------------------------------------------------------------------------

def add_folder_options(p: argparse.ArgumentParser, *, images_required: bool = False) -> None:
    """The labelled folder and the model: ``--images --labels --model``."""
    p.add_argument("--images", required=images_required, metavar="DIR",
                   help="folder of images; labels from labels.csv (file,class_index) or WordNet-id prefixes")
    p.add_argument("--labels", metavar="CSV", help="labels file (default: DIR/labels.csv when present)")
    p.add_argument("--model", default="efficientnet_lite0")


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """The ImageNet validation layouts of :mod:`pd_core.datasets`: ``--subset --devkit-meta``."""
    p.add_argument("--subset", metavar="FILE", help="use only the files listed (one name per line)")
    p.add_argument("--devkit-meta", metavar="FILE",
                   help="the ILSVRC2012 devkit's meta.mat (or its 1000 WordNet ids in order), for its ground truth")


def dataset_images(args):
    """``--images`` as the engines take it: the folder itself when :func:`~pd_core.evaluation.load_items`
    reads it (labels.csv, WordNet ids), else its labelled items in :mod:`pd_core.datasets`' layouts
    (Kaggle, devkit), restricted to ``--subset`` (named as ``load_items`` names them, so the tuning
    split and the seeds are the folder's). A bad layout or file raises :class:`CliError`."""
    from ..datasets import DatasetError, detect_layout
    from ..evaluation import EvaluationError
    from ..evaluation.distributed import evaluation_items

    subset, devkit_meta = getattr(args, "subset", None), getattr(args, "devkit_meta", None)
    try:
        flat = detect_layout(args.images, args.labels)[0] in ("kaggle", "devkit")
        if not (flat or subset or devkit_meta):
            return args.images
        return evaluation_items(args.images, labels=args.labels, devkit_meta=devkit_meta, subset=subset,
                                tuning_fraction=0.0)
    except (DatasetError, EvaluationError) as exc:
        raise CliError(str(exc)) from None


def add_protocol_options(p: argparse.ArgumentParser) -> None:
    """How the protocol (paper §9-10) runs on the folder: ``--ensemble --limit --seed --batch-size
    --tuning-fraction``."""
    from ..evaluation.data import DEFAULT_TUNING_FRACTION

    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the majority vote (paper: 10)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N evaluation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per chunk (keep it when resuming)")
    p.add_argument("--tuning-fraction", type=float, default=DEFAULT_TUNING_FRACTION, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")


def add_defence_list(p: argparse.ArgumentParser, instead_of: str) -> None:
    """``--defence NAME[,NAME...]``: registry names or plugin specs judged in Table 1's transfer
    setting instead of ``instead_of`` (checked by :func:`run_settings`)."""
    p.add_argument("--defence", metavar="NAME[,NAME...]",
                   help=f"instead of {instead_of}: these defences, each judged in Table 1's setting (the attack "
                        "crafted on the undefended model; a randomised one by its Ens-N vote and its single run); "
                        "registry names ('pdlab defences' lists them) or your own FILE.py:FUNCTION")


def run_settings(args, kind=None, **fields):
    """The run's settings from :func:`add_protocol_options` (and ``--defence`` where the subcommand
    has it), as ``kind`` (default :class:`~pd_core.evaluation.settings.RunSettings`; ``fields``: its
    other fields). What the settings refuse (an unknown attack or defence, a broken plugin, a bad
    table or size) is a :class:`CliError`: every folder subcommand checks its options here."""
    from ..evaluation import EvaluationError
    from ..evaluation.settings import RunSettings

    kind = kind or RunSettings
    try:
        return kind(ensemble=args.ensemble, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                    tuning_fraction=args.tuning_fraction, defences=getattr(args, "defence", None) or (), **fields)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None


def add_progress_options(p: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--progress`` (see :func:`wants_progress`)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")


def wants_progress(args) -> bool:
    """A progress bar on stderr: when it is a terminal (unless ``--no-progress``), or with ``--progress``."""
    return not args.no_progress and sys.stderr.isatty() or args.progress


def failed_units_exit(failed: list[dict], where) -> int:
    """0, or :data:`EXIT_BAD_INPUT` after one line on stderr per failed defence when some units of a
    run failed (a defence that raised or broke its contract; the sidecar ``where`` lists them)."""
    if not failed:
        return 0
    reasons: dict[tuple, int] = {}
    for f in failed:
        reasons[(f["defence"], f["reason"])] = reasons.get((f["defence"], f["reason"]), 0) + 1
    for (defence, reason), count in reasons.items():
        print(f"error: {count} unit(s) failed in defence {defence!r}: {reason} (see failed_units in {where}; "
              "run the same command again to retry them)", file=sys.stderr)
    return EXIT_BAD_INPUT


def summary_of_folder_run(args, *, kind: str, summarize, drawn, compute):
    """The summary of a resumable folder run (``sweep``, ``dose``), and the run's failed units
    (``[]`` with ``--plot``; see :func:`failed_units_exit`).

    With ``--plot FILE``: ``summarize(rows of FILE)``, computing nothing; a file whose ``drawn(summary)``
    part is empty has no ``kind`` rows (:class:`CliError`). Otherwise ``compute(model, progress)`` on
    ``--images`` into ``--out`` (the model of ``--model``, the progress bar of :func:`wants_progress`),
    one line of counts printed, and its result's ``summary`` returned. An
    :class:`~pd_core.evaluation.EvaluationError` becomes a :class:`CliError`.
    """
    from ..evaluation import EvaluationError, progress_bar
    from ..evaluation.store import read_results

    try:
        if args.plot:
            summary = summarize(read_results(args.plot))
            if drawn(summary).empty:
                raise CliError(f"{args.plot} has no {kind} rows.")
            return summary, []
        if not args.images or not args.out:
            raise CliError("give --images DIR and --out FILE (or --plot FILE to draw an existing file).")
        model = load_model(args.model)
        update, close = progress_bar(wants_progress(args))
        try:
            result = compute(model, update)
        finally:
            close()
        print(f"{result.kept} images counted of {result.images}; {result.computed_units} units computed, "
              f"{result.seconds:.0f} s; rows: {args.out}")
        return result.summary, result.failed_units
    except EvaluationError as exc:
        raise CliError(str(exc)) from None


def write_figures(figures: dict, png: str | None = None, html: str | None = None) -> None:
    """Write Plotly ``figures`` (key -> figure) as PNG and/or HTML and print each path.

    One figure goes to ``png`` / ``html`` as given; several go beside it as
    ``<stem>_<key parts>.<suffix>`` (a key is a tuple of strings, e.g. (attack, preset)). Every
    folder is checked before anything is written; a missing one, or a PNG export that cannot run,
    is a :class:`CliError`.
    """
    from pathlib import Path

    from ..evaluation.curve_figures import write_png

    def paths(target: str) -> dict:
        if len(figures) == 1:
            return {next(iter(figures)): Path(target)}
        base = Path(target)
        return {key: base.with_name("_".join([base.stem, *key]) + base.suffix) for key in figures}

    targets = [(fmt, key, path) for fmt, target in (("png", png), ("html", html)) if target
               for key, path in paths(target).items()]
    for _, _, path in targets:
        if not path.parent.exists():
            raise CliError(f"the folder {path.parent} does not exist.")
    for fmt, key, path in targets:
        if fmt == "png":
            try:
                write_png(figures[key], path)
            except RuntimeError as exc:
                raise CliError(str(exc)) from None
        else:
            figures[key].write_html(str(path), include_plotlyjs=True)
        print(f"figure: {path}")
