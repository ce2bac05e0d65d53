"""The paper's protocol on a Ray cluster: from a laptop (``local:N``) to many GPU servers (issue 12).

Work units
----------
A unit is one fixed chunk of ``batch_size`` evaluation images × one attack (``clean`` included),
with all the table's defences — exactly the unit of the single-process :func:`evaluate`: the same
chunks (hash order, ``batch_size`` images each), the same attack seed ``derive_seed(seed, attack,
preset, *names)``, the same deflection seeds ``derive_seed(seed, image, attack)``, the same code
(:func:`compute_unit` calls the protocol's own unit, :func:`pd_core.evaluation.units.run_unit`).
Chunks rather than single images
because the attacks run batched and the CPU's batched floating point differs in the last bits
between batch compositions; with fixed chunks the composition depends only on the image names and
``batch_size``, never on the number of workers, their order or which worker ran a unit, and a Ray
run gives the single-process run's predictions (norms within 1e-6), which the tests check row
for row. ``--batch-size 1`` makes every unit a single image (finest balancing, no batching gain).
Measured here (EfficientNet-Lite0, one thread, 4 dev images): logits of a batch of 4 against the
same images one at a time differ by up to 2.9e-6 (argmax equal); a permuted batch of 4 gives
identical logits. Small, but a gradient sign flipped near zero moves an FGSM pixel by 2ε and an
early-stopping IGSM/DeepFool iterate to another step, so per-image units would reproduce the
single-process table only approximately; fixed chunks reproduce it exactly. A worker keeps its last
two chunks (images and clean pass) and the dispatcher gives it the other attacks of its chunk first,
so a chunk is loaded and classified once per worker that takes it (as the single process shares it
between a chunk's attacks), not once per unit (measured: 0.15–0.19 s per chunk of 4 images on one
thread, against 1.1–3.5 s per unit).
A unit's key (:func:`unit_key`) hashes the table, ensemble, attack, preset and image names.
Dispatch and the progress display live in :mod:`.dispatch`.

Engine
------
* ``local:N`` starts a Ray instance on this machine with N workers; ``auto`` or an address
  (``ray start --head`` printed it) joins an existing cluster. One actor per GPU where the
  cluster has GPUs, else one per ``threads`` CPUs; each actor loads the model once and sets its
  torch thread count.
* Pull-based balancing: the driver keeps at most ``in_flight`` units queued per actor and hands
  the next unit (largest prior cost first: units differ ~100× between FGSM and C&W) to whichever
  actor finishes, via :func:`ray.wait`.
* A worker that dies (its process killed, its node lost) fails its queued units; the driver puts
  them back at the front of the queue, starts a replacement actor and counts them as failed and
  retried. A unit that raises the same Python error ``max_attempts`` times stops the run.
* Each actor writes its rows itself into its own Parquet shards (:mod:`.shards`) — on a cluster
  the store folder must be on a file system every node sees (NFS, Lustre, a shared disk). A unit's
  shard is written atomically with the unit's key, so the driver killed at any moment and the same
  command run again skips exactly the units on disk (reported as ``resumed``); a unit retried after
  a worker died between writing and answering appears twice on disk and once after the merge.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..attacks import ATTACKS
from ..defence import PAPER_DEFAULTS
from ..defences.plugins import resolve_defences
from .data import DEFAULT_TUNING_FRACTION, EvaluationError, Item, evaluation_part
from .progress import COST_PRIOR
from .ray_cluster import ray_running, start_ray
from .sidecar import check_sidecar, library_versions, now_iso
from .shards import ShardWriter, export_csv, finished_units, meta_path, read_shards
from .dispatch import Dispatcher, ProgressSnapshot
from .result import EvaluationResult
from .settings import ClusterSettings, ProtocolSettings
from .stats import summarize
from .units import UnitSettings, failed_unit_records, load_chunk, run_unit

__all__ = ["RunSpec", "WorkUnit", "plan_units", "unit_key", "compute_unit",
           "evaluate_distributed", "UnitWorker"]


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs besides its unit (picklable; the defence as a dict)."""

    model: str
    preset: str = "paper"
    table: int = 1
    ensemble: int = 10
    seed: int = 0
    batch_size: int = 16
    defence: dict = field(default_factory=dict)
    attack_params: dict = field(default_factory=dict)
    defences: tuple = ()  # registry names of Table 1's transfer columns (empty: the table's own)
    plugins: tuple = ()  # the plugin specs among them, loaded again in each worker process

    @classmethod
    def of(cls, model_name: str, settings: ProtocolSettings) -> "RunSpec":
        return cls(model_name, settings.preset, settings.table, settings.ensemble, settings.seed,
                   settings.batch_size, settings.config.as_dict() if settings.config != PAPER_DEFAULTS else {},
                   dict(settings.attack_params), tuple(settings.defences), tuple(settings.plugins))

    def config(self):
        return replace(PAPER_DEFAULTS, **self.defence) if self.defence else PAPER_DEFAULTS


@dataclass(frozen=True)
class WorkUnit:
    key: str
    chunk: int
    attack: str
    items: tuple
    cost: float


def unit_key(spec: RunSpec, attack: str, names: Sequence[str]) -> str:
    preset = "none" if attack == "clean" else spec.preset
    columns = [f"d{','.join(spec.defences)}"] if spec.defences else []  # absent for the tables: old keys hold
    text = "|".join([f"t{spec.table}", f"e{spec.ensemble}", *columns, attack, preset, *names])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def plan_units(evaluation: Sequence[Item], attacks: Sequence[str], spec: RunSpec) -> list[WorkUnit]:
    """Units in submission order: largest prior cost first, then chunk order."""
    chunks = [tuple(evaluation[i:i + spec.batch_size]) for i in range(0, len(evaluation), spec.batch_size)]
    units = [WorkUnit(unit_key(spec, a, [it.name for it in ch]), ci, a, ch, COST_PRIOR.get(a, 5.0) * len(ch))
             for ci, ch in enumerate(chunks) for a in ["clean", *attacks]]
    return sorted(units, key=lambda u: (-u.cost, u.chunk))


def _settings(spec: RunSpec) -> UnitSettings:
    return UnitSettings(preset=spec.preset, table=spec.table, ensemble=spec.ensemble, seed=spec.seed,
                        batch_size=spec.batch_size, config=spec.config(), attack_params=spec.attack_params,
                        defences=tuple(spec.defences))


def compute_unit(model, unit: WorkUnit, spec: RunSpec, chunk=None) -> tuple[list[dict], dict]:
    """Rows of one unit, exactly as :func:`evaluate` computes them (:func:`pd_core.evaluation.units.run_unit`),
    and ``{"unreadable", "attack_params", "failures"}`` (``failures``: the sidecar's ``failed_units``
    entries of a unit whose defence failed). ``chunk``: the unit's images and clean pass when the
    worker still has them from another unit of the same chunk (as the single process shares them
    between a chunk's attacks); else they are loaded and computed here."""
    settings = _settings(spec)
    chunk = chunk if chunk is not None else load_chunk(model, list(unit.items), settings)
    result = run_unit(model, chunk, unit.attack, settings)
    params = {} if result.attack_params is None else {f"{unit.attack}/{spec.preset}": result.attack_params}
    failures = failed_unit_records(result, unit.chunk, unit.attack, settings, [it.name for it in unit.items])
    return result.rows, {"unreadable": chunk.unreadable, "attack_params": json.loads(json.dumps(params, default=str)),
                         "failures": failures}


class UnitWorker:
    """One worker: loads the model once, computes units, writes its own shards. Wrapped with
    ``ray.remote`` by the driver (a plain class here, so it can be used and tested without Ray)."""

    def __init__(self, spec: RunSpec, store: str, name: str, threads: int = 1, device: str = "cpu"):
        from ..models import load_model

        if spec.plugins:  # a plugin is registered per process: load it here as the driver did
            resolve_defences(list(spec.plugins))
        if device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        self.spec = spec
        self.model = load_model(spec.model, device=device)
        self.writer = ShardWriter(store, name)
        self.chunks: dict[tuple, object] = {}

    def pid(self) -> int:
        return os.getpid()

    def _chunk(self, unit: WorkUnit):
        """The unit's chunk (images and clean pass), kept for the worker's next units: the
        dispatcher hands a worker the other attacks of its last chunk first."""
        key = tuple(it.name for it in unit.items)
        if key not in self.chunks:
            chunk = load_chunk(self.model, list(unit.items), _settings(self.spec))
            self.chunks = {**dict(list(self.chunks.items())[-1:]), key: chunk}  # the last two chunks
        return self.chunks[key]

    def run(self, unit: WorkUnit) -> dict:
        started, cpu = time.monotonic(), time.process_time()
        rows, info = compute_unit(self.model, unit, self.spec, self._chunk(unit))
        # A unit whose defence failed keeps its rows but is not marked finished: a rerun retries it
        # (its rows then appear twice on disk and once after the merge).
        self.writer.write(rows, [] if info["failures"] else [unit.key])
        return {"key": unit.key, "rows": len(rows), "seconds": time.monotonic() - started, "pid": os.getpid(),
                "cpu_seconds": time.process_time() - cpu, **info}


def _sidecar(store: Path, spec: RunSpec, settings: ProtocolSettings, extra: dict) -> dict:
    identity = {**settings.identity(spec.model), "batch_size": spec.batch_size}
    meta = check_sidecar(meta_path(store), identity)
    meta.setdefault("created", now_iso())
    meta["settings"] = identity
    meta["versions"] = library_versions()
    meta.setdefault("attack_params", {})
    for name in settings.attacks:
        requested = json.loads(json.dumps({**ATTACKS[name].preset(spec.preset), **spec.attack_params.get(name, {})},
                                          default=str))
        stored = meta["attack_params"].get(f"{name}/{spec.preset}")
        if stored is not None and any(k in stored and stored[k] != v for k, v in requested.items()):
            raise EvaluationError(f"the results folder has {name} '{spec.preset}' rows made with other "
                                  "parameters; choose another output folder.")
    meta.setdefault("runs", []).append({"date": meta["created"] if not meta.get("runs") else now_iso(),
                                        "table": spec.table, "preset": spec.preset, "attacks": list(settings.attacks),
                                        **({"defences": list(spec.defences)} if spec.defences else {}), **extra})
    return meta


def evaluation_items(images, *, labels=None, devkit_meta=None, subset=None,
                     tuning_fraction: float = DEFAULT_TUNING_FRACTION, limit: int | None = None) -> list[Item]:
    """The evaluation images of a folder in any layout of :mod:`pd_core.datasets` (or a list of
    :class:`Item`), split and limited as :func:`evaluate` does. Names are paths relative to the
    folder, as :func:`load_items` names them, so the chunks are the single-process run's."""
    from ..datasets import DatasetError, open_dataset

    if isinstance(images, (str, os.PathLike)):
        try:
            items = [Item(r.name, r.path, r.label) for r in open_dataset(images, labels=labels,
                                                                          devkit_meta=devkit_meta, subset=subset)]
        except DatasetError as exc:
            raise EvaluationError(str(exc)) from None
    else:
        items = list(images)
    return evaluation_part(items, tuning_fraction, limit)


def _seconds_per_image(units: Sequence[WorkUnit], results: Sequence[dict]) -> dict[str, float]:
    """Measured worker seconds per image of each attack in this session (unit time / unit images)."""
    by_key = {u.key: u for u in units}
    totals: dict[str, list[float]] = {}
    for r in results:
        unit = by_key.get(r["key"])
        if unit is not None:
            t = totals.setdefault(unit.attack, [0.0, 0])
            t[0] += r["seconds"]
            t[1] += len(unit.items)
    return {a: round(sec / n, 4) for a, (sec, n) in totals.items() if n}


def _compute_units(queue: deque, total: int, resumed: int, spec: RunSpec, store: Path, cluster: ClusterSettings,
                   on_progress: Callable[[ProgressSnapshot], None] | None) -> tuple[list[dict], int, int]:
    """The queued units on Ray actors (one model each; one per GPU, else ``threads``-thread CPU
    workers), pulled by a :class:`Dispatcher`. Returns (unit results, failed, retried)."""
    if not queue:
        if on_progress is not None:
            on_progress(ProgressSnapshot(total, total, resumed, 0, 0, 0, 0, 0.0, 0.0, 0.0, "already done"))
        return [], 0, 0
    threads = max(1, int(cluster.threads))
    started_here = not ray_running()
    ray_mod, count, device = start_ray(cluster.ray, threads, cluster.workers)
    options = {"num_gpus": 1} if device == "cuda" else {"num_cpus": threads}
    actor_class = ray_mod.remote(**options, max_restarts=0, scheduling_strategy="SPREAD")(UnitWorker)
    try:
        scheduler = Dispatcher(ray_mod, actor_class,
                               lambda wid: (spec, str(store.resolve()), f"w{wid}", threads, device),
                               min(count, len(queue)), cluster.in_flight, cluster.max_attempts, on_progress, total,
                               resumed)
        results = scheduler.run(queue)
    finally:
        if started_here:  # our own connection or local instance: its workers go with it
            ray_mod.shutdown()
    return results, scheduler.failed, scheduler.retried


def _worker_costs(units: Sequence[WorkUnit], results: Sequence[dict]) -> dict:
    """The sidecar's cost entries: seconds per image of each attack, and the workers' CPU time over
    their wall time (below 1 per thread: other processes took the CPUs)."""
    busy, cpu = sum(r["seconds"] for r in results), sum(r.get("cpu_seconds", 0.0) for r in results)
    return {"unit_costs": _seconds_per_image(units, results), "worker_cpu_seconds": round(cpu, 2),
            "worker_cpu_share": round(cpu / busy, 3) if busy else None}


def evaluate_distributed(model_name: str, images, settings: ProtocolSettings | None = None, *, store,
                         cluster: ClusterSettings | None = None, labels=None,
                         on_progress: Callable[[ProgressSnapshot], None] | None = None, out_csv=None):
    """:func:`~pd_core.evaluation.protocol.evaluate` on Ray; rows go to the shard folder ``store``
    (and to ``out_csv`` at the end).

    images : a folder or a list of :class:`Item` (:func:`evaluation_items` reads the other layouts).
    settings : the run (:class:`~pd_core.evaluation.settings.ProtocolSettings`, shared with the
    sequential engine). cluster : where and how it runs (:class:`~pd_core.evaluation.settings.ClusterSettings`).
    on_progress : receives a :class:`ProgressSnapshot`.
    Returns the :class:`EvaluationResult` of the merged store, with ``meta["distributed"]``
    counting units (total, resumed, computed, failed, retried) and ``failed_units`` the units
    whose defence failed (their rows are kept; the unit is retried by the next run).
    """
    settings = settings or ProtocolSettings()
    cluster = cluster or ClusterSettings()
    started = time.monotonic()
    evaluation = evaluation_items(images, labels=labels, tuning_fraction=settings.tuning_fraction,
                                  limit=settings.limit)
    spec = RunSpec.of(model_name, settings)
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise EvaluationError(f"{store} is a file; give a folder for the shards.")
    store.mkdir(parents=True, exist_ok=True)
    meta = _sidecar(store, spec, settings, {"tuning_fraction": settings.tuning_fraction, "limit": settings.limit,
                                            "images": len(evaluation), "ray": cluster.ray, "threads": cluster.threads})
    meta_path(store).write_text(json.dumps(meta, indent=2, default=str))
    units = plan_units(evaluation, settings.attacks, spec)
    finished = finished_units(store)
    queue = deque(u for u in units if u.key not in finished)
    resumed = len(units) - len(queue)
    results, failed, retried = _compute_units(queue, len(units), resumed, spec, store, cluster, on_progress)
    unreadable = {k: v for r in results for k, v in r.get("unreadable", {}).items()}
    for r in results:
        for k, v in r.get("attack_params", {}).items():
            meta["attack_params"].setdefault(k, v)
    meta["failed_units"] = sorted((f for r in results for f in r.get("failures", [])),
                                  key=lambda f: (f["chunk"], f["attack"], f["defence"]))
    rows = read_shards(store)
    rows = rows[rows["image"].astype(str).isin({it.name for it in evaluation})]
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    dropped = sorted(clean.loc[clean["correct"].astype(int) == 0, "image"])
    kept = int((clean["correct"].astype(int) == 1).sum())
    seconds = time.monotonic() - started
    meta["distributed"] = {"units": len(units), "resumed": resumed, "computed": len(results), "failed": failed,
                           "retried": retried}
    meta.update(_worker_costs(units, results))
    meta["runs"][-1].update({"seconds": round(seconds, 1), "kept": kept, "dropped": len(dropped),
                             "unreadable": unreadable, "failed_units": len(meta["failed_units"]),
                             **meta["distributed"]})
    meta_path(store).write_text(json.dumps(meta, indent=2, default=str))
    if out_csv is not None:
        export_csv(store, out_csv)
        Path(str(out_csv) + ".meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return EvaluationResult(rows=rows, summary=summarize(rows), images=len(evaluation), kept=kept, dropped=dropped,
                            unreadable=unreadable, meta=meta, csv_path=Path(out_csv) if out_csv else None,
                            table=settings.table, preset=settings.preset, ensemble=settings.ensemble,
                            seconds=seconds, failed_units=list(meta["failed_units"]), columns=tuple(settings.defences))
