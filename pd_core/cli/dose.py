"""``python -m pd_core dose --images DIR --attacks fgsm,igsm --out dose.csv``: clean accuracy and
recovery of each attack against K deflections, with and without the denoiser (issue 13, item 4).

The work is :func:`pd_core.evaluation.dose.deflection_dose`; the figure is
:func:`pd_core.evaluation.curve_figures.dose_figure`. ``--plot FILE`` draws an existing results
file without computing anything. Bad input raises :class:`~pd_core.cli.common.CliError`.
"""
from __future__ import annotations

import argparse

from .common import (CliError, add_dataset_options, add_folder_options, add_progress_options, add_protocol_options,
                     dataset_images, failed_units_exit, parse_number_list, run_settings, summary_of_folder_run,
                     write_figures)

HELP = "the deflection dose: accuracy against the number of deflections K, with and without the denoiser"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dose", help=HELP,
        description="Attack each image once, then defend it with K deflections for every K of the grid, with and "
                    "without the wavelet denoiser (extends the paper's Figure 2 and Table 3). Resumable.")
    add_folder_options(p)
    add_dataset_options(p)
    p.add_argument("--attacks", default="fgsm,igsm",
                   help="comma-separated attacks (default: fgsm,igsm); the clean images are always included")
    p.add_argument("--preset", default="paper", help="the attacks' preset (default: paper)")
    p.add_argument("--deflections", default="0,100,300,1000,3000,10000,30000", metavar="K[,K...]",
                   help="the grid of K (default: 0,100,300,1000,3000,10000,30000)")
    p.add_argument("--denoiser", default="both", choices=["both", "on", "off"],
                   help="with the wavelet denoiser, without it, or both (default)")
    p.add_argument("--window", type=int, default=10, help="r, deflection window apothem in pixels (paper: 10)")
    p.add_argument("--sigma", type=float, default=0.04, help="wavelet threshold noise level (paper: 0.04)")
    p.add_argument("--no-map", action="store_true", help="deflect uniformly instead of guided by R-CAM")
    add_protocol_options(p)
    p.add_argument("--out", metavar="dose.csv", help="results file (rows appended as they finish)")
    p.add_argument("--plot", metavar="FILE", help="only draw an existing results file (no --images, nothing computed)")
    p.add_argument("--single", action="store_true", help="plot the single run instead of the Ens-N vote")
    p.add_argument("--png", metavar="out.png", help="write the figure as PNG")
    p.add_argument("--html", metavar="out.html", help="write the interactive figure as HTML")
    add_progress_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run the dose (or only draw with ``--plot``), print the summary and write the figure."""
    from ..defence import DefenceConfig
    from ..evaluation import EvaluationError
    from ..evaluation.dose import DoseGrid, deflection_dose, dose_summary

    ks = parse_number_list(args.deflections, "--deflections", int, "whole numbers")
    denoise = {"both": (False, True), "on": (True,), "off": (False,)}[args.denoiser]

    if not args.plot:  # every check before the model loads
        settings = run_settings(args, config=DefenceConfig(window=args.window, sigma=args.sigma,
                                                           use_map=not args.no_map))
        try:
            grid = DoseGrid(tuple(args.attacks.split(",")), args.preset, tuple(ks), denoise)
        except EvaluationError as exc:
            raise CliError(str(exc)) from None

    def compute(model, progress):
        return deflection_dose(model, dataset_images(args), grid, settings, out_csv=args.out,
                               labels_csv=args.labels, progress=progress)

    summary, failed = summary_of_folder_run(args, kind="dose", summarize=dose_summary, compute=compute,
                                            drawn=lambda s: s[s["defence"] != "none"])
    print(format_summary(summary))
    if args.png or args.html:
        from ..evaluation.curve_figures import dose_figure

        write_figures({("dose",): dose_figure(summary, vote=not args.single)}, png=args.png, html=args.html)
    return failed_units_exit(failed, f"{args.out}.meta.json")


def format_summary(summary) -> str:
    """One line per (attack, K, denoiser): Ens-N and single-run accuracy % with Wilson intervals."""
    lines = [f"{'attack':8s} {'K':>6s} {'denoiser':8s} {'n':>4s}  {'Ens vote [95%]':20s} {'single [95%]':20s} "
             "recovered/fooled"]
    for r in summary[summary["defence"] != "none"].itertuples():
        ens = f"{100 * r.accuracy:5.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
        single = f"{100 * r.single_accuracy:5.1f} [{100 * r.single_ci_low:.1f}, {100 * r.single_ci_high:.1f}]"
        lines.append(f"{r.attack:8s} {r.deflections:>6d} {'on' if r.denoise else 'off':8s} {r.n:>4d}  {ens:20s} "
                     f"{single:20s} {r.recovered}/{r.fooled}")
    return "\n".join(lines)
