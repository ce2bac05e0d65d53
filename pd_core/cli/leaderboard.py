"""``python -m pd_core leaderboard RESULTS... [--eps 2,4,8] [--json OUT] [--html FIG] [--png FIG]``.

Reads the ladder's JSON reports (files, or folders searched for them; one report per defence, from
``pdlab adaptive --ladder --defence NAME --report FILE``) and prints one Markdown table: per defence,
clean accuracy, transfer accuracy ("looks robust"), the worst rung's accuracy at each budget ("is
robust") with n and Wilson 95% intervals, the sanity checks and the cost per image; then one plain
sentence per defence. ``--json`` writes the same as JSON (what the app's *Defence arena* page reads,
e.g. ``docs/results/zoo_leaderboard.json``); ``--html`` / ``--png`` write the Plotly figure.
The numbers are :mod:`pd_core.leaderboard`'s; bad input is one sentence on stderr and exit 2.
"""
from __future__ import annotations

import argparse

from .common import CliError, parse_number_list

HELP = "one table and one figure of every defence from the ladder's JSON reports"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("leaderboard", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="report JSON files (adaptive --ladder --report) or folders holding them")
    p.add_argument("--eps", default=None, metavar="EPS",
                   help="budgets of the 'is robust' columns, comma separated, in /255 for L-inf (default 2,4,8, "
                        "those the reports evaluated; for L2 every budget evaluated)")
    p.add_argument("--judge", choices=["auto", "single", "ens"], default="auto",
                   help="the prediction judged: the Ens vote for randomised defences and one defended run "
                        "otherwise (auto, default), or one of them for every defence")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the leaderboard as JSON")
    p.add_argument("--html", default=None, metavar="FIG", help="write the interactive figure as HTML")
    p.add_argument("--png", default=None, metavar="FIG", help="write the figure as PNG (needs kaleido and Chromium)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from ..leaderboard import LeaderboardError, build_leaderboard, find_reports, read_report

    eps = None if args.eps is None else parse_number_list(args.eps, "--eps")
    if args.json and not Path(args.json).parent.exists():
        raise CliError(f"the folder {Path(args.json).parent} does not exist.")
    try:
        paths = find_reports(args.results)
        board = build_leaderboard([(str(p), read_report(p)) for p in paths], eps_255=eps, judge=args.judge)
    except LeaderboardError as exc:
        raise CliError(str(exc)) from None
    print(board.markdown())
    if args.json:
        board.write_json(args.json)
        print(f"wrote {args.json}")
    if args.html or args.png:
        from ..leaderboard import leaderboard_figure
        from .common import write_figures

        write_figures({("leaderboard",): leaderboard_figure(board)}, png=args.png, html=args.html)
    return 0
