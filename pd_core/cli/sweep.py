"""``python -m pd_core sweep --images DIR --attacks fgsm,igsm --values 1,2,4,8 --out sweep.csv``:
accuracy (no defence, single run, Ens-10) against perturbation size, resumable (issue 13, item 3).

The work is :func:`pd_core.evaluation.sweeps.sweep`; the figures are
:mod:`pd_core.evaluation.curve_figures`. ``--plot FILE`` draws an existing results file without
computing anything. Bad input raises :class:`~pd_core.cli.common.CliError` (one line, exit 2).
"""
from __future__ import annotations

import argparse

from .common import (CliError, add_dataset_options, add_defence_list, add_folder_options, add_progress_options,
                     add_protocol_options, dataset_images, failed_units_exit, parse_number_list, run_settings,
                     summary_of_folder_run, write_figures as _write_figures)

HELP = "accuracy against perturbation size: each attack over a grid of strengths (eps, overshoot, gamma)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep", help=HELP,
        description="Run the protocol (no defence, single run, Ens-N) at every point of a strength grid per attack "
                    "and draw accuracy against the mean perturbation size. Resumable: run the same command again "
                    "to continue. Default grids: eps 1,2,4,6,8,12,16 (/255) for FGSM, IGSM, PGD; overshoot for "
                    "DeepFool, C&W, L-BFGS; gamma for JSMA (see pd_core/evaluation/sweeps.py).")
    add_folder_options(p)
    add_dataset_options(p)
    p.add_argument("--attacks", default="fgsm", help="comma-separated attacks (default: fgsm)")
    p.add_argument("--preset", default="paper", metavar="P[,P...]",
                   help="base preset(s) whose other parameters (and step rule) each point keeps: paper (IGSM: early "
                        "stop), budget (IGSM, all steps), minimal (FGSM, early stop), large, interactive; each "
                        "attack runs the listed presets it has")
    p.add_argument("--values", metavar="V[,V...]",
                   help="the grid (default: the attack's grid); eps in 1/255 units, other parameters in their own")
    p.add_argument("--param", metavar="NAME", help="the swept parameter (default: eps, overshoot or gamma per attack)")
    add_protocol_options(p)
    add_defence_list(p, "the paper's defence (single run and Ens-N)")
    p.add_argument("--out", metavar="sweep.csv", help="results file (rows appended as they finish)")
    p.add_argument("--plot", metavar="FILE", help="only draw an existing results file (no --images, nothing computed)")
    p.add_argument("--measure", default="norm_l2", choices=["norm_l2", "norm_l2_model", "rmse"],
                   help="the x axis: mean perturbation size in this measure (default norm_l2)")
    p.add_argument("--png", metavar="out.png",
                   help="write the figure(s) as PNG; several (attack, preset) series go to out_<attack>_<preset>.png")
    p.add_argument("--html", metavar="out.html", help="write the interactive figure(s) as HTML (same naming)")
    add_progress_options(p)
    p.set_defaults(func=run)
    return p


def parse_values(text: str | None) -> list[float] | None:
    """``"1,2,4"`` -> ``[1.0, 2.0, 4.0]``; None for None; :class:`CliError` for a non-number."""
    return None if text is None else parse_number_list(text, "--values")


def run(args) -> int:
    """Sweep (or only draw with ``--plot``), print the summary and write the figures."""
    from ..evaluation import EvaluationError
    from ..evaluation.sweeps import SweepGrid, sweep, sweep_summary

    values = parse_values(args.values)
    if not args.plot:  # every check before the model loads
        settings = run_settings(args)
        try:
            grid = SweepGrid(tuple(args.attacks.split(",")), tuple(args.preset.split(",")),
                             None if values is None else tuple(values), args.param)
        except EvaluationError as exc:
            raise CliError(str(exc)) from None

    def compute(model, progress):
        return sweep(model, dataset_images(args), grid, settings, out_csv=args.out, labels_csv=args.labels,
                     progress=progress)

    summary, failed = summary_of_folder_run(args, kind="sweep", summarize=sweep_summary, compute=compute,
                                            drawn=lambda s: s)
    print(format_summary(summary))
    write_figures(summary, args.measure, png=args.png, html=args.html)
    return failed_units_exit(failed, f"{args.out}.meta.json")


def format_summary(summary) -> str:
    """The summary as text: one line per point and defence, accuracy % with its Wilson interval."""
    lines = [f"{'attack':8s} {'preset':8s} {'point':22s} {'defence':8s} {'n':>4s}  {'accuracy [95%]':20s} "
             f"{'norm_l2':>8s} {'l2_model':>8s} {'rmse':>8s} {'success':>7s}"]
    for r in summary.itertuples():
        acc = f"{100 * r.accuracy:5.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
        success = "" if r.success_rate != r.success_rate else f"{100 * r.success_rate:.0f}%"
        lines.append(f"{r.attack:8s} {r.preset:8s} {r.label:22s} {r.defence:8s} {r.n:>4d}  {acc:20s} "
                     f"{r.mean_norm_l2:8.4f} {r.mean_norm_l2_model:8.4f} {r.mean_rmse:8.4f} {success:>7s}")
    return "\n".join(lines)


def write_figures(summary, measure: str, png: str | None = None, html: str | None = None) -> None:
    """One figure per (attack, preset) series, as PNG and/or HTML files (printed)."""
    if not png and not html:
        return
    from ..evaluation.curve_figures import sweep_figures

    _write_figures(sweep_figures(summary, measure), png=png, html=html)
