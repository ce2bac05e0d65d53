"""The ladder's report as JSON, in the style of RobustBench's model cards (issue 14 item 4).

Schema ``pd-lab/adaptive-report/1`` (:data:`REPORT_SCHEMA`, a JSON Schema, draft 2020-12)::

    {
      "schema": "pd-lab/adaptive-report/1",
      "created": ISO 8601 time (UTC),
      "model": {"name": str, "input_size": int},
      "defence": {"name": str, "title": str, "citation": str, "randomised": bool,
                  "gradient": "exact" | "bpda", "surrogate": str, "parameters": {its parameters}},
      "threat_model": "Linf" | "L2",
      "eps": [ε in [0, 1] units (L∞) or as a normalised L2 ‖δ‖₂/‖x‖₂],
      "eps_255": [the budgets as the rows give them: /255 for L∞; the normalised L2 itself for L2],
      "rungs": [the rungs this defence was attacked with (:func:`pd_core.adaptive.ladder.rungs_for`)],
      "n": images evaluated (all classified correctly by the undefended model),
      "clean": {"single": ACC, "ens<k>": ACC},            # accuracy of the defence without attack
      "robust": [{"eps_255": float, "single": ACC, "ens<k>": ACC, "attack": rung name}],
                                                          # per ε, the strongest attack's result
      "attacks": [{"rung", "loss", "eps_255", "defence", "steps", "eot", "accuracy", "ci_low",
                   "ci_high", "correct", "n", "attack_estimate"}],   # every ladder row
      "settings": {LadderSettings fields},
      "checks": [{"name", "status": "pass" | "warn", "message", "numbers"}],
      "verdict": one plain-language sentence (:func:`robustness_verdict`),
      "software": {"python", "torch", "numpy", "pd_core", "git_commit"},
      "timings": {"defence_seconds_per_image": s, "ladder_seconds": s, "device": str}   # optional
    }

``timings`` (optional; the leaderboard's cost per image, :mod:`pd_core.leaderboard`): the wall-clock
seconds one defended run takes per image (forward only, a batch of up to :data:`TIMING_BATCH` of the
evaluated images, after the ladder so that one-off start-up costs are paid) and of the whole ladder
with its checks, on ``device``. A run that cannot measure one leaves it out.

where ACC is ``{"accuracy", "ci_low", "ci_high", "correct", "n"}``: fractions in [0, 1] with the
Wilson 95% interval. Robust accuracy is the minimum over every rung and loss at that ε, since an
evaluation is only as strong as its strongest attack (RobustBench reports AutoAttack's worst case).
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Sequence

from ..defences.base import Defence
from .checks import Check
from .settings import LadderSettings, budget_title

__all__ = ["REPORT_SCHEMA", "SCHEMA_ID", "build_report", "validate_report", "write_report", "robustness_verdict",
           "describe_defence", "worst_case", "THREAT_MODELS"]

#: The report's name of each threat model (``LadderSettings.norm``).
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}

SCHEMA_ID = "pd-lab/adaptive-report/1"
#: At most this many of the evaluated images time the defence (``timings.defence_seconds_per_image``).
TIMING_BATCH = 32

_ACC = {"type": "object", "required": ["accuracy", "ci_low", "ci_high", "correct", "n"],
        "properties": {"accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                       "ci_low": {"type": "number", "minimum": 0, "maximum": 1},
                       "ci_high": {"type": "number", "minimum": 0, "maximum": 1},
                       "correct": {"type": "integer", "minimum": 0}, "n": {"type": "integer", "minimum": 1}}}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Pixel Deflection Lab adaptive-attack report",
    "type": "object",
    "required": ["schema", "created", "model", "defence", "threat_model", "eps", "eps_255", "n", "clean",
                 "robust", "attacks", "settings", "checks", "verdict", "software"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string"},
        "model": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "defence": {"type": "object", "required": ["name", "parameters"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}},
        "threat_model": {"enum": ["Linf", "L2"]},
        "eps": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 10}, "minItems": 1},
        "rungs": {"type": "array", "items": {"enum": ["transfer", "bpda", "bpda_eot", "exact_eot"]}},
        "eps_255": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 255}, "minItems": 1},
        "n": {"type": "integer", "minimum": 1},
        "clean": {"type": "object", "required": ["single"], "additionalProperties": _ACC},
        "robust": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["eps_255", "single", "attack"],
            "properties": {"eps_255": {"type": "number"}, "attack": {"type": "string"}, "single": _ACC}}},
        "attacks": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["rung", "loss", "eps_255", "defence", "steps", "eot", "accuracy", "ci_low", "ci_high",
                         "correct", "n"],
            "properties": {"rung": {"enum": ["transfer", "bpda", "bpda_eot", "exact_eot"]},
                           "loss": {"enum": ["ce", "margin"]}, "steps": {"type": "integer", "minimum": 1},
                           "eot": {"type": "integer", "minimum": 1},
                           "accuracy": {"type": "number", "minimum": 0, "maximum": 1}}}},
        "settings": {"type": "object"},
        "checks": {"type": "array", "items": {
            "type": "object", "required": ["name", "status", "message", "numbers"],
            "properties": {"status": {"enum": ["pass", "warn"]}, "message": {"type": "string"},
                           "numbers": {"type": "object"}}}},
        "verdict": {"type": "string", "minLength": 1},
        "software": {"type": "object", "required": ["python", "torch", "pd_core"]},
        "timings": {"type": "object", "properties": {
            "defence_seconds_per_image": {"type": "number", "minimum": 0},
            "ladder_seconds": {"type": "number", "minimum": 0}, "device": {"type": "string"}}},
    },
}


def _acc(row: dict) -> dict:
    return {k: row[k] for k in ("accuracy", "ci_low", "ci_high", "correct", "n")}


def worst_case(rows: Sequence[dict], defence: str = "single") -> dict[float, dict]:
    """Per ε, the row of the strongest attack (lowest accuracy) over rungs and losses, judged by
    ``defence`` (``single`` or ``ens<k>``): the robust accuracy a leaderboard reports, since an
    evaluation is as strong as its best attack."""
    best: dict[float, dict] = {}
    for row in rows:
        if row["defence"] != defence or row["rung"] == "clean":
            continue
        if row["eps_255"] not in best or row["correct"] < best[row["eps_255"]]["correct"]:
            best[row["eps_255"]] = row
    return dict(sorted(best.items()))


def describe_defence(defence: Defence) -> dict:
    """What the report says of the defence judged: its entry (name, title, citation, randomised,
    gradient path and surrogate) and the parameters it ran with."""
    info = defence.info
    return {"name": defence.name, "title": defence.title, "citation": info.citation,
            "randomised": bool(defence.randomised), "gradient": defence.gradient, "surrogate": info.surrogate,
            "parameters": defence.identity()["params"]}


def robustness_verdict(robust: Sequence[dict], clean_accuracy: float, transfer: dict[float, float] | None = None,
                       *, title: str = "The defence", eps_255: float = 4.0, norm: str = "linf") -> str:
    """One sentence a non-programmer understands, for any defence: what it seems to keep against an
    attacker who ignores it (``transfer``: accuracy per ε, "looks robust") and what it keeps against
    the strongest rung (``robust``: the report's worst cases, "is robust"), at ``eps_255`` (or the
    closest budget evaluated)."""
    if not robust:
        return "No attack was run, so nothing can be said about the defence's robustness."
    row = min(robust, key=lambda r: (abs(r["eps_255"] - eps_255), r["eps_255"]))
    kept = row["single"]["accuracy"]
    if kept < 0.1:
        judgement = "it gives no real protection against an attacker who knows it"
    elif kept < 0.5 * clean_accuracy:
        judgement = "it gives some protection, but most images can still be fooled by an attacker who knows it"
    else:
        judgement = "it keeps most of its accuracy against every attack tried (check the warnings before trusting it)"
    looks = (transfer or {}).get(row["eps_255"])
    looks_text = f"looks robust: {looks:.0%} (transfer), " if looks is not None else ""
    attack = f": {row['attack']}" if row.get("attack") else ""
    return (f"{title} at {budget_title(row['eps_255'], norm)} {looks_text}is robust: {kept:.0%} (worst rung{attack}); "
            f"without attack {clean_accuracy:.0%}: {judgement}.")


def _software() -> dict:
    import subprocess

    import numpy
    import torch

    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        from importlib.metadata import version

        pd_version = version("pd-core")
    except Exception:  # not installed as a package: the source tree's commit identifies it
        pd_version = "source"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "pd_core": pd_version, "git_commit": commit}


def build_report(rows: list[dict], checks: Sequence[Check], *, model_name: str, input_size: int | None,
                 defence: dict, settings: LadderSettings, timings: dict | None = None) -> dict:
    """The report (schema :data:`REPORT_SCHEMA`) of a ladder's ``rows``
    (:func:`pd_core.adaptive.ladder.run_ladder`) and its checks; ``defence`` is
    :func:`describe_defence` of the defence judged; ``timings`` the optional measured costs."""
    ens = f"ens{settings.ensemble}"
    clean = {r["defence"]: _acc(r) for r in rows if r["rung"] == "clean"}
    singles, votes = worst_case(rows, "single"), worst_case(rows, ens)
    robust = [{"eps_255": e, "attack": f"{row['rung']}/{row['loss']}", "single": _acc(row),
               **({ens: _acc(votes[e])} if e in votes else {})} for e, row in singles.items()]
    attacks = [{k: v for k, v in r.items() if k != "loss_history"} for r in rows if r["rung"] != "clean"]
    transfer = {e: min(a["accuracy"] for a in attacks if a["rung"] == "transfer" and a["eps_255"] == e
                       and a["defence"] == "single") for e in {a["eps_255"] for a in attacks if a["rung"] == "transfer"}}
    linf = settings.norm == "linf"
    clean_accuracy = clean.get("single", {}).get("accuracy", float("nan"))
    return {
        "schema": SCHEMA_ID,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model_name, "input_size": input_size},
        "defence": dict(defence),
        "threat_model": THREAT_MODELS[settings.norm],
        "eps": [e / 255 if linf else e for e in settings.eps_255],
        "eps_255": list(settings.eps_255),
        "rungs": list(dict.fromkeys(a["rung"] for a in attacks)),
        "n": rows[0]["n"],
        "clean": clean,
        "robust": robust,
        "attacks": attacks,
        "settings": settings.as_dict(),
        "checks": [c.as_dict() for c in checks],
        "verdict": robustness_verdict(robust, clean_accuracy, transfer, title=defence.get("title", "The defence"),
                                      norm=settings.norm),
        "software": _software(),
        **({"timings": dict(timings)} if timings else {}),
    }


def validate_report(report: dict) -> None:
    """Raise ``ValueError`` (one sentence naming the first problem) unless ``report`` follows the schema."""
    import jsonschema

    try:
        jsonschema.validate(report, REPORT_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise ValueError(f"the report does not follow {SCHEMA_ID} at {where}: {exc.message}") from None


def write_report(report: dict, path: Path | str) -> None:
    """Validate ``report`` and write it as indented JSON."""
    validate_report(report)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
