"""The story's outcomes in plain words: the sentence under each column, and its badge.

The library gives each column's outcome as a kind (:func:`pd_core.story.outcome`: "correct",
"wrong", "fooled", "resisted", "recovered", "still fooled"); how the app says it lives here.
"""
from __future__ import annotations

__all__ = ["verdict", "verdicts", "BADGE"]

#: outcome kind -> (badge colour, badge word).
BADGE = {
    "correct": ("green", "Correct"),
    "wrong": ("orange", "Wrong before the attack"),
    "fooled": ("red", "Fooled"),
    "resisted": ("green", "Not fooled"),
    "recovered": ("green", "Recovered"),
    "still fooled": ("red", "Still fooled"),
}


def verdict(stage: str, prediction: int, label: int) -> tuple[str, str]:
    """(kind, sentence) of one column: clean "correct" / "wrong"; adversarial "fooled" / "resisted"
    (the attack did not move the answer away from the label); defended and ensemble "recovered" /
    "still fooled"."""
    from pd_core.labels import label_name
    from pd_core.story import outcome

    kind = outcome(stage, prediction, label)
    name = f"“{label_name(prediction)}”"
    sentences = {
        "correct": f"The model says {name}.",
        "wrong": f"Wrong even before any attack: the model says {name}.",
        "resisted": f"The attack failed: still {name}.",
        "fooled": f"The model now says {name}.",
        "recovered": f"Back to {name}.",
        "still fooled": f"The model says {name}.",
    }
    return kind, sentences[kind]


def verdicts(result) -> dict[str, tuple[str, str]]:
    """stage -> (kind, sentence) for the four columns of a :class:`pd_core.story.DemoResult`."""
    from pd_core.story import STAGE_NAMES

    return {stage: verdict(stage, result.predictions[stage], result.label) for stage in STAGE_NAMES}
