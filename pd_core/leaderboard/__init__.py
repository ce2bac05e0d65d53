"""The leaderboard of defences (issue 20 item 4): one table and one figure from the ladder's reports.

Input: the JSON reports of ``pdlab adaptive --ladder [--defence NAME] --report FILE`` (schema
``pd-lab/adaptive-report/<version>``, :mod:`pd_core.adaptive.report_json`), one per defence, all made
on the same model, threat model and budgets ε. Per defence the leaderboard gives

- **clean**: its accuracy without attack (``report["clean"]``);
- **looks robust**: the *transfer* rung's accuracy (the attack made on the bare model, the paper's
  Table 1 setting), the lowest over the losses, per ε;
- **is robust**: the lowest accuracy over *every* rung and loss, per ε (an evaluation is only as strong
  as its strongest attack: RobustBench reports AutoAttack's worst case; Athalye, Carlini & Wagner 2018);
- the sanity checks (pass / warn, :mod:`pd_core.adaptive.checks`);
- the cost per image: ``report["timings"]["defence_seconds_per_image"]`` (seconds the defence's
  forward pass takes per image on the report's device) where the report records it.

Which prediction is judged: the Ens-k vote for a randomised defence, one defended run otherwise
(issue 20 item 5: "Ens-10 where the defence is randomised"); ``judge="single"`` or ``"ens"`` forces one.
A defence is randomised when its report says so (``defence.randomised``) or, failing that, when its
registry entry does (:data:`pd_core.defences.DEFENCES`).

Numbers are read from the reports, never invented: a field a report lacks stays ``None`` (shown as
"—") with a note saying what is missing. Every interval is the Wilson 95% interval recomputed from the
report's ``correct`` and ``n`` (:func:`pd_core.evaluation.stats.wilson_interval`, the report's own rule).
Bad input (a missing file, a file that is not a report, reports on different budgets, models or threat
models, two reports for one defence) raises :class:`LeaderboardError` with one sentence.

Modules: :mod:`.board` (the leaderboard, its rows, its table and its JSON), :mod:`.reports` (reading
the reports), :mod:`.figure` (the Plotly figure). ``pdlab leaderboard`` is :mod:`pd_core.cli.leaderboard`.
"""
from __future__ import annotations

from .board import (DEFAULT_EPS_255, LEADERBOARD_SCHEMA, Accuracy, Entry, Leaderboard, LeaderboardError, budget_text,
                    load_leaderboard)
from .figure import leaderboard_figure
from .reports import REPORT_PREFIX, build_leaderboard, entry_from_report, find_reports, read_report

__all__ = ["LeaderboardError", "Accuracy", "Entry", "Leaderboard", "REPORT_PREFIX", "LEADERBOARD_SCHEMA",
           "DEFAULT_EPS_255", "budget_text", "read_report", "find_reports", "entry_from_report", "build_leaderboard",
           "load_leaderboard", "leaderboard_figure"]
