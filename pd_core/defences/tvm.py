"""Total variance minimisation (TVM), Guo, Rana, Cissé & van der Maaten, ICLR 2018, §3.2 (eq. 1).

A random Bernoulli mask keeps each pixel with probability ``keep_prob`` (the same pixels in all
three channels), and the image is rebuilt from the kept pixels by solving, for each image and
colour channel ``c`` (``z, x`` of size H × W, ``m`` the 0/1 mask):

    minimise_z   ‖m ⊙ (z − x)‖₂  +  λ_TV · ( Σ_i ‖z[i+1, :] − z[i, :]‖₂  +  Σ_j ‖z[:, j+1] − z[:, j]‖₂ )

the paper's eq. (1) with p = 2, written as ART's ``TotalVarMin`` writes it (the data term is a
norm, not its square; the total variation sums the ℓ2 norms of whole row and column differences).
Published parameters: keep 50% of the pixels (``keep_prob = 0.5``), ``λ_TV = 0.03``; the result is
clipped to [0, 1] (as ART does).

Solver: Chambolle & Pock (2011, Algorithm 1, θ = 1) on ``G(z) = ‖m ⊙ (z − x)‖₂`` and
``F(Kz) = λ Σ_groups ‖(Kz)_group‖₂`` with K the forward row and column differences (‖K‖² < 8), all
images and channels at once on a GPU, in cache-sized blocks of images on the CPU (bit-identical).
The proximal step of G shrinks the kept residual as a whole; that of F* projects each row / column
group of the dual onto the ball of radius λ. Fixed ``iterations = 10`` with steps ``tau = 3``,
``sigma = 1 / (8 tau)``: measured on 224² ImageNet photos this is within 0.2% of the objective
reached after 1500 iterations
(tests/test_zoo_tvm.py checks ≤ 1% against an independent SciPy solve). The iteration starts, at
the dropped pixels, from the mean of the kept pixels of the surrounding 5 × 5 window (not from the
dropped values themselves), so the result depends on the input through the kept pixels only, as
the defence intends. Guo et al.'s released code instead solves a squared-data, isotropic variant by
split Bregman; this follows the equation of the paper.

Resolution: applied at the model's input (224²); λ_TV is per row/column norm and is used as
published. Randomised (the mask). Gradient: BPDA with the identity, as Athalye, Carlini & Wagner
(ICML 2018) break it: the solver is an iterative minimisation, differentiating it is not the point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Defence, DefenceError, DefenceInfo

__all__ = ["TotalVarianceMinimisation", "tv_objective", "minimise_total_variation", "draw_keep_mask", "INFO"]


def draw_keep_mask(x: torch.Tensor, keep_prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """The Bernoulli(``keep_prob``) pixel mask ``(N, 1, H, W)`` (1 = kept), drawn from ``generator``,
    on ``x``'s device and dtype."""
    device = generator.device if generator is not None else x.device
    u = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=device)
    return (u < keep_prob).to(device=x.device, dtype=x.dtype)


def tv_objective(z: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, lambda_tv: float) -> torch.Tensor:
    """The objective of the module docstring, per image and channel ``(N, C)``."""
    data = (keep * (z - x)).flatten(2).norm(dim=2)
    rows = (z[:, :, 1:] - z[:, :, :-1]).norm(dim=3).sum(dim=2)
    cols = (z[..., 1:] - z[..., :-1]).norm(dim=2).sum(dim=2)
    return data + lambda_tv * (rows + cols)


def _window_mean_5x5(a: torch.Tensor, workspace: dict, name: str) -> torch.Tensor:
    """``F.avg_pool2d(a, 5, stride=1, padding=2)`` (zeros outside, always divided by 25), bit for bit,
    in the ``workspace`` buffers ``name`` (the result) and ``name + "_padded"``.

    On the CPU, avg_pool2d adds each window's 25 values one at a time in row-major order into a
    float32 sum and divides it by 25, in a scalar loop per output value. The same 25 additions in the
    same order, each a whole-array pass over the zero-padded input (adding a padding zero changes no
    float sum), give the same bits 2.5 times faster (tests/test_zoo_tvm.py checks the equality). On a
    GPU avg_pool2d is one fast kernel and is used as it is.
    """
    if a.device.type != "cpu":
        return F.avg_pool2d(a, 5, stride=1, padding=2)
    n, c, h, w = a.shape
    padded = _buffer(workspace, name + "_padded", a, (n, c, h + 4, w + 4)).zero_()
    padded[..., 2:h + 2, 2:w + 2] = a
    total = _buffer(workspace, name, a).zero_()
    for i in range(5):
        for j in range(5):
            total.add_(padded[..., i:i + h, j:j + w])
    return total.div_(25)


def _fill_dropped(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None,
                  workspace: dict | None = None) -> torch.Tensor:
    """``x`` at kept pixels; elsewhere the mean of the kept pixels of the 5 × 5 window (0.5 if none).

    Written as arithmetic rather than ``torch.where`` (a scalar loop on the CPU), with the same bits:
    ``keep`` is 0 or 1, so ``keep·x + (1 − keep)·local`` is exactly ``x`` or ``local``, and where a
    window keeps nothing its sum is 0, so ``0 / 1e-12 + 0.5`` is exactly 0.5.
    """
    workspace = {} if workspace is None else workspace
    kept_x = torch.mul(keep, x, out=_buffer(workspace, "kept_x", x))
    count = _window_mean_5x5(keep, workspace, "count")  # once per pixel, not per channel, for an (N, 1, H, W) keep
    local = _window_mean_5x5(kept_x, workspace, "local").div_(count.clamp_min(1e-12))
    local.add_((count == 0).to(local.dtype), alpha=0.5)
    return torch.addcmul(kept_x, 1 - keep, local, out=out)


# On the CPU the solver runs on blocks of images small enough that each of its ~15 full-size passes
# per iteration stays in the core's L2 cache (2 MiB here): one 224² photo per block, its buffers
# reused from block to block rather than allocated afresh each iteration. Every operation acts
# within one image and channel, so the result is bit-identical to the whole batch's
# (tests/test_zoo_tvm.py) and cannot depend on the batch's composition. A GPU takes the batch whole.
_CPU_BLOCK_BYTES = 1 << 20


def minimise_total_variation(x: torch.Tensor, keep: torch.Tensor, lambda_tv: float = 0.03,
                             iterations: int = 10, tau: float = 3.0) -> torch.Tensor:
    """Chambolle–Pock iterations on the objective of the module docstring (not clipped).

    x : ``(N, C, H, W)`` images; keep : ``(N, 1, H, W)`` or ``(N, C, H, W)`` 0/1 mask of kept pixels;
    lambda_tv : the TV weight; iterations : how many primal–dual steps; tau : the primal step
    (the dual step is ``1 / (8 tau)``, so that ``tau · sigma · ‖K‖² < 1``).
    """
    keep = keep.expand(len(x), *keep.shape[1:])
    if x.device.type != "cpu" or len(x) <= 1:
        return _chambolle_pock(x, keep, lambda_tv, int(iterations), tau, {}, torch.empty_like(x))
    block = max(1, _CPU_BLOCK_BYTES // (x[0].numel() * x.element_size()))
    out, workspace = torch.empty_like(x), {}
    for start in range(0, len(x), block):
        rows = slice(start, start + block)
        _chambolle_pock(x[rows], keep[rows], lambda_tv, int(iterations), tau, workspace, out[rows])
    return out


def _buffer(workspace: dict, name: str, like: torch.Tensor, shape=None) -> torch.Tensor:
    """The workspace's buffer ``name`` of ``shape`` (default ``like``'s), uninitialised."""
    shape = tuple(like.shape if shape is None else shape)
    buffer = workspace.get(name)
    if buffer is None or tuple(buffer.shape) != shape:
        buffer = workspace[name] = like.new_empty(shape)
    return buffer


def _chambolle_pock(x: torch.Tensor, keep: torch.Tensor, lambda_tv: float, iterations: int, tau: float,
                    workspace: dict, out: torch.Tensor) -> torch.Tensor:
    """The iterations of ``minimise_total_variation`` on one block, in the buffers of ``workspace``;
    the last iterate is written into ``out`` (contiguous, ``x``'s shape), which is returned."""
    sigma = 1.0 / (8.0 * tau)
    n, c, h, w = x.shape
    z = _fill_dropped(x, keep, out=out if iterations == 0 else _buffer(workspace, "z", x), workspace=workspace)
    negative_kept_x = workspace["kept_x"].neg_()  # the fill's keep · x, no longer needed as it was
    z_next, z_bar_buffer = _buffer(workspace, "z_next", x), _buffer(workspace, "z_bar", x)
    v, residual, adjoint = _buffer(workspace, "v", x), _buffer(workspace, "residual", x), _buffer(workspace, "adjoint", x)
    # The dual variables live inside zero borders (one row / column each side), so that K^T y is
    # three whole-array passes: (y_rows shifted down − y_rows) + y_cols shifted right − y_cols.
    rows_padded = _buffer(workspace, "rows_padded", x, (n, c, h + 1, w)).zero_()
    cols_padded = _buffer(workspace, "cols_padded", x, (n, c, h, w + 1)).zero_()
    dual_rows, dual_cols = rows_padded[:, :, 1:h], cols_padded[..., 1:w]
    difference_rows = _buffer(workspace, "difference_rows", x, dual_rows.shape)
    difference_cols = _buffer(workspace, "difference_cols", x, dual_cols.shape)
    z_bar = z
    for iteration in range(iterations):
        last = iteration == iterations - 1
        # dual ascent, then projection of each row (column) group onto the ball of radius λ
        dual_rows.add_(torch.sub(z_bar[:, :, 1:], z_bar[:, :, :-1], out=difference_rows), alpha=sigma)
        dual_rows.div_((dual_rows.norm(dim=3, keepdim=True) / lambda_tv).clamp_min_(1.0))
        dual_cols.add_(torch.sub(z_bar[..., 1:], z_bar[..., :-1], out=difference_cols), alpha=sigma)
        dual_cols.div_((dual_cols.norm(dim=2, keepdim=True) / lambda_tv).clamp_min_(1.0))
        # K^T y: the adjoint of the forward differences is a backward difference (zero outside)
        torch.sub(rows_padded[:, :, :-1], rows_padded[:, :, 1:], out=adjoint)
        adjoint.add_(cols_padded[..., :-1]).sub_(cols_padded[..., 1:])
        torch.add(z, adjoint, alpha=-tau, out=v)
        # prox of tau·‖m ⊙ (z − x)‖₂: shrink the kept residual as one vector per image and channel
        torch.addcmul(negative_kept_x, keep, v, out=residual)
        length = residual.flatten(2).norm(dim=2)[..., None, None]
        torch.addcmul(v, residual, (tau / length.clamp_min(1e-12)).clamp_max(1.0), value=-1.0,
                      out=out if last else z_next)
        if last:
            return out
        z_bar = torch.lerp(z, z_next, 2.0, out=z_bar_buffer)  # z_next + (z_next − z), θ = 1
        z, z_next = z_next, z  # the old z is not read again: its buffer takes the next iterate
    return out


class TotalVarianceMinimisation(Defence):
    """``keep_prob`` (the share of pixels kept), ``lambda_tv``, ``iterations``, ``tau`` (the solver's
    primal step)."""

    def __init__(self, info: DefenceInfo, params):
        super().__init__(info, params)
        p = self.params
        if not 0 < float(p["keep_prob"]) <= 1:
            raise DefenceError(f"TVM keeps a share of the pixels in (0, 1], got {p['keep_prob']!r}.")
        if float(p["lambda_tv"]) < 0 or int(p["iterations"]) < 0 or float(p["tau"]) <= 0:
            raise DefenceError("TVM needs lambda_tv ≥ 0, iterations ≥ 0 and tau > 0.")

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        keep = draw_keep_mask(x, float(p["keep_prob"]), generator)
        with torch.no_grad():
            z = minimise_total_variation(x.detach(), keep, float(p["lambda_tv"]), int(p["iterations"]), float(p["tau"]))
        return z.clamp(0, 1)


INFO = DefenceInfo(
    name="tvm", title="Total variance minimisation", short="TVM",
    citation="Guo et al., ICLR 2018 (arXiv:1711.00117), §3.2: keep 50% of the pixels, λ_TV = 0.03",
    summary="Throws away half of the pixels at random and redraws the photo from the rest with as few edges as possible.",
    build=lambda model=None, **params: TotalVarianceMinimisation(INFO, params),
    params={"keep_prob": 0.5, "lambda_tv": 0.03, "iterations": 10, "tau": 3.0},
    randomised=True, gradient="bpda", surrogate="identity", group="zoo",
    aliases=("total_variance_minimisation", "total_variation"))
