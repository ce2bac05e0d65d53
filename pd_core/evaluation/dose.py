"""The deflection dose (issue 13, item 4): accuracy against the number of deflections K.

Extends the paper's Figure 2 (class probability against K on one image) and Table 3 (deflection
with and without the wavelet denoiser, at K = 100) to a grid of K, on a folder of images: for the
clean images and each attack, the top-1 accuracy after K ∈ {0, 100, 300, 1k, 3k, 10k, 30k}
R-CAM-guided deflections (window r, paper §5), with and without the BayesShrink denoiser (§7).

The machinery is the protocol's (:mod:`.units`): each image is attacked once per attack, then every
(K, denoiser) defence is applied to the same adversarial images; the deflections of an image are
drawn from ``derive_seed(seed, image, attack)`` for every K (common random numbers across the
grid, as across Table 3's columns). Rows go to the protocol's CSV store with ``defence`` =
``"k=<K>"`` (deflection only) or ``"k=<K>+wd"`` (deflection then the denoiser), besides the
undefended ``"none"``; ``correct`` is the majority vote of ``ensemble`` copies and
``single_correct`` the first copy (one copy for K = 0, where nothing is random). K = 0 without the
denoiser is the undefended model (a check: its rows equal ``"none"``); K = 0 with the denoiser is
Table 3's WD column. Accuracy on the adversarial images is the *recovery* of the paper's tables.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Sequence

from ..attacks.registry import AttackChoiceError, check_attacks
from ..defence import PAPER_DEFAULTS, DefenceConfig
from .data import TUNING_SALT, EvaluationError, evaluation_part, load_items
from .progress import Progress
from .settings import RunSettings
from .stats import counted_rows, wilson_interval
from .grid_engine import GridRecord, GridResult, run_grid
from .sidecar import now_iso
from .units import UnitSettings, describe_columns

__all__ = ["DOSE_DEFLECTIONS", "DoseGrid", "DoseSettings", "DoseResult", "dose_defences", "deflection_dose",
           "dose_summary", "parse_dose_defence"]

#: The K grid of issue 13 (replaced values per image; the paper's default is 100).
DOSE_DEFLECTIONS = (0, 100, 300, 1000, 3000, 10000, 30000)


def _name(k: int, denoise: bool) -> str:
    return f"k={int(k)}" + ("+wd" if denoise else "")


def parse_dose_defence(name: str) -> tuple[int, bool] | None:
    """``"k=300+wd"`` -> ``(300, True)``; None for any other defence name."""
    text = str(name)
    if not text.startswith("k="):
        return None
    body, wd = (text[:-3], True) if text.endswith("+wd") else (text, False)
    try:
        return int(body[2:]), wd
    except ValueError:
        return None


def dose_defences(deflections: Sequence[int] = DOSE_DEFLECTIONS, denoise: Sequence[bool] = (False, True),
                  config: DefenceConfig = PAPER_DEFAULTS, ensemble: int = 10
                  ) -> tuple[tuple[str, DefenceConfig, int], ...]:
    """(name, config, copies) per (K, denoiser): ``config`` with ``deflections = K`` (deflection off
    at K = 0), ``denoise`` on or off and no JPEG; ``ensemble`` copies where deflection is random."""
    ks = list(dict.fromkeys(int(k) for k in deflections))
    if not ks:
        raise EvaluationError("give at least one number of deflections.")
    if any(k < 0 for k in ks):
        raise EvaluationError("the numbers of deflections must be 0 or more.")
    if not denoise:
        raise EvaluationError("choose with the denoiser, without it, or both.")
    out = []
    for wd in dict.fromkeys(bool(d) for d in denoise):
        for k in ks:
            cfg = replace(config, deflections=k, deflect=k > 0, denoise=wd, jpeg_quality=None)
            out.append((_name(k, wd), cfg, max(1, int(ensemble)) if k > 0 else 1))
    return tuple(out)


@dataclass(frozen=True)
class DoseSettings(UnitSettings):
    """:class:`UnitSettings` whose defences are the (K, denoiser) grid ``variants`` (from
    :func:`dose_defences`) instead of a paper table; ``table = 0`` makes :func:`run_unit` name each
    row after its variant and record the vote in ``correct`` and the first copy in ``single_correct``."""

    table: int = 0
    variants: tuple = ()

    def column_entries(self) -> dict[str, tuple[str, DefenceConfig]]:
        """Every (K, denoiser) column is the paper's defence (registry ``pixel_deflection``) with its
        own settings; it is randomised, so judged on ``ensemble`` copies, exactly when K > 0."""
        return {name: ("pixel_deflection", cfg) for name, cfg, _ in self.variants}

    @property
    def columns(self) -> list[str]:
        return ["none", *(name for name, _, _ in self.variants)]


@dataclass(frozen=True)
class DoseGrid:
    """What a dose run varies, checked on construction: the ``attacks`` (at ``preset``), the numbers
    of deflections K and whether the denoiser follows (``denoise``: False, True or both)."""

    attacks: tuple[str, ...] = ("fgsm", "igsm")
    preset: str = "paper"
    deflections: tuple[int, ...] = DOSE_DEFLECTIONS
    denoise: tuple[bool, ...] = (False, True)

    def __post_init__(self):
        attacks = self.attacks.split(",") if isinstance(self.attacks, str) else self.attacks
        try:
            object.__setattr__(self, "attacks", tuple(check_attacks(attacks, self.preset)))
        except AttackChoiceError as exc:
            raise EvaluationError(str(exc)) from None
        object.__setattr__(self, "deflections", tuple(int(k) for k in self.deflections))
        object.__setattr__(self, "denoise", tuple(bool(d) for d in self.denoise))
        dose_defences(self.deflections, self.denoise)  # the K and denoiser checks


@dataclass
class DoseResult(GridResult):
    """What :func:`deflection_dose` returns: :class:`~.grid_engine.GridResult`'s fields, with
    ``summary`` from :func:`dose_summary`."""


def deflection_dose(model, images, grid: DoseGrid | None = None, settings: RunSettings | None = None, *,
                    out_csv: str | os.PathLike | None = None, labels_csv: str | os.PathLike | None = None,
                    progress: Progress | None = None) -> DoseResult:
    """Clean accuracy and recovery of each attack against K deflections, with and without the denoiser.

    grid : attacks, preset, K values and denoiser (:class:`DoseGrid`; default FGSM and IGSM at the
    paper preset over :data:`DOSE_DEFLECTIONS`, both ways). settings : ensemble, limit, seed, chunk
    size, the other defence parameters (window, σ, map; paper defaults) and tuning fraction
    (:class:`~pd_core.evaluation.settings.RunSettings`; its ``defences`` list does not apply: the
    columns are the grid). The images, the dropping of misclassified ones and the store are the
    protocol's (:func:`pd_core.evaluation.evaluate`). Resumable: a restarted run skips the finished
    rows (keep the chunk size). Returns a :class:`DoseResult`.
    """
    from ..attacks import ATTACKS

    started = time.monotonic()
    grid, settings = grid or DoseGrid(), settings or RunSettings()
    if settings.defences:
        raise EvaluationError("the dose's columns are its (K, denoiser) grid: give no list of defences.")
    attacks, preset, config = list(grid.attacks), grid.preset, settings.config
    variants = dose_defences(grid.deflections, grid.denoise, config, settings.ensemble)
    units = DoseSettings(preset=preset, ensemble=settings.ensemble, seed=settings.seed,
                         batch_size=settings.batch_size, config=config, variants=variants)
    evaluation = evaluation_part(load_items(images, labels_csv), settings.tuning_fraction, settings.limit)
    # The K and the denoiser vary per column, so the identity keeps the other defence parameters.
    varied = ("deflections", "deflect", "denoise", "jpeg_quality")
    fixed = {k: v for k, v in config.as_dict().items() if k not in varied}
    identity = {"model": model.name, "seed": settings.seed, "ensemble": settings.ensemble, "dose_defence": fixed,
                "tuning_fraction": settings.tuning_fraction, "tuning_salt": TUNING_SALT}
    run = {"kind": "dose", "date": now_iso(), "attacks": attacks, "preset": preset, "limit": settings.limit,
           "deflections": list(dict.fromkeys(grid.deflections)), "denoise": list(grid.denoise),
           "batch_size": settings.batch_size, "images": len(evaluation), "device": str(model.device)}
    record = GridRecord(identity, run, {f"{a}/{preset}": ATTACKS[a].preset(preset) for a in attacks}, started,
                        defences=describe_columns(model, units))
    recorded = run_grid(model, evaluation, [(a, units) for a in attacks], units, record, out_csv=out_csv,
                        summarize=dose_summary, progress=progress)
    return DoseResult(**recorded)


SUMMARY_COLUMNS = ["attack", "preset", "deflections", "denoise", "defence", "n", "correct", "accuracy", "ci_low",
                   "ci_high", "single_correct", "single_accuracy", "single_ci_low", "single_ci_high",
                   "fooled", "recovered"]


def dose_summary(rows, confidence: float = 0.95):
    """Accuracy per (attack, preset, K, denoiser) over the counted images: the Ens-n vote
    (``accuracy``) and the first copy (``single_accuracy``), each with its Wilson interval
    (fractions), and among the images the attack fooled (``fooled``) how many the defence
    ``recovered``. The undefended ``"none"`` rows appear as K = 0 without the denoiser's reference
    (``defence = "none"``, ``deflections`` 0, ``denoise`` False)."""
    import pandas as pd

    counted = counted_rows(rows)
    keep = counted["defence"].map(lambda d: d == "none" or parse_dose_defence(d) is not None)
    counted = counted[keep]
    out = []
    for (attack, preset, defence), g in counted.groupby(["attack", "preset", "defence"], sort=False):
        k, wd = (0, False) if defence == "none" else parse_dose_defence(defence)
        n, c = len(g), int(g["correct"].astype(int).sum())
        s = int(pd.to_numeric(g["single_correct"], errors="coerce").fillna(0).astype(int).sum())
        lo, hi = wilson_interval(c, n, confidence)
        slo, shi = wilson_interval(s, n, confidence)
        fooled = pd.to_numeric(g["attack_success"], errors="coerce") == 1
        out.append({"attack": attack, "preset": preset, "deflections": k, "denoise": wd, "defence": defence,
                    "n": n, "correct": c, "accuracy": c / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                    "single_correct": s, "single_accuracy": s / n if n else math.nan,
                    "single_ci_low": slo, "single_ci_high": shi, "fooled": int(fooled.sum()),
                    "recovered": int((g["correct"].astype(int)[fooled] == 1).sum())})
    frame = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["attack", "preset", "denoise", "deflections", "defence"]).reset_index(drop=True)
