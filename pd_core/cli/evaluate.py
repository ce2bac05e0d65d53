"""``python -m pd_core evaluate --images DIR --out results.csv ...``: the paper's Tables 1, 3, 4
(or Figure 5 with ``--figure5``) on a folder of labelled images, resumable.

The work is :func:`pd_core.evaluation.evaluate` / :func:`pd_core.evaluation.tuning_grid`; this
module parses the options, prints the table and turns an
:class:`~pd_core.evaluation.EvaluationError` into exit code 2 with one line on stderr.
"""
from __future__ import annotations

import argparse

from .common import (CliError, add_dataset_options, add_defence_list, add_folder_options, add_progress_options,
                     add_protocol_options, dataset_images, failed_units_exit, load_model, run_settings,
                     wants_progress)

HELP = "reproduce the paper's Tables 1, 3, 4 on a folder of labelled images"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..evaluation.tables import PAPER_ATTACKS

    p = subparsers.add_parser("evaluate", help=HELP,
                              description="Run the paper's protocol (§9-10) on a folder of labelled images; "
                                          "resumable: run the same command again to continue an interrupted run.")
    add_folder_options(p, images_required=True)
    p.add_argument("--attacks", default=",".join(PAPER_ATTACKS),
                   help="comma-separated attacks (default: the paper's six); the clean row is always included")
    p.add_argument("--preset", default="paper", choices=["paper", "budget", "minimal", "large", "interactive"],
                   help="attack strength: paper (the paper's setting), large, interactive; budget (igsm: all "
                        "10 steps) and minimal (fgsm: smallest fooling eps) exist for one attack each")
    p.add_argument("--table", type=int, default=1, choices=[1, 3, 4])
    add_defence_list(p, "the table's columns")
    add_protocol_options(p)
    p.add_argument("--out", required=True, metavar="results.csv")
    p.add_argument("--figure5", action="store_true",
                   help="instead of a table: the paper's Figure 5 search over σ, window and K (one at a time) "
                        "on the held-apart tuning subset only, written to --out")
    p.add_argument("--ray", metavar="TARGET",
                   help="run on Ray: local:N (N workers on this machine), auto or a cluster address; rows go "
                        "to Parquet shards (--out DIR, or results.shards/ beside --out results.csv)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="T", help="torch threads of each CPU worker")
    add_dataset_options(p)
    add_progress_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Evaluate (or search Figure 5) and print the result; bad input raises :class:`CliError`.
    Exit code 2 also when a defence failed on some units (their rows are missing; the rest is kept)."""
    from ..evaluation import EvaluationError, progress_bar

    attacks = [a for a in args.attacks.split(",") if a.strip()] if args.attacks else []
    if args.figure5 and args.defence:
        raise CliError("--figure5 searches pixel deflection's parameters: leave out --defence.")
    if args.figure5 and getattr(args, "ray", None):
        raise CliError("--figure5 runs in this process: leave out --ray.")
    settings = figure5_search(args, attacks) if args.figure5 else protocol_settings(args, attacks)
    if getattr(args, "ray", None):
        return _table_on_ray(args, settings)
    model = load_model(args.model)
    update, close = progress_bar(wants_progress(args))
    try:
        if args.figure5:
            return _figure5(model, args, settings, update, close)
        return _table(model, args, settings, update, close)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None


def protocol_settings(args, attacks):
    """The run's :class:`~pd_core.evaluation.settings.ProtocolSettings` (checked by :func:`run_settings`)."""
    from ..evaluation.settings import ProtocolSettings

    return run_settings(args, ProtocolSettings, attacks=tuple(attacks), preset=args.preset, table=args.table)


def figure5_search(args, attacks):
    """Figure 5's :class:`~pd_core.evaluation.figures.TuningGrid` (the paper's linear search) of the options."""
    from ..evaluation import EvaluationError
    from ..evaluation.figures import TuningGrid

    run_settings(args)  # the protocol options are checked before any work, as for the tables
    try:
        return TuningGrid(attacks=tuple(attacks), preset=args.preset)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None


def _figure5(model, args, search, update, close) -> int:
    from ..evaluation import tuning_grid

    try:
        grid = tuning_grid(model, args.images, search, run_settings(args), labels_csv=args.labels, progress=update)
    finally:
        close()
    grid.to_csv(args.out, index=False)
    shown = grid.assign(accuracy=(100 * grid["accuracy"]).round(1),
                        ci=[f"{100 * lo:.1f}-{100 * hi:.1f}" for lo, hi in zip(grid["ci_low"], grid["ci_high"])])
    print("Figure 5: defended accuracy (%) on the held-apart tuning subset "
          f"(Ens-{args.ensemble} vote; paper defaults σ=0.04, r=10, K=100)")
    print(shown[["attack", "varied", "sigma", "window", "deflections", "n", "accuracy", "ci"]].to_string(index=False))
    print(f"\nrows: {args.out}")
    return 0


def _table(model, args, settings, update, close) -> int:
    from pathlib import Path

    from ..evaluation import evaluate, rank_histogram
    from ..evaluation.sidecar import sidecar_path

    images = dataset_images(args)
    try:
        result = evaluate(model, images, settings, out_csv=args.out, labels_csv=args.labels, progress=update)
    finally:
        close()
    print(result.format_table())
    if result.unreadable:
        print(f"\n{len(result.unreadable)} unreadable file(s) skipped: " +
              "; ".join(f"{k}: {v}" for k, v in list(result.unreadable.items())[:5]))
    ranks = rank_histogram(result, preset=args.preset)
    pooled = ranks[(ranks["attack"] == "all") & (ranks["direction"] == "adversarial class in clean top-5")]
    if pooled["count"].sum() > 0:
        print("\nFigure 6 (successful attacks): rank of the adversarial class in the clean top-5: " +
              ", ".join(f"{'not in top-5' if r.rank == 0 else f'#{r.rank}'} {100 * r.fraction:.0f}%"
                        for r in pooled.itertuples()))
    print(f"\nrows: {args.out}  (metadata: {sidecar_path(Path(args.out))}); {result.seconds:.0f} s")
    return failed_units_exit(result.failed_units, sidecar_path(Path(args.out)))


def _table_on_ray(args, settings) -> int:
    """``--ray``: the same protocol on Ray workers (:mod:`pd_core.evaluation.distributed`)."""
    from pathlib import Path

    from ..evaluation import EvaluationError
    from ..evaluation.dispatch import progress_printer
    from ..evaluation.shards import meta_path
    from ..evaluation.distributed import evaluate_distributed
    from ..evaluation.settings import ClusterSettings

    out = Path(args.out)
    csv_out = out if out.suffix.lower() == ".csv" else None
    store = out.with_suffix(".shards") if csv_out is not None else out
    show = progress_printer() if wants_progress(args) else None
    try:
        cluster = ClusterSettings(ray=args.ray, threads=args.threads_per_worker)
        result = evaluate_distributed(args.model, dataset_images(args), settings, store=store, cluster=cluster,
                                      labels=args.labels, on_progress=show, out_csv=csv_out)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    print(result.format_table())
    d = result.meta["distributed"]
    print(f"\nunits: {d['units']} ({d['resumed']} resumed, {d['computed']} computed, {d['failed']} failed, "
          f"{d['retried']} retried); shards: {store}" + (f"; rows: {csv_out}" if csv_out else "")
          + f"; {result.seconds:.0f} s")
    return failed_units_exit(result.failed_units, meta_path(store))
