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

The figure is in :mod:`pd_core.leaderboard_figure`; ``pdlab leaderboard`` is :mod:`pd_core.cli.leaderboard`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .evaluation.stats import wilson_interval

__all__ = ["LeaderboardError", "Accuracy", "Entry", "Leaderboard", "REPORT_PREFIX", "LEADERBOARD_SCHEMA",
           "DEFAULT_EPS_255", "read_report", "find_reports", "entry_from_report", "build_leaderboard",
           "load_leaderboard"]

REPORT_PREFIX = "pd-lab/adaptive-report/"
LEADERBOARD_SCHEMA = "pd-lab/leaderboard/1"
#: The budgets of the leaderboard's "is robust" columns (issue 20 item 4), in /255.
DEFAULT_EPS_255 = (2.0, 4.0, 8.0)
#: The budget of the headline numbers (Athalye & Carlini's 4/255), or the closest one evaluated.
HEADLINE_EPS_255 = 4.0
MAKE_REPORT = "pdlab adaptive --images FOLDER --ladder --defence NAME --report NAME.json"


class LeaderboardError(ValueError):
    """Input the leaderboard cannot read; the message is one plain sentence."""


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``n`` images, with the Wilson 95% interval; ``attack``: the rung/loss that gave it."""

    correct: int
    n: int
    attack: str | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def as_dict(self) -> dict:
        low, high = self.interval
        out = {"accuracy": self.accuracy, "ci_low": low, "ci_high": high, "correct": self.correct, "n": self.n}
        return {**out, "attack": self.attack} if self.attack else out

    @classmethod
    def from_dict(cls, data: dict | None) -> "Accuracy | None":
        if not data:
            return None
        return cls(int(data["correct"]), int(data["n"]), data.get("attack"))

    def text(self) -> str:
        low, high = self.interval
        return f"{self.accuracy:.1%} [{low:.1%}, {high:.1%}]"


@dataclass
class Entry:
    """One defence's row: read from one report (see the module docstring for each field)."""

    defence: str
    title: str
    source: str
    n: int
    judge: str
    randomised: bool | None
    clean: Accuracy | None
    looks_robust: dict[float, Accuracy]
    is_robust: dict[float, Accuracy]
    checks: list[dict] = field(default_factory=list)
    seconds_per_image: float | None = None
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def checks_passed(self) -> int:
        return sum(c.get("status") == "pass" for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        return [c.get("name", "?") for c in self.checks if c.get("status") != "pass"]

    def checks_text(self) -> str:
        if not self.checks:
            return "—"
        warned = self.warnings
        return f"{self.checks_passed}/{len(self.checks)} pass" + (f" (warn: {', '.join(warned)})" if warned else "")

    def sentence(self, eps_255: float) -> str:
        """One plain sentence for non-programmers: what the defence keeps at ``eps_255``."""
        clean, looks, is_ = self.clean, self.looks_robust.get(eps_255), self.is_robust.get(eps_255)
        if is_ is None:
            return f"{self.title}: the report has no attack at {eps_255:g}/255, so nothing can be said there."
        parts = [f"{self.title}"]
        if clean is not None:
            parts.append(f" classifies {clean.accuracy:.0%} of the photos correctly without attack")
        if looks is not None:
            parts.append(("," if clean is not None else "") +
                         f" looks robust against an attack made without knowing it ({looks.accuracy:.0%} kept "
                         f"at {eps_255:g}/255)")
        low, high = is_.interval
        parts.append(f"; an attacker who knows it leaves {is_.accuracy:.0%} (95% interval {low:.0%}–{high:.0%}, "
                     f"{is_.n} photos)")
        # The same three readings as the report's verdict: below 10% nothing is left; below half the clean
        # accuracy most photos can still be fooled.
        if is_.accuracy < 0.1:
            parts.append(": it gives no real protection.")
        elif clean is not None and is_.accuracy < 0.5 * clean.accuracy:
            parts.append(": it gives some protection, but most photos can still be fooled.")
        else:
            parts.append(": it keeps much of its accuracy against these attacks"
                         + (f", but {len(self.warnings)} sanity check(s) warn, so do not trust it yet."
                            if self.warnings else " (a stronger attack may still break it)."))
        return "".join(parts)

    def as_dict(self) -> dict:
        return {"defence": self.defence, "title": self.title, "report": self.source, "n": self.n,
                "judge": self.judge, "randomised": self.randomised,
                "clean": self.clean.as_dict() if self.clean else None,
                "looks_robust": [{"eps_255": e, **a.as_dict()} for e, a in sorted(self.looks_robust.items())],
                "is_robust": [{"eps_255": e, **a.as_dict()} for e, a in sorted(self.is_robust.items())],
                "checks": self.checks, "seconds_per_image": self.seconds_per_image, "verdict": self.verdict,
                "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict) -> "Entry":
        by_eps = lambda rows: {float(r["eps_255"]): Accuracy.from_dict(r) for r in rows or []}  # noqa: E731
        return cls(defence=data["defence"], title=data.get("title", data["defence"]), source=data.get("report", ""),
                   n=int(data["n"]), judge=data.get("judge", "single"), randomised=data.get("randomised"),
                   clean=Accuracy.from_dict(data.get("clean")), looks_robust=by_eps(data.get("looks_robust")),
                   is_robust=by_eps(data.get("is_robust")), checks=list(data.get("checks") or []),
                   seconds_per_image=data.get("seconds_per_image"), verdict=data.get("verdict", ""),
                   notes=list(data.get("notes") or []))


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
        from .defences import defence_info

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


def _same(reports: Sequence[tuple[str, dict]], what: str, read) -> object:
    values = {}
    for source, report in reports:
        values.setdefault(read(report), source)
    if len(values) > 1:
        (a, first), (b, second) = list(values.items())[:2]
        raise LeaderboardError(f"The reports do not share one {what}: {first} has {a}, {second} has {b}; "
                               f"judge every defence with the same command.")
    return next(iter(values))


def _eps_text(eps: Iterable[float]) -> str:
    return ", ".join(f"{e:g}" for e in eps) + "/255"


def build_leaderboard(reports: Sequence[tuple[str, dict]], eps_255: Sequence[float] = DEFAULT_EPS_255,
                      judge: str = "auto") -> "Leaderboard":
    """The leaderboard of ``reports`` (``(source, report)`` pairs, one per defence), with "is robust"
    columns at those of ``eps_255`` the reports evaluated, best defence first."""
    if not reports:
        raise LeaderboardError("No report was given: name report files or folders.")
    model = _same(reports, "model", lambda r: str((r.get("model") or {}).get("name")))
    threat = _same(reports, "threat model", lambda r: str(r.get("threat_model", "Linf")))
    evaluated = _same(reports, "set of budgets ε", lambda r: _eps_text(sorted(float(e) for e in r.get("eps_255") or [])))
    available = sorted({float(e) for e in reports[0][1].get("eps_255") or []})
    columns = tuple(float(e) for e in eps_255 if float(e) in available)
    if not columns:
        raise LeaderboardError(f"The reports evaluate ε = {evaluated}, none of the leaderboard's "
                               f"{_eps_text(eps_255)}; choose budgets with --eps.")
    entries, seen = [], {}
    for source, report in reports:
        entry = entry_from_report(report, source, judge)
        if entry.defence in seen:
            raise LeaderboardError(f"Two reports judge {entry.defence}: {seen[entry.defence]} and {source}; "
                                   "give one.")
        seen[entry.defence] = source
        entries.append(entry)
    notes = []
    missing = [e for e in eps_255 if float(e) not in available]
    if missing:
        notes.append(f"the reports have no attack at {_eps_text(missing)} (they evaluate {evaluated})")
    board = Leaderboard(entries=entries, eps_255=columns, model=model, threat_model=threat, notes=notes)
    board.entries.sort(key=board._rank)
    return board


@dataclass
class Leaderboard:
    """Every defence's :class:`Entry`, best first, and the budgets of its columns."""

    entries: list[Entry]
    eps_255: tuple[float, ...]
    model: str
    threat_model: str = "Linf"
    notes: list[str] = field(default_factory=list)

    @property
    def headline_eps_255(self) -> float:
        return min(self.eps_255, key=lambda e: (abs(e - HEADLINE_EPS_255), e))

    def _rank(self, entry: Entry):
        robust = entry.is_robust.get(self.headline_eps_255)
        clean = entry.clean.accuracy if entry.clean else -1.0
        return (-(robust.accuracy if robust else -1.0), -clean, entry.title)

    def as_dict(self) -> dict:
        return {"schema": LEADERBOARD_SCHEMA, "model": self.model, "threat_model": self.threat_model,
                "eps_255": list(self.eps_255), "headline_eps_255": self.headline_eps_255,
                "entries": [{**e.as_dict(), "sentence": e.sentence(self.headline_eps_255)} for e in self.entries],
                "notes": self.notes}

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def markdown(self) -> str:
        """The table as Markdown, then one sentence per defence and the notes."""
        head = self.headline_eps_255
        header = (["#", "Defence", "n", "Clean", f"Looks robust (transfer, {head:g}/255)"]
                  + [f"Is robust {e:g}/255" for e in self.eps_255] + ["Checks", "s / image"])
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        dash = "—"
        for rank, e in enumerate(self.entries, 1):
            title = e.title + (f" ({e.judge.replace('ens', 'Ens-')})" if e.judge != "single" else "")
            looks = e.looks_robust.get(head)
            cells = [str(rank), title, str(e.n), e.clean.text() if e.clean else dash, looks.text() if looks else dash]
            cells += [e.is_robust[x].text() + f" ({e.is_robust[x].attack})" if x in e.is_robust else dash
                      for x in self.eps_255]
            cells += [e.checks_text(), dash if e.seconds_per_image is None else f"{e.seconds_per_image:.3g}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Model {self.model}, {self.threat_model} threat model; accuracy with its 95% (Wilson) "
                     "interval; \"is robust\" is the worst rung and loss at that budget.")
        lines += [f"- {e.sentence(head)}" for e in self.entries]
        for e in self.entries:
            lines += [f"- note ({e.defence}): {note}." for note in e.notes]
        lines += [f"- note: {note}." for note in self.notes]
        return "\n".join(lines)

    def figure(self):
        """The interactive Plotly figure (:func:`pd_core.leaderboard_figure.leaderboard_figure`)."""
        from .leaderboard_figure import leaderboard_figure

        return leaderboard_figure(self)


def load_leaderboard(path: Path | str) -> Leaderboard:
    """A leaderboard written by :meth:`Leaderboard.write_json` (what the app's arena page shows)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeaderboardError(f"There is no leaderboard file {path}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeaderboardError(f"{path} is not a JSON file ({exc}).") from None
    if not isinstance(data, dict) or data.get("schema") != LEADERBOARD_SCHEMA:
        raise LeaderboardError(f"{path} is not a leaderboard (no \"schema\": \"{LEADERBOARD_SCHEMA}\").")
    try:
        return Leaderboard(entries=[Entry.from_dict(e) for e in data["entries"]],
                           eps_255=tuple(float(e) for e in data["eps_255"]), model=data.get("model", "?"),
                           threat_model=data.get("threat_model", "Linf"), notes=list(data.get("notes") or []))
    except (KeyError, TypeError, ValueError) as exc:
        raise LeaderboardError(f"{path} is a damaged leaderboard ({type(exc).__name__}: {exc}).") from None
