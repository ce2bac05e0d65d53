"""The one-image story the app tells and ``pdlab demo`` prints: attack, defend, Ens-10, maps, norms.

- :func:`attack_and_defend` (:mod:`.pipeline`): for one image, the clean prediction with its maps
  (one forward pass), an attack, the adversarial prediction with its maps (one pass), then any
  defence of the registry (:mod:`pd_core.defences`) on the adversarial image (one run, with where
  it deflected), on the clean image and as Ens-n (SPEC §1.4), the last three classified as **one
  batch**. The result is a :class:`DemoResult` (:mod:`.record`).
- :func:`defence_stages`: the image after each stage of the defence separately (paper Table 3),
  each stage an entry of the registry.

Every number depends only on the inputs and the seed, so ``pdlab demo IMAGE ...``
(:mod:`pd_core.cli.demo`) prints exactly what the app shows for the same settings; the line that
reproduces a result is written by :func:`pd_core.cli.options.demo_command`. The plain-language
sentences the app shows for each outcome live in the app (:mod:`ui.verdicts`): the record carries
only the outcome's kind (:func:`outcome`).

Paper Fig. 2 (class probabilities against the number of deflections) is
:func:`pd_core.evaluation.probability_curve`, the same for the app and the evaluation.
"""
from __future__ import annotations

from .pipeline import DEFAULT_DEFENCE, STAGE_DEFENCES, attack_and_defend, defence_stages
from .record import OUTCOMES, STAGE_NAMES, DemoResult, StageResult, outcome

__all__ = ["DemoResult", "StageResult", "STAGE_NAMES", "OUTCOMES", "outcome", "attack_and_defend",
           "defence_stages", "DEFAULT_DEFENCE", "STAGE_DEFENCES"]
