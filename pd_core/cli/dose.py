"""``python -m pd_core dose --images DIR --attacks fgsm,igsm --out dose.csv``: clean accuracy and
recovery of each attack against K deflections, with and without the denoiser (issue 13, item 4).

The work is :func:`pd_core.evaluation.dose.deflection_dose`; the figure is
:func:`pd_core.evaluation.curve_figures.dose_figure`. ``--plot FILE`` draws an existing results
file without computing anything. Bad input raises :class:`~pd_core.cli.common.CliError`.
"""
from __future__ import annotations

import argparse

from .common import CliError, load_model

HELP = "the deflection dose: accuracy against the number of deflections K, with and without the denoiser"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..evaluation.data import DEFAULT_TUNING_FRACTION

    p = subparsers.add_parser(
        "dose", help=HELP,
        description="Attack each image once, then defend it with K deflections for every K of the grid, with and "
                    "without the wavelet denoiser (extends the paper's Figure 2 and Table 3). Resumable.")
    p.add_argument("--images", metavar="DIR",
                   help="folder of images; labels from labels.csv (file,class_index) or WordNet-id prefixes")
    p.add_argument("--labels", metavar="CSV", help="labels file (default: DIR/labels.csv when present)")
    p.add_argument("--model", default="efficientnet_lite0")
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
    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the majority vote (paper: 10)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N evaluation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per chunk (keep it when resuming)")
    p.add_argument("--tuning-fraction", type=float, default=DEFAULT_TUNING_FRACTION, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")
    p.add_argument("--out", metavar="dose.csv", help="results file (rows appended as they finish)")
    p.add_argument("--plot", metavar="FILE", help="only draw an existing results file (no --images, nothing computed)")
    p.add_argument("--single", action="store_true", help="plot the single run instead of the Ens-N vote")
    p.add_argument("--png", metavar="out.png", help="write the figure as PNG")
    p.add_argument("--html", metavar="out.html", help="write the interactive figure as HTML")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)
    return p


def _deflections(text: str) -> list[int]:
    try:
        ks = [int(t) for t in (s.strip() for s in text.split(",")) if t]
    except ValueError:
        raise CliError(f"--deflections expects whole numbers separated by commas, got {text!r}") from None
    if not ks:
        raise CliError("--deflections is empty.")
    return ks


def run(args) -> int:
    """Run the dose (or only draw with ``--plot``), print the summary and write the figure."""
    import sys

    from ..defence import DefenceConfig
    from ..evaluation import EvaluationError, progress_bar
    from ..evaluation.dose import deflection_dose, dose_summary
    from ..evaluation.store import read_results

    ks = _deflections(args.deflections)
    denoise = {"both": (False, True), "on": (True,), "off": (False,)}[args.denoiser]
    try:
        if args.plot:
            summary = dose_summary(read_results(args.plot))
            if summary[summary["defence"] != "none"].empty:
                raise CliError(f"{args.plot} has no dose rows.")
        else:
            if not args.images or not args.out:
                raise CliError("give --images DIR and --out FILE (or --plot FILE to draw an existing file).")
            model = load_model(args.model)
            config = DefenceConfig(window=args.window, sigma=args.sigma, use_map=not args.no_map)
            update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
            try:
                result = deflection_dose(model, args.images, attacks=args.attacks.split(","), preset=args.preset,
                                         deflections=ks, denoise=denoise, ensemble=args.ensemble, limit=args.limit,
                                         seed=args.seed, out_csv=args.out, progress=update,
                                         batch_size=args.batch_size, labels_csv=args.labels, config=config,
                                         tuning_fraction=args.tuning_fraction)
            finally:
                close()
            summary = result.summary
            print(f"{result.kept} images counted of {result.images}; {result.computed_units} units computed, "
                  f"{result.seconds:.0f} s; rows: {args.out}")
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    print(format_summary(summary))
    _write(summary, args)
    return 0


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


def _write(summary, args) -> None:
    from pathlib import Path

    if not args.png and not args.html:
        return
    from ..evaluation.curve_figures import dose_figure, write_png

    fig = dose_figure(summary, vote=not args.single)
    for target in (args.png, args.html):
        if target and not Path(target).parent.exists():
            raise CliError(f"the folder {Path(target).parent} does not exist.")
    if args.png:
        try:
            write_png(fig, args.png)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        print(f"figure: {args.png}")
    if args.html:
        fig.write_html(args.html, include_plotlyjs=True)
        print(f"figure: {args.html}")
