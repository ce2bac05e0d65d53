"""``python -m pd_core adaptive``: accuracy of the defence under the adaptive BPDA+EOT attack, against ε.

The work is :func:`pd_core.adaptive.evaluate_adaptive` (SPEC §3); this module only parses the
options, prints the table (:func:`pd_core.adaptive.format_table`) and turns bad input into exit
code 2 with one line on stderr (:class:`pd_core.cli.common.CliError`).
"""
from __future__ import annotations

import argparse
import math

from .common import CliError, add_dataset_options, add_defence_options, dataset_images, defence_config, load_model

HELP = "accuracy of the defence under the adaptive BPDA+EOT attack, against ε"

DESCRIPTION = ("Untargeted L-inf PGD through the defence with BPDA (identity backward pass) and EOT (gradient "
               "averaged over N defence samples per step), on the images the undefended model classifies "
               "correctly; accuracy of the undefended model, one defended run and the Ens-10 vote, with 95% "
               "Wilson intervals.")

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
    from ..adaptive.gradients import LOSSES

    p = subparsers.add_parser("adaptive", help=HELP, description=DESCRIPTION)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of labelled images")
    p.add_argument("--labels", default=None, metavar="CSV", help="labels file (default: labels.csv in DIR)")
    add_dataset_options(p)
    p.add_argument("--eps", default="1,2,4,8", help="L-inf budgets in /255, comma separated (default 1,2,4,8)")
    p.add_argument("--eot", type=int, default=10, metavar="N", help="defence samples averaged per step (default 10)")
    p.add_argument("--steps", type=int, default=40, metavar="S", help="PGD steps (default 40)")
    p.add_argument("--loss", choices=LOSSES, default="ce",
                   help="what the attack ascends: cross-entropy of the true class (ce, default) or the "
                        "Carlini-Wagner logit margin (margin, stronger where ce stalls on a flat prediction)")
    p.add_argument("--gradient", choices=("bpda", "exact"), default="bpda",
                   help="gradient through the defence: BPDA's identity (bpda, default) or the exact gradient "
                        "with the draws fixed per sample (exact); averaged over --eot samples either way")
    p.add_argument("--ladder", action="store_true",
                   help="run the ladder instead: transfer, BPDA, BPDA+EOT and exact+EOT, with the ce and margin "
                        "losses, and the sanity checks")
    p.add_argument("--baseline", choices=("jpeg75", "undefended"), default=None,
                   help="with --ladder: judge a baseline instead of pixel deflection, JPEG at quality 75 or the "
                        "undefended model (the defence options are then ignored)")
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


def run(args) -> int:
    """Evaluate, print the table and the output path; bad input raises :class:`CliError`."""
    import sys

    from ..adaptive import evaluate_adaptive, format_table
    from ..evaluation import progress_bar

    try:
        eps_list = parse_eps(args.eps)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.step_fraction is not None and not (0 < args.step_fraction <= 10):
        raise CliError("--step-fraction must be a number above 0 (a fraction of eps, e.g. 0.25)")
    if args.report and not args.ladder:
        raise CliError("--report needs --ladder (the report describes the whole ladder)")
    if args.baseline and not args.ladder:
        raise CliError("--baseline needs --ladder (the baselines are judged by the ladder)")
    images = dataset_images(args)
    if getattr(args, "ray", None):
        return _run_on_ray(args, eps_list, images)
    model = load_model(args.model)
    if args.ladder:
        return _run_ladder(args, model, eps_list, images)
    update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
    try:
        rows = evaluate_adaptive(model, images, eps_list, eot=args.eot, steps=args.steps, limit=args.limit,
                                 seed=args.seed, out_csv=args.out, progress=update, labels_csv=args.labels,
                                 config=defence_config(args), step_size_fraction=args.step_fraction,
                                 ensemble=args.ensemble, batch_images=args.batch_images,
                                 tuning_fraction=args.tuning_fraction, loss=args.loss, gradient=args.gradient)
    except (ValueError, OSError) as exc:  # EvaluationError is a ValueError
        raise CliError(str(exc)) from None
    finally:
        close()
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


def _run_ladder(args, model, eps_list, images) -> int:
    """``--ladder``: :func:`pd_core.adaptive.ladder.evaluate_ladder` with this command's budget."""
    import sys

    from ..adaptive.gradients import LOSSES
    from ..adaptive.ladder import BASELINES, LadderSettings, evaluate_ladder, format_ladder, write_ladder_csv

    settings = LadderSettings(eps_255=tuple(eps_list), steps=args.steps, eot=args.eot, losses=LOSSES,
                              ensemble=args.ensemble, seed=args.seed)
    say = (lambda msg: print(msg, file=sys.stderr)) if not args.no_progress else None
    try:
        config = BASELINES[args.baseline] if args.baseline else defence_config(args)
        rows, found, _ = evaluate_ladder(model, images, settings, config, labels_csv=args.labels,
                                         defence_name=args.baseline or "pixel_deflection",
                                         tuning_fraction=args.tuning_fraction, limit=args.limit,
                                         report_path=args.report, progress=say)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    write_ladder_csv(rows, args.out)
    print(format_ladder(rows, found))
    print(f"wrote {args.out}")
    if args.report:
        print(f"wrote {args.report}")
    return 0


def _run_on_ray(args, eps_list, images) -> int:
    """``--ray``: the same rows computed by Ray workers (:mod:`pd_core.adaptive.distributed`)."""
    import sys
    from pathlib import Path

    from ..adaptive.distributed import evaluate_adaptive_distributed
    from ..adaptive.gradients import LOSSES
    from ..adaptive.ladder import LadderSettings, format_ladder, write_ladder_csv
    from ..adaptive.report_json import build_report, write_report
    from ..adaptive import format_table, write_csv
    from ..adaptive.ladder import BASELINES
    from ..evaluation.dispatch import progress_printer

    config = BASELINES[args.baseline] if args.baseline else defence_config(args)
    ladder = (LadderSettings(eps_255=tuple(eps_list), steps=args.steps, eot=args.eot, losses=LOSSES,
                             ensemble=args.ensemble, seed=args.seed) if args.ladder else None)
    store = Path(args.out).with_suffix(".shards")
    show = progress_printer() if (not args.no_progress and sys.stderr.isatty()) or args.progress else None
    try:
        got = evaluate_adaptive_distributed(
            args.model, images, store=store, eps_list=eps_list, eot=args.eot, steps=args.steps,
            limit=args.limit, seed=args.seed, labels=args.labels, config=config,
            step_size_fraction=args.step_fraction, ensemble=args.ensemble, batch_images=args.batch_images,
            tuning_fraction=args.tuning_fraction, loss=args.loss, gradient=args.gradient, ladder=ladder,
            ray=args.ray, threads=args.threads_per_worker, on_progress=show)
    except (ValueError, OSError) as exc:  # EvaluationError is a ValueError
        raise CliError(str(exc)) from None
    if ladder is not None:
        write_ladder_csv(got["rows"], args.out)
        print(format_ladder(got["rows"], got["checks"]))
        if args.report:
            write_report(build_report(got["rows"], got["checks"], model_name=args.model, input_size=got["input_size"],
                                      defence_name=args.baseline or "pixel_deflection", config=config,
                                      settings=ladder), args.report)
    else:
        write_csv(got["rows"], args.out)
        print(format_table(got["rows"]))
    d = got["distributed"]
    print(f"units: {d['units']} ({d['resumed']} resumed, {d['computed']} computed, {d['failed']} failed, "
          f"{d['retried']} retried); shards: {store}; wrote {args.out}" + (f" and {args.report}" if args.report else ""))
    return 0
