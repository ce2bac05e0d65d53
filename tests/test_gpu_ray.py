"""On a GPU: a Ray actor given the card (``num_gpus=1``) computes a unit of the protocol (issue 21, item 4).

Ray runs inside a loopback-only network namespace (:mod:`ray_namespace`): the outer test starts this file's
inner test there. The actor's model is on the GPU (on the CPU under ``PD_GPU_TESTS_ON_CPU=1``), and the rows
it writes to its shard give the single-process CPU run's undefended predictions, image for image.
"""
from __future__ import annotations

import pytest

import gpu_calls
from ray_namespace import inner, run_inner_tests, INNER

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(INNER, reason="the outer test")
def test_ray_gpu_actor_in_a_loopback_namespace(gpu_device):
    run_inner_tests(__file__, expected_passed=1)


@inner
def test_a_ray_actor_computes_a_unit_on_the_gpu(gpu_device, model, tmp_path):
    items = gpu_calls.labelled_items(model, tmp_path / "imgs", 2)
    where, rows = gpu_calls.ray_unit(items, tmp_path / "shards", attack="fgsm", device=gpu_device.type)
    assert where.startswith(gpu_device.type), where
    reference, _ = gpu_calls.evaluation_unit(model, items, "fgsm")
    assert len(rows) == len(reference)
    got = {(r["image"], r["defence"]): r for r in rows}
    for ref in reference:
        row = got[(ref["image"], ref["defence"])]
        if ref["defence"] == "none":
            assert int(row["prediction"]) == int(ref["prediction"]), ref["image"]
