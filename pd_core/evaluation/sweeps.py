"""Accuracy against perturbation size (issue 13, item 3): one attack over a grid of strengths.

For every attack the protocol's accuracy with no defence, one defended run and the Ens-n vote is
measured at each point of a strength grid, so that the paper's single operating point (Table 1,
§10) becomes a curve. A *sweep point* is just the attack with overridden parameters: it runs
through the protocol's unit of work (:func:`~pd_core.evaluation.units.load_chunk`,
:func:`~pd_core.evaluation.units.run_unit`) and its rows go to the same CSV store as
:func:`~pd_core.evaluation.evaluate`'s, with the same columns.

Row labels. A point's rows carry the preset ``"<preset>@<param>=<value>"`` in the ``preset``
column, e.g. ``"paper@eps=4/255"`` or ``"paper@overshoot=21"`` (:func:`point_label`,
:func:`parse_point_label`). The CSV layout is unchanged, readers of the tables ignore these rows
(they select ``preset == "paper"``), and the store's resume key (image, attack, preset, defence)
tells the points apart, so a killed sweep continues where it stopped.

Strength grids (:data:`DEFAULT_GRIDS`; ``values`` overrides):

* FGSM, IGSM, PGD: ``eps`` ∈ {1, 2, 4, 6, 8, 12, 16}/255 (issue 13). Values are given in 1/255
  units. Each preset keeps its *step rule*: the step size stays the preset's and the number of
  steps scales with ε, ``steps = ceil(steps_preset · ε / ε_preset)``, so steps · stepsize / ε stays
  the preset's ratio. For IGSM's ``paper`` (early stop) and ``budget`` presets (1/255 steps, 10 at
  8/255) this gives 2, 3, 5, 8, 10, 15, 20 steps, which is Kurakin et al.'s (2017) rule
  min(ε + 4, 1.25 ε) for ε ≤ 16 (in 1/255 units); for PGD ``paper`` (0.5/255, 20 at 4/255),
  steps = 10 ε. FGSM has no steps: its ``paper`` preset is one step of ε, its ``minimal`` preset
  the smallest fooling ε on the 1/255 grid up to the point's ε (early stop).
* DeepFool: ``overshoot`` ∈ {0.02, 2, 5, 10, 21, 40, 94} (``interactive`` 0.02, ``paper`` 21,
  ``large`` 94 in :mod:`pd_core.attacks.registry`).
* C&W: ``overshoot`` ∈ {0, 1, 2.5, 4.9, 8.5, 12} (the plain attack, ``paper`` 4.9, ``large`` 8.5).
* L-BFGS: ``overshoot`` ∈ {0, 3, 6, 11.5, 18, 24} (the plain attack, ``paper`` 11.5, ``large`` 24).
* JSMA: ``gamma`` (the largest fraction of features changed) ∈ {0.001, 0.0025, 0.005, 0.01, 0.02,
  0.05, 0.1} (every preset has 0.1; the attack stops at its target earlier when it can).

Any parameter of the attack's presets can be swept instead (``param``, e.g. C&W's
``confidence``), with values in its own units.

Randomness. The attack's seed is the protocol's (``derive_seed(seed, attack, preset, names)``),
the same at every point; the deflections of an image are ``derive_seed(seed, image, attack)``,
also the same at every point (common random numbers along the curve).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..attacks.registry import AttackChoiceError, check_attacks
from .data import EvaluationError, evaluation_part, load_items
from .grid_engine import GridRecord, GridResult, run_grid
from .progress import Progress
from .settings import RunSettings
from .sidecar import now_iso
from .stats import counted_rows, wilson_interval
from .units import UnitSettings

__all__ = ["DEFAULT_GRIDS", "MEASURES", "SweepGrid", "SweepPoint", "SweepSettings", "SweepResult", "sweep",
           "sweep_points", "point_label", "parse_point_label", "sweep_summary"]

#: The default grid of each attack: (parameter, values); ``eps`` values are in 1/255 units.
DEFAULT_GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "fgsm": ("eps", (1, 2, 4, 6, 8, 12, 16)),
    "igsm": ("eps", (1, 2, 4, 6, 8, 12, 16)),
    "pgd": ("eps", (1, 2, 4, 6, 8, 12, 16)),
    "deepfool": ("overshoot", (0.02, 2, 5, 10, 21, 40, 94)),
    "cw": ("overshoot", (0, 1, 2.5, 4.9, 8.5, 12)),
    "lbfgs": ("overshoot", (0, 3, 6, 11.5, 18, 24)),
    "jsma": ("gamma", (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)),
}

#: The three readings of the paper's |L2| (issue 13, item 2), each a column of the rows.
MEASURES = ("norm_l2", "norm_l2_model", "rmse")

_SEP = "@"


def _fmt_value(value: float) -> str:
    return f"{float(value):g}"


def point_label(preset: str, param: str, value: float) -> str:
    """The ``preset`` column of a sweep point: ``"paper@eps=4/255"``, ``"paper@overshoot=21"``."""
    shown = f"{_fmt_value(value)}/255" if param == "eps" else _fmt_value(value)
    return f"{preset}{_SEP}{param}={shown}"


def parse_point_label(label: str) -> tuple[str, str, float] | None:
    """``"paper@eps=4/255"`` -> ``("paper", "eps", 4.0)`` (eps in 1/255 units); None for a plain preset."""
    base, sep, rest = str(label).partition(_SEP)
    param, eq, shown = rest.partition("=")
    if not sep or not eq:
        return None
    try:
        value = float(shown[:-4]) if param == "eps" and shown.endswith("/255") else float(shown)
    except ValueError:
        return None
    return base, param, value


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: ``attack`` with ``preset``'s parameters and ``param = value``
    (``eps`` in 1/255 units)."""

    attack: str
    preset: str
    param: str
    value: float

    @property
    def label(self) -> str:
        return point_label(self.preset, self.param, self.value)

    def overrides(self) -> dict:
        """The parameters that differ from the preset (eps also rescales ``steps``, see the module)."""
        from ..attacks import ATTACKS

        base = ATTACKS[self.attack].preset(self.preset)
        if self.param != "eps":
            return {self.param: self.value}
        out = {"eps": round(self.value / 255, 8)}
        if "steps" in base and not (self.attack == "fgsm"):
            ratio = self.value / round(base["eps"] * 255, 3)  # presets are k/255 rounded to 1e-8
            out["steps"] = max(1, math.ceil(round(base["steps"] * ratio, 6)))
        return out

    def params(self) -> dict:
        """Every parameter the attack runs with at this point."""
        from ..attacks import ATTACKS

        return {**ATTACKS[self.attack].preset(self.preset), **self.overrides()}


@dataclass(frozen=True)
class SweepSettings(UnitSettings):
    """:class:`UnitSettings` of one sweep point: its rows carry ``point`` (the point's label) in the
    ``preset`` column, while the attack runs with ``preset`` and ``attack_params``."""

    point: str = ""

    def row_preset(self, attack: str) -> str:
        return "none" if attack == "clean" else self.point


def _check_value(attack: str, param: str, value: float) -> None:
    if not math.isfinite(value):
        raise EvaluationError(f"{attack} {param}: {value} is not a number.")
    if param == "eps" and not 1 <= value <= 255:
        raise EvaluationError(f"{attack} eps values are in 1/255 units and must be between 1 and 255, not {value:g}.")
    if param == "gamma" and not 0 < value <= 1:
        raise EvaluationError(f"{attack} gamma is a fraction of the features, in (0, 1], not {value:g}.")
    if param in ("overshoot", "confidence") and value < 0:
        raise EvaluationError(f"{attack} {param} must be 0 or more, not {value:g}.")


def sweep_points(attacks: Iterable[str], presets: Iterable[str] = ("paper",), values: Sequence[float] | None = None,
                 param: str | None = None) -> list[SweepPoint]:
    """The points of a sweep: every (attack, preset) pair the registry has, times the grid.

    values : the grid (default :data:`DEFAULT_GRIDS`; ``eps`` in 1/255 units); param : the swept
    parameter (default the attack's grid parameter, else its registry ``strength``). A preset no
    attack has, an attack with none of the presets, or an unknown parameter raise
    :class:`EvaluationError`.
    """
    from ..attacks import ATTACKS

    try:
        attacks = check_attacks(attacks, clean=True)
    except AttackChoiceError as exc:
        raise EvaluationError(str(exc)) from None
    presets = list(dict.fromkeys(p.strip() for p in presets if p and p.strip()))
    if not attacks:
        raise EvaluationError("give at least one attack to sweep.")
    if not presets:
        raise EvaluationError("give at least one preset.")
    for a in attacks:
        if not any(p in ATTACKS[a].presets for p in presets):
            raise EvaluationError(f"{ATTACKS[a].title} has none of the presets {', '.join(presets)}; "
                                  f"it has: {', '.join(ATTACKS[a].presets)}.")
    for p in presets:
        if not any(p in ATTACKS[a].presets for a in attacks):
            raise EvaluationError(f"none of the attacks has the preset {p!r}.")
    points = []
    for a in attacks:
        name, grid = DEFAULT_GRIDS.get(a, (ATTACKS[a].strength, ()))
        name = param or name
        grid = list(values) if values is not None else list(grid)
        if not grid:
            raise EvaluationError(f"give the values to sweep for {a}.")
        for p in presets:
            if p not in ATTACKS[a].presets:
                continue
            if name not in ATTACKS[a].preset(p):
                raise EvaluationError(f"{ATTACKS[a].title} has no parameter {name!r}; its parameters are: "
                                      f"{', '.join(ATTACKS[a].preset(p))}.")
            for v in dict.fromkeys(float(v) for v in grid):
                _check_value(a, name, v)
                points.append(SweepPoint(a, p, name, v))
    return points


@dataclass(frozen=True)
class SweepGrid:
    """The points of a sweep (:func:`sweep_points`, checked on construction): ``attacks`` ×
    ``presets`` × ``values`` of ``param`` (default: each attack's grid of :data:`DEFAULT_GRIDS`;
    ``eps`` in 1/255 units)."""

    attacks: tuple[str, ...] = ("fgsm",)
    presets: tuple[str, ...] = ("paper",)
    values: tuple[float, ...] | None = None
    param: str | None = None

    def __post_init__(self):
        for name in ("attacks", "presets"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value.split(",") if isinstance(value, str) else value))
        if self.values is not None:
            object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        self.points()  # every check, before any work

    def points(self) -> list[SweepPoint]:
        return sweep_points(self.attacks, self.presets, self.values, self.param)


@dataclass
class SweepResult(GridResult):
    """What :func:`sweep` returns: :class:`~.grid_engine.GridResult`'s fields (``summary`` is
    :func:`sweep_summary`) and the sweep's ``points``."""

    points: list[SweepPoint] = field(default_factory=list)


def sweep(model, images, grid: SweepGrid | None = None, settings: RunSettings | None = None, *,
          out_csv: str | os.PathLike | None = None, labels_csv: str | os.PathLike | None = None,
          progress: Progress | None = None) -> SweepResult:
    """Accuracy (no defence, single run, Ens-n) of each attack at each point of a grid.

    grid : the points (:class:`SweepGrid`; default FGSM's ε grid at the ``paper`` preset).
    settings : ensemble, limit, seed, chunk size, defence settings, tuning fraction
        (:class:`~pd_core.evaluation.settings.RunSettings`); with ``settings.defences`` the columns
        are those defences in Table 1's transfer setting instead of the paper's single run and Ens-n.
    The images, the dropping of misclassified ones, the defences and the store are the protocol's
    (:func:`pd_core.evaluation.evaluate`, paper §9–10). Rows are appended per (chunk × point) as
    they finish, and a restarted run skips the finished ones (keep the chunk size). Returns a
    :class:`SweepResult`; accuracies are fractions with Wilson 95% intervals.
    """
    started = time.monotonic()
    grid, settings = grid or SweepGrid(), settings or RunSettings()
    points = grid.points()
    base = dict(table=1, ensemble=settings.ensemble, seed=settings.seed, batch_size=settings.batch_size,
                config=settings.config, defences=settings.defences)
    jobs = [(pt.attack, SweepSettings(preset=pt.preset, point=pt.label, attack_params={pt.attack: pt.overrides()},
                                      **base)) for pt in points]
    evaluation = evaluation_part(load_items(images, labels_csv), settings.tuning_fraction, settings.limit)
    identity = settings.identity(model.name)
    run = {"kind": "sweep", "date": now_iso(), "points": [f"{pt.attack}/{pt.label}" for pt in points],
           "limit": settings.limit, "batch_size": settings.batch_size, "images": len(evaluation),
           "device": str(model.device)}
    record = GridRecord(identity, run, {f"{pt.attack}/{pt.label}": pt.params() for pt in points}, started)
    recorded = run_grid(model, evaluation, jobs, SweepSettings(point="", **base), record, out_csv=out_csv,
                        summarize=sweep_summary, progress=progress)
    return SweepResult(points=points, **recorded)


# --------------------------------------------------------------------------------------------
# The summary: one row per (attack, preset, point, defence)
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["attack", "preset", "param", "value", "label", "defence", "n", "correct", "accuracy", "ci_low",
                   "ci_high", "mean_norm_l2", "mean_norm_l2_model", "mean_rmse", "success_rate"]


def _group_record(attack, preset, param, value, label, defence, g, confidence) -> dict:
    import pandas as pd

    n, k = len(g), int(g["correct"].astype(int).sum())
    lo, hi = wilson_interval(k, n, confidence)
    success = pd.to_numeric(g["attack_success"], errors="coerce")
    return {"attack": attack, "preset": preset, "param": param, "value": value, "label": label,
            "defence": defence, "n": n, "correct": k, "accuracy": k / n if n else math.nan,
            "ci_low": lo, "ci_high": hi,
            **{f"mean_{m}": float(pd.to_numeric(g[m], errors="coerce").mean()) for m in MEASURES},
            "success_rate": float(success.mean()) if success.notna().any() else math.nan}


def sweep_summary(rows, confidence: float = 0.95):
    """Accuracy per (attack, preset, point, defence) over the counted images, with n, the Wilson
    interval, the mean of each of the three measures and the attack's success rate.

    Each (attack, preset) also gets the clean images' rows as its zero-perturbation point
    (``label = "clean"``, ``value`` NaN, every measure 0): the curve starts at the clean accuracy.
    Rows whose preset is not a sweep label (an ordinary table run in the same file) are left out.
    Accuracies and intervals are fractions in [0, 1]; sorted by attack, preset, value.
    """
    import pandas as pd

    counted = counted_rows(rows)
    parsed = counted["preset"].map(lambda p: parse_point_label(p) if isinstance(p, str) else None)
    points = counted[parsed.notna()].assign(_parsed=parsed[parsed.notna()])
    clean = counted[counted["attack"] == "clean"]
    out = []
    series = sorted({(a, p[0], p[1]) for a, p in zip(points["attack"], points["_parsed"])})
    for attack, preset, param in series:
        for defence, g in clean.groupby("defence", sort=False):
            out.append(_group_record(attack, preset, param, math.nan, "clean", defence, g, confidence))
    for (attack, label, defence), g in points.groupby(["attack", "preset", "defence"], sort=False):
        preset, param, value = parse_point_label(label)
        out.append(_group_record(attack, preset, param, value, label, defence, g, confidence))
    frame = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    order = {"none": 0, "single": 1}
    return (frame.assign(_clean=frame["label"] != "clean", _d=frame["defence"].map(lambda d: order.get(d, 2)))
            .sort_values(["attack", "preset", "_clean", "value", "_d"]).drop(columns=["_clean", "_d"])
            .reset_index(drop=True))
