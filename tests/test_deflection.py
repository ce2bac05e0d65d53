"""Pixel deflection (paper Algorithm 1, SPEC §1.2): count, window, map bias, reproducibility."""
import pytest
import torch

from pd_core.deflection import deflect
from pd_core.randomness import make_generator


def distinct_image(n=2, c=3, h=40, w=50):
    """Every channel value distinct, so a changed value identifies its source."""
    return torch.arange(n * c * h * w, dtype=torch.float64).view(n, c, h, w) / (n * c * h * w)


def test_exactly_k_replacements_each_copied_from_inside_the_window():
    x = distinct_image()
    k, r = 200, 3
    out, rec = deflect(x, None, deflections=k, window=r, generator=make_generator(1), return_record=True)
    n, c, h, w = x.shape
    assert rec.y.shape == (n, k)
    assert ((rec.source_y - rec.y).abs() <= r).all() and ((rec.source_x - rec.x).abs() <= r).all()
    assert (rec.source_y >= 0).all() and (rec.source_y < h).all()
    assert (rec.source_x >= 0).all() and (rec.source_x < w).all()

    changed = (out != x)
    for i in range(n):
        targets = {}
        for j in range(k):  # the last draw per target wins, like the sequential loop
            key = (int(rec.channel[i, j]), int(rec.y[i, j]), int(rec.x[i, j]))
            targets[key] = (int(rec.source_y[i, j]), int(rec.source_x[i, j]))
        expected_changed = 0
        for (ch, y, xx), (sy, sx) in targets.items():
            assert out[i, ch, y, xx] == x[i, ch, sy, sx]
            expected_changed += (sy, sx) != (y, xx)
        # nothing outside the targets changed, and every non-trivial replacement changed a value
        assert int(changed[i].sum()) == expected_changed
        assert expected_changed >= k - 20  # ~4 self-copies (1/49) and ~3 collisions expected here


def test_count_of_changed_values_matches_k_on_a_photo_sized_batch():
    x = torch.rand(4, 3, 224, 224)
    out = deflect(x, None, deflections=100, window=10, generator=make_generator(0))
    per_image = (out != x).flatten(1).sum(1)
    # 100 replacements; a self-copy has probability 1/441 and a collision ~100/150528
    assert per_image.max() <= 100 and per_image.min() >= 97


def test_source_offsets_are_uniform_over_the_window():
    x = torch.rand(1, 1, 101, 101)
    r = 4
    rmap = torch.ones(101, 101)
    rmap[30:71, 30:71] = 0.0  # interior only, so the window is never clipped
    _, rec = deflect(x, rmap, deflections=45000, window=r, generator=make_generator(3), return_record=True)
    dx = (rec.source_x - rec.x).flatten()
    freq = torch.bincount(dx + r, minlength=2 * r + 1).double() / dx.numel()
    assert torch.allclose(freq, torch.full_like(freq, 1 / (2 * r + 1)), atol=0.01)


def test_window_is_clipped_to_the_image_at_the_corner():
    x = torch.rand(1, 1, 30, 30)
    rmap = torch.ones(30, 30)
    rmap[0, 0] = 0.0  # only the corner pixel can be deflected
    _, rec = deflect(x, rmap, deflections=2000, window=5, generator=make_generator(2), return_record=True)
    assert (rec.y == 0).all() and (rec.x == 0).all()
    assert rec.source_y.min() == 0 and rec.source_y.max() == 5
    # uniform over 0..5 (6 values) inside the image, not over -5..5
    freq = torch.bincount(rec.source_y.flatten(), minlength=6).double() / 2000
    assert torch.allclose(freq, torch.full_like(freq, 1 / 6), atol=0.04)


def test_map_bias_is_proportional_to_one_minus_r():
    h = w = 64
    rmap = torch.zeros(h, w)
    rmap[:, :32] = 0.2
    rmap[:, 32:] = 0.8
    x = torch.rand(1, 3, h, w)
    _, rec = deflect(x, rmap, deflections=40000, window=2, generator=make_generator(5), return_record=True)
    left = (rec.x < 32).sum().item()
    right = (rec.x >= 32).sum().item()
    # rejection with probability R: rate ∝ (1 − R) → 0.8 / 0.2 = 4
    assert left / right == pytest.approx(4.0, rel=0.06)


def test_uniform_without_map_and_channels_uniform():
    x = torch.rand(1, 3, 64, 64)
    _, rec = deflect(x, None, deflections=30000, window=1, generator=make_generator(6), return_record=True)
    quadrant = (rec.y >= 32).long() * 2 + (rec.x >= 32).long()
    qfreq = torch.bincount(quadrant.flatten(), minlength=4).double() / 30000
    cfreq = torch.bincount(rec.channel.flatten(), minlength=3).double() / 30000
    assert torch.allclose(qfreq, torch.full_like(qfreq, 0.25), atol=0.015)
    assert torch.allclose(cfreq, torch.full_like(cfreq, 1 / 3), atol=0.015)


def test_salient_pixels_are_never_deflected():
    x = torch.rand(2, 3, 32, 32)
    rmap = torch.zeros(2, 32, 32)
    rmap[:, 8:24, 8:24] = 1.0
    _, rec = deflect(x, rmap, deflections=3000, window=3, generator=make_generator(7), return_record=True)
    inside = (rec.y >= 8) & (rec.y < 24) & (rec.x >= 8) & (rec.x < 24)
    assert not inside.any()


def test_same_seed_same_output_and_different_seed_differs():
    x = torch.rand(3, 3, 64, 64)
    a = deflect(x, None, 100, 10, generator=make_generator(42))
    b = deflect(x, None, 100, 10, generator=make_generator(42))
    c = deflect(x, None, 100, 10, generator=make_generator(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_input_is_not_modified_and_zero_deflections_is_identity():
    x = torch.rand(1, 3, 16, 16)
    x0 = x.clone()
    deflect(x, None, 50, 2, generator=make_generator(0))
    assert torch.equal(x, x0)
    assert torch.equal(deflect(x, None, 0, 2, generator=make_generator(0)), x)


def test_map_of_ones_is_refused():
    with pytest.raises(ValueError, match="no pixel can be deflected"):
        deflect(torch.rand(1, 3, 8, 8), torch.ones(8, 8), 10, 1)


def test_record_mask_counts_replacements_per_pixel():
    x = torch.rand(2, 3, 20, 20)
    _, rec = deflect(x, None, 77, 2, generator=make_generator(8), return_record=True)
    mask = rec.mask(x.shape)
    assert mask.shape == (2, 20, 20)
    assert torch.equal(mask.flatten(1).sum(1), torch.tensor([77.0, 77.0]))
