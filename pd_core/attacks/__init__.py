"""The attack suite (SPEC §2): FGSM, IGSM, PGD, DeepFool, C&W (Foolbox 3) and JSMA, L-BFGS
(written here as Foolbox attacks), behind one call::

    result = pd_core.attacks.attack(model, images, labels, "pgd", preset="interactive", seed=0)

See :mod:`pd_core.attacks.core` for the quantisation to 1/255 and how success is defined,
:mod:`pd_core.attacks.early_stop` for the stop-at-first-success IGSM/PGD and the minimal FGSM,
:mod:`pd_core.attacks.measures` for the three perturbation measures, and
:mod:`pd_core.attacks.registry` for the presets and the norms they achieve on the dev set.
"""
from .core import REPAIR_SCALES, AttackResult, attack
from .measures import normalization_of, perturbation_norms, quantize_to_grid
from .monitor import AttackCancelled, stop_if_asked
from .registry import ALL_PRESETS, ATTACKS, PAPER_NORMS, PRESETS, AttackInfo


__all__ = ["attack", "AttackResult", "AttackCancelled", "stop_if_asked", "ATTACKS", "AttackInfo", "PRESETS", "ALL_PRESETS",
           "PAPER_NORMS", "perturbation_norms", "normalization_of", "quantize_to_grid", "REPAIR_SCALES"]
