"""On a GPU: every attack of the suite, the exact gradient through the defence, one ladder rung
(issue 21, item 4).

Each test runs on :func:`gpu_device` (CUDA; the CPU under ``PD_GPU_TESTS_ON_CPU=1``), asserts the device
of its results, and compares with the same call on the CPU. What may differ, and why:

- FGSM is one signed gradient step: the same image up to the sign of gradient components that are ~0
  (float and TF32 rounding), so ≥ 99% of its values are equal;
- the iterative and optimisation attacks amplify those rounding differences, and PGD's random start and
  the EOT draws come from the device's generator (CPU and CUDA generators differ): they agree in outcome
  (success on each device within one image of four) and in size (their budgets hold exactly; free-size
  attacks' mean normalised L2 within 35%);
- the exact gradient: with the same draws (made on the GPU, replayed on the CPU) the gradients point the
  same way (cosine > 0.98).
"""
from __future__ import annotations

import pytest
import torch

import gpu_calls

pytestmark = pytest.mark.gpu

#: Budget-bound attacks: their L∞ bound in /255 at the interactive preset comes from the result's params.
BOUNDED = {"fgsm", "igsm", "pgd"}


@pytest.fixture(scope="module")
def gpu_model(gpu_device):
    return gpu_calls.load(gpu_device)


@pytest.fixture(scope="module")
def four(gpu_model):
    return gpu_calls.photos(gpu_model, 4)


def _cpu_result(model, gpu_model, fn):
    """``fn(model)`` on the CPU (under the dry run too, where it compares the CPU with itself: the
    comparisons' code is checked before a GPU is at hand)."""
    return fn(model)


@pytest.mark.parametrize("name", gpu_calls.attack_names())
def test_each_attack_on_the_gpu_agrees_with_the_cpu(name, gpu_model, model, four, gpu_device):
    x, labels = four
    on_gpu = gpu_calls.attack(gpu_model, x, labels, name, preset="interactive", seed=0)
    assert on_gpu.adversarial.device.type == gpu_device.type
    assert on_gpu.adversarial.shape == x.shape
    assert bool(((on_gpu.adversarial >= 0) & (on_gpu.adversarial <= 1)).all())
    grid = on_gpu.adversarial * 255
    assert (grid - grid.round()).abs().max().item() < 1e-3  # on the 8-bit grid, as a saved PNG
    # success as reported is what the undefended model says on the device
    with torch.no_grad():
        said = gpu_model(on_gpu.adversarial).argmax(1)
    goal = on_gpu.targets if on_gpu.targets is not None else None
    expected = (said == goal.to(said.device)) if goal is not None else (said != labels)
    assert torch.equal(on_gpu.success.to(said.device).bool(), expected)
    on_cpu = _cpu_result(model, gpu_model, lambda m: gpu_calls.attack(m, x.cpu(), labels.cpu(), name,
                                                                        preset="interactive", seed=0))
    if on_cpu is None:
        return
    assert abs(int(on_gpu.success.sum()) - int(on_cpu.success.sum())) <= 1, (on_gpu.success, on_cpu.success)
    if name == "fgsm":
        same = gpu_calls.share_of_equal_8bit_values(on_gpu.adversarial, on_cpu.adversarial)
        assert same > 0.99, f"FGSM: only {same:.2%} of the values agree"
    if name in BOUNDED:
        bound = max(float(on_cpu.linf_255.max()), float(on_gpu.linf_255.max()))
        assert bound <= on_gpu.params["eps"] * 255 + 1e-3
    else:
        a, b = float(on_gpu.norm_l2.mean()), float(on_cpu.norm_l2.mean())
        assert abs(a - b) <= 0.35 * max(a, b) + 1e-4, f"mean normalised L2: GPU {a:.4f}, CPU {b:.4f}"


def test_the_exact_gradient_on_the_gpu(gpu_model, model, four, gpu_device):
    x, labels = four
    grad, loss, votes = gpu_calls.exact_gradient(gpu_model, x, labels, eot=2, seed=0)
    assert grad.device.type == gpu_device.type and grad.shape == x.shape and bool(torch.isfinite(grad).all())
    assert loss.shape == (4,) and votes.shape == (4, 2)
    # Nothing accumulated on the shared model.
    assert all(p.grad is None for p in gpu_model.parameters())
    # The same defence sample differentiated on both devices: the gradients point the same way.
    record = gpu_calls.draws(gpu_model, x, copies=1, seed=3)
    g_gpu = gpu_calls.fixed_draw_gradient(gpu_model, x, labels, record)
    assert g_gpu.device.type == gpu_device.type
    g_cpu = gpu_calls.fixed_draw_gradient(model, x.cpu(), labels.cpu(), record)
    cosine = torch.nn.functional.cosine_similarity(g_gpu.cpu().flatten(1), g_cpu.flatten(1)).min().item()
    assert cosine > 0.98, f"cosine(GPU gradient, CPU gradient) = {cosine:.4f}"
    # And it is a gradient: a small step along its sign raises the loss of that sample on the GPU.
    import torch.nn.functional as F

    from pd_core.defence import apply_draws
    from pd_core.deflection import DeflectionRecord

    fixed = DeflectionRecord(*(t.to(x.device) for t in record))

    def sample_loss(images):
        with torch.no_grad():
            return F.cross_entropy(gpu_model(apply_draws(images, fixed, gpu_calls.defence_config())), labels,
                                   reduction="none")

    stepped = (x + 1 / 255 * g_gpu.sign()).clamp(0, 1)
    assert bool((sample_loss(stepped) > sample_loss(x)).all())


def test_one_ladder_rung_on_the_gpu(gpu_model, model, four, gpu_device):
    """BPDA+EOT with the margin loss at 8/255 (Athalye & Carlini 2018: the defence falls to ~0%)."""
    x, labels = four
    on_gpu = gpu_calls.ladder_rung(gpu_model, x, labels, rung="bpda_eot", eps_255=8, steps=10, eot=2)
    assert on_gpu.adversarial.device.type == gpu_device.type
    assert on_gpu.linf.max().item() * 255 <= 8 + 1e-3
    assert len(on_gpu.loss_history) == 10
    gpu_verdict = gpu_calls.judge(gpu_model, on_gpu.adversarial, labels, seed=0)
    # The undefended model says the same about the GPU's adversarial images on the CPU.
    with torch.no_grad():
        assert model(on_gpu.adversarial.cpu()).argmax(1).tolist() == on_gpu.adversarial_pred.cpu().tolist()
    on_cpu = _cpu_result(model, gpu_model, lambda m: gpu_calls.ladder_rung(m, x.cpu(), labels.cpu(), rung="bpda_eot",
                                                                            eps_255=8, steps=10, eot=2))
    # At 8/255 the rung brings the defended accuracy down to at most one image of four, on each device.
    assert gpu_verdict["single"] <= 1, gpu_verdict
    if on_cpu is not None:
        cpu_verdict = gpu_calls.judge(model, on_cpu.adversarial, labels.cpu(), seed=0)
        assert cpu_verdict["single"] <= 1, cpu_verdict
        assert abs(int(on_gpu.success.sum()) - int(on_cpu.success.sum())) <= 1
