"""The units of the adaptive evaluation on Ray and the worker that computes them (issue 12).

:class:`AdaptiveSpec` (the run's settings), :class:`AdaptiveUnit` and their planning
(:func:`clean_units`, :func:`attack_units`), and :class:`AdaptiveWorker`, which computes a unit
with the single process's own functions and writes its rows to its Parquet shards. Why the units
are these, and the driver: :mod:`pd_core.adaptive.distributed`.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from ..evaluation.data import Item
from .settings import AdaptiveSettings, DefenceSpec, LadderSettings

__all__ = ["AdaptiveSpec", "AdaptiveUnit", "AdaptiveWorker", "clean_units", "attack_units", "shard_schema",
           "SHARD_COLUMNS", "CLEAN_BATCH", "unit_key", "item_names"]

#: The single process's clean pass: :func:`pd_core.defence.predict_probs`'s batch.
CLEAN_BATCH = 64
#: Columns of the adaptive shards (one row per image of a unit; ``payload``: a ladder unit's rows as JSON).
SHARD_COLUMNS = {"unit": "s", "image": "s", "label": "i", "eps_255": "f", "correct": "i", "pred_none": "i",
                 "pred_single": "i", "pred_ens": "i", "agreement": "f", "linf": "f", "l2": "f", "payload": "s"}


def shard_schema():
    import pyarrow as pa

    kinds = {"s": pa.string(), "i": pa.int64(), "f": pa.float64()}
    return pa.schema([pa.field(name, kinds[k]) for name, k in SHARD_COLUMNS.items()])


@dataclass(frozen=True)
class AdaptiveSpec:
    """Everything a worker needs besides its unit (picklable; the defence as a dict)."""

    model: str
    eps: tuple = (0.0, 1.0, 2.0, 4.0, 8.0)
    steps: int = 40
    eot: int = 10
    seed: int = 0
    ensemble: int = 10
    batch_images: int = 16
    loss: str = "ce"
    gradient: str = "bpda"
    step_size_fraction: float | None = None
    defence: dict = field(default_factory=dict)  # the defence's parameters
    ladder: dict | None = None  # LadderSettings.as_dict() for the ladder
    defence_source: str = "pixel_deflection"  # registry name or plugin spec (DefenceSpec.source)

    def defence_spec(self) -> DefenceSpec:
        return DefenceSpec(self.defence_source, dict(self.defence))

    def adaptive_settings(self) -> AdaptiveSettings:
        return AdaptiveSettings(eps_255=tuple(e for e in self.eps if e > 0) or (0.0,), steps=self.steps,
                                eot=self.eot, loss=self.loss, gradient=self.gradient,
                                step_size_fraction=self.step_size_fraction, ensemble=self.ensemble,
                                batch_images=self.batch_images, include_clean=0.0 in self.eps, seed=self.seed)

    def ladder_settings(self) -> LadderSettings:
        return LadderSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.ladder.items()})

    def digest(self, one_unit: bool = False) -> str:
        """The settings as text, for unit keys. ``one_unit``: without the lists of budgets, losses
        and rungs (a unit has its own), so adding a budget to a finished run only computes the new one.
        The defence's source is left out when it is pixel deflection, so that stores written before
        the field existed keep their keys."""
        settings = asdict(self)
        if settings["defence_source"] == "pixel_deflection":
            settings.pop("defence_source")
        if one_unit:
            settings.pop("eps")
            if settings["ladder"] is not None:
                settings["ladder"] = {k: v for k, v in settings["ladder"].items()
                                      if k not in ("eps_255", "losses", "rungs")}
        return json.dumps(settings, sort_keys=True, default=str)


@dataclass(frozen=True)
class AdaptiveUnit:
    """One unit: ``kind`` is ``clean``, ``eps``, ``ladder`` or ``checks``; ``attack`` and ``chunk``
    name it in the progress line; ``rows`` carries the ladder's rows to the ``checks`` unit."""

    key: str
    kind: str
    chunk: int
    attack: str
    items: tuple
    eps: float = 0.0
    rung: str = ""
    loss: str = ""
    cost: float = 1.0
    rows: tuple = ()


def unit_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:24]


def item_names(items) -> list[str]:
    return [f"{it.name}:{it.label}" for it in items]


def clean_units(evaluation: Sequence[Item], spec: AdaptiveSpec) -> list[AdaptiveUnit]:
    return [AdaptiveUnit(unit_key("clean", spec.model, *item_names(evaluation[i:i + CLEAN_BATCH])), "clean",
                         i // CLEAN_BATCH, "clean pass", tuple(evaluation[i:i + CLEAN_BATCH]))
            for i in range(0, len(evaluation), CLEAN_BATCH)]


def attack_units(kept: Sequence[Item], spec: AdaptiveSpec, rungs: Sequence[str] = ()) -> list[AdaptiveUnit]:
    """The ε units (or the ladder's, one per loss × rung of ``rungs`` × ε), largest cost first (the
    strongest budgets, then chunk order)."""
    digest = spec.digest(one_unit=True)
    if spec.ladder is None:
        b = spec.batch_images
        chunks = [tuple(kept[i:i + b]) for i in range(0, len(kept), b)]
        units = [AdaptiveUnit(unit_key("eps", digest, eps, *item_names(chunk)), "eps", c, f"ε {eps:g}/255", chunk,
                              eps=eps, cost=(spec.steps * spec.eot if eps else 1) * len(chunk))
                 for eps in spec.eps for c, chunk in enumerate(chunks)]
        return sorted(units, key=lambda u: (-u.cost, u.chunk))
    settings, names = spec.ladder_settings(), item_names(kept)
    units = [AdaptiveUnit(unit_key("ladder-clean", digest, *names), "ladder", 0, "clean judgement", tuple(kept))]
    for loss in settings.losses:
        for rung in rungs:
            eot = settings.eot if rung.endswith("_eot") else 1
            units += [AdaptiveUnit(unit_key("ladder", digest, loss, rung, eps, *names), "ladder", 0,
                                   f"{rung} · {loss} · ε {eps:g}", tuple(kept), eps=eps, rung=rung, loss=loss,
                                   cost=settings.steps * eot * (3 if rung == "exact_eot" else 1))
                      for eps in settings.eps_255]
    return sorted(units, key=lambda u: -u.cost)


class AdaptiveWorker:
    """One worker: loads the model once, computes units, writes its own shards (a plain class,
    wrapped with ``ray.remote`` by the driver)."""

    def __init__(self, spec: AdaptiveSpec, store: str, name: str, threads: int = 1, device: str = "cpu"):
        from ..evaluation.shards import ShardWriter
        from ..models import load_model

        if device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        self.spec = spec
        self.model = load_model(spec.model, device=device)
        self.defence = spec.defence_spec().build(self.model)  # a plugin is loaded again here
        self.writer = ShardWriter(store, name, schema=shard_schema())
        self.cache: dict[tuple, tuple] = {}

    def pid(self) -> int:
        return os.getpid()

    def _images(self, items) -> tuple:
        """(x, labels, readable items, unreadable) of ``items``; the last two image sets are kept."""
        from ..evaluation.data import load_labelled_images

        key = tuple(it.name for it in items)
        if key not in self.cache:
            x, good, bad = load_labelled_images(list(items), self.model)
            labels = torch.tensor([it.label for it in good], dtype=torch.long, device=self.model.device)
            self.cache = {**dict(list(self.cache.items())[-1:]), key: (x, labels, good, bad)}
        return self.cache[key]

    def run(self, unit: AdaptiveUnit) -> dict:
        started = time.monotonic()
        compute = {"clean": self._clean, "eps": self._eps, "ladder": self._ladder, "checks": self._checks}[unit.kind]
        rows = [{**r, "unit": unit.key} for r in compute(unit)]
        self.writer.write(rows, [unit.key])
        return {"key": unit.key, "rows": len(rows), "seconds": time.monotonic() - started, "pid": os.getpid()}

    def _clean(self, unit: AdaptiveUnit) -> list[dict]:
        from ..defence import predict_probs

        x, labels, good, bad = self._images(unit.items)
        right = (predict_probs(self.model, x).argmax(1) == labels).tolist() if good else []
        return ([{"image": it.name, "label": it.label, "correct": int(ok)} for it, ok in zip(good, right)]
                + [{"image": name, "correct": -1, "payload": reason} for name, reason in bad.items()])

    def _eps(self, unit: AdaptiveUnit) -> list[dict]:
        """The single process's chunk: :func:`attack_chunks` on this chunk only, then :func:`classify_defended`."""
        from .evaluate import AttackableImages, ImageStepProgress, attack_chunks, classify_defended

        settings = self.spec.adaptive_settings()
        x, labels, good, _ = self._images(unit.items)
        data = AttackableImages(images=x, labels=labels, items=list(good), listed=len(good), dropped=0)
        adv, linf, l2 = attack_chunks(self.model, data, unit.eps, self.defence, settings,
                                      ImageStepProgress(lambda f, m: None, 1))
        preds = classify_defended(self.model, adv, data.items, unit.eps, self.defence, settings)
        cols = [t.tolist() for t in (preds["none"], preds["single"], preds["ens"], preds["agreement"], linf, l2)]
        return [{"image": it.name, "label": it.label, "eps_255": unit.eps, "pred_none": a, "pred_single": b,
                 "pred_ens": c, "agreement": d, "linf": e, "l2": f} for it, a, b, c, d, e, f in zip(good, *cols)]

    def _ladder(self, unit: AdaptiveUnit) -> list[dict]:
        """The rows :func:`run_ladder` makes for one (loss, rung, ε), or its two clean rows."""
        from .ladder import clean_rows, rung_rows

        settings = self.spec.ladder_settings()
        x, labels, _, _ = self._images(unit.items)
        if not unit.rung:
            rows = clean_rows(self.model, x, labels, self.defence, settings)
        else:
            rows = rung_rows(self.model, x, labels, unit.rung, unit.loss, unit.eps, self.defence, settings)
        return [{"payload": json.dumps(rows)}]

    def _checks(self, unit: AdaptiveUnit) -> list[dict]:
        from .ladder import ladder_checks
        from .report_json import describe_defence

        x, labels, _, _ = self._images(unit.items)
        found = ladder_checks(self.model, x, labels, [json.loads(r) for r in unit.rows], self.defence,
                              self.spec.ladder_settings())
        return [{"payload": json.dumps({"checks": [asdict(c) for c in found], "input_size": self.model.input_size,
                                        "defence": describe_defence(self.defence)})}]
