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
   process's own functions (``_attack_all`` on that chunk, then ``_classify_defended``), giving per
   image the three predictions, the vote's agreement and the float32 L∞ and |L2|. The driver
   concatenates them in the kept order and forms the rows with the single process's ``_rows_at``,
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
from .work_units import (AdaptiveSpec, AdaptiveUnit, AdaptiveWorker, attack_units, clean_units, item_names,
                         shard_schema, unit_key)

__all__ = ["evaluate_adaptive_distributed", "AdaptiveSpec", "AdaptiveUnit", "AdaptiveWorker"]


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

    def __init__(self, spec: AdaptiveSpec, store: Path, ray: str, threads: int, workers: int | None,
                 in_flight: int, max_attempts: int, on_progress):
        self.spec, self.store, self.ray, self.threads, self.workers = spec, store, ray, max(1, int(threads)), workers
        self.in_flight, self.max_attempts, self.on_progress = in_flight, max_attempts, on_progress
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
    from types import SimpleNamespace

    from .evaluate import _rows_at

    order = {it.name: i for i, it in enumerate(kept)}
    labels = torch.tensor([it.label for it in kept], dtype=torch.long)
    data = SimpleNamespace(items=kept, labels=labels, listed=listed, dropped=listed - len(kept))
    out = []
    for eps in spec.eps:
        frame = (rows[u.key] for u in units if u.eps == eps)
        import pandas as pd

        per = pd.concat(list(frame)).assign(pos=lambda f: f["image"].map(order)).sort_values("pos")
        preds = {k: torch.tensor(per[f"pred_{k}"].astype(int).tolist()) for k in ("none", "single", "ens")}
        linf = torch.tensor(per["linf"].tolist(), dtype=torch.float32)
        l2 = torch.tensor(per["l2"].tolist(), dtype=torch.float32)
        out += _rows_at(SimpleNamespace(name=spec.model), data, eps, preds, linf, l2, seconds.get(f"{eps}", 0.0),
                        steps=spec.steps, eot=spec.eot, loss=spec.loss, step_size_fraction=spec.step_size_fraction,
                        ensemble=spec.ensemble, seed=spec.seed)
    return out


def _ladder_rows(spec: AdaptiveSpec, units, rows) -> list[dict]:
    """The rows of :func:`run_ladder`, in its order (clean, then loss × rung × ε)."""
    settings = spec.ladder_settings()
    by_what = {(u.loss, u.rung, u.eps): json.loads(rows[u.key]["payload"].iloc[0]) for u in units}
    out = list(by_what[("", "", 0.0)])
    for loss in settings.losses:
        for rung in settings.rungs:
            for eps in settings.eps_255:
                out += by_what[(loss, rung, eps)]
    return out


def evaluate_adaptive_distributed(model_name: str, images, *, store, eps_list: Sequence[float] = (1, 2, 4, 8),
                                  eot: int = 10, steps: int = 40, limit: int | None = None, seed: int = 0,
                                  labels=None, config=None, step_size_fraction: float | None = None,
                                  ensemble: int = 10, batch_images: int = 16, include_clean: bool = True,
                                  tuning_fraction: float | None = None, loss: str = "ce", gradient: str = "bpda",
                                  ladder=None, ray: str = "local:2", threads: int = 1, workers: int | None = None,
                                  in_flight: int = 2, max_attempts: int = 3,
                                  on_progress: Callable | None = None) -> dict:
    """:func:`evaluate_adaptive` (or, with ``ladder`` a :class:`LadderSettings`, the ladder and its
    checks) on Ray; the units' rows go to the shard folder ``store``.

    The parameters are those of :func:`pd_core.adaptive.evaluate_adaptive`; ``ray``, ``threads``,
    ``workers``, ``in_flight``, ``max_attempts`` and ``on_progress`` (a callback receiving
    :class:`~pd_core.evaluation.dispatch.ProgressSnapshot`) those of
    :func:`pd_core.evaluation.distributed.evaluate_distributed`.

    Returns ``{"rows", "checks" (the ladder's, else []), "input_size", "distributed" (unit counts:
    units, resumed, computed, failed, retried), "seconds"}``.
    """
    from ..defence import DefenceConfig
    from ..evaluation.data import evaluation_part, load_items
    from ..evaluation.ray_cluster import parse_ray_target
    from ..evaluation.shards import meta_path
    from .evaluate import _estimator

    config = config or DefenceConfig()
    if min(int(eot), int(steps), int(ensemble), int(batch_images)) < 1:
        raise EvaluationError("eot, steps, ensemble and batch_images must each be at least 1.")
    eps_values = sorted({float(e) for e in eps_list} | ({0.0} if include_clean else set()))
    if not eps_values or any(not (0 <= e <= 255) for e in eps_values):
        raise EvaluationError("each ε must be between 0 and 255 (in /255 units).")
    _estimator(gradient, int(eot), config, loss)  # an unknown gradient fails before any work
    parse_ray_target(ray)
    started = time.monotonic()
    fraction = DEFAULT_TUNING_FRACTION if tuning_fraction is None else tuning_fraction
    # The single process's listing (labels.csv, WordNet-id prefixes or (path, label) pairs) and names.
    evaluation = evaluation_part(load_items(images, labels), fraction, limit)
    spec = AdaptiveSpec(model_name, tuple(eps_values), int(steps), int(eot), int(seed), int(ensemble),
                        int(batch_images), loss, gradient, step_size_fraction, config.as_dict(),
                        ladder.as_dict() if ladder is not None else None)
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise EvaluationError(f"{store} is a file; give a folder for the shards.")
    store.mkdir(parents=True, exist_ok=True)
    engine = _Engine(spec, store, ray, threads, workers, in_flight, max_attempts, on_progress)
    try:
        first = clean_units(evaluation, spec)
        kept, readable, _ = _kept(engine.run(first), first)
        units = attack_units(kept, spec)
        rows = engine.run(units)
        found, input_size = [], None
        if ladder is None:
            result_rows = _curve_rows(spec, kept, len(evaluation), units, rows, engine.seconds)
        else:
            result_rows = _ladder_rows(spec, units, rows)
            checks_unit = AdaptiveUnit(unit_key("checks", spec.digest(), *item_names(kept)), "checks", 0,
                                       "sanity checks", tuple(kept), rows=tuple(json.dumps(r) for r in result_rows))
            payload = json.loads(engine.run([checks_unit])[checks_unit.key]["payload"].iloc[0])
            from .checks import Check

            found, input_size = [Check(**c) for c in payload["checks"]], payload["input_size"]
    finally:
        engine.close()
    seconds = time.monotonic() - started
    meta = {"model": model_name, "spec": asdict(spec), "images": len(evaluation), "kept": len(kept),
            "ray": ray, "threads": threads, "distributed": engine.counts(), "seconds": round(seconds, 1)}
    meta_path(store).write_text(json.dumps(meta, indent=2, default=str))
    return {"rows": result_rows, "checks": found, "input_size": input_size, "distributed": engine.counts(),
            "seconds": seconds}
