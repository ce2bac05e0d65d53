"""The calls the GPU checks make, in one place (``tests/test_gpu_*.py`` and ``bench/gpu_timings.py``).

Each function is one public entry point of ``pd_core`` run on a given device, so that when an entry
point changes (the evaluation and the ladder are moving to settings objects) only this file follows.
Every function takes the model (a :class:`pd_core.models.Classifier` already on its device) and
returns what the entry point returns, on that device unless said otherwise.

``device``: a CUDA device on a GPU machine; the CPU under ``PD_GPU_TESTS_ON_CPU=1`` and in
``bench/gpu_check.sh --cpu-dry-run``, where the same code runs to check it without a GPU.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

MODEL = "efficientnet_lite0"
#: The story's photo (the README's and the app's default): the model gets it right, FGSM at the
#: paper's ε fools it, the defence recovers it.
STORY_PHOTO = "imagenet_04_949"


def load(device: str | torch.device):
    """The embedded EfficientNet-Lite0 on ``device`` (shared, frozen)."""
    from pd_core.models import load_model

    return load_model(MODEL, device=str(device))


def photos(model, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` on the model's device: ``count`` gallery photos it classifies correctly
    (Foolbox's and scikit-image's, repeated when ``count`` is larger than the gallery)."""
    from pd_core.images import gallery, load_batch

    items = list(gallery())
    x = load_batch([g.path for g in items], spec=model.spec, device=model.device)
    labels = torch.tensor([g.label_index for g in items], device=model.device)
    with torch.no_grad():
        ok = (model(x).argmax(1) == labels).nonzero()[:, 0]
    reps = -(-count // len(ok))
    index = ok.repeat(reps)[:count]
    return x[index].contiguous(), labels[index]


def story_photo(model) -> tuple[torch.Tensor, int]:
    from pd_core.images import gallery_image, load_image

    entry = gallery_image(STORY_PHOTO)
    return load_image(entry.path, spec=model), int(entry.label_index)


# --- the defence -------------------------------------------------------------------------------

def defence_config():
    from pd_core.defence import PAPER_DEFAULTS

    return PAPER_DEFAULTS


def defence(model):
    """The paper's defence as a registry entry (what the adaptive attacks take)."""
    from pd_core.defences.registry import create_defence

    return create_defence("pixel_deflection", model)


def defend(model, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The paper's defence, one run per image, seeded."""
    from pd_core.defence import defend as run

    with torch.no_grad():
        return run(model, images, defence_config(), seed=seed)


def draws(model, images: torch.Tensor, copies: int, seed: int = 0):
    """The deflection draws ``defend_batch`` would make with ``seed`` on the model's device."""
    from pd_core.defence import sample_draws
    from pd_core.randomness import make_generator

    return sample_draws(model, images, copies, defence_config(), generator=make_generator(seed, images.device))


def replay(images: torch.Tensor, record, copies: int = 1) -> torch.Tensor:
    """The defence with the draws of ``record`` (made on any device) applied to ``images`` where they are."""
    from pd_core.defence import apply_draws
    from pd_core.deflection import DeflectionRecord

    record = DeflectionRecord(*(t.to(images.device) for t in record))
    with torch.no_grad():
        return apply_draws(images.repeat_interleave(copies, dim=0), record, defence_config())


def ensemble(model, images: torch.Tensor, n: int = 10, seed: int = 0):
    """Ens-n (paper §10): the majority vote over n defended copies; an ``EnsembleResult``."""
    from pd_core.defence import ensemble_predict

    with torch.no_grad():
        return ensemble_predict(model, images, n=n, seed=seed, config=defence_config())


# --- the story, the attacks, the adaptive attack -----------------------------------------------

def story(model, image: torch.Tensor, label: int, *, attack: str = "fgsm", preset: str = "paper", seed: int = 0):
    """The app's Attack & Defend story for one image (``DemoResult``; its tensors are on the CPU)."""
    from pd_core.story import attack_and_defend

    return attack_and_defend(model, image, label, attack=attack, preset=preset, seed=seed, n_ensemble=10)


def attack(model, images: torch.Tensor, labels: torch.Tensor, name: str, *, preset: str = "interactive",
           seed: int = 0, **params):
    """One attack of the suite (``AttackResult``)."""
    from pd_core.attacks import attack as run

    return run(model, images, labels, name, preset=preset, seed=seed, **params)


def share_of_equal_8bit_values(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of values of two images on the 8-bit grid that are the same grid point.

    Compared as integers: the same grid point can come out of CUDA's and the CPU's arithmetic one
    float32 ulp apart (seen on an H200, FGSM on the story's photo: 39% of the values differed as
    floats while every 8-bit value agreed).
    """
    return ((a.detach().cpu() * 255).round() == (b.detach().cpu() * 255).round()).float().mean().item()


def attack_names() -> list[str]:
    from pd_core.attacks import ATTACKS

    return list(ATTACKS)


def exact_gradient(model, images: torch.Tensor, labels: torch.Tensor, *, eot: int = 2, seed: int = 0):
    """EOT of the exact gradient through the defence: ``(grad, loss, votes)``."""
    from pd_core.adaptive import exact_eot_gradient

    return exact_eot_gradient(model, images, labels, eot=eot, defence=defence(model), seed=seed, loss="ce")


def fixed_draw_gradient(model, images: torch.Tensor, labels: torch.Tensor, record) -> torch.Tensor:
    """The exact gradient of the cross-entropy through one defence sample with the draws of ``record``
    (made on any device), computed where ``images`` are."""
    import torch.nn.functional as F

    from pd_core.defence import apply_draws
    from pd_core.deflection import DeflectionRecord

    record = DeflectionRecord(*(t.to(images.device) for t in record))
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(apply_draws(x, record, defence_config())), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def ladder_rung(model, images: torch.Tensor, labels: torch.Tensor, *, rung: str = "bpda_eot", eps_255: float = 8,
                steps: int = 10, eot: int = 2, loss: str = "margin", seed: int = 0):
    """One rung of the ladder of adaptive attacks at one budget (``AdaptiveResult``)."""
    from pd_core.adaptive import PgdSettings
    from pd_core.adaptive.ladder import attack_rung

    budget = PgdSettings(eps=eps_255 / 255, steps=steps, eot=eot if rung.endswith("_eot") else 1, loss=loss)
    return attack_rung(model, images, labels, rung, defence(model), budget, seed)


def judge(model, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> dict[str, int]:
    """Correct answers of one defended run and the Ens-10 vote on ``images`` (fresh randomness)."""
    from pd_core.adaptive.ladder import judge as run

    with torch.no_grad():
        return run(model, images, labels, defence(model), ensemble=10, seed=seed)


# --- the evaluation: one unit, and one unit on a Ray actor -------------------------------------

def labelled_items(model, folder: Path, count: int):
    """``count`` gallery photos the model classifies correctly, written as a labelled folder; their items."""
    from pd_core.evaluation.distributed import evaluation_items
    from pd_core.images import gallery

    from pd_core.images import load_batch

    folder.mkdir(parents=True, exist_ok=True)
    chosen = [g for g in gallery() if g.path.name.startswith("imagenet_")]
    x = load_batch([g.path for g in chosen], spec=model.spec, device=model.device)
    with torch.no_grad():
        right = (model(x).argmax(1).cpu() == torch.tensor([g.label_index for g in chosen])).tolist()
    chosen = [g for g, ok in zip(chosen, right) if ok]
    lines = ["file,class_index"]
    for g in chosen:
        (folder / g.path.name).write_bytes(g.path.read_bytes())
        lines.append(f"{g.path.name},{g.label_index}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    items = evaluation_items(folder, tuning_fraction=0.0)
    return list(items)[:count]


def unit_settings(**overrides):
    from pd_core.evaluation.units import UnitSettings

    return replace(UnitSettings(preset="paper", table=1, ensemble=10, seed=0, batch_size=16), **overrides)


def evaluation_unit(model, items, attack: str = "fgsm", **settings) -> tuple[list[dict], torch.device]:
    """The rows of one unit of the paper's protocol (a chunk of images × one attack × every defence), and
    the device its images were computed on."""
    from pd_core.evaluation.units import load_chunk, run_unit

    unit = unit_settings(**settings)
    chunk = load_chunk(model, list(items), unit)
    return run_unit(model, chunk, attack, unit).rows, chunk.x.device


def ray_unit(items, store: Path, *, attack: str = "fgsm", device: str) -> tuple[str, list[dict]]:
    """One unit on a Ray actor given a GPU (``num_gpus=1``; on the CPU under the dry run): the actor's
    model device and the rows it wrote to its shard. Starts and stops a private Ray instance; run it
    inside a loopback-only network namespace."""
    import ray

    from pd_core.evaluation.distributed import RunSpec, UnitWorker, plan_units
    from pd_core.evaluation.shards import read_shards

    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    spec = RunSpec(MODEL, preset="paper", table=1, ensemble=10, seed=0, batch_size=16)
    (unit,) = [u for u in plan_units(list(items), [attack], spec) if u.attack == attack]
    ray.init(address="local", num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        options = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        actor = ray.remote(**options)(UnitWorker).remote(spec, str(store), "gpucheck", 1, "cuda" if gpus else "cpu")
        where = ray.get(actor.__ray_call__.remote(lambda worker: str(worker.model.device)))
        ray.get(actor.run.remote(unit))
    finally:
        ray.shutdown()
    rows = read_shards(store)
    return where, rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)


# --- the app's device queue ----------------------------------------------------------------------

def device_slot(device, **kwargs):
    """The app's first-come-first-served slot on ``device`` (a context manager)."""
    from pd_core.scheduler import device_slot as slot

    return slot(device, **kwargs)


def set_slots(device, slots: int) -> None:
    from pd_core.scheduler import set_slots as run

    run(device, slots)


def map_batches(fn, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over ``inputs`` in batches, halving the batch on a CUDA out-of-memory error."""
    from pd_core.scheduler import map_batches as run

    return run(fn, inputs, batch_size)
