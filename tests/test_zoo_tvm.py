"""TVM (Guo et al. 2018, eq. 1) against independent oracles: its objective, written here in NumPy
and minimised by SciPy's L-BFGS-B on the same mask, and ART 1.20's TotalVarMin on the same mask."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import scipy.optimize
import torch

from pd_core.defences import create_defence
from pd_core.defences.tvm import draw_keep_mask, minimise_total_variation
from pd_core.randomness import make_generator

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
LAMBDA = 0.03


@pytest.fixture(scope="module")
def crop():
    """A 64 × 64 crop of an ImageNet-dev photo at 224², float64."""
    from pd_core.images import load_batch

    path = sorted(glob.glob(os.path.join(SHARED, "imagenet-dev", "*.JPEG")))[3]
    return load_batch([path], size=224)[:, :, 80:144, 80:144].double()


def objective(z: np.ndarray, x: np.ndarray, keep: np.ndarray, smooth: float = 0.0):
    """Eq. (1) of Guo et al. with p = 2 for one channel, and its gradient (norms smoothed by
    ``smooth`` for the quasi-Newton reference; ``smooth = 0`` is the exact value)."""
    residual = keep * (z - x)
    data = np.sqrt((residual ** 2).sum() + smooth)
    rows, cols = z[1:] - z[:-1], z[:, 1:] - z[:, :-1]
    row_norms, col_norms = np.sqrt((rows ** 2).sum(1) + smooth), np.sqrt((cols ** 2).sum(0) + smooth)
    value = data + LAMBDA * (row_norms.sum() + col_norms.sum())
    grad = keep * residual / max(data, 1e-12)
    g_rows, g_cols = rows / np.maximum(row_norms, 1e-12)[:, None], cols / np.maximum(col_norms, 1e-12)[None, :]
    grad[1:] += LAMBDA * g_rows
    grad[:-1] -= LAMBDA * g_rows
    grad[:, 1:] += LAMBDA * g_cols
    grad[:, :-1] -= LAMBDA * g_cols
    return value, grad


def test_objective_within_one_percent_of_a_scipy_solve_on_the_same_mask(crop):
    keep = draw_keep_mask(crop, 0.5, make_generator(1))
    ours = minimise_total_variation(crop, keep, LAMBDA)  # the published 10 iterations
    m = keep[0, 0].numpy()
    for c in range(3):
        x = crop[0, c].numpy()

        def smoothed(flat):
            value, grad = objective(flat.reshape(x.shape), x, m, smooth=1e-12)
            return value, grad.ravel()

        ref = scipy.optimize.minimize(smoothed, x.ravel(), jac=True, method="L-BFGS-B",
                                      options={"maxiter": 3000, "maxfun": 6000, "ftol": 1e-13})
        ref_value = objective(ref.x.reshape(x.shape), x, m)[0]
        our_value = objective(ours[0, c].numpy(), x, m)[0]
        start_value = objective(x, x, m)[0]
        assert ref_value < 0.95 * start_value, "precondition: the reference solve moved"
        assert abs(our_value - ref_value) <= 0.01 * ref_value, (c, our_value, ref_value)


def test_reaches_a_lower_objective_than_art_totalvarmin_on_the_same_mask(crop):
    from art.defences.preprocessor import TotalVarMin

    keep = draw_keep_mask(crop, 0.5, make_generator(2))
    ours = minimise_total_variation(crop, keep, LAMBDA)
    art = TotalVarMin(prob=0.5, norm=2, lamb=LAMBDA, max_iter=10, clip_values=(0.0, 1.0))
    x_hwc = crop[0].permute(1, 2, 0).numpy()
    mask_hwc = np.repeat(keep[0, 0].numpy()[:, :, None], 3, axis=2).astype(int)
    theirs = art._minimize(x_hwc, mask_hwc)
    for c in range(3):
        # ART's own loss function is the objective's definition here
        art_value = TotalVarMin._loss_func(theirs[:, :, c].ravel(), x_hwc[:, :, c], mask_hwc[:, :, c], 2, LAMBDA)
        our_value = TotalVarMin._loss_func(ours[0, c].numpy().ravel(), x_hwc[:, :, c], mask_hwc[:, :, c], 2, LAMBDA)
        assert our_value <= art_value * 1.001, (c, our_value, art_value)


def test_the_output_depends_on_the_kept_pixels_only():
    x = torch.rand(2, 3, 40, 40, generator=make_generator(0), dtype=torch.float64)
    keep = draw_keep_mask(x, 0.5, make_generator(5))
    scrambled = torch.where(keep > 0, x, torch.rand(x.shape, generator=make_generator(6), dtype=x.dtype))
    assert not torch.equal(x, scrambled)
    assert torch.equal(minimise_total_variation(x, keep), minimise_total_variation(scrambled, keep))


def test_the_mask_keeps_half_the_pixels_shared_by_the_channels_and_follows_the_seed():
    x = torch.zeros(4, 3, 100, 100)
    keep = draw_keep_mask(x, 0.5, make_generator(9))
    assert keep.shape == (4, 1, 100, 100) and set(keep.unique().tolist()) == {0.0, 1.0}
    share = float(keep.mean())  # 40 000 Bernoulli(0.5) draws: sd 0.0025
    assert abs(share - 0.5) < 0.01
    assert torch.equal(keep, draw_keep_mask(x, 0.5, make_generator(9)))
    assert not torch.equal(keep, draw_keep_mask(x, 0.5, make_generator(10)))


def test_the_defence_is_a_clipped_solve_of_its_own_draw():
    defence = create_defence("tvm")
    assert defence.params == {"keep_prob": 0.5, "lambda_tv": 0.03, "iterations": 10, "tau": 3.0}
    x = torch.rand(2, 3, 32, 32, generator=make_generator(3))
    out = defence.apply(x, make_generator(4))
    keep = draw_keep_mask(x, 0.5, make_generator(4))
    assert torch.equal(out, minimise_total_variation(x, keep).clamp(0, 1))
    assert (out - x).abs().mean() > 0.01, "it changes the image"


@pytest.mark.parametrize("images_per_block", [1, 2, 5])
def test_blocks_of_the_batch_give_the_whole_batchs_result_bit_for_bit(monkeypatch, images_per_block):
    """The CPU solver's cache blocks (and the buffers they reuse, the last block smaller) change
    nothing: each image comes out as when it is solved alone, or with the whole batch at once."""
    from pd_core.defences import tvm

    x = torch.rand(5, 3, 48, 40, generator=make_generator(1))
    keep = draw_keep_mask(x, 0.5, make_generator(2))
    alone = torch.cat([minimise_total_variation(x[i:i + 1], keep[i:i + 1]) for i in range(5)])
    monkeypatch.setattr(tvm, "_CPU_BLOCK_BYTES", images_per_block * x[0].numel() * x.element_size())
    blocked = minimise_total_variation(x, keep)
    assert torch.equal(blocked, alone)
    assert torch.equal(minimise_total_variation(x, keep.expand_as(x)), blocked)  # a per-channel mask
    assert not torch.equal(blocked[0], blocked[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep_prob", [0.5, 0.04])  # 0.04: many 5 × 5 windows keep nothing (the 0.5 fill)
def test_the_starting_fill_is_avg_pool_and_where_bit_for_bit(dtype, keep_prob):
    """The solver's start, computed by shifted whole-array sums and arithmetic for speed, against
    its plain definition with F.avg_pool2d and torch.where, for shared and per-channel masks."""
    import torch.nn.functional as F

    from pd_core.defences import tvm

    x = torch.rand(3, 3, 37, 50, generator=make_generator(7), dtype=dtype)
    for keep in (draw_keep_mask(x, keep_prob, make_generator(8)),
                 (torch.rand(x.shape, generator=make_generator(9)) < keep_prob).to(dtype)):
        total = F.avg_pool2d(keep * x, 5, stride=1, padding=2)
        count = F.avg_pool2d(keep, 5, stride=1, padding=2)
        expected = torch.where(keep > 0, x, torch.where(count > 0, total / count.clamp_min(1e-12), 0.5))
        assert (count == 0).any() == (keep_prob < 0.1)
        assert torch.equal(tvm._fill_dropped(x, keep), expected)
        assert torch.equal(minimise_total_variation(x, keep, iterations=0), expected)
