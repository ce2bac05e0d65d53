"""Connecting to Ray or starting a local instance, shared by the Ray engines of the evaluation
(:mod:`pd_core.evaluation.distributed`) and of the adaptive attacks (:mod:`pd_core.adaptive.distributed`).

Ray is imported lazily: the rest of pd_core works without it installed.
"""
from __future__ import annotations

import os

import torch

from .data import EvaluationError

__all__ = ["parse_ray_target", "ray_running", "start_ray"]


def parse_ray_target(text: str) -> tuple[str | None, int | None]:
    """``"local:N"`` -> (None, N); ``"auto"`` or an address -> (address, None)."""
    text = (text or "").strip()
    if text.startswith("local"):
        _, _, n = text.partition(":")
        try:
            count = int(n) if n else (os.cpu_count() or 1)
        except ValueError:
            count = 0
        if count < 1:
            raise EvaluationError(f"--ray {text!r}: give local:N with N ≥ 1 workers, auto, or a cluster address.")
        return None, count
    if not text:
        raise EvaluationError("--ray needs local:N, auto, or a cluster address like 10.0.0.1:6379.")
    return text, None


def ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def start_ray(target: str, threads: int, workers: int | None):
    """Connect to or start Ray; returns (ray, number of workers, device of each worker)."""
    try:
        import ray
    except ImportError:
        raise EvaluationError("Ray is not installed; install it with pip install 'ray[default]'.") from None
    address, local = parse_ray_target(target)
    if not ray.is_initialized():
        if local is not None:
            gpus = torch.cuda.device_count()
            # address="local": always a new instance, never one left running by another driver.
            ray.init(address="local", num_cpus=local * threads if not gpus else max(os.cpu_count() or 1, local),
                     num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise EvaluationError(f"cannot join the Ray cluster at {address!r} ({str(exc).splitlines()[0]}); "
                                      "start it with `ray start --head` or check the address.") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        count = gpus if local is None else min(local, gpus)
        return ray, workers or count, "cuda"
    count = local if local is not None else max(1, int(resources.get("CPU", 1)) // threads)
    return ray, workers or count, "cpu"
