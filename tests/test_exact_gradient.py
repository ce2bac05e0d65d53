"""The exact gradient through the defence (issue 14 item 1).

- the autograd gradient of ``defend`` with fixed draws matches central finite differences (float64);
- the folded fast denoiser has the gradient of the textbook steps (explicit renormalisation);
- the differentiable forward pass is bit-identical to ``defend`` / ``defend_batch``;
- no gradient accumulates on the shared model's parameters.
"""
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from paper_columns import TABLE3_DEFENCES, TABLE4_DEFENCES
from pd_core.defence import (PAPER_DEFAULTS, defend, defend_batch,
                             defend_differentiable, draw_log_prob)
from pd_core.deflection import deflect
from pd_core.randomness import make_generator
from pd_core.denoising import rgb_to_ycbcr, wavelet_denoise, ycbcr_to_rgb
from pd_core.wavelets import bayes_threshold, haar_forward, haar_inverse, wavelet_levels
from pd_core.maps import robust_activation_map
from pd_core.models import MODELS, Classifier

SMALL = replace(PAPER_DEFAULTS, deflections=40, window=3)


def smooth_image(seed, size=32):
    """A photo-like float64 image: smooth colour gradients plus mild texture, strictly inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size, dtype=torch.float64),
                            torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g, dtype=torch.float64) * 6
    base = 0.5 + 0.3 * torch.sin(3 * xx + 2 * yy + phase)
    noise = 0.08 * torch.rand(3, size, size, generator=g, dtype=torch.float64)
    return (base + noise).clamp(0.02, 0.98)[None]


def tiny_classifier():
    """A float64 CAM classifier (conv features, GAP + linear head) small enough for finite differences."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Tanh(), nn.Linear(8, 10))
    features = net[:4]

    def head(f):
        return net[4](f.mean(dim=(2, 3)))

    model = Classifier(replace(MODELS["efficientnet_lite0"], name="tiny"), features, head, net, net[4])
    model = model.double().eval()
    model.requires_grad_(False)
    return model


def central_differences(fn, x, coords, h=1e-6):
    flat = x.detach().clone().view(-1)
    out = []
    for i in coords:
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        out.append((fn(plus.view_as(x)) - fn(minus.view_as(x))) / (2 * h))
    return torch.stack(out)


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_of_projection_matches_finite_differences(seed):
    x = smooth_image(seed)
    rmap = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64) * 0.8
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(20 + seed), dtype=torch.float64)

    def loss(z):
        out = defend(None, z, SMALL, rmap=rmap, generator=make_generator(seed))
        return (out * weights).sum()

    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(xr), xr)
    coords = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(seed))[:24]
    fd = central_differences(loss, x, coords)
    exact = grad.view(-1)[coords]
    assert exact.abs().max() > 1e-3  # the gradient is not trivially zero
    assert relative_error(exact, fd) <= 1e-3
    # BPDA's identity would give `weights` itself; the exact gradient differs from it.
    assert relative_error(exact, weights.view(-1)[coords]) > 0.05


@pytest.mark.parametrize("seed", [3, 4])
def test_gradient_through_a_model_matches_finite_differences(seed):
    model = tiny_classifier()
    x = smooth_image(seed)
    label = torch.tensor([3])
    rmap = robust_activation_map(model, x, top_k=5).rmap  # held constant, as in the exact gradient

    def loss(z):
        out = defend(model, z, SMALL, rmap=rmap, generator=make_generator(seed))
        return torch.nn.functional.cross_entropy(model(out), label)

    xr = x.clone().requires_grad_(True)
    defended = defend_differentiable(model, xr, SMALL, generator=make_generator(seed)).defended
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(defended), label), xr)
    coords = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(seed))[:24]
    fd = central_differences(loss, x, coords)
    assert relative_error(grad.view(-1)[coords], fd) <= 1e-3


def textbook_denoise(x, sigma=0.04):
    """SPEC §1.3 step by step: YCbCr, explicit min-max renormalisation, orthonormal Haar, BayesShrink
    soft thresholds with σ, inverse, clip, renormalisation undone, RGB, clip."""
    ycc = rgb_to_ycbcr(x)
    lo = ycc.amin(dim=(-2, -1), keepdim=True)
    hi = ycc.amax(dim=(-2, -1), keepdim=True)
    c = (ycc - lo) / (hi - lo)
    h, w = x.shape[-2:]
    coeffs = haar_forward(c, wavelet_levels(h, w))
    out = [coeffs[0]]
    for level in coeffs[1:]:
        bands = []
        for d in level:
            t = bayes_threshold(d, sigma)[..., None, None]
            bands.append(torch.sign(d) * torch.relu(d.abs() - t))
        out.append(tuple(bands))
    den = haar_inverse(out)[..., :h, :w].clamp(0, 1)
    return ycbcr_to_rgb(den * (hi - lo) + lo).clamp(0, 1)


@pytest.mark.parametrize("size", [32, 37])
def test_folded_denoiser_has_the_gradient_of_the_textbook_steps(size):
    """The fast path folds the renormalisation into σ; its gradient must be that of the real function,
    through the min/max and the data-dependent threshold."""
    x = smooth_image(5, size)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    fast, slow = wavelet_denoise(a), textbook_denoise(b)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)
    (ga,) = torch.autograd.grad((fast * weights).sum(), a)
    (gb,) = torch.autograd.grad((slow * weights).sum(), b)
    assert torch.allclose(ga, gb, atol=1e-9, rtol=1e-9)
    # Holding σ·(hi − lo) constant (a gradient that ignores the renormalisation) gives a different one.
    lo_hi_detached = x.clone().requires_grad_(True)
    ycc = rgb_to_ycbcr(lo_hi_detached)
    span = (ycc.amax(dim=(-2, -1), keepdim=True) - ycc.amin(dim=(-2, -1), keepdim=True)).detach()
    assert not torch.allclose(ga, torch.autograd.grad((textbook_denoise_span(lo_hi_detached, span) * weights).sum(),
                                                      lo_hi_detached)[0], atol=1e-6)


def textbook_denoise_span(x, span, sigma=0.04):
    """The textbook steps with the renormalisation's scale held constant (a wrong gradient)."""
    ycc = rgb_to_ycbcr(x)
    lo = ycc.amin(dim=(-2, -1), keepdim=True).detach()
    c = (ycc - lo) / span
    h, w = x.shape[-2:]
    coeffs = haar_forward(c, wavelet_levels(h, w))
    out = [coeffs[0]] + [tuple(torch.sign(d) * torch.relu(d.abs() - bayes_threshold(d, sigma)[..., None, None])
                               for d in level) for level in coeffs[1:]]
    den = haar_inverse(out)[..., :h, :w].clamp(0, 1)
    return ycbcr_to_rgb(den * span + lo).clamp(0, 1)


@pytest.fixture(scope="module")
def photos(model):
    from pd_core.images import gallery, load_batch

    items = [g for g in gallery() if g.source == "Foolbox"][:4]
    return load_batch([g.path for g in items], spec=model.spec, device=model.device)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_forward_is_bit_identical_to_defend(model, photos, seed):
    x = photos.clone().requires_grad_(True)
    exact = defend_differentiable(model, x, generator=make_generator(seed)).defended
    assert exact.requires_grad
    assert torch.equal(exact.detach(), defend(model, photos, seed=seed))
    copies = defend_differentiable(model, x, generator=make_generator(seed), copies=3).defended
    assert torch.equal(copies.detach(), defend_batch(model, photos, 3, seed=seed))
    with_map = defend_differentiable(model, x, generator=make_generator(seed), map_gradient=True)
    assert torch.equal(with_map.defended.detach(), defend(model, photos, seed=seed))


@pytest.mark.parametrize("name", sorted(set(TABLE3_DEFENCES) | set(TABLE4_DEFENCES)))
def test_forward_is_bit_identical_for_every_ablation(model, photos, name):
    config = {**TABLE3_DEFENCES, **TABLE4_DEFENCES}[name]
    x = photos[:2].clone().requires_grad_(True)
    exact = defend_differentiable(model, x, config, seed=4).defended
    assert torch.equal(exact.detach(), defend(model, photos[:2], config, seed=4))
    (grad,) = torch.autograd.grad(exact.sum(), x)
    assert grad.abs().sum() > 0


def test_no_gradient_accumulates_on_the_shared_model(model, photos):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = photos[:2].clone().requires_grad_(True)
    out = defend_differentiable(model, x, seed=0, copies=2, map_gradient=True)
    loss = model(out.defended).logsumexp(1).sum() + out.log_prob.sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_draw_log_prob_is_the_probability_of_the_targets():
    x = smooth_image(0, 16)
    uniform = torch.zeros(1, 16, 16, dtype=torch.float64)
    _, record = deflect(x, uniform, 10, 2, generator=make_generator(0), return_record=True)
    assert draw_log_prob(record, uniform, x.shape).item() == pytest.approx(-10 * torch.log(torch.tensor(256.0)).item())
    # Half the image kept (R = 1): the targets fall in the other half, each with probability 1/128.
    half = torch.zeros(1, 16, 16, dtype=torch.float64)
    half[:, :8] = 1
    _, record = deflect(x, half, 10, 2, generator=make_generator(0), return_record=True)
    assert (record.y >= 8).all()
    assert draw_log_prob(record, half, x.shape).item() == pytest.approx(-10 * torch.log(torch.tensor(128.0)).item())


def test_map_gradient_reaches_the_input_through_the_map(model, photos):
    x = photos[:1].clone().requires_grad_(True)
    out = defend_differentiable(model, x, seed=0, map_gradient=True)
    (grad,) = torch.autograd.grad(out.log_prob.sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="copies"):
        defend_differentiable(model, x, copies=0)
