"""Where randomness comes from: explicit generators and name-derived seeds.

Every random step in ``pd_core`` takes a ``torch.Generator`` (or a seed turned into one by
:func:`make_generator`), and the seeds of a protocol come from names (:func:`derive_seed`), never
from a position in a batch or a worker, so a result never depends on how the work was split.
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["make_generator", "derive_seed"]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (random seed when ``None``)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and names (image, attack, ...): SHA-256 of their text.

    Depends only on the values, never on batch position or process, so a resumed or re-batched run
    draws the same deflections for the same (image, attack).
    """
    text = "|".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
