"""The Present page's computation: one photo's whole story, with every picture and sentence ready.

:func:`compute_presentation` runs, for one image, the Attack & Defend story
(:func:`pd_core.story.attack_and_defend`: FGSM at the paper's budget, the defence once and Ens-10)
and the adaptive attacker who knows the defence (:func:`pd_core.adaptive.adaptive_demo`, BPDA+EOT
with a small budget so a CPU server finishes it in seconds), then draws every picture the steps
show as PNG bytes and writes every step's sentence. A :class:`PresentationRun` is therefore all a
step needs: drawing a step only places finished bytes and text on the page (no model, no figure
building), which is what lets a step appear at once.

No Streamlit here (plain PyTorch/NumPy/PIL), so the warm-up thread, the benchmark and the tests
can call it directly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

# The attack of steps 1-2: the app's one-click story (ui.state DEFAULT_ATTACK / DEFAULT_PRESET).
STORY_ATTACK = "fgsm"
STORY_PRESET = "paper"
# Step 7's attacker: BPDA+EOT at 4/255, 5 steps of 2 defence runs each. About 8 s for one image on
# a loaded 2-core CPU (EfficientNet-Lite0); the Adaptive attack page runs the full budgets.
ADAPTIVE_EPS_255 = 4
ADAPTIVE_STEPS = 5
ADAPTIVE_EOT = 2
# Pictures are upscaled by this integer factor (nearest neighbour) before the deflected pixels are
# marked, so each mark is visible on a projector without blurring the photo.
MARK_SCALE = 2
MARK_COLOUR = (255, 0, 255)  # magenta: absent from almost every photo

__all__ = ["PresentationRun", "compute_presentation", "heat_colours", "png_bytes", "amplified",
           "perturbation_heatmap", "map_overlay", "marked_pixels", "STORY_ATTACK", "STORY_PRESET",
           "ADAPTIVE_EPS_255", "ADAPTIVE_STEPS", "ADAPTIVE_EOT"]


@dataclass
class PresentationRun:
    """One photo's story, ready to show. ``pictures``: name -> PNG bytes, names ``clean``,
    ``adversarial``, ``amplified``, ``heatmap``, ``map``, ``deflected``, ``defended``, ``adaptive``.
    ``story`` is the :class:`pd_core.story.DemoResult`, ``adaptive`` the
    :class:`pd_core.adaptive.demo.AdaptiveDemo`; ``factor`` the amplification of step 3 and
    ``peak_255`` the largest change of one pixel value in /255."""

    image_name: str
    story: object
    adaptive: object
    pictures: dict[str, bytes]
    factor: float
    peak_255: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> int:
        return self.story.label


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes (fast compression: these are sent, not archived)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _hwc(image: torch.Tensor) -> np.ndarray:
    from pd_core.visuals import to_hwc_uint8

    return to_hwc_uint8(image)


# Anchor colours of the heat scale, from "nothing" to "most": black, deep purple, red, orange,
# pale yellow (a perceptually ordered dark-to-light ramp that reads on a projector).
_HEAT_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB uint8 (shape + (3,)), linear between the anchors."""
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    low = np.minimum(v.astype(np.int64), len(_HEAT_ANCHORS) - 2)
    t = (v - low)[..., None]
    rgb = _HEAT_ANCHORS[low] * (1 - t) + _HEAT_ANCHORS[low + 1] * t
    return np.rint(rgb).astype(np.uint8)


def amplified(delta: torch.Tensor, factor: float) -> np.ndarray:
    """A signed perturbation (3, H, W) shown as 0.5 + factor·δ (grey = unchanged), clipped: (H, W, 3)."""
    return _hwc((0.5 + factor * delta.float()).clamp(0, 1))


# Diverging scale of the signed heatmap: blue (darker), near-white (unchanged), red (brighter).
_DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], np.float64)


def perturbation_heatmap(delta: torch.Tensor) -> tuple[np.ndarray, float]:
    """The brightness change per pixel, the mean of δ over the colour channels, on a diverging scale
    (blue: darker, white: unchanged, red: brighter) whose ends are the largest change either way.
    Signed on purpose: FGSM moves every value by the same ±ε, so a map of |δ| would be flat, while
    the signs carry the pattern. Returns ((H, W, 3) uint8, that largest change in /255)."""
    mean = delta.float().mean(0)
    peak = float(mean.abs().max())
    v = (mean / peak).numpy() if peak > 0 else mean.numpy()
    t = np.abs(v)[..., None]
    end = np.where(v[..., None] < 0, _DIVERGING[0], _DIVERGING[2])
    rgb = _DIVERGING[1] * (1 - t) + end * t
    return np.rint(rgb).astype(np.uint8), peak * 255.0


def map_overlay(image: torch.Tensor, amap: torch.Tensor, weight: float = 0.55) -> np.ndarray:
    """An activation map (H, W) in [0, 1] in heat colours over the photo (3, H, W): (H, W, 3) uint8."""
    photo = _hwc(image).astype(np.float64)
    heat = heat_colours(amap.float().numpy()).astype(np.float64)
    return np.rint((1 - weight) * photo + weight * heat).astype(np.uint8)


def marked_pixels(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor, scale: int = MARK_SCALE) -> np.ndarray:
    """The photo (3, H, W) upscaled ``scale``× with each deflected pixel (y, x) painted magenta,
    one original pixel plus a one-pixel ring at the upscaled resolution: (H·s, W·s, 3) uint8."""
    rgb = np.repeat(np.repeat(_hwc(image), scale, axis=0), scale, axis=1)
    if len(y):
        h, w = rgb.shape[:2]
        ys, xs = y.numpy().astype(np.int64) * scale, x.numpy().astype(np.int64) * scale
        for dy in range(-1, scale + 1):  # a (scale+2)² square per mark: a handful of vectorised writes
            for dx in range(-1, scale + 1):
                rgb[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = MARK_COLOUR
    return rgb


def _pictures(story, adaptive) -> tuple[dict[str, bytes], float, float]:
    from pd_core.visuals import amplification_factor

    clean, adv = story.images["clean"], story.images["adversarial"]
    delta = adv - clean
    factor = amplification_factor(delta)
    heat, peak_255 = perturbation_heatmap(delta)
    rgb = {
        "clean": _hwc(clean),
        "adversarial": _hwc(adv),
        "amplified": amplified(delta, factor),
        "heatmap": heat,
        "map": map_overlay(adv, story.maps["adversarial_rcam"]),
        "deflected": marked_pixels(adv, story.deflections["y"], story.deflections["x"]),
        "defended": _hwc(story.images["defended"]),
        "adaptive": _hwc(adaptive.adversarial),
    }
    return {name: png_bytes(picture) for name, picture in rgb.items()}, factor, peak_255


def compute_presentation(model, image: torch.Tensor, label: int | None, *, config=None, seed: int = 0,
                         n_ensemble: int = 10, image_name: str = "image", image_path: str | None = None,
                         progress: Callable[[float, str], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> PresentationRun:
    """The whole story of one photo, for the Present page.

    image : (1, 3, S, S) in [0, 1] at the model's resolution; label : the true class, or ``None``
    for an upload (the clean prediction is then the reference, as on Attack & Defend).
    config, seed, n_ensemble : the defence, as the sidebar sets them; the story and the adaptive
    attack both use ``seed``, so ``pdlab demo`` and the Adaptive attack page reproduce every number.
    progress(fraction, message) : 0-0.45 the story, 0.45-0.95 the adaptive attack, then pictures.
    should_stop() : polled by both attacks at every step and between the stages; when it turns
    true, :class:`pd_core.attacks.AttackCancelled` or ``InterruptedError`` is raised (the warm-up
    uses it to give way to a visitor).
    """
    import time

    from pd_core.adaptive import PgdSettings, RunHooks, adaptive_demo
    from pd_core.attacks import stop_if_asked
    from pd_core.defences import create_defence
    from pd_core.story import attack_and_defend

    report = progress or (lambda fraction, message: None)
    seconds = {}
    t = time.perf_counter()
    story = attack_and_defend(model, image, label, attack=STORY_ATTACK, preset=STORY_PRESET, config=config,
                              seed=seed, n_ensemble=n_ensemble, image_name=image_name, image_path=image_path,
                              progress=lambda f, m: report(0.45 * f, m), should_stop=should_stop)
    seconds["story"] = time.perf_counter() - t
    stop_if_asked(should_stop, "after the story")
    t = time.perf_counter()
    budget = PgdSettings(eps=ADAPTIVE_EPS_255 / 255, steps=ADAPTIVE_STEPS, eot=ADAPTIVE_EOT)
    defence = create_defence("pixel_deflection", model, config=config)
    adaptive = adaptive_demo(model, image, story.label, defence, budget, seed=seed, ensemble=n_ensemble,
                             hooks=RunHooks(lambda f, m: report(0.45 + 0.5 * f, "adaptive attack: " + m),
                                            should_stop))
    seconds["adaptive"] = time.perf_counter() - t
    stop_if_asked(should_stop, "before drawing the pictures")
    t = time.perf_counter()
    report(0.96, "drawing the pictures")
    pictures, factor, peak_255 = _pictures(story, adaptive)
    seconds["pictures"] = time.perf_counter() - t
    report(1.0, "done")
    return PresentationRun(image_name=image_name, story=story, adaptive=adaptive, pictures=pictures,
                           factor=factor, peak_255=peak_255, seconds=seconds)
