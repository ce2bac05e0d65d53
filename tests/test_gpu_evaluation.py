"""On a GPU: one unit of the paper's protocol and the app's device queue (issue 21, item 4).

The unit (a chunk of images × FGSM × every Table 1 column) runs on :func:`gpu_device` (CUDA; the CPU under
``PD_GPU_TESTS_ON_CPU=1``) and on the CPU. The undefended columns are deterministic and must agree
(prediction for prediction; norms within rounding); the defended columns draw their deflections from the
device's generator (CPU and CUDA generators differ), so they agree in accuracy within one image of four.
"""
from __future__ import annotations

import threading
from collections import defaultdict

import pytest
import torch

import gpu_calls

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_model(gpu_device):
    return gpu_calls.load(gpu_device)


def _by_defence(rows):
    table = defaultdict(dict)
    for row in rows:
        table[row["defence"]][row["image"]] = row
    return table


def test_one_evaluation_unit_on_the_gpu(gpu_model, model, gpu_device, tmp_path):
    items = gpu_calls.labelled_items(gpu_model, tmp_path / "imgs", 4)
    assert len(items) == 4
    rows_gpu, where = gpu_calls.evaluation_unit(gpu_model, items, "fgsm")
    assert where.type == gpu_device.type
    rows_cpu, _ = gpu_calls.evaluation_unit(model, items, "fgsm")
    gpu, cpu = _by_defence(rows_gpu), _by_defence(rows_cpu)
    assert set(gpu) == set(cpu) and len(gpu) >= 3, sorted(gpu)  # none, single/Ens-10 and the others
    for image, row in gpu["none"].items():
        ref = cpu["none"][image]
        assert int(row["prediction"]) == int(ref["prediction"]), image
        assert abs(float(row["linf_255"]) - float(ref["linf_255"])) < 1e-3
        assert abs(float(row["norm_l2"]) - float(ref["norm_l2"])) < 2e-3
    for defence in gpu:
        right_gpu = sum(int(r["correct"]) for r in gpu[defence].values())
        right_cpu = sum(int(r["correct"]) for r in cpu[defence].values())
        assert abs(right_gpu - right_cpu) <= 1, (defence, right_gpu, right_cpu)


def test_the_device_queue_runs_gpu_jobs_one_at_a_time_first_come_first_served(gpu_model, model, gpu_device):
    """Three jobs (classify 8 photos in batches of 4, the app's OOM-retrying loop) on one slot of the card."""
    x, labels = gpu_calls.photos(gpu_model, 8)
    gpu_calls.set_slots(gpu_model.device, 1)
    events, results, errors = [], {}, []
    holding, release = threading.Event(), threading.Event()
    waiting = {i: threading.Event() for i in range(3)}

    def job(i):
        try:
            with gpu_calls.device_slot(gpu_model, on_wait=lambda position: waiting[i].set(), poll_interval=0.05):
                events.append(("start", i))
                if i == 0:
                    holding.set()
                    release.wait(30)
                with torch.no_grad():
                    results[i] = gpu_calls.map_batches(lambda chunk: gpu_model(chunk), x, 4)
                if results[i].is_cuda:
                    torch.cuda.synchronize()
                events.append(("end", i))
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    threads[0].start()
    assert holding.wait(30)
    for i in (1, 2):  # each starts queueing only once the previous one is in line
        threads[i].start()
        assert waiting[i].wait(30), f"job {i} never had to wait"
    release.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert events == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2)], events
    with torch.no_grad():
        reference = model(x.cpu())
    for out in results.values():
        assert out.device.type == gpu_device.type and out.shape == (8, 1000)
        assert (out.argmax(1).cpu() == labels.cpu()).all()
        assert (out.cpu() - reference).abs().max().item() < 0.1  # logits; TF32 on the card
