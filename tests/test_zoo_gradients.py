"""The zoo's gradient paths: exact gradients against finite differences where claimed (median,
random resizing and padding), BPDA paths whose forward is the defence bit for bit and whose
backward is the declared surrogate's (identity, or kornia's JPEG), and rows that do not depend on
the batch they were computed in."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pd_core.defences import create_defence, defence_info
from pd_core.defences.median import median_filter
from pd_core.defences.resize_pad import draw_resize_pad, resize_pad
from pd_core.randomness import make_generator

ZOO = ["bit_depth", "bit_depth_3", "median", "median_3x3", "tvm", "random_resize_pad", "shield", "jpeg", "quilting"]


def _create(name):
    """The defence at its published setting (image quilting skips where its database folder is absent)."""
    if name == "quilting":
        from pd_core.defences.quilting import DATABASE_ENV, DEFAULT_DATABASE

        if not Path(os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE).is_dir():
            pytest.skip("image quilting's patch database folder (../shared/imagenet-800) is absent")
    return create_defence(name)


@pytest.mark.parametrize("size", [2, 3])
def test_median_gradient_matches_finite_differences(size):
    # continuous values: no ties, so the median is locally linear and its gradient exact
    x = torch.rand(1, 2, 7, 6, generator=make_generator(size), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: median_filter(t, size), (x,), eps=1e-7, atol=1e-6)


def test_random_resize_pad_gradient_matches_finite_differences():
    x = torch.rand(2, 3, 12, 12, generator=make_generator(0), dtype=torch.float64) * 0.8 + 0.1
    draws = draw_resize_pad(2, 12, 12, 299, 331, make_generator(3), "cpu")
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: resize_pad(t, draws), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["median", "random_resize_pad"])
def test_exact_path_differentiates_the_defence_itself(name):
    info = defence_info(name)
    assert info.gradient == "exact"
    defence = create_defence(name)
    x = torch.rand(2, 3, 32, 32, generator=make_generator(1), dtype=torch.float64)
    draws = defence.draw(x, 1, make_generator(2))
    rep = x.clone().requires_grad_(True)
    out = defence.replay(rep, draws)
    weights = torch.rand(out.shape, generator=make_generator(4), dtype=out.dtype)
    (grad,) = torch.autograd.grad((out * weights).sum(), rep)
    # directional finite difference of the replayed defence (same draws) along a random direction
    direction = torch.randn(x.shape, generator=make_generator(5), dtype=x.dtype)
    h = 1e-6
    plus = (defence.replay(x + h * direction, draws) * weights).sum()
    minus = (defence.replay(x - h * direction, draws) * weights).sum()
    assert torch.isclose((plus - minus) / (2 * h), (grad * direction).sum(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["bit_depth", "bit_depth_3", "tvm", "shield", "quilting"])
def test_identity_bpda_passes_the_gradient_straight_through(name):
    defence = _create(name)
    assert defence.gradient == "bpda" and defence_info(name).surrogate == "identity"
    x = torch.rand(2, 3, 32, 32, generator=make_generator(6))
    draws = defence.draw(x, 1, make_generator(7))
    rep = x.clone().requires_grad_(True)
    out = defence.replay(rep, draws)
    upstream = torch.randn(out.shape, generator=make_generator(8))
    (grad,) = torch.autograd.grad(out, rep, upstream)
    assert torch.equal(grad, upstream)


def test_jpeg_bpda_forward_is_pillow_and_backward_is_kornias_codec():
    defence = create_defence("jpeg")
    x = torch.rand(1, 3, 32, 32, generator=make_generator(9))
    rep = x.clone().requires_grad_(True)
    out = defence.replay(rep, None)
    assert torch.equal(out.detach(), defence.apply(x))
    upstream = torch.randn(out.shape, generator=make_generator(10))
    (grad,) = torch.autograd.grad(out, rep, upstream)
    probe = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(defence.surrogate(probe), probe, upstream)
    assert torch.allclose(grad, expected) and not torch.allclose(grad, upstream)


@pytest.mark.parametrize("name", ZOO)
def test_seeds_reproduce_and_batch_composition_does_not_change_a_row(name):
    defence = _create(name)
    x = torch.rand(3, 3, 40, 40, generator=make_generator(11))
    seeds = [5, 6, 7]
    full = defence.apply_seeded(x, 2, seeds)
    assert torch.equal(full, defence.apply_seeded(x, 2, seeds))
    reordered = defence.apply_seeded(x[[2, 0]], 2, [seeds[2], seeds[0]])
    assert torch.allclose(reordered[:2], full[4:6], atol=1e-6) and torch.allclose(reordered[2:], full[:2], atol=1e-6)
    if defence.randomised:
        assert not torch.equal(full[0], full[1]), "two copies of one image draw differently"
