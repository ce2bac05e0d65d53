"""Plotly figures of the method's products: predictions, maps, deflections, perturbations, curves.

Plain Plotly (no Streamlit), so the same figures serve the app, notebooks and reports. Inputs are
the library's own types: images as tensors (3, H, W) or (1, 3, H, W) in [0, 1] (or numpy arrays
(H, W, 3)), maps as (H, W) in [0, 1], probabilities as (classes,) vectors that sum to 1.

Pictures are sent to the browser as data URIs (``go.Image(source=...)``): PNG where the exact
pixel values are the point (a photo, a perturbation), JPEG where the photo is only the backdrop
of a map or of the deflection markers (a sixth of the bytes, encoded thirty times faster, and
nobody reads pixel values through a heatmap). Maps are heatmaps subsampled to their true
resolution (CAMs come from a 7×7 or 8×8 feature grid), so a page of figures stays small enough
to draw at once.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "top_predictions_figure",
    "map_overlay_figure",
    "deflection_figure",
    "perturbation_figure",
    "amplification_factor",
    "probability_curve_figure",
    "stage_probabilities_figure",
    "image_figure",
    "to_hwc_uint8",
]

# Colours: the true class green, the adversary's class red, others neutral grey-blue.
TRUE_COLOUR = "#2e7d32"
ADVERSARIAL_COLOUR = "#c62828"
OTHER_COLOUR = "#7986a8"
FIG_FONT = dict(size=12)


def _go():
    import plotly.graph_objects as go  # imported lazily: plotly is heavy and optional for the library

    return go


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_hwc_uint8(image) -> np.ndarray:
    """An image (3, H, W), (1, 3, H, W) tensor/array in [0, 1] or (H, W, 3) array -> (H, W, 3) uint8."""
    arr = _to_numpy(image)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def _png_data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _jpeg_data_uri(rgb: np.ndarray, quality: int = 90) -> str:
    """A backdrop picture as a JPEG data URI (4:4:4, so thin coloured detail survives)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_figure(traces: list, title: str | None, height: int):
    """A figure of a picture (and what is drawn over it) in image coordinates.

    The layout is given whole to the constructor: Plotly's ``update_layout`` / ``update_xaxes``
    re-validate the figure on every call and took two thirds of a map figure's build time."""
    layout = dict(
        title=dict(text=title, font=dict(size=13)) if title else None,
        height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0), font=FIG_FONT,
        showlegend=False,
        # Image coordinates: y grows downwards; no ticks, keep the pixel aspect ratio.
        xaxis=dict(visible=False, showgrid=False, constrain="domain"),
        yaxis=dict(visible=False, showgrid=False, autorange="reversed", scaleanchor="x", constrain="domain"),
    )
    return _go().Figure(data=traces, layout=layout)


def image_figure(image, title: str | None = None, height: int = 260):
    """A picture as a Plotly figure (zoomable; hover gives the pixel coordinates)."""
    go = _go()
    rgb = to_hwc_uint8(image)
    return _image_figure([go.Image(source=_png_data_uri(rgb), hoverinfo="x+y")], title, height)


def top_predictions_figure(probs, labels: Sequence[str] | None = None, k: int = 5,
                           true_index: int | None = None, adversarial_index: int | None = None,
                           title: str | None = None, height: int = 220):
    """Horizontal bar chart of the ``k`` most probable classes, most likely on top.

    probs : (classes,) probabilities (softmax or the ensemble's mean softmax).
    labels : class names in index order (default: ImageNet names from :mod:`pd_core.labels`).
    true_index / adversarial_index : coloured green / red when they appear among the bars.
    """
    go = _go()
    p = _to_numpy(probs).astype(np.float64).reshape(-1)
    if labels is None:
        from .labels import IMAGENET_CLASSES as labels  # noqa: N811
    order = np.argsort(-p, kind="stable")[:k]
    names = [f"{labels[i]} ({i})" for i in order]
    colours = [TRUE_COLOUR if i == true_index else ADVERSARIAL_COLOUR if i == adversarial_index
               else OTHER_COLOUR for i in order]
    values = p[order] * 100.0
    bar = go.Bar(
        x=values[::-1], y=names[::-1], orientation="h", marker_color=colours[::-1],
        text=[f"{v:.1f}%" for v in values[::-1]], textposition="auto",
        hovertemplate="%{y}: %{x:.2f}%<extra></extra>",
    )
    return go.Figure(data=[bar], layout=dict(
        title=dict(text=title, font=dict(size=13)) if title else None, height=height,
        margin=dict(l=0, r=8, t=30 if title else 4, b=0), font=FIG_FONT, showlegend=False,
        xaxis=dict(range=[0, 100], ticksuffix="%", title=None),
        yaxis=dict(automargin=True, title=None),
    ))


def _downsample_map(amap: np.ndarray, max_side: int = 56) -> tuple[np.ndarray, float]:
    """Average-pool a smooth (H, W) map to at most ``max_side`` per side; returns it and the step."""
    h, w = amap.shape
    step = max(1, math.ceil(max(h, w) / max_side))
    if step == 1:
        return amap, 1.0
    hh, ww = h // step * step, w // step * step
    pooled = amap[:hh, :ww].reshape(hh // step, step, ww // step, step).mean(axis=(1, 3))
    return pooled, float(step)


def map_overlay_figure(image, amap, title: str | None = None, opacity: float = 0.5,
                       colorscale: str = "Turbo", height: int = 260, map_name: str = "map"):
    """An activation map (H, W) in [0, 1] drawn over the image, with a colour bar and hover values.

    The map is shown at its true resolution (average-pooled to ≤ 56 cells per side: CAMs are
    upsampled from a 7×7 grid, so nothing is lost) on top of a dimmed picture.
    """
    go = _go()
    rgb = to_hwc_uint8(image)
    m = _to_numpy(amap).astype(np.float32)
    if m.ndim == 3:
        m = m[0]
    small, step = _downsample_map(m)
    return _image_figure([go.Image(source=_jpeg_data_uri(rgb), hoverinfo="skip"), go.Heatmap(
        z=np.round(small, 3), x0=(step - 1) / 2, dx=step, y0=(step - 1) / 2, dy=step,
        zmin=0, zmax=1, colorscale=colorscale, opacity=opacity, showscale=True,
        colorbar=dict(thickness=8, len=0.8, tickvals=[0, 0.5, 1]),
        hovertemplate=f"x=%{{x:.0f}} y=%{{y:.0f}}<br>{map_name}=%{{z:.2f}}<extra></extra>",
    )], title, height)


def deflection_figure(image, y, x, source_y=None, source_x=None, title: str | None = None,
                      height: int = 260):
    """Where the pixels were deflected: one marker per replacement on the image.

    y, x : (K,) target pixel coordinates; source_y/source_x : (K,) where each value came from
    (shown on hover).
    """
    go = _go()
    rgb = to_hwc_uint8(image)
    ys, xs = _to_numpy(y).reshape(-1), _to_numpy(x).reshape(-1)
    if source_y is not None and source_x is not None:
        sy, sx = _to_numpy(source_y).reshape(-1), _to_numpy(source_x).reshape(-1)
        custom = np.stack([sx, sy], axis=-1)
        hover = "pixel (%{x}, %{y})<br>value taken from (%{customdata[0]}, %{customdata[1]})<extra></extra>"
    else:
        custom, hover = None, "pixel (%{x}, %{y})<extra></extra>"
    markers = go.Scatter(
        x=xs, y=ys, mode="markers", customdata=custom, hovertemplate=hover,
        marker=dict(size=6, color="rgba(255,0,0,0.85)", line=dict(width=1, color="white")),
    )
    return _image_figure([go.Image(source=_jpeg_data_uri(rgb), hoverinfo="skip"), markers], title, height)


def amplification_factor(*deltas, target: float = 0.5) -> float:
    """A round factor F such that F·max|δ| ≈ ``target`` for the *first* perturbation given.

    Perturbations of a few /255 are invisible; F·δ + 0.5 makes them visible. One factor is
    shared by all panels so they can be compared; later panels (defended − clean, which also
    holds the deflection swaps) may saturate. Returns 1 for a zero perturbation.
    """
    if not deltas:
        return 1.0
    peak = float(np.abs(_to_numpy(deltas[0])).max()) if _to_numpy(deltas[0]).size else 0.0
    if peak <= 0:
        return 1.0
    raw = target / peak
    # Round down to 1, 2 or 5 × 10^n so the stated factor is easy to read.
    exponent = math.floor(math.log10(raw))
    for mult in (5, 2, 1):
        value = mult * 10.0 ** exponent
        if value <= raw:
            return float(value) if value < 1 else float(round(value))
    return float(10.0 ** exponent)


def perturbation_figure(delta, factor: float, title: str | None = None, height: int = 260):
    """A signed perturbation (3, H, W) shown as ``0.5 + factor·δ`` (grey = unchanged), clipped.

    Hover gives the true, unamplified change of each channel in /255 units.
    """
    go = _go()
    d = _to_numpy(delta).astype(np.float32)
    if d.ndim == 4:
        d = d[0]
    shown = np.clip(0.5 + factor * d, 0.0, 1.0)
    rgb = to_hwc_uint8(shown)
    return _image_figure([go.Image(source=_png_data_uri(rgb), hoverinfo="x+y")], title, height)


def probability_curve_figure(deflections: Sequence[int], series: Mapping[str, tuple], title: str | None = None,
                             height: int = 320, colours: Mapping[str, str] | None = None):
    """Class probability against the number of deflections (paper Fig. 2).

    series : name -> (mean, std) arrays of length len(deflections); the band is ± one standard
        deviation over the random draws.
    """
    go = _go()
    ks = np.asarray(deflections)
    fig = go.Figure()
    palette = ["#2e7d32", "#c62828", "#1565c0", "#ef6c00"]
    for i, (name, (mean, std)) in enumerate(series.items()):
        colour = (colours or {}).get(name, palette[i % len(palette)])
        mean, std = _to_numpy(mean).astype(float), _to_numpy(std).astype(float)
        fig.add_trace(go.Scatter(
            x=np.concatenate([ks, ks[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
            fill="toself", fillcolor=_rgba(colour, 0.15), line=dict(width=0), hoverinfo="skip",
            showlegend=False,
        ))
        fig.add_trace(go.Scatter(x=ks, y=mean, mode="lines+markers", name=name,
                                 line=dict(color=colour, width=2),
                                 hovertemplate=f"{name}<br>K=%{{x}}<br>p=%{{y:.3f}}<extra></extra>"))
    fig.update_layout(
        title=dict(text=title, font=dict(size=13)) if title else None, height=height,
        margin=dict(l=0, r=8, t=30 if title else 4, b=0), font=FIG_FONT,
        xaxis=dict(title="number of deflections K", type="log" if ks.min() > 0 else "linear"),
        yaxis=dict(title="class probability", range=[0, 1]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
    )
    return fig


def stage_probabilities_figure(stages: Sequence[str], series: Mapping[str, Sequence[float]],
                               title: str | None = None, height: int = 300,
                               colours: Mapping[str, str] | None = None):
    """Grouped bars: probability of each named class (series) after each defence stage."""
    go = _go()
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Bar(x=list(stages), y=list(values), name=name,
                             marker_color=(colours or {}).get(name),
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(
        barmode="group", title=dict(text=title, font=dict(size=13)) if title else None,
        height=height, margin=dict(l=0, r=8, t=30 if title else 4, b=0), font=FIG_FONT,
        yaxis=dict(title="class probability", range=[0, 1]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
    )
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
