"""The adaptive evaluation on a Ray cluster (issue 12 item 1, "the same for adaptive").

:func:`evaluate_adaptive_distributed` gives the rows of :func:`pd_core.adaptive.evaluate_adaptive`
(or, with ``ladder``, of :func:`pd_core.adaptive.ladder.evaluate_ladder`) computed by many workers,
through the engine of the tables (:class:`pd_core.evaluation.dispatch.Dispatcher`, Parquet shards
of :mod:`pd_core.evaluation.shards`, resumable).

Units, chosen so that the result does not depend on the number of workers
--------------------------------------------------------------------------
The single-process run first classifies the evaluation images (hash order, first ``limit``) in
batches of 64 and keeps those the undefended model gets right; then, per ε, attacks the kept
images in chunks of ``batch_images`` (the EOT seed of a chunk is ``derive_seed(seed,
"adaptive-eot", ε, its names)``) and judges each chunk. The units are exactly these pieces:

1. ``clean`` units: 64 evaluation images each, classified by :func:`pd_core.defence.predict_probs`
   (the single process's batches whenever every file is readable; an unreadable file shifts the
   single process's batch boundaries, which can only matter at an argmax tie below 1e-5);
2. ``eps`` units: one chunk of ``batch_images`` kept images × one ε, computed by the single
   process's own functions (:func:`~.evaluate.attack_chunks` on that chunk, then :func:`~.evaluate.classify_defended`), giving per
   image the three predictions, the vote's agreement and the float32 L∞ and |L2|. The driver
   concatenates them in the kept order and forms the rows with the single process's :func:`~.evaluate.curve_rows`,
   so predictions are exact and the means are the same float32 reductions;
3. with ``ladder``: one unit per (loss, rung, ε) plus one for the clean judgement, each on *all*
   kept images, because :func:`run_ladder` attacks the whole set as one batch with one generator
   (chunks would change its random draws); the checks (:func:`ladder_checks`, which needs the
   ladder's rows) are one last unit. Parallelism is over the 2 × 4 × len(ε) attacks.

The units and the worker are in :mod:`.work_units`. Each worker loads the model once and keeps
the images of its last units (a ladder unit reuses the kept set). Each unit's rows reach a shard with the unit's key, which hashes every setting the unit
depends on, so the driver killed and the same command run again recomputes no finished unit, and
a changed setting never reuses a stale one. The column ``seconds`` of a row is the workers' time
spent on that ε (summed), not the driver's wall time.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..evaluation.data import DEFAULT_TUNING_FRACTION, EvaluationError, Item
from .evaluate import AttackableImages, curve_rows
from ..evaluation.settings import ClusterSettings
from .settings import AdaptiveSettings, DefenceSpec, ImageSelection, LadderSettings
from .work_units import (AdaptiveSpec, AdaptiveUnit, AdaptiveWorker, attack_units, clean_units, item_names,
                         shard_schema, unit_key)

__all__ = ["evaluate_adaptive_distributed"]


def _read(store: Path, keys: set[str]):
    """The shard rows of the units ``keys`` (first copy of each unit: a retried unit is identical)."""
    import pyarrow.dataset as ds

    from ..evaluation.shards import shard_files

    files = shard_files(store)
    if not files:
        return {}
    frame = ds.dataset([str(p) for p in files], format="parquet", schema=shard_schema()).to_table().to_pandas()
    frame = frame[frame["unit"].isin(keys)]
    out = {}
    for unit, group in frame.groupby("unit", sort=False):
        out[unit] = group.drop_duplicates(subset=["image", "eps_255", "payload"], keep="first")
    return out


class _Engine:
    """Runs unit lists on Ray actors through one :class:`Dispatcher` (started on the first work)."""

    def __init__(self, spec: AdaptiveSpec, store: Path, ray: ClusterSettings, on_progress):
        self.spec, self.store, self.ray, self.threads = spec, store, ray.ray, max(1, int(ray.threads))
        self.workers, self.in_flight, self.max_attempts = ray.workers, ray.in_flight, ray.max_attempts
        self.on_progress = on_progress
        self.dispatcher = self.ray_mod = None
        self.started_here = False
        self.total = self.resumed = 0
        self.seconds: dict[str, float] = {}

    def run(self, units: list[AdaptiveUnit]) -> dict:
        """Compute the units not on disk yet; returns key -> rows of every unit."""
        from ..evaluation.dispatch import Dispatcher, ProgressSnapshot
        from ..evaluation.ray_cluster import ray_running, start_ray
        from ..evaluation.shards import finished_units

        finished = finished_units(self.store)
        queue = deque(u for u in units if u.key not in finished)
        self.total += len(units)
        self.resumed += len(units) - len(queue)
        if queue and self.dispatcher is None:
            self.started_here = not ray_running()
            self.ray_mod, count, device = start_ray(self.ray, self.threads, self.workers)
            options = {"num_gpus": 1} if device == "cuda" else {"num_cpus": self.threads}
            actor = self.ray_mod.remote(**options, max_restarts=0, scheduling_strategy="SPREAD")(AdaptiveWorker)
            spec, store, threads = self.spec, str(self.store.resolve()), self.threads
            self.dispatcher = Dispatcher(self.ray_mod, actor, lambda wid: (spec, store, f"w{wid}", threads, device),
                                         count, self.in_flight, self.max_attempts, self.on_progress,
                                         self.total, self.resumed)
        if queue:
            self.dispatcher.total, self.dispatcher.resumed = self.total, self.resumed
            by_key, before = {u.key: u for u in units}, len(self.dispatcher.results)
            for r in self.dispatcher.run(queue)[before:]:
                unit = by_key.get(r["key"])
                if unit is not None and unit.kind == "eps":
                    self.seconds[f"{unit.eps}"] = self.seconds.get(f"{unit.eps}", 0.0) + r["seconds"]
        elif self.on_progress is not None:
            self.on_progress(ProgressSnapshot(self.total, self.total, self.resumed, 0, 0, 0, 0, 0.0, 0.0, 0.0,
                                              "already done"))
        rows = _read(self.store, {u.key for u in units})
        missing = [u for u in units if u.key not in rows]
        if missing:
            raise EvaluationError(f"{len(missing)} unit(s) left no rows in {self.store}; run the command again.")
        return rows

    def counts(self) -> dict:
        d = self.dispatcher
        computed = len(d.results) if d else 0
        return {"units": self.total, "resumed": self.resumed, "computed": computed,
                "failed": d.failed if d else 0, "retried": d.retried if d else 0}

    def close(self) -> None:
        if self.dispatcher is not None and self.started_here:
            self.ray_mod.shutdown()


def _kept(clean_rows: dict, units: list[AdaptiveUnit]) -> tuple[list[Item], int, int]:
    """The kept items in hash order, the number of readable images and of unreadable ones."""
    kept, readable, unreadable = [], 0, 0
    for unit in units:
        correct = dict(zip(clean_rows[unit.key]["image"], clean_rows[unit.key]["correct"]))
        readable += sum(1 for v in correct.values() if v >= 0)
        unreadable += sum(1 for v in correct.values() if v < 0)
        kept += [it for it in unit.items if correct.get(it.name) == 1]
    if not readable:
        raise EvaluationError("none of the images could be read.")
    if not kept:
        raise EvaluationError("the undefended model misclassifies every image: nothing to attack.")
    return kept, readable, unreadable


def _curve_rows(spec: AdaptiveSpec, kept: list[Item], listed: int, units, rows, seconds: dict) -> list[dict]:
    """The rows of :func:`evaluate_adaptive`, from the per-image records of the ε units."""
    import pandas as pd

    order = {it.name: i for i, it in enumerate(kept)}
    labels = torch.tensor([it.label for it in kept], dtype=torch.long)
    data = AttackableImages(images=torch.empty(0), items=kept, labels=labels, listed=listed,
                            dropped=listed - len(kept))
    settings = spec.adaptive_settings()
    out = []
    for eps in spec.eps:
        frame = (rows[u.key] for u in units if u.eps == eps)
        per = pd.concat(list(frame)).assign(pos=lambda f: f["image"].map(order)).sort_values("pos")
        preds = {k: torch.tensor(per[f"pred_{k}"].astype(int).tolist()) for k in ("none", "single", "ens")}
        linf = torch.tensor(per["linf"].tolist(), dtype=torch.float32)
        l2 = torch.tensor(per["l2"].tolist(), dtype=torch.float32)
        out += curve_rows(spec.model, data, eps, preds, linf, l2, seconds.get(f"{eps}", 0.0), settings)
    return out


def _ladder_rows(spec: AdaptiveSpec, rungs: Sequence[str], units, rows) -> list[dict]:
    """The rows of :func:`run_ladder`, in its order (clean, then loss × rung × ε)."""
    settings = spec.ladder_settings()
    by_what = {(u.loss, u.rung, u.eps): json.loads(rows[u.key]["payload"].iloc[0]) for u in units}
    out = list(by_what[("", "", 0.0)])
    for loss in settings.losses:
        for rung in rungs:
            for eps in settings.eps_255:
                out += by_what[(loss, rung, eps)]
    return out


def _driver_defence(model_name: str, defence: DefenceSpec):
    """The defence built in the driver, to plan its rungs and fail early on a bad name or plugin; a
    defence that reads the classifier gets the model on the CPU (the workers build their own)."""
    from ..defences.base import DefenceError
    from ..models import load_model

    try:
        return defence.build(None)
    except DefenceError as exc:
        if "model" not in str(exc):
            raise
    return defence.build(load_model(model_name, device="cpu"))


def _spec(model_name: str, settings: AdaptiveSettings | LadderSettings, defence: DefenceSpec, params: dict
          ) -> AdaptiveSpec:
    """The workers' spec. For the ladder the flat fields repeat the ladder's budget (ε with 0, steps,
    EOT, seed, vote), as the command line always gave them, so that stores keep their unit keys."""
    if isinstance(settings, LadderSettings):
        eps = tuple(sorted({0.0, *settings.eps_255}))
        return AdaptiveSpec(model_name, eps, settings.steps, settings.eot, settings.seed, settings.ensemble,
                            defence=params, ladder=settings.as_dict(), defence_source=defence.source)
    s = settings
    return AdaptiveSpec(model_name, s.eps_255, s.steps, s.eot, s.seed, s.ensemble, s.batch_images, s.loss, s.gradient,
                        s.step_size_fraction, params, None, defence.source)


def evaluate_adaptive_distributed(model_name: str, images, settings: AdaptiveSettings | LadderSettings, *, store,
                                  defence: DefenceSpec = DefenceSpec(), selection: ImageSelection = ImageSelection(),
                                  ray: ClusterSettings = ClusterSettings(), on_progress: Callable | None = None) -> dict:
    """:func:`evaluate_adaptive` (``settings`` an :class:`AdaptiveSettings`) or, with a
    :class:`LadderSettings`, the ladder and its checks, on Ray; the units' rows go to the shard
    folder ``store``.

    defence : the defence by name or plugin spec (each worker builds it, a plugin file must be
    readable on every worker). selection : the images. ray : where and how (:class:`~pd_core.evaluation.settings.ClusterSettings`, shared with the evaluation's Ray engine).
    on_progress : a callback receiving :class:`~pd_core.evaluation.dispatch.ProgressSnapshot`.

    Returns ``{"rows", "checks" (the ladder's, else []), "input_size", "defence" (the ladder's
    :func:`~pd_core.adaptive.report_json.describe_defence`, else None), "distributed" (unit counts:
    units, resumed, computed, failed, retried), "seconds"}``.
    """
    from ..evaluation.data import evaluation_part, load_items
    from ..evaluation.shards import meta_path
    from .checks import Check
    from .evaluate import make_estimator
    from .ladder import rungs_for

    built = _driver_defence(model_name, defence)
    ladder = settings if isinstance(settings, LadderSettings) else None
    if ladder is None:
        make_estimator(settings.gradient, settings.eot, built, settings.loss)  # fails before any work
    started = time.monotonic()
    fraction = DEFAULT_TUNING_FRACTION if selection.tuning_fraction is None else selection.tuning_fraction
    # The single process's listing (labels.csv, WordNet-id prefixes or (path, label) pairs) and names.
    evaluation = evaluation_part(load_items(images, selection.labels_csv), fraction, selection.limit)
    spec = _spec(model_name, settings, defence, built.identity()["params"])
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise EvaluationError(f"{store} is a file; give a folder for the shards.")
    store.mkdir(parents=True, exist_ok=True)
    engine = _Engine(spec, store, ray, on_progress)
    rungs = rungs_for(built, ladder.rungs) if ladder is not None else ()
    found, input_size, described = [], None, None
    try:
        first = clean_units(evaluation, spec)
        kept, readable, _ = _kept(engine.run(first), first)
        units = attack_units(kept, spec, rungs)
        rows = engine.run(units)
        if ladder is None:
            result_rows = _curve_rows(spec, kept, len(evaluation), units, rows, engine.seconds)
        else:
            result_rows = _ladder_rows(spec, rungs, units, rows)
            checks_unit = AdaptiveUnit(unit_key("checks", spec.digest(), *item_names(kept)), "checks", 0,
                                       "sanity checks", tuple(kept), rows=tuple(json.dumps(r) for r in result_rows))
            payload = json.loads(engine.run([checks_unit])[checks_unit.key]["payload"].iloc[0])
            found, input_size = [Check(**c) for c in payload["checks"]], payload["input_size"]
            described = payload.get("defence")
    finally:
        engine.close()
    seconds = time.monotonic() - started
    meta = {"model": model_name, "spec": asdict(spec), "images": len(evaluation), "kept": len(kept),
            "ray": ray.ray, "threads": ray.threads, "distributed": engine.counts(), "seconds": round(seconds, 1)}
    meta_path(store).write_text(json.dumps(meta, indent=2, default=str))
    return {"rows": result_rows, "checks": found, "input_size": input_size, "defence": described,
            "distributed": engine.counts(), "seconds": seconds}
