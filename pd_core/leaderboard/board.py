"""The leaderboard and its rows: :class:`Accuracy` (a count with its Wilson interval), :class:`Entry`
(one defence), :class:`Leaderboard` (every defence, best first, with its Markdown table and its JSON,
schema ``pd-lab/leaderboard/1``) and :func:`load_leaderboard` (that JSON read back, as the app does).
See :mod:`pd_core.leaderboard` for what each number means."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..defences.none import INFO as UNDEFENDED_INFO
from ..evaluation.stats import wilson_interval

__all__ = ["LeaderboardError", "Accuracy", "Entry", "Leaderboard", "LEADERBOARD_SCHEMA", "DEFAULT_EPS_255",
           "HEADLINE_EPS_255", "budget_text", "load_leaderboard"]

LEADERBOARD_SCHEMA = "pd-lab/leaderboard/1"
#: The budgets of the leaderboard's "is robust" columns (issue 20 item 4), in /255.
DEFAULT_EPS_255 = (2.0, 4.0, 8.0)
#: Fewer photos than this and a sentence says its numbers are a first look (a Wilson interval at
#: n = 30 is still about ±17 points wide at 50%).
SMALL_SAMPLE = 30
#: The registry's undefended entry: its row is the reference, and its sentence says so.
UNDEFENDED = UNDEFENDED_INFO.name
#: The budget of the headline numbers (Athalye & Carlini's 4/255), or the closest one evaluated.
HEADLINE_EPS_255 = 4.0


class LeaderboardError(ValueError):
    """Input the leaderboard cannot read; the message is one plain sentence."""


def budget_text(eps: float, threat_model: str = "Linf") -> str:
    """A budget in words: ``4/255`` (L∞, in /255) or ``L2 0.05`` (L2: the normalised ‖δ‖₂/‖x‖₂ the
    ladder's ``--norm l2`` reports in its ``eps_255`` field)."""
    return f"{eps:g}/255" if threat_model == "Linf" else f"{threat_model} {eps:g}"


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

    def sentence(self, eps_255: float, threat_model: str = "Linf") -> str:
        """One plain sentence for non-programmers: what the defence keeps at the budget ``eps_255``."""
        clean, looks, is_ = self.clean, self.looks_robust.get(eps_255), self.is_robust.get(eps_255)
        budget = budget_text(eps_255, threat_model)
        if is_ is None:
            return f"{self.title}: the report has no attack at {budget}, so nothing can be said there."
        if self.defence == UNDEFENDED:
            low, high = is_.interval
            return ("With no defence at all" +
                    (f" the model classifies {clean.accuracy:.0%} of the photos correctly, and" if clean else "") +
                    f" an attack at {budget} leaves {is_.accuracy:.0%} (95% interval {low:.0%}–{high:.0%}, "
                    f"{is_.n} photos): the reference every defence is measured against." +
                    (f" With only {is_.n} photos this is a first look, not a measurement." if is_.n < SMALL_SAMPLE
                     else ""))
        parts = [f"{self.title}"]
        if clean is not None:
            parts.append(f" classifies {clean.accuracy:.0%} of the photos correctly without attack")
        if looks is not None:
            # "Looks robust" only where the attack made without knowing the defence leaves a good share of
            # the photos (the same 10% line as below); otherwise even that attack gets through.
            looks_robust = looks.accuracy >= 0.1
            parts.append(("," if clean is not None else "") +
                         (" looks robust against" if looks_robust else " is not even robust against") +
                         f" an attack made without knowing it ({looks.accuracy:.0%} kept at {budget})")
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
        if is_.n < SMALL_SAMPLE:
            parts.append(f" With only {is_.n} photos this is a first look, not a measurement.")
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
        """4/255 for L∞ (or the closest budget evaluated); the middle budget for another threat model."""
        if self.threat_model != "Linf":
            return sorted(self.eps_255)[len(self.eps_255) // 2]
        return min(self.eps_255, key=lambda e: (abs(e - HEADLINE_EPS_255), e))

    def budget(self, eps: float) -> str:
        return budget_text(eps, self.threat_model)

    def sentence(self, entry: Entry) -> str:
        """``entry``'s plain sentence at the headline budget."""
        return entry.sentence(self.headline_eps_255, self.threat_model)

    def __post_init__(self):
        self.entries.sort(key=self.rank_key)

    def rank_key(self, entry: Entry):
        """Best first: the worst-rung accuracy at the headline budget, then the clean accuracy."""
        robust = entry.is_robust.get(self.headline_eps_255)
        clean = entry.clean.accuracy if entry.clean else -1.0
        return (-(robust.accuracy if robust else -1.0), -clean, entry.title)

    def as_dict(self) -> dict:
        return {"schema": LEADERBOARD_SCHEMA, "model": self.model, "threat_model": self.threat_model,
                "eps_255": list(self.eps_255), "headline_eps_255": self.headline_eps_255,
                "entries": [{**e.as_dict(), "sentence": self.sentence(e)} for e in self.entries],
                "notes": self.notes}

    def figure(self):
        """The interactive Plotly figure (:func:`pd_core.leaderboard.figure.leaderboard_figure`)."""
        from .figure import leaderboard_figure

        return leaderboard_figure(self)

    def write_json(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def markdown(self) -> str:
        """The table as Markdown, then one sentence per defence and the notes."""
        head = self.headline_eps_255
        header = (["#", "Defence", "n", "Clean", f"Looks robust (transfer, {self.budget(head)})"]
                  + [f"Is robust {self.budget(e)}" for e in self.eps_255] + ["Checks", "s / image"])
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
        lines += [f"- {self.sentence(e)}" for e in self.entries]
        for e in self.entries:
            lines += [f"- note ({e.defence}): {note}." for note in e.notes]
        lines += [f"- note: {note}." for note in self.notes]
        return "\n".join(lines)


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
