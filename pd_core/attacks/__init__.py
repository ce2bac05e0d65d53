"""The attack suite (SPEC §2): FGSM, IGSM, PGD, DeepFool, C&W (Foolbox 3) and JSMA, L-BFGS
(written here as Foolbox attacks), behind one call::

    result = pd_core.attacks.attack(model, images, labels, "pgd", preset="interactive", seed=0)

See :mod:`pd_core.attacks.core` for the quantisation to 1/255 and how success is defined, and
:mod:`pd_core.attacks.registry` for the presets and the norms they achieve on the dev set.
"""
from .core import (REPAIR_SCALES, AttackCancelled, AttackResult, attack, perturbation_norms,
                   quantize_to_grid)
from .registry import ATTACKS, PAPER_NORMS, PRESETS, AttackInfo


def add_attack_parser(subparsers):
    """Register ``python -m pd_core attack ...`` (implemented in :mod:`pd_core.attacks.cli`)."""
    from .cli import add_attack_parser as add

    return add(subparsers)


def cli_attack(args) -> int:
    """Handler of ``python -m pd_core attack``; returns the exit code."""
    from .cli import cli_attack as run

    return run(args)


__all__ = ["attack", "AttackResult", "AttackCancelled", "ATTACKS", "AttackInfo", "PRESETS", "PAPER_NORMS",
           "perturbation_norms", "quantize_to_grid", "REPAIR_SCALES", "add_attack_parser", "cli_attack"]
