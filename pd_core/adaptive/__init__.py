"""Adaptive attacks on any defence of the registry: PGD with BPDA and EOT, the ladder, its checks and report (SPEC §3).

Pixel deflection looks robust against attacks computed on the undefended classifier, but it is
neither a barrier to gradients nor a secret. Athalye & Carlini ("On the Robustness of the CVPR 2018
White-Box Adversarial Example Defenses", 2018) attacked it with BPDA (the defence replaced by the
identity in the backward pass) and EOT (the gradient averaged over random defence samples); with
ε = 4/255 this brought the defended accuracy to 0% (targeted success 97%). The same attacks judge
every defence of :data:`pd_core.defences.DEFENCES` and any plugin, through the
:class:`~pd_core.defences.Defence` protocol.

The package, one module per concept:

- :mod:`.settings`: the validated settings (:class:`PgdSettings`, :class:`AdaptiveSettings`,
  :class:`LadderSettings`, :class:`ImageSelection`, :class:`DefenceSpec`,
  :class:`RunHooks`) and the threat models (L∞, normalised L2).
- :mod:`.gradients`: BPDA+EOT through the defence's surrogate (:class:`BpdaEotGradient`) and the losses.
- :mod:`.exact`: EOT on the exact gradient, draws replayed (:class:`ExactEotGradient`).
- :mod:`.attack`: the PGD loop (:func:`bpda_eot_attack`, :class:`AdaptiveResult`) and the seed streams.
- :mod:`.evaluate`: accuracy against ε (:func:`evaluate_adaptive`).
- :mod:`.ladder`: the ladder of attacks of growing knowledge (:func:`run_ladder`,
  :func:`evaluate_ladder`, :func:`rungs_for`, :func:`ladder_checks`).
- :mod:`.checks`: the six sanity checks. :mod:`.report_json`: the JSON report and
  :func:`robustness_verdict`. :mod:`.report`: CSV, text table and figures.
- :mod:`.demo`: the attack on one image (:func:`adaptive_demo`).
- :mod:`.distributed`, :mod:`.work_units`: the same on Ray (:func:`evaluate_adaptive_distributed`).

    from pd_core.adaptive import LadderSettings, evaluate_ladder
    from pd_core.defences import create_defence
    rows, checks, report = evaluate_ladder(model, "photos/", create_defence("jpeg"), LadderSettings(eps_255=(2, 4)))
"""
from __future__ import annotations

from .attack import AdaptiveResult, bpda_eot_attack, fresh_seed
from .checks import CHECK_NAMES, Check
from .demo import AdaptiveDemo, adaptive_demo
from .evaluate import evaluate_adaptive
from .exact import ExactEotGradient, exact_eot_gradient
from .gradients import BpdaEotGradient, GradientEstimator, bpda, bpda_eot_gradient
from .ladder import evaluate_ladder, format_ladder, ladder_checks, rungs_for, run_ladder, write_ladder_csv
from .report import (ADAPTIVE_CSV_COLUMNS, GRADIENT_TITLES, RUNG_KNOWLEDGE, RUNG_TITLES, accuracy_curve_figure,
                     checks_table, format_table, ladder_figure, looks_versus_is, read_adaptive_csv, verdict_details,
                     write_csv)
from .report_json import REPORT_SCHEMA, build_report, robustness_verdict, validate_report, worst_case, write_report
from .settings import (LOSSES, NORMS, RUNGS, AdaptiveSettings, DefenceSpec, ImageSelection, LadderSettings,
                       PgdSettings, RunHooks)

__all__ = [
    # settings
    "PgdSettings", "AdaptiveSettings", "LadderSettings", "ImageSelection", "DefenceSpec", "RunHooks",
    "NORMS", "LOSSES", "RUNGS",
    # the attack and its gradient estimators
    "bpda_eot_attack", "AdaptiveResult", "fresh_seed", "GradientEstimator", "BpdaEotGradient", "ExactEotGradient",
    "bpda", "bpda_eot_gradient", "exact_eot_gradient",
    # evaluations
    "evaluate_adaptive", "run_ladder", "evaluate_ladder", "rungs_for", "ladder_checks", "worst_case",
    "Check", "CHECK_NAMES",
    # reports
    "REPORT_SCHEMA", "build_report", "validate_report", "write_report", "robustness_verdict", "format_ladder",
    "write_ladder_csv", "ADAPTIVE_CSV_COLUMNS", "write_csv", "read_adaptive_csv", "format_table",
    "accuracy_curve_figure", "ladder_figure", "checks_table", "verdict_details", "looks_versus_is",
    "RUNG_TITLES", "RUNG_KNOWLEDGE", "GRADIENT_TITLES",
    # one image
    "adaptive_demo", "AdaptiveDemo",
]
