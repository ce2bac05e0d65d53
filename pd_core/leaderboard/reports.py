"""Reading the ladder's reports into leaderboard rows (:func:`entry_from_report`) and the leaderboard
(:func:`build_leaderboard`); the rules are in :mod:`pd_core.leaderboard`'s docstring."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from .board import DEFAULT_EPS_255, Accuracy, Entry, Leaderboard, LeaderboardError

__all__ = ["REPORT_PREFIX", "MAKE_REPORT", "read_report", "find_reports", "entry_from_report", "build_leaderboard"]

REPORT_PREFIX = "pd-lab/adaptive-report/"
MAKE_REPORT = "pdlab adaptive --images FOLDER --ladder --defence NAME --report NAME.json"


def read_report(path: Path | str) -> dict:
    """The report at ``path`` as a dict; :class:`LeaderboardError` when it is missing or not a report."""
    path = Path(path)
    if not path.is_file():
        raise LeaderboardError(f"There is no file {path}.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeaderboardError(f"{path} is not a JSON file ({exc}).") from None
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith(REPORT_PREFIX):
        raise LeaderboardError(f"{path} is not an adaptive-attack report (no \"schema\": \"{REPORT_PREFIX}...\"); "
                               f"make one with `{MAKE_REPORT}`.")
    return report


def find_reports(paths: Iterable[Path | str]) -> list[Path]:
    """The report files among ``paths``: files as given, folders searched (recursively) for ``*.json``
    files that are reports (other JSON files in a folder are skipped)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = [p for p in sorted(path.rglob("*.json")) if _is_report(p)]
            if not inside:
                raise LeaderboardError(f"The folder {path} holds no adaptive-attack report; make one with "
                                       f"`{MAKE_REPORT}`.")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise LeaderboardError(f"There is no file or folder {path}.")
    if not found:
        raise LeaderboardError("No report was given: name report files or folders.")
    return found


def _is_report(path: Path) -> bool:
    try:
        read_report(path)
    except LeaderboardError:
        return False
    return True


def _registry_info(name: str):
    try:
        from ..defences import defence_info

        return defence_info(name)
    except Exception:  # a plugin's name, or a defence this installation does not know: the report alone speaks
        return None


def _judge_name(report: dict, rows: Sequence[dict], randomised: bool | None, judge: str) -> str:
    names = [r.get("defence") for r in rows] + [k for r in report.get("robust") or [] for k in r]
    ens = next((n for n in names if isinstance(n, str) and n.startswith("ens")), None)
    if judge == "single" or ens is None:
        return "single"
    if judge == "ens" or randomised:
        return ens
    return "single"


def _worst(rows: Sequence[dict], judge: str, rung: str | None = None) -> dict[float, Accuracy]:
    """Per ε, the lowest ``correct`` among ``rows`` of ``judge`` (and of ``rung`` when given); on a tie,
    the first row in the report's order (as :func:`pd_core.adaptive.ladder.worst_case` picks)."""
    best: dict[float, dict] = {}
    for row in rows:
        if row.get("defence") != judge or row.get("rung") == "clean" or (rung and row.get("rung") != rung):
            continue
        eps = float(row["eps_255"])
        if eps not in best or int(row["correct"]) < int(best[eps]["correct"]):
            best[eps] = row
    return {e: Accuracy(int(r["correct"]), int(r["n"]), f"{r.get('rung')}/{r.get('loss')}")
            for e, r in sorted(best.items())}


def entry_from_report(report: dict, source: str = "", judge: str = "auto") -> Entry:
    """One leaderboard row from one report (``judge``: ``"auto"``, ``"single"`` or ``"ens"``)."""
    where = source or "the report"
    defence = report.get("defence") or {}
    name = defence.get("name")
    if not name:
        raise LeaderboardError(f"{where} does not name its defence (\"defence\": {{\"name\": ...}}).")
    info = _registry_info(name)
    randomised = defence.get("randomised", info.randomised if info is not None else None)
    title = defence.get("title") or (info.title if info is not None else name)
    rows = [r for r in report.get("attacks") or [] if isinstance(r, dict) and {"correct", "n", "eps_255"} <= set(r)]
    chosen = _judge_name(report, rows, randomised, judge)
    notes = []
    if randomised is None:
        notes.append(f"whether {name} is randomised is unknown (not in the report or the registry): one defended "
                     "run is judged")
    clean = Accuracy.from_dict((report.get("clean") or {}).get(chosen))
    if clean is None:
        notes.append("the report has no clean accuracy")
    if rows:
        looks, is_ = _worst(rows, chosen, "transfer"), _worst(rows, chosen)
    else:  # an older or trimmed report: only the per-ε summary
        looks = {}
        is_ = {float(r["eps_255"]): Accuracy(int(r[chosen]["correct"]), int(r[chosen]["n"]), r.get("attack"))
               for r in report.get("robust") or [] if chosen in r}
        notes.append("the report lists no individual attacks, so the transfer accuracy is unknown")
    if rows and not looks:
        notes.append("the report has no transfer rung")
    if not is_:
        raise LeaderboardError(f"{where} has no attack results for {name}.")
    timings = report.get("timings") or {}
    seconds = timings.get("defence_seconds_per_image")
    if seconds is None:
        notes.append("the report records no timings, so the cost per image is unknown")
    n = report.get("n") or next(iter(is_.values())).n
    return Entry(defence=name, title=title, source=source, n=int(n), judge=chosen, randomised=randomised,
                 clean=clean, looks_robust=looks, is_robust=is_,
                 checks=[{k: c.get(k) for k in ("name", "status", "message")} for c in report.get("checks") or []],
                 seconds_per_image=None if seconds is None else float(seconds), verdict=report.get("verdict", ""),
                 notes=notes)


def _same(facts: Sequence[tuple[str, object]], what: str, show=str) -> object:
    """The one value every report has for ``what`` (``facts``: ``(source, value)`` pairs; ``show``
    writes a value in the message when two differ)."""
    values: dict = {}
    for source, value in facts:
        values.setdefault(value, source)
    if len(values) > 1:
        (a, first), (b, second) = list(values.items())[:2]
        raise LeaderboardError(f"The reports do not share one {what}: {first} has {show(a)}, {second} has {show(b)}; "
                               f"judge every defence with the same command.")
    return next(iter(values))


def _read_one(source: str, report: dict, judge: str) -> tuple[Entry, str, str, tuple[float, ...]]:
    """The row of one report and what must be the same in all of them (model, threat model, budgets);
    a report whose fields have the wrong types is one :class:`LeaderboardError`, never a traceback."""
    try:
        entry = entry_from_report(report, source, judge)
        model = str((report.get("model") or {}).get("name"))
        eps = tuple(sorted(float(e) for e in report.get("eps_255") or []))
        return entry, model, str(report.get("threat_model", "Linf")), eps
    except LeaderboardError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LeaderboardError(f"{source or 'A report'} is damaged ({type(exc).__name__}: {exc}); make it again "
                               f"with `{MAKE_REPORT}`.") from None


def _eps_text(eps: Iterable[float], threat_model: str = "Linf") -> str:
    eps = list(eps)
    if threat_model == "Linf":
        return ", ".join(f"{e:g}" for e in eps) + "/255"
    return f"{threat_model} " + ", ".join(f"{e:g}" for e in eps)


def build_leaderboard(reports: Sequence[tuple[str, dict]], eps_255: Sequence[float] | None = None,
                      judge: str = "auto") -> "Leaderboard":
    """The leaderboard of ``reports`` (``(source, report)`` pairs, one per defence), with "is robust"
    columns at those of ``eps_255`` the reports evaluated, best defence first. ``eps_255=None``:
    :data:`DEFAULT_EPS_255` for L∞, every budget evaluated for another threat model.

    Every report must evaluate every budget of the columns (a defence missing one is refused: judge
    every defence with the same command). A report may evaluate more budgets than the columns (an
    earlier, wider ladder); those are left out, and the board says so. So are differences in the
    attack settings (steps, EOT samples, losses): the board notes them rather than refusing, because
    a report with more losses judges its defence with a stronger attacker, never a weaker one, and the
    note lets a reader weigh that."""
    if not reports:
        raise LeaderboardError("No report was given: name report files or folders.")
    read = [(source, _read_one(source, report, judge)) for source, report in reports]
    model = _same([(source, facts[1]) for source, facts in read], "model")
    threat = _same([(source, facts[2]) for source, facts in read], "threat model")
    budgets = {source: list(facts[3]) for source, facts in read}
    union = sorted(set().union(*budgets.values()))
    if eps_255 is None:
        eps_255 = DEFAULT_EPS_255 if threat == "Linf" else union
    columns = tuple(float(e) for e in eps_255 if float(e) in union)
    if not columns:
        raise LeaderboardError(f"The reports evaluate ε = {_eps_text(union, threat)}, none of the leaderboard's "
                               f"{_eps_text(eps_255, threat)}; choose budgets with --eps.")
    for source, evaluated in budgets.items():
        lacking = [e for e in columns if e not in evaluated]
        if lacking:
            other = next(s for s, b in budgets.items() if lacking[0] in b)
            raise LeaderboardError(f"The reports do not share one set of budgets ε: {source} has "
                                   f"{_eps_text(evaluated, threat)}, {other} has {_eps_text(budgets[other], threat)}; "
                                   f"judge every defence with the same command.")
    entries, seen = [], {}
    for source, (entry, *_) in read:
        if entry.defence in seen:
            raise LeaderboardError(f"Two reports judge {entry.defence}: {seen[entry.defence]} and {source}; "
                                   "give one.")
        seen[entry.defence] = source
        entries.append(entry)
    notes = []
    missing = [e for e in eps_255 if float(e) not in union]
    if missing:
        notes.append(f"the reports have no attack at {_eps_text(missing, threat)} "
                     f"(they evaluate {_eps_text(union, threat)})")
    wider = [f"{s} also evaluates {_eps_text([e for e in b if e not in columns], threat)}"
             for s, b in budgets.items() if any(e not in columns for e in b)]
    if wider:
        notes.append("budgets outside the columns are left out: " + "; ".join(wider))
    notes.extend(_settings_notes(reports))
    return Leaderboard(entries=entries, eps_255=columns, model=model, threat_model=threat, notes=notes)


#: The attack settings a reader must know are equal, or how they differ, to compare two rows.
_COMPARED_SETTINGS = ("steps", "eot", "losses", "ensemble", "seed")


def _settings_notes(reports: Sequence[tuple[str, dict]]) -> list[str]:
    """One note per attack setting the reports do not share, naming each report's value."""
    notes = []
    for key in _COMPARED_SETTINGS:
        values = {source: ((report.get("settings") or {}) if isinstance(report.get("settings"), dict) else {}).get(key)
                  for source, report in reports}
        shown = {source: ("/".join(map(str, v)) if isinstance(v, list) else str(v)) for source, v in values.items()}
        if len(set(shown.values())) > 1:
            notes.append(f"the reports differ in {key}: " + ", ".join(f"{s} {v}" for s, v in shown.items()))
    return notes
