"""``python -m pd_core sweep --images DIR --attacks fgsm,igsm --values 1,2,4,8 --out sweep.csv``:
accuracy (no defence, single run, Ens-10) against perturbation size, resumable (issue 13, item 3).

The work is :func:`pd_core.evaluation.sweeps.sweep`; the figures are
:mod:`pd_core.evaluation.curve_figures`. ``--plot FILE`` draws an existing results file without
computing anything. Bad input raises :class:`~pd_core.cli.common.CliError` (one line, exit 2).
"""
from __future__ import annotations

import argparse

from .common import CliError, load_model

HELP = "accuracy against perturbation size: each attack over a grid of strengths (eps, overshoot, gamma)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..evaluation.data import DEFAULT_TUNING_FRACTION

    p = subparsers.add_parser(
        "sweep", help=HELP,
        description="Run the protocol (no defence, single run, Ens-N) at every point of a strength grid per attack "
                    "and draw accuracy against the mean perturbation size. Resumable: run the same command again "
                    "to continue. Default grids: eps 1,2,4,6,8,12,16 (/255) for FGSM, IGSM, PGD; overshoot for "
                    "DeepFool, C&W, L-BFGS; gamma for JSMA (see pd_core/evaluation/sweeps.py).")
    p.add_argument("--images", metavar="DIR",
                   help="folder of images; labels from labels.csv (file,class_index) or WordNet-id prefixes")
    p.add_argument("--labels", metavar="CSV", help="labels file (default: DIR/labels.csv when present)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attacks", default="fgsm", help="comma-separated attacks (default: fgsm)")
    p.add_argument("--preset", default="paper", metavar="P[,P...]",
                   help="base preset(s) whose other parameters (and step rule) each point keeps: paper (IGSM: early "
                        "stop), budget (IGSM, all steps), minimal (FGSM, early stop), large, interactive; each "
                        "attack runs the listed presets it has")
    p.add_argument("--values", metavar="V[,V...]",
                   help="the grid (default: the attack's grid); eps in 1/255 units, other parameters in their own")
    p.add_argument("--param", metavar="NAME", help="the swept parameter (default: eps, overshoot or gamma per attack)")
    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the majority vote (paper: 10)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N evaluation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per chunk (keep it when resuming)")
    p.add_argument("--tuning-fraction", type=float, default=DEFAULT_TUNING_FRACTION, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")
    p.add_argument("--out", metavar="sweep.csv", help="results file (rows appended as they finish)")
    p.add_argument("--plot", metavar="FILE", help="only draw an existing results file (no --images, nothing computed)")
    p.add_argument("--measure", default="norm_l2", choices=["norm_l2", "norm_l2_model", "rmse"],
                   help="the x axis: mean perturbation size in this measure (default norm_l2)")
    p.add_argument("--png", metavar="out.png",
                   help="write the figure(s) as PNG; several (attack, preset) series go to out_<attack>_<preset>.png")
    p.add_argument("--html", metavar="out.html", help="write the interactive figure(s) as HTML (same naming)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)
    return p


def parse_values(text: str | None) -> list[float] | None:
    """``"1,2,4"`` -> ``[1.0, 2.0, 4.0]``; None for None; :class:`CliError` for a non-number."""
    if text is None:
        return None
    values = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise CliError(f"--values expects numbers separated by commas, got {part!r}") from None
    if not values:
        raise CliError("--values is empty.")
    return values


def run(args) -> int:
    """Sweep (or only draw with ``--plot``), print the summary and write the figures."""
    import sys

    from ..evaluation import EvaluationError, progress_bar
    from ..evaluation.store import read_results
    from ..evaluation.sweeps import sweep, sweep_summary

    values = parse_values(args.values)
    try:
        if args.plot:
            summary = sweep_summary(read_results(args.plot))
            if summary.empty:
                raise CliError(f"{args.plot} has no sweep rows.")
        else:
            if not args.images or not args.out:
                raise CliError("give --images DIR and --out FILE (or --plot FILE to draw an existing file).")
            model = load_model(args.model)
            update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
            try:
                result = sweep(model, args.images, attacks=args.attacks.split(","), presets=args.preset.split(","),
                               values=values, param=args.param, ensemble=args.ensemble, limit=args.limit,
                               seed=args.seed, out_csv=args.out, progress=update, batch_size=args.batch_size,
                               labels_csv=args.labels, tuning_fraction=args.tuning_fraction)
            finally:
                close()
            summary = result.summary
            print(f"{result.kept} images counted of {result.images}; {result.computed_units} units computed, "
                  f"{result.seconds:.0f} s; rows: {args.out}")
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    print(format_summary(summary))
    write_figures(summary, args.measure, png=args.png, html=args.html)
    return 0


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


def _paths(path: str, keys: list[tuple[str, str]]) -> dict:
    from pathlib import Path

    if len(keys) == 1:
        return {keys[0]: Path(path)}
    p = Path(path)
    return {k: p.with_name(f"{p.stem}_{k[0]}_{k[1]}{p.suffix}") for k in keys}


def write_figures(summary, measure: str, png: str | None = None, html: str | None = None) -> None:
    """One figure per (attack, preset) series, as PNG and/or HTML files (printed)."""
    if not png and not html:
        return
    from ..evaluation.curve_figures import sweep_figures, write_png

    figures = sweep_figures(summary, measure)
    for target, writer in ((png, "png"), (html, "html")):
        if not target:
            continue
        for key, path in _paths(target, list(figures)).items():
            if not path.parent.exists():
                raise CliError(f"the folder {path.parent} does not exist.")
            if writer == "png":
                try:
                    write_png(figures[key], path)
                except RuntimeError as exc:
                    raise CliError(str(exc)) from None
            else:
                figures[key].write_html(str(path), include_plotlyjs=True)
            print(f"figure: {path}")
