"""``python -m pd_core adaptive``: accuracy of a defence under the adaptive BPDA+EOT attack, against ε, or the ladder.

The work is :func:`pd_core.adaptive.evaluate_adaptive` and, with ``--ladder``,
:func:`pd_core.adaptive.evaluate_ladder` (SPEC §3, issue 20 item 3), on Ray with ``--ray``; this
module only parses the options into the settings objects of :mod:`pd_core.adaptive.settings`,
prints the tables and turns bad input into exit code 2 with one line on stderr
(:class:`pd_core.cli.common.CliError`). ``--defence NAME[,NAME]`` takes registry names, aliases and
``FILE.py:FUNCTION`` plugins (``--baseline`` is the older spelling of the same option); with
several defences the ladder's files get the defence's name before their suffix
(``ladder.csv`` -> ``ladder.jpeg.csv``).
"""
from __future__ import annotations

import argparse
import math

from .common import (CliError, add_dataset_options, add_defence_choice, add_defence_options, dataset_images,
                     defence_config, load_model)

HELP = "accuracy of the defence under the adaptive BPDA+EOT attack, against ε"

DESCRIPTION = ("Untargeted L-inf PGD through the defence with BPDA (the defence's surrogate, the identity by "
               "default, in the backward pass) and EOT (gradient averaged over N defence samples per step), on "
               "the images the undefended model classifies correctly; accuracy of the undefended model, one "
               "defended run and the Ens-10 vote, with 95% Wilson intervals. --ladder runs every rung that "
               "applies to each defence (transfer, BPDA, BPDA+EOT for a randomised one, exact+EOT where its "
               "gradient is exact), the sanity checks and a JSON report per defence.")

#: Default budgets per threat model: /255 for L-inf, normalised L2 (Guo et al. 2018 broke at 0.05).
DEFAULT_EPS = {"linf": "1,2,4,8", "l2": "0.01,0.02,0.05"}

def parse_eps(text: str) -> list[float]:
    """Budgets in /255 from ``"1,2,4,8"``; ``ValueError`` with a plain sentence otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps must be numbers in /255 separated by commas (e.g. 1,2,4,8), got {text!r}") from None
    if not values or any(v < 0 or v > 255 or not math.isfinite(v) for v in values):
        raise ValueError(f"--eps values must be between 0 and 255 (in /255 units), got {text!r}")
    return values


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``adaptive`` on ``subparsers`` (see :func:`pd_core.adaptive.evaluate_adaptive`)."""
    from ..adaptive.settings import LOSSES, NORMS

    p = subparsers.add_parser("adaptive", help=HELP, description=DESCRIPTION)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of labelled images")
    p.add_argument("--labels", default=None, metavar="CSV", help="labels file (default: labels.csv in DIR)")
    add_dataset_options(p)
    p.add_argument("--eps", default=None,
                   help="budgets, comma separated: L-inf in /255 (default 1,2,4,8); with --norm l2 the normalised "
                        "L2 ||delta||_2/||x||_2 (default 0.01,0.02,0.05)")
    p.add_argument("--norm", choices=NORMS, default="linf",
                   help="with --ladder: the threat model, L-inf (default) or the normalised L2 of Guo et al. 2018")
    p.add_argument("--eot", type=int, default=10, metavar="N", help="defence samples averaged per step (default 10)")
    p.add_argument("--steps", type=int, default=40, metavar="S", help="PGD steps (default 40)")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="what the attack ascends: cross-entropy of the true class (ce, default) or the "
                        "Carlini-Wagner logit margin (margin, stronger where ce stalls on a flat prediction); "
                        "with --ladder: only this loss (default: both)")
    p.add_argument("--gradient", choices=("bpda", "exact"), default="bpda",
                   help="gradient through the defence: BPDA's surrogate (bpda, default) or the exact gradient "
                        "with the draws fixed per sample (exact, for a defence that declares one); averaged over "
                        "--eot samples either way")
    p.add_argument("--ladder", action="store_true",
                   help="run the ladder instead: transfer, BPDA, BPDA+EOT and exact+EOT where they apply, with the "
                        "ce and margin losses, and the sanity checks")
    add_defence_choice(p)
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="the older spelling of --defence (e.g. jpeg75, undefended)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="with --ladder: write a RobustBench-style report (schema pd-lab/adaptive-report/1)")
    p.add_argument("--step-fraction", type=float, default=None, metavar="F",
                   help="step size as a fraction of eps (default 2.5/steps)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N evaluation images (the evaluation protocol's hash order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the ensemble vote (default 10)")
    p.add_argument("--batch-images", type=int, default=16, metavar="B", help="images attacked together")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--out", required=True, metavar="CSV", help="result table (one row per eps and defence)")
    p.add_argument("--tuning-fraction", type=float, default=None, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.add_argument("--ray", metavar="TARGET",
                   help="run on Ray: local:N (N workers on this machine), auto or a cluster address; the units "
                        "go to Parquet shards beside --out (results.shards/), resumable; same rows as without")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="T", help="torch threads of each CPU worker")
    add_defence_options(p)
    p.set_defaults(func=run)
    return p


def _sources(args) -> list[str]:
    """The defences asked for, as registry names or plugin specs (a plugin file's path made absolute,
    so that Ray workers find it); each loaded once here, so a bad one fails before any work."""
    from pathlib import Path

    from ..defences import DefenceError, resolve_defences

    if args.defence and args.baseline:
        raise CliError("give --defence or --baseline (its older spelling), not both")
    text = args.defence or args.baseline or "pixel_deflection"
    sources = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        where, sep, attr = item.rpartition(":")
        if sep and where.endswith(".py"):
            item = f"{Path(where).expanduser().resolve()}:{attr}"
        sources.append(item)
    try:
        resolve_defences(sources)
    except DefenceError as exc:
        raise CliError(str(exc)) from None
    if not sources:
        raise CliError("--defence is empty")
    return sources


def _spec(args, source: str):
    """The :class:`~pd_core.adaptive.settings.DefenceSpec` of one source, with the defence options
    (σ, K, r, --no-map) given to every defence that has such a parameter."""
    from ..adaptive.settings import DefenceSpec
    from ..defences.plugins import resolve_defences
    from ..defences.registry import defence_info, params_from_config

    (name,) = resolve_defences(source)
    return DefenceSpec(source, params_from_config(defence_info(name), defence_config(args)))


def _settings(args):
    """The run's settings objects from the options; a bad value is a :class:`CliError`."""
    from ..adaptive.settings import AdaptiveSettings, ImageSelection, LadderSettings, SettingsError

    if args.report and not args.ladder:
        raise CliError("--report needs --ladder (the report describes the whole ladder)")
    if args.norm != "linf" and not args.ladder:
        raise CliError("--norm l2 needs --ladder (the accuracy curve is L-inf)")
    try:
        eps_list = parse_eps(args.eps or DEFAULT_EPS[args.norm])
        selection = ImageSelection(limit=args.limit, labels_csv=args.labels, tuning_fraction=args.tuning_fraction)
        if args.ladder:
            from ..adaptive.settings import LOSSES

            losses = (args.loss,) if args.loss else LOSSES
            settings = LadderSettings(eps_255=tuple(eps_list), steps=args.steps, eot=args.eot, losses=losses,
                                      ensemble=args.ensemble, seed=args.seed, norm=args.norm)
        else:
            settings = AdaptiveSettings(eps_255=tuple(eps_list), steps=args.steps, eot=args.eot, loss=args.loss or "ce",
                                        gradient=args.gradient, step_size_fraction=args.step_fraction,
                                        ensemble=args.ensemble, batch_images=args.batch_images, seed=args.seed)
    except (ValueError, SettingsError) as exc:
        raise CliError(str(exc)) from None
    return settings, selection


def run(args) -> int:
    """Evaluate, print the table and the output path; bad input raises :class:`CliError`."""
    if args.step_fraction is not None and not (0 < args.step_fraction <= 10):
        raise CliError("--step-fraction must be a number above 0 (a fraction of eps, e.g. 0.25)")
    settings, selection = _settings(args)
    sources = _sources(args)
    if len(sources) > 1 and not args.ladder:
        raise CliError("several defences need --ladder (the accuracy curve judges one defence)")
    images = dataset_images(args)
    if args.ladder:
        return _run_ladders(args, settings, selection, sources, images)
    return _run_curve(args, settings, selection, sources[0], images)


def _run_curve(args, settings, selection, source: str, images) -> int:
    """The accuracy against ε of one defence, in this process or on Ray."""
    import sys

    from ..adaptive import RunHooks, evaluate_adaptive, format_table, write_csv
    from ..defences import DefenceError
    from ..evaluation.progress import progress_bar

    spec = _spec(args, source)
    if args.ray:
        got = _on_ray(args, settings, selection, spec, images)
        write_csv(got["rows"], args.out)
        print(format_table(got["rows"]))
        _print_units(got, args.out)
        return 0
    model = load_model(args.model)
    update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
    try:
        rows = evaluate_adaptive(model, images, settings, spec.build(model), selection=selection, out_csv=args.out,
                                 hooks=RunHooks(update))
    except (ValueError, OSError, DefenceError) as exc:  # EvaluationError is a ValueError
        raise CliError(str(exc)) from None
    finally:
        close()
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


def _path_for(path: str | None, name: str, several: bool) -> str | None:
    """``path`` for one defence; with several, ``ladder.csv`` -> ``ladder.NAME.csv``."""
    from pathlib import Path

    if path is None or not several:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{name}{p.suffix}"))


def _run_ladders(args, settings, selection, sources: list[str], images) -> int:
    """``--ladder``: the ladder of each defence, its CSV, its checks and its report."""
    import sys

    from ..adaptive import (build_report, evaluate_ladder, format_ladder, looks_versus_is, write_ladder_csv,
                            write_report)
    from ..defences import DefenceError

    several = len(sources) > 1
    say = (lambda msg: print(msg, file=sys.stderr)) if not args.no_progress else None
    model = None if args.ray else load_model(args.model)
    reports = {}
    for source in sources:
        spec = _spec(args, source)
        name = spec.name()
        out, report_path = _path_for(args.out, name, several), _path_for(args.report, name, several)
        if args.ray:
            got = _on_ray(args, settings, selection, spec, images)
            rows, found = got["rows"], got["checks"]
            report = build_report(rows, found, model_name=args.model, input_size=got["input_size"],
                                  defence=got["defence"], settings=settings)
            if report_path:
                write_report(report, report_path)
        else:
            try:
                rows, found, report = evaluate_ladder(model, images, spec.build(model), settings, selection,
                                                      report_path=report_path, progress=say)
            except (ValueError, OSError, DefenceError) as exc:
                raise CliError(str(exc)) from None
        write_ladder_csv(rows, out)
        reports[name] = report
        if several:
            print(f"== {report['defence']['title']} ({name})")
        print(format_ladder(rows, found))
        if several:
            print(report["verdict"])
        if args.ray:
            _print_units(got, out, report_path)
        else:
            print(f"wrote {out}")
            if report_path:
                print(f"wrote {report_path}")
    if several:
        print("looks robust (transfer) vs is robust (worst rung), one defended run:")
        for row in looks_versus_is(reports):
            print(f"  {row['defence']}: {row['looks robust (transfer)']:.0%} vs "
                  f"{row['is robust (strongest attack)']:.0%} at {row['ε (/255)']:g} (n = {row['n']})")
    return 0


def _on_ray(args, settings, selection, spec, images) -> dict:
    """The same rows computed by Ray workers (:mod:`pd_core.adaptive.distributed`), shards beside
    ``--out`` (one folder per defence when there are several)."""
    import sys
    from pathlib import Path

    from ..adaptive.distributed import evaluate_adaptive_distributed
    from ..defences import DefenceError
    from ..evaluation.dispatch import progress_printer
    from ..evaluation.settings import ClusterSettings

    several = len([t for t in (args.defence or args.baseline or "").split(",") if t.strip()]) > 1
    store = Path(_path_for(args.out, spec.name(), several)).with_suffix(".shards")
    show = progress_printer() if (not args.no_progress and sys.stderr.isatty()) or args.progress else None
    try:
        ray = ClusterSettings(ray=args.ray, threads=args.threads_per_worker)
        got = evaluate_adaptive_distributed(args.model, images, settings, store=store, defence=spec,
                                            selection=selection, ray=ray, on_progress=show)
    except (ValueError, OSError, DefenceError) as exc:  # EvaluationError is a ValueError
        raise CliError(str(exc)) from None
    return {**got, "store": store}


def _print_units(got: dict, out: str, report: str | None = None) -> None:
    d = got["distributed"]
    print(f"units: {d['units']} ({d['resumed']} resumed, {d['computed']} computed, {d['failed']} failed, "
          f"{d['retried']} retried); shards: {got['store']}; wrote {out}" + (f" and {report}" if report else ""))
