"""Random resizing and padding, Xie, Wang, Zhang, Ren & Yuille, ICLR 2018 ("Mitigating adversarial
effects through randomization"), §3.

Published for a 299 × 299 input: resize it (nearest neighbour) to a random ``rnd × rnd`` with
``rnd`` uniform in {299, …, 330}, then place it on a 331 × 331 canvas at a random offset (top and
left padding each uniform in {0, …, 331 − rnd − 1}, the rest on the bottom and right), which the
network classifies at 331².

Mapping to the lab's 224² models: every size is scaled by ``input / 299`` — the canvas is
``round(331 · 224 / 299) = 248``, ``rnd`` is uniform in {224, …, 247} — and the 248² canvas is
resized back to the input size (bilinear, no antialiasing) so the defended image keeps the model's
input shape, as every defence of the lab must. Non-square inputs scale both sides by the same draw.
Nearest neighbour follows TensorFlow 1's ``resize_images``, which Xie et al. used: output pixel ``i``
reads input pixel ``floor(i · in / rnd)``. The padding value is 0.5 (grey), the zero of Xie et al.'s
[−1, 1] inputs. Batch-first: each image's draw becomes index tensors and one gather.

Randomised (size and offset). Gradient: exact — with the draw fixed the defence is a gather
followed by a bilinear resize, linear in the input, and :meth:`Defence.replay` differentiates it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Defence, DefenceError, DefenceInfo

__all__ = ["RandomResizePad", "resize_pad", "draw_resize_pad", "INFO"]


def _uniform(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev, dtype=torch.float64).to(device)


def draw_resize_pad(n: int, height: int, width: int, published_input: int, published_canvas: int,
                    generator: torch.Generator | None, device) -> dict:
    """The draws of ``n`` images: resized sizes ``(n,)`` per side and top/left offsets on the canvas.

    The canvas is ``round(published_canvas · side / published_input)`` per side; the resized height
    is uniform in {H, …, canvas_h − 1} and the width scales with it."""
    canvas_h = round(published_canvas * height / published_input)
    canvas_w = round(published_canvas * width / published_input)
    if canvas_h <= height or canvas_w <= width:
        raise DefenceError("Random resizing and padding needs a canvas larger than the input.")
    extra = (_uniform(n, generator, device) * (canvas_h - height)).floor().long()  # 0 … canvas_h − H − 1
    size_h = height + extra
    size_w = torch.minimum((size_h.double() * width / height).round().long(), torch.tensor(canvas_w - 1, device=device))
    top = (_uniform(n, generator, device) * (canvas_h - size_h)).floor().long()
    left = (_uniform(n, generator, device) * (canvas_w - size_w)).floor().long()
    return {"canvas": (canvas_h, canvas_w), "size_h": size_h, "size_w": size_w, "top": top, "left": left}


def _source_index(canvas: int, offset: torch.Tensor, size: torch.Tensor, side: int, device):
    """For each canvas row (column) of each image: the input row it reads, and whether it is inside."""
    pos = torch.arange(canvas, device=device)[None, :] - offset[:, None]  # position in the resized image
    inside = (pos >= 0) & (pos < size[:, None])
    source = torch.div(pos.clamp(min=0) * side, size[:, None], rounding_mode="floor").clamp(max=side - 1)
    return source, inside


def resize_pad(x: torch.Tensor, draws: dict, pad_value: float = 0.5) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` resized (nearest neighbour) and padded onto its canvas per ``draws``,
    then resized back to H × W (bilinear); differentiable in ``x``."""
    n, c, h, w = x.shape
    canvas_h, canvas_w = draws["canvas"]
    rows, rows_in = _source_index(canvas_h, draws["top"], draws["size_h"], h, x.device)
    cols, cols_in = _source_index(canvas_w, draws["left"], draws["size_w"], w, x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    canvas = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, Hc, Wc, C), a gather
    inside = (rows_in[:, :, None] & cols_in[:, None, :])[..., None]
    canvas = torch.where(inside, canvas, torch.full_like(canvas, pad_value)).permute(0, 3, 1, 2)
    return F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False, antialias=False).clamp(0, 1)


class RandomResizePad(Defence):
    """``published_input`` (299), ``published_canvas`` (331): Xie et al.'s sizes, scaled to the input;
    ``pad_value``: the colour of the padding."""

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        draws = draw_resize_pad(x.shape[0], x.shape[2], x.shape[3], int(p["published_input"]),
                                int(p["published_canvas"]), generator, x.device)
        return resize_pad(x, draws, float(p["pad_value"]))


INFO = DefenceInfo(
    name="random_resize_pad", title="Random resizing and padding", short="Resize+pad",
    citation="Xie et al., ICLR 2018 (arXiv:1711.01991): 299 → random size in [299, 331), padded to 331 "
             "(scaled to the input, see docs/defences.md)",
    summary="Shrinks or grows the photo by a random amount and places it at a random spot on a grey frame.",
    build=lambda model=None, **params: RandomResizePad(INFO, params),
    params={"published_input": 299, "published_canvas": 331, "pad_value": 0.5},
    randomised=True, gradient="exact",
    surrogate="none needed (for a fixed draw: a gather and a bilinear resize)", group="zoo",
    aliases=("randomization", "xie"))
