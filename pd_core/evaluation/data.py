"""The images of an evaluation: labelled items, the held-apart tuning split, loading a chunk.

The split (paper §9.1: hyper-parameters are never chosen on evaluation images) is by the SHA-256 of
each image's name, so it never depends on the other images of the folder; see :func:`split_tuning`.

A name is the path relative to its folder, so one file can be named differently by two folders: a
flat folder with ``labels.csv`` (``../shared/imagenet-dev``) calls it ``n01440764_tench.JPEG``, an
ImageFolder (``../shared/imagenet-800``) ``n01440764/n01440764_tench.JPEG``, and the two names hash
apart (29 of imagenet-800's 148 tuning images are evaluation images of imagenet-dev). Inside one
folder this is harmless. Work that takes tuning images from one folder and is evaluated on another
(image quilting's patch database) uses :func:`held_apart_everywhere`: tuning by both names. Keying the
split by the bare file name instead would fix it for every caller, but it would move a fifth of
imagenet-800's images between the parts and so void Table 1 at the paper's scale (hours of CPU on
the old split); the v1 split is kept, and this decision is recorded in docs/results.md's ledger.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["EvaluationError", "Item", "split_tuning", "evaluation_part", "load_items", "load_labelled_images",
           "held_apart_everywhere", "TUNING_SALT", "DEFAULT_TUNING_FRACTION"]

TUNING_SALT = "pd-tuning-split-v1"
DEFAULT_TUNING_FRACTION = 0.2


class EvaluationError(ValueError):
    """An expected failure (bad folder, incompatible results file, ...): a one-sentence message."""


def _hash_unit(name: str) -> float:
    """Position of ``name`` in [0, 1) from its SHA-256 (the split and the evaluation order)."""
    digest = hashlib.sha256(f"{TUNING_SALT}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


@dataclass(frozen=True)
class Item:
    """One labelled image: ``name`` (what the CSV calls it), ``path`` and ImageNet ``label``."""

    name: str
    path: Path
    label: int


def split_tuning(items: Sequence[Item], tuning_fraction: float = DEFAULT_TUNING_FRACTION
                 ) -> tuple[list[Item], list[Item]]:
    """Split items deterministically into (evaluation, tuning) by the hash of each image's name.

    An image is a tuning image when ``_hash_unit(name) < tuning_fraction`` (SHA-256 of
    ``"pd-tuning-split-v1|<name>"`` read as a fraction of 2⁶⁴). The split of an image never depends
    on the other images, so adding files to a folder never moves an image between the parts. Both
    parts come back in hash order. ``tuning_fraction = 0`` puts everything in evaluation.
    """
    if not 0 <= tuning_fraction < 1:
        raise EvaluationError(f"tuning_fraction must be in [0, 1), got {tuning_fraction}.")
    ordered = sorted(items, key=lambda it: (_hash_unit(it.name), it.name))
    evaluation = [it for it in ordered if _hash_unit(it.name) >= tuning_fraction]
    tuning = [it for it in ordered if _hash_unit(it.name) < tuning_fraction]
    return evaluation, tuning


def held_apart_everywhere(items: Sequence[Item], tuning_fraction: float = DEFAULT_TUNING_FRACTION
                          ) -> list[Item]:
    """The tuning images of ``items`` that are tuning images under any folder's name for them: by
    their name here *and* by their bare file name (module docstring), in hash order. What work
    evaluated on a different folder than the one it learnt from may use."""
    _, tuning = split_tuning(items, tuning_fraction)
    _, by_file = split_tuning([Item(Path(it.name).name, it.path, it.label) for it in tuning], tuning_fraction)
    keep = {it.path for it in by_file}
    return [it for it in tuning if it.path in keep]


def evaluation_part(items: Sequence[Item], tuning_fraction: float = DEFAULT_TUNING_FRACTION,
                    limit: int | None = None) -> list[Item]:
    """The evaluation part of ``items`` (:func:`split_tuning`, hash order), its first ``limit`` when
    given: what every protocol (the tables, the adaptive attack, the distributed run) evaluates."""
    evaluation, _ = split_tuning(items, tuning_fraction)
    if limit is not None:
        if int(limit) < 1:
            raise EvaluationError("limit must be at least 1.")
        evaluation = evaluation[: int(limit)]
    if not evaluation:
        raise EvaluationError("no evaluation images (none found, or all went to the tuning subset); "
                              "lower tuning_fraction.")
    return evaluation


def load_items(images: str | os.PathLike | Sequence, labels_csv: str | os.PathLike | None = None
               ) -> list[Item]:
    """The labelled images of a folder (``labels.csv`` or WordNet-id prefix), or of a list of
    ``(path, label)`` pairs. Names are paths relative to the folder, or file names for a list
    (full paths where two files share a name)."""
    if isinstance(images, (str, os.PathLike)):
        from ..images import InputError, read_labelled_folder

        folder = Path(images)
        if not folder.is_dir():
            raise EvaluationError(f"{folder} is not a folder of images.")
        try:
            pairs = read_labelled_folder(folder, labels_csv)
        except InputError as exc:
            raise EvaluationError(str(exc)) from None
        items = []
        for path, label in pairs:
            path = Path(path)
            try:
                name = path.relative_to(folder).as_posix()
            except ValueError:
                name = path.name
            items.append(Item(name, path, int(label)))
    elif images and all(isinstance(it, Item) for it in images):  # already named (pd_core.datasets)
        items = list(images)
    else:
        pairs = [(Path(p), int(lbl)) for p, lbl in images]
        names = [p.name for p, _ in pairs]
        dup = {n for n in names if names.count(n) > 1}
        items = [Item(str(p) if p.name in dup else p.name, p, lbl) for p, lbl in pairs]
    for it in items:
        if not 0 <= it.label < 1000:
            raise EvaluationError(f"{it.name}: label {it.label} is not an ImageNet class index (0-999).")
    if not items:
        skipped = getattr(pairs, "skipped", [])
        detail = (f" ({len(skipped)} file(s) left out, e.g. {Path(skipped[0][0]).name}: {skipped[0][1]})"
                  if skipped else "")
        raise EvaluationError(f"no labelled images found{detail}.")
    return items


def load_labelled_images(items: Sequence[Item], model) -> tuple[torch.Tensor, list[Item], dict[str, str]]:
    """Load a chunk; unreadable files are skipped and reported (never a crash)."""
    from ..images import ImageError, load_batch, load_image

    try:
        return load_batch([it.path for it in items], spec=model.spec, device=model.device), list(items), {}
    except ImageError:
        pass
    good, tensors, bad = [], [], {}
    for it in items:
        try:
            tensors.append(load_image(it.path, spec=model.spec, device=model.device))
            good.append(it)
        except ImageError as exc:
            bad[it.name] = str(exc)
    x = torch.cat(tensors) if tensors else torch.empty(0, 3, model.input_size, model.input_size,
                                                       device=model.device)
    return x, good, bad
