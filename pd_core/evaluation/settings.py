"""The settings of one run of the protocol, shared by the sequential engine
(:func:`pd_core.evaluation.protocol.evaluate`) and the Ray engine
(:func:`pd_core.evaluation.distributed.evaluate_distributed`), as Foolbox's attacks take one
``run(model, inputs, criterion, epsilons)``: ``evaluate(model, images, settings)``.

Every check of a run's settings lives here (``__post_init__``), so both engines refuse the same
input with the same sentence: attack names and presets through the attack registry
(:func:`pd_core.attacks.registry.check_attacks`), the table through :func:`.tables.check_table`,
defence names and plugin specs through the defence registry
(:func:`pd_core.defences.plugins.resolve_defences`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..attacks.registry import AttackChoiceError, check_attacks
from ..defence import PAPER_DEFAULTS, DefenceConfig
from ..defences.base import DefenceError
from ..defences.plugins import is_plugin_spec, resolve_defences
from .data import DEFAULT_TUNING_FRACTION, TUNING_SALT, EvaluationError
from .ray_cluster import parse_ray_target
from .tables import PAPER_ATTACKS, check_table
from .units import UnitSettings

__all__ = ["RunSettings", "ProtocolSettings", "ClusterSettings"]


@dataclass(frozen=True)
class RunSettings:
    """What every run on a folder shares (the tables, the sweeps, the dose), validated on
    construction (:class:`EvaluationError`).

    ensemble : copies in the majority vote (paper: 10). limit : the first ``limit`` evaluation images.
    seed : base seed (per-image seeds: ``derive_seed(seed, image name, attack)``).
    batch_size : images per chunk (keep it when resuming). config : the defence settings (paper
        defaults); never retune them on evaluation images. tuning_fraction : share of the folder held
        apart for tuning (0 uses every image).
    defences : instead of the run's own columns, these defences in Table 1's transfer setting (the
        attack crafted on the undefended model; a randomised one judged by its Ens-n vote and its
        first copy): registry names, aliases or plugin specs (``FILE.py:FUNCTION``), comma-separated
        or a sequence. They are stored as registry names; ``plugins`` keeps the specs (with absolute
        paths) so that a worker process can load them again.
    """

    ensemble: int = 10
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    config: DefenceConfig = PAPER_DEFAULTS
    tuning_fraction: float = DEFAULT_TUNING_FRACTION
    defences: tuple[str, ...] = ()
    plugins: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise once, here
        for name in ("ensemble", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise EvaluationError(f"{name} must be at least 1.")
            set_(self, name, int(getattr(self, name)))
        if self.limit is not None and int(self.limit) < 1:
            raise EvaluationError("limit must be at least 1 (or None for every image).")
        if not 0 <= float(self.tuning_fraction) <= 1:
            raise EvaluationError("tuning_fraction must be between 0 and 1.")
        set_(self, "seed", int(self.seed))
        set_(self, "config", self.config or PAPER_DEFAULTS)
        specs = self.defences.split(",") if isinstance(self.defences, str) else list(self.defences)
        specs = [s.strip() for s in specs if s and s.strip()]
        try:
            names = resolve_defences(specs) if specs else []
        except DefenceError as exc:
            raise EvaluationError(str(exc)) from None
        if len(set(names)) != len(names):
            raise EvaluationError(f"a defence is listed twice: {', '.join(specs)}.")
        if "none" in names:
            raise EvaluationError("'none' (no defence) is always a column; list only defences.")
        set_(self, "defences", tuple(names))
        plugins = (_absolute(s) for s in specs if is_plugin_spec(s))  # a worker may run in another folder
        set_(self, "plugins", tuple(dict.fromkeys((*self.plugins, *plugins))))

    def identity(self, model_name: str) -> dict:
        """The settings a results file's rows depend on (its sidecar refuses a resume with others).
        The defence list is part of it only when given, so files of the tables keep their identity."""
        out = {"model": model_name, "seed": self.seed, "ensemble": self.ensemble, "defence": self.config.as_dict(),
               "tuning_fraction": self.tuning_fraction, "tuning_salt": TUNING_SALT}
        if self.defences:
            out["defences"] = list(self.defences)
        return out


@dataclass(frozen=True)
class ProtocolSettings(RunSettings):
    """What to evaluate (paper §9–10): :class:`RunSettings` and the attacks and table.

    attacks : names from :data:`pd_core.attacks.ATTACKS`; the clean row is always added.
    preset : attack strength, ``"paper"``, ``"large"`` or ``"interactive"`` (and ``budget`` / ``minimal``
        for the one attack that has each). attack_params : per-attack overrides, ``{"cw": {"steps": 50}}``.
    table : 1 (no defence / single / Ens-n), 3 (JPEG, WD, PD, ... ablation) or 4 (thresholds); a
        list of ``defences`` replaces Table 1's columns (it needs ``table = 1``).
    """

    attacks: tuple[str, ...] = PAPER_ATTACKS
    preset: str = "paper"
    table: int = 1
    attack_params: Mapping[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        attacks = [self.attacks] if isinstance(self.attacks, str) else list(self.attacks)
        try:
            set_(self, "attacks", tuple(check_attacks(attacks, self.preset)))
        except AttackChoiceError as exc:
            raise EvaluationError(str(exc)) from None
        set_(self, "table", check_table(self.table))
        if self.defences and self.table != 1:
            raise EvaluationError("a list of defences is judged in Table 1's setting: leave the table at 1.")
        set_(self, "attack_params", dict(self.attack_params or {}))

    def unit_settings(self) -> UnitSettings:
        """What every unit of the run shares (:mod:`.units`)."""
        return UnitSettings(preset=self.preset, table=self.table, ensemble=self.ensemble, seed=self.seed,
                            batch_size=self.batch_size, config=self.config, attack_params=self.attack_params,
                            defences=self.defences)


def _absolute(spec: str) -> str:
    """A ``FILE.py:FUNCTION`` spec with the file's absolute path (``module:FUNCTION`` unchanged)."""
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or os.sep in where:
        return f"{Path(where).expanduser().resolve()}:{attr}"
    return spec


@dataclass(frozen=True)
class ClusterSettings:
    """How the Ray engine runs (:func:`pd_core.evaluation.distributed.evaluate_distributed`).

    ray : ``"local:N"`` (N workers on this machine), ``"auto"`` or a cluster address
    (:func:`pd_core.evaluation.ray_cluster.parse_ray_target`, checked here before any work).
    threads : torch threads of each CPU worker. workers : the number of actors (default: one per
    GPU, else per ``threads`` CPUs). in_flight : units queued per actor. max_attempts : a unit that
    raises the same error this many times stops the run.
    """

    ray: str = "local:2"
    threads: int = 1
    workers: int | None = None
    in_flight: int = 2
    max_attempts: int = 3

    def __post_init__(self):
        parse_ray_target(self.ray)
        if min(int(self.threads), int(self.in_flight), int(self.max_attempts)) < 1 or (
                self.workers is not None and int(self.workers) < 1):
            raise EvaluationError("threads, workers, in_flight and max_attempts must each be at least 1.")
