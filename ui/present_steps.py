"""The nine steps of the Present page: titles and the one sentence each says to the audience.

Every sentence is written from the run's own numbers (:class:`ui.present_run.PresentationRun`), and
says what happened, not what was hoped: on a photo where the attack fails or the defence does not
bring the answer back, the sentences say so. Nothing here draws; :mod:`ui.present` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .present_run import ADAPTIVE_EOT, ADAPTIVE_EPS_255, ADAPTIVE_STEPS



def _name(index: int) -> str:
    from pd_core.labels import label_name

    return f"“{label_name(index)}”"


def _percent(probs, index: int) -> str:
    return f"{float(probs[index]) * 100:.0f}%"


def step_clean(run) -> str:
    s = run.story
    pred = s.predictions["clean"]
    sure = _percent(s.probs["clean"], pred)
    if s.label_source != "dataset":
        return f"The model looks at this photo and answers {_name(pred)} ({sure} sure)."
    if pred == s.label:
        return f"The model looks at this photo and answers {_name(pred)} ({sure} sure), which is right."
    return (f"The model looks at this photo and answers {_name(pred)} ({sure} sure), which is already wrong: "
            f"it is a {_name(s.label)}.")


def step_attacked(run) -> str:
    s = run.story
    pred = s.predictions["adversarial"]
    budget = f"{s.norms['adversarial']['linf_255']:.0f}/255"
    if pred == s.label:
        return (f"The attack (FGSM) changed each pixel value by at most {budget}, and the model still says "
                f"{_name(pred)}: this time the attack failed.")
    return (f"The attack (FGSM) changed each pixel value by at most {budget}, and now the model says "
            f"{_name(pred)} ({_percent(s.probs['adversarial'], pred)} sure).")


def step_perturbation(run) -> str:
    return (f"The change the attack made, invisible in the photo: amplified {run.factor:g} times (left), and how "
            f"much each pixel got darker (blue) or brighter (red), up to {run.peak_255:.0f}/255 (right).")


def step_slider(run) -> str:
    return ("Slide between the clean photo (left of the line) and the attacked one (right of it): "
            "to a person they are the same picture.")


def step_deflection(run) -> str:
    k = int(run.story.config.deflections)
    return (f"Pixel deflection finds where the object is (left), swaps {k} pixel values with random "
            "neighbours mostly off the object (middle, in magenta), then smooths the noise away (right).")


def step_recovered(run) -> str:
    s = run.story
    single, ens = s.predictions["defended"], s.predictions["ensemble"]
    n, agree = s.n_ensemble, f"{s.ensemble_agreement * 100:.0f}%"
    if single == s.label and ens == s.label:
        return (f"After the defence the model says {_name(single)} again, once and by the vote of {n} "
                f"defended copies ({agree} agree): the answer is back.")
    if ens == s.label:
        return (f"One run of the defence gives {_name(single)}, but the vote of {n} defended copies brings "
                f"back {_name(ens)} ({agree} agree).")
    if single == s.label:
        return (f"One run of the defence brings back {_name(single)}, but the vote of {n} copies says "
                f"{_name(ens)} ({agree} agree).")
    return (f"Here the defence does not win: the model says {_name(single)} after one run and {_name(ens)} "
            f"by the vote of {n} copies.")


def step_adaptive(run) -> str:
    a = run.adaptive
    single, ens = a.predictions["adversarial_single"], a.predictions["adversarial_ensemble"]
    who = (f"An attacker who knows the defence (BPDA+EOT: {ADAPTIVE_STEPS} steps of "
           f"{ADAPTIVE_EOT} defence runs, at most {ADAPTIVE_EPS_255}/255)")
    if single != a.label and ens != a.label:
        same = single == ens
        return (f"{who} makes this photo, and even through the defence the model says {_name(single)}"
                + ("" if same else f" once and {_name(ens)} by the vote") + ".")
    if single == a.label and ens == a.label:
        return (f"{who} makes this photo, and on it the defence holds: the model still says {_name(single)}; "
                "a larger budget breaks it (Adaptive attack page).")
    return (f"{who} makes this photo: through the defence the model says {_name(single)} once and "
            f"{_name(ens)} by the vote of {a.ensemble}.")


def load_board():
    """The defence arena's leaderboard (:func:`ui.arena.load_board`: ``docs/results/zoo_leaderboard.json``,
    or the file ``PD_LEADERBOARD_FILE`` names): ``(Leaderboard or None, why not or None)``."""
    from .arena import load_board as arena_board

    return arena_board()


def step_leaderboard(run) -> str:
    board, problem = load_board()
    if problem:
        return f"The defence arena's leaderboard cannot be read: {problem}"
    if board is None:
        return ("The defence arena's leaderboard, which shows which defences only look robust, has not been "
                "computed on this server yet (the Defence arena page shows the commands that make it).")
    return (f"{len(board.entries)} defences judged by the same attacks: for each, the accuracy without attack "
            "(grey), against an attack that ignores it (blue: looks robust) and against an attacker who knows it "
            "(red: is robust).")


def step_closing(run) -> str:
    s, a = run.story, run.adaptive
    recovered = s.predictions["ensemble"] == s.label or s.predictions["defended"] == s.label
    broken = a.predictions["adversarial_single"] != a.label or a.predictions["adversarial_ensemble"] != a.label
    if recovered and broken:
        return ("Pixel deflection undoes an attack that ignores it, but not an attacker who knows it: a defence "
                "is only as strong as the strongest attack tried against it.")
    if broken:
        return ("On this photo the defence neither undid the simple attack nor stopped the one that knows it: "
                "judge a defence by the strongest attack tried against it.")
    return ("On this photo the defence held, against the simple attack and a small adaptive one; a larger "
            "budget still breaks it, so judge a defence by the strongest attack tried against it.")


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    sentence: Callable[[object], str]


STEPS: tuple[Step, ...] = (
    Step("clean", "What the model sees", step_clean),
    Step("attacked", "The attacked photo", step_attacked),
    Step("perturbation", "The invisible change, made visible", step_perturbation),
    Step("slider", "Before and after", step_slider),
    Step("deflection", "What pixel deflection does", step_deflection),
    Step("recovered", "The answer after the defence", step_recovered),
    Step("adaptive", "An attacker who knows the defence", step_adaptive),
    Step("leaderboard", "The defence arena", step_leaderboard),
    Step("closing", "What to take home", step_closing),
)
