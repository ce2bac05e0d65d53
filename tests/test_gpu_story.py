"""On a GPU: the app's story, the defence (batch) and Ens-10 (issue 21, item 4).

Each test computes on :func:`gpu_device` (CUDA; the CPU under ``PD_GPU_TESTS_ON_CPU=1``), checks the
device of its results, and compares with the CPU. CPU and CUDA random generators draw different
deflections for the same seed (README, "The method"), so the random parts are compared through
their draws: the draws the GPU made are replayed on the CPU (``DeflectionRecord`` on any device), and
what must agree is the output for the same draws. Deterministic parts (the model, FGSM's step) are
compared directly. Float tolerances allow for TF32 convolutions on the card (cuDNN's default).
"""
from __future__ import annotations

import pytest
import torch

import gpu_calls
from pd_core.deflection import DeflectionRecord

pytestmark = pytest.mark.gpu

#: |GPU - CPU| allowed on images in [0, 1] and on probabilities, for the same draws.
IMAGE_TOLERANCE = 2e-3
PROB_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def gpu_model(gpu_device):
    return gpu_calls.load(gpu_device)


def _on(device: torch.device, tensor: torch.Tensor) -> bool:
    return tensor.device.type == device.type


def test_the_model_agrees_with_the_cpu(gpu_model, model, gpu_device):
    x, labels = gpu_calls.photos(gpu_model, 8)
    with torch.no_grad():
        probs_gpu = gpu_model(x).softmax(-1)
        probs_cpu = model(x.cpu()).softmax(-1)
    assert _on(gpu_device, probs_gpu)
    assert (probs_gpu.argmax(1).cpu() == labels.cpu()).all() and (probs_cpu.argmax(1) == labels.cpu()).all()
    gap = (probs_gpu.cpu() - probs_cpu).abs().max().item()
    assert gap < PROB_TOLERANCE, f"max |p_gpu - p_cpu| = {gap:.2e}"


def test_the_defence_batch_is_the_cpu_defence_with_the_same_draws(gpu_model, gpu_device):
    x, _ = gpu_calls.photos(gpu_model, 16)
    record = gpu_calls.draws(gpu_model, x, copies=1, seed=0)
    assert all(_on(gpu_device, t) for t in record)
    defended = gpu_calls.replay(x, record)
    assert _on(gpu_device, defended) and defended.shape == x.shape
    # The very defence call gives the replay on its own device (same seed, same generator state) ...
    direct = gpu_calls.defend(gpu_model, x, seed=0)
    assert torch.equal(direct, defended)
    # ... and the CPU, given the GPU's draws, computes the same image.
    on_cpu = gpu_calls.replay(x.cpu(), record)
    gap = (defended.cpu() - on_cpu).abs().max().item()
    assert gap < IMAGE_TOLERANCE, f"max |defended_gpu - defended_cpu| = {gap:.2e}"
    # K = 100 deflections per image happened (the defence did something everywhere).
    assert record.y.shape == (16, 100)


def test_ens10_on_the_gpu_is_the_cpu_vote_over_the_same_draws(gpu_model, model, gpu_device):
    x, labels = gpu_calls.photos(gpu_model, 4)
    result = gpu_calls.ensemble(gpu_model, x, n=10, seed=0)
    assert _on(gpu_device, result.prediction) and _on(gpu_device, result.mean_probs)
    record = gpu_calls.draws(gpu_model, x, copies=10, seed=0)  # the draws ensemble_predict made
    with torch.no_grad():
        probs_cpu = model(gpu_calls.replay(x.cpu(), record, copies=10)).softmax(-1).view(4, 10, -1).mean(1)
    gap = (result.mean_probs.cpu() - probs_cpu).abs().max().item()
    assert gap < PROB_TOLERANCE, f"max |mean p_gpu - mean p_cpu| = {gap:.2e}"
    assert result.prediction.cpu().tolist() == probs_cpu.argmax(1).tolist()
    # Clean photos the model gets right: the vote keeps most of them (the defence costs ~12% on the dev set).
    assert (result.prediction.cpu() == labels.cpu()).sum() >= 3


def test_the_story_on_the_gpu(gpu_model, model, gpu_device):
    """The README's story: the strawberry, FGSM at the paper's ε, the defence, Ens-10."""
    x, label = gpu_calls.story_photo(gpu_model)
    on_gpu = gpu_calls.story(gpu_model, x, label)
    assert on_gpu.device.startswith(gpu_device.type), on_gpu.device
    x_cpu, _ = gpu_calls.story_photo(model)
    on_cpu = gpu_calls.story(model, x_cpu, label)
    # The clean answer and the attack (FGSM: one signed gradient step) are deterministic.
    assert on_gpu.predictions["clean"] == on_cpu.predictions["clean"] == label
    assert on_gpu.attack_success and on_cpu.attack_success
    same = gpu_calls.share_of_equal_8bit_values(on_gpu.images["adversarial"], on_cpu.images["adversarial"])
    assert same > 0.99, f"only {same:.2%} of the adversarial image's values agree"  # sign flips of ~0 gradients
    assert on_gpu.predictions["adversarial"] == on_cpu.predictions["adversarial"]
    # The single defended run: the GPU's draws, replayed on the CPU, give the GPU's defended image.
    record = DeflectionRecord(**{k: v[None] for k, v in on_gpu.deflections.items()})
    replayed = gpu_calls.replay(on_gpu.images["adversarial"][None].cpu(), record)[0]
    gap = (replayed - on_gpu.images["defended"]).abs().max().item()
    assert gap < IMAGE_TOLERANCE, f"max |defended_gpu - replay_cpu| = {gap:.2e}"
    # Ens-10 recovers the strawberry on both devices (its agreement is high, so the draws do not decide it).
    assert on_gpu.predictions["ensemble"] == on_cpu.predictions["ensemble"] == label
