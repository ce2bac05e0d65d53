"""The zoo's deterministic and block-wise defences against independent oracles: bit depth exactly
(NumPy and ART's FeatureSqueezing), median equal to scipy.ndimage, JPEG equal to a Pillow round trip
(and kornia's differentiable surrogate close to it), SHIELD's blocks each equal to Pillow at the
drawn quality; random resizing and padding's draws in their published ranges."""
from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from pd_core.defences import create_defence
from pd_core.defences.resize_pad import draw_resize_pad
from pd_core.defences.shield import draw_block_qualities
from pd_core.randomness import make_generator

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(scope="module")
def photos():
    """Two ImageNet-dev photos at 224²."""
    from pd_core.images import load_batch

    paths = sorted(glob.glob(os.path.join(SHARED, "imagenet-dev", "*.JPEG")))[:2]
    return load_batch(paths, size=224)


def pillow_round_trip(image: torch.Tensor, quality: int) -> np.ndarray:
    """One (3, H, W) image in [0, 1] through Pillow's JPEG at ``quality``, as uint8 (H, W, 3)."""
    pixels = np.rint(image.permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.mark.parametrize("name, bits", [("bit_depth", 5), ("bit_depth_3", 3)])
def test_bit_depth_exactly(name, bits, photos):
    from art.defences.preprocessor import FeatureSqueezing

    x = torch.cat([photos, torch.rand(1, 3, 224, 224, generator=make_generator(0))])
    out = create_defence(name).apply(x).numpy()
    levels = 2 ** bits - 1
    expected = (np.rint(x.numpy() * levels) / levels).astype(np.float32)
    assert np.array_equal(out, expected)
    assert len(np.unique(out)) <= levels + 1
    theirs, _ = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(x.numpy())
    differ = np.abs(out - theirs) > 1e-6
    # ART rounds in float64: the two may differ only where x·levels is a half-integer in float32
    assert differ.mean() < 1e-4
    scaled = x.numpy().astype(np.float64)[differ] * levels
    assert np.allclose(scaled - np.floor(scaled), 0.5, atol=1e-5)


@pytest.mark.parametrize("name, size", [("median", 2), ("median_3x3", 3)])
def test_median_equals_scipy_ndimage(name, size, photos):
    x = torch.cat([photos, torch.rand(1, 3, 224, 224, generator=make_generator(1))])
    out = create_defence(name).apply(x).numpy()
    expected = scipy.ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, x.numpy())


def test_jpeg_equals_pillow_and_its_surrogate_is_close(photos):
    defence = create_defence("jpeg")
    out = defence.apply(photos)
    for i in range(len(photos)):
        assert np.array_equal(np.rint(out[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                              pillow_round_trip(photos[i], 75))
    # kornia's differentiable codec, the BPDA surrogate, tracks Pillow within a few levels on average
    surrogate = defence.surrogate(photos)
    gap = (surrogate - out).abs().mean().item() * 255
    assert gap < 3.0, gap
    assert (out - photos).abs().mean().item() * 255 > gap / 3, "precondition: JPEG changes the photo"


def test_shield_blocks_each_equal_pillow_at_the_drawn_quality(photos):
    defence = create_defence("shield")
    qualities = defence.params["qualities"]
    assert qualities == (20, 40, 60, 80)
    out = defence.apply(photos, make_generator(7))
    choice = draw_block_qualities(photos, 4, make_generator(7))
    assert choice.shape == (2, 28, 28)
    counts = torch.bincount(choice.flatten(), minlength=4)  # 1568 draws, ~392 each
    assert counts.min() > 300
    for i in range(len(photos)):
        versions = {q: pillow_round_trip(photos[i], q) for q in qualities}
        ours = np.rint(out[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        for by in range(28):
            for bx in range(28):
                block = (slice(8 * by, 8 * by + 8), slice(8 * bx, 8 * bx + 8))
                q = qualities[int(choice[i, by, bx])]
                assert np.array_equal(ours[block], versions[q][block]), (i, by, bx, q)


def test_random_resize_pad_draws_the_published_ranges():
    draws = draw_resize_pad(4000, 299, 299, 299, 331, make_generator(0), "cpu")
    assert draws["canvas"] == (331, 331)
    sizes = draws["size_h"]
    assert sizes.min() == 299 and sizes.max() == 330 and torch.equal(sizes, draws["size_w"])
    assert (draws["top"] >= 0).all() and (draws["top"] <= 331 - sizes - 1).all()
    assert (draws["left"] <= 331 - sizes - 1).all()
    # uniform sizes: each of the 32 values ~125 times
    assert torch.bincount(sizes - 299, minlength=32).min() > 70
    scaled = draw_resize_pad(500, 224, 224, 299, 331, make_generator(1), "cpu")
    assert scaled["canvas"] == (248, 248) and scaled["size_h"].min() == 224 and scaled["size_h"].max() == 247


def test_random_resize_pad_places_the_nearest_neighbour_resize_on_a_grey_canvas():
    from pd_core.defences.resize_pad import resize_pad

    x = torch.rand(1, 3, 299, 299, generator=make_generator(2))
    draws = {"canvas": (331, 331), "size_h": torch.tensor([310]), "size_w": torch.tensor([310]),
             "top": torch.tensor([5]), "left": torch.tensor([12])}
    import torch.nn.functional as F

    resized = F.interpolate(x, size=(310, 310), mode="nearest")  # torch's nearest reads floor(i·in/out)
    expected = torch.full((1, 3, 331, 331), 0.5)
    expected[:, :, 5:315, 12:322] = resized
    expected = F.interpolate(expected, size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.allclose(resize_pad(x, draws), expected, atol=1e-6)
