"""The result records of the one-image story: :class:`DemoResult` and :class:`StageResult`.

Plain data (tensors on the CPU, numbers, names), with :meth:`DemoResult.to_dict` giving every
number as JSON-able values: the file the app downloads and what ``pdlab demo --json`` prints.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from ..defence import DefenceConfig

__all__ = ["DemoResult", "StageResult", "STAGE_NAMES", "OUTCOMES", "outcome"]

#: The four columns of the story, in order.
STAGE_NAMES = ("clean", "adversarial", "defended", "ensemble")

#: The outcome kinds of :func:`outcome`, per stage: (right answer, wrong answer).
OUTCOMES = {"clean": ("correct", "wrong"), "adversarial": ("resisted", "fooled"),
            "defended": ("recovered", "still fooled"), "ensemble": ("recovered", "still fooled")}


def outcome(stage: str, prediction: int, label: int) -> str:
    """The kind of one column's answer: clean "correct" / "wrong"; adversarial "resisted" (the
    attack did not move the answer away from the label) / "fooled"; defended and ensemble (and any
    other defended stage) "recovered" / "still fooled"."""
    right, wrong = OUTCOMES.get(stage, OUTCOMES["defended"])
    return right if int(prediction) == int(label) else wrong


@dataclass
class DemoResult:
    """Everything the Attack & Defend page shows, for one image (tensors on the CPU).

    label: the reference class the outcomes use; ``label_source`` says where it came from
    ("dataset" for a labelled image, "clean prediction" for an upload).
    defence, defence_title, defence_params: the registry entry that defended (its name as given
    on the command line: an entry name or a plugin's ``FILE.py:FUNCTION``) and its parameters.
    config: the run-wide defence settings (K, r, σ, ...) the defence was built with.
    images: clean, adversarial, defended (single run on the adversarial image), defended_clean,
    each (3, S, S) in [0, 1].
    probs: stage -> (1000,) probabilities; "ensemble" is the mean softmax of the n copies.
    predictions: stage -> class; "ensemble" is the majority vote (ties: higher mean probability).
    maps: "clean_rcam", "clean_cam", "adversarial_rcam", "adversarial_cam" -> (S, S) in [0, 1];
    the CAMs are of each image's own top-1 class.
    deflections: the single run's replacements, "y", "x", "source_y", "source_x", "channel" (K,);
    empty for a defence that does not deflect pixels.
    norms: "adversarial", "defended", "defended_vs_adversarial" -> norm_l2, l2, linf_255, psnr, l0
    of (adversarial − clean), (defended − clean), (defended − adversarial).
    seconds: wall time of each step ("clean", "attack", "defence", "total").
    """

    model: str
    image_name: str
    label: int
    label_source: str
    attack: str
    preset: str
    attack_params: dict
    seed: int
    config: DefenceConfig
    n_ensemble: int
    images: dict[str, torch.Tensor]
    probs: dict[str, torch.Tensor]
    predictions: dict[str, int]
    ensemble_votes: list[int]
    ensemble_agreement: float
    maps: dict[str, torch.Tensor]
    gradcam: bool
    deflections: dict[str, torch.Tensor]
    norms: dict[str, dict[str, float]]
    attack_success: bool
    seconds: dict[str, float] = field(default_factory=dict)
    image_path: str | None = None
    device: str = "cpu"
    defence: str = "pixel_deflection"
    defence_title: str = "Pixel deflection (the paper's defence)"
    defence_params: dict = field(default_factory=dict)

    def outcomes(self) -> dict[str, str]:
        """stage -> outcome kind (:func:`outcome`), for the four columns."""
        return {stage: outcome(stage, self.predictions[stage], self.label) for stage in STAGE_NAMES}

    def to_dict(self, command: str | None = None) -> dict:
        """All the numbers as plain JSON-able values (no images); ``command``: the line that
        reproduces them (:func:`pd_core.cli.options.demo_command`), stored as ``"command"``."""
        from ..labels import label_name

        def top(probs: torch.Tensor, k: int = 5) -> list[dict]:
            values, indices = probs.topk(k)
            return [{"index": int(i), "label": label_name(int(i)), "prob": round(float(v), 6)}
                    for v, i in zip(values, indices)]

        outcomes = self.outcomes()
        record = {
            "image": self.image_name,
            "model": self.model,
            "device": self.device,
            "seed": self.seed,
            "reference_label": {"index": self.label, "label": label_name(self.label),
                                "source": self.label_source},
            "attack": {"name": self.attack, "preset": self.preset,
                       "params": {k: _jsonable(v) for k, v in self.attack_params.items()},
                       "success": self.attack_success},
            "defence": {"name": self.defence, "title": self.defence_title,
                        "params": {k: _jsonable(v) for k, v in self.defence_params.items()},
                        "settings": self.config.as_dict()},
            "ensemble": {"n": self.n_ensemble, "votes": self.ensemble_votes,
                         "agreement": round(self.ensemble_agreement, 6)},
            "stages": {
                stage: {"prediction": {"index": self.predictions[stage],
                                       "label": label_name(self.predictions[stage])},
                        "prob_reference": round(float(self.probs[stage][self.label]), 6),
                        "top5": top(self.probs[stage]),
                        "verdict": outcomes[stage]}
                for stage in STAGE_NAMES
            },
            "defended_clean": {"prediction": {"index": self.predictions["defended_clean"],
                                              "label": label_name(self.predictions["defended_clean"])},
                               "top5": top(self.probs["defended_clean"])},
            "norms": {name: {k: _jsonable(v) for k, v in values.items()} for name, values in self.norms.items()},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }
        if command is not None:
            record["command"] = command
        return record

    def to_json(self, command: str | None = None) -> str:
        return json.dumps(self.to_dict(command), indent=2)


@dataclass
class StageResult:
    """One stage (a registry entry) applied to the image: its output (3, S, S) and probabilities
    (1000,) on the CPU."""

    name: str
    title: str
    image: torch.Tensor
    probs: torch.Tensor

    @property
    def prediction(self) -> int:
        return int(self.probs.argmax())


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return None
        return round(value, 8)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
