"""Image quilting, Guo, Rana, Cissé & van der Maaten, ICLR 2018 ("Countering Adversarial Images
using Input Transformations", arXiv:1711.00117), §3 (image quilting), after Efros & Freeman,
SIGGRAPH 2001 ("Image Quilting for Texture Synthesis and Transfer").

The image is rebuilt from patches of clean images. What is implemented, exactly:

1. Grid: ``patch_size`` × ``patch_size`` patches (5 × 5) at stride ``patch_size − overlap`` (3)
   in both directions, covering the whole image. The image is first padded at the right and bottom
   by edge replication to the next size the grid fits (224 and 299 need none) and cropped back after.
2. Nearest neighbours: for each grid position the input's whole patch (all 75 values, channels
   included, as the paper says: "the K nearest neighbors (in pixel space) of the corresponding patch
   from the adversarial image") is compared by Euclidean distance to the database, and one of its
   K = ``neighbours`` (10) nearest database patches is picked uniformly at random (one uniform draw
   per position from the generator). The search does not look at the already placed patches.
3. Stitching: patches are placed in raster order; in the overlap with what is already placed, the
   minimum-error boundary cut of Efros & Freeman §2.1: error surface ``e = Σ_channels (old − new)²``,
   a vertical minimum-cost path through the left overlap (one pixel per row, neighbouring rows at
   most one column apart, found by dynamic programming) and a horizontal one through the top
   overlap; a pixel takes the new patch when it lies on or right of the vertical path and on or
   below the horizontal one, the old value otherwise. Efros & Freeman join the two paths where they
   meet at the overall minimum; here each path runs through its whole strip and the new side is
   their intersection. Positions on one anti-diagonal ``2·row + column`` touch disjoint pixels and
   read only pixels of earlier diagonals, so they are processed together (vectorised over the batch
   and the diagonal) with the same result as raster order; this needs ``overlap ≤ patch_size / 2``.

Database (``database``): a folder of labelled images (any layout :func:`pd_core.evaluation.load_items`
reads); default ``$PD_QUILTING_DATABASE``, else ``../shared/imagenet-800`` beside the project. Only
its held-apart tuning images are used: the tuning part of :func:`split_tuning` at
``DEFAULT_TUNING_FRACTION``, by the image's name in that folder *and* by its bare file name
(:func:`pd_core.evaluation.data.held_apart_everywhere`, whose module says why both). With both
rules 29 images of imagenet-800 remain, none an evaluation image of either folder
(tests/test_zoo_quilting.py checks it). Each is read at the model's preprocessing (short side 256
bicubic, centre crop 224) and ``database_patches`` (100,000) 5 × 5 patches are taken at positions
drawn with ``database_seed``, the same number from each image (Guo et al. likewise draw random positions,
``num_patches / num_images`` per image). The built database is cached outside the repository
(``$PD_CACHE_DIR``, else ``~/.cache/pdlab``, under ``quilting/``), keyed by the SHA-256 of the
sources' names and bytes and every parameter, so a changed file or setting builds a new one.

Search index: an exact search of 100,000 patches costs about 2 s per 224² image at one thread
(5,476 queries), so, as Guo et al. did with faiss (IVF, 200 lists, 5 probed), the database is
split into ``lists`` (1,024) clusters by k-means (20 Lloyd iterations from ``database_seed``) and each query
searches the ``probes`` (8) clusters whose centres are nearest, exactly within those; ``probes ≥
lists`` is an exact search. On imagenet-dev photos 96% of the K returned patches lie within the
true 10-nearest radius (probes 16: 99%, at 1.5× the time). The clusters and the K are chosen from
the K + 6 best float32 matrix-product candidates by distances summed element by element, ties by
database index, so a row never depends on the batch it was computed in.

Differences from Guo et al.: their database is 1,000,000 patches from 20,000 ImageNet training
images; ours is 100,000 patches from 29 held-apart validation images (ImageNet's training set is not
on these machines), a size chosen for speed: 0.25–0.40 s per 224² image at one thread (batch of 8,
docs/defences.md), where an exact search of 1,000,000 would take about 20 s. Their search is
approximate twice over (PCA to 64 dimensions and product quantisation, nprobe 5 of 200 lists); ours
is exact within the probed clusters. Their
released code (facebookresearch/adversarial_image_defenses, ``quilting.cpp``) sets overlap
``patch_size // 2`` (2, as here), K = 1 by default, leaves the last rows and columns of the grid
unfilled (its loops stop before ``H − patch_size``), and computes its seam as a graph cut with
L1 edge weights in which no overlap pixel is tied to the old side, which, as we read it, gives
every overlap pixel to the new patch; this module follows the paper's text (K = 10,
Efros–Freeman cut) instead.

Randomised (the neighbour drawn at each position). Gradient: BPDA with the identity, as Athalye,
Carlini & Wagner (ICML 2018) broke it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Defence, DefenceError, DefenceInfo

__all__ = ["Quilting", "PatchIndex", "build_index", "search", "min_error_cut", "stitch", "quilt",
           "database_sources", "load_database", "DEFAULT_DATABASE", "DATABASE_ENV", "CACHE_ENV", "INFO"]

DATABASE_ENV = "PD_QUILTING_DATABASE"
CACHE_ENV = "PD_CACHE_DIR"
DEFAULT_DATABASE = Path(__file__).resolve().parents[3] / "shared" / "imagenet-800"
FORMAT = "pdlab-quilting-database-v1"
MARGIN = 6  # float32 candidates kept beyond K before the exact float64 ranking
_CHUNK = 1 << 22  # distances computed at once (16 MB of float32)
_QUERIES = 1 << 16  # queries searched at once (about 12 images of 224²; ~0.3 GB of candidates)
_LOADED: dict[tuple, "PatchIndex"] = {}


@dataclass(frozen=True)
class PatchIndex:
    """Database patches ``(D, 3·p·p)`` sorted by cluster, cluster ``c`` at rows
    ``offsets[c]:offsets[c+1]``; ``centroids`` ``(C, 3·p·p)``; ``sources``: the images' names."""

    patches: torch.Tensor
    centroids: torch.Tensor
    offsets: torch.Tensor
    sources: tuple[str, ...] = ()

    def to(self, device) -> "PatchIndex":
        return PatchIndex(self.patches.to(device), self.centroids.to(device), self.offsets.to(device), self.sources)


def _nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    norms = (centroids * centroids).sum(1)
    step = max(1, _CHUNK // max(1, len(centroids)))
    return torch.cat([torch.addmm(norms[None], x[s:s + step], centroids.T, alpha=-2).argmin(1)
                      for s in range(0, len(x), step)])


def build_index(patches: torch.Tensor, lists: int, seed: int, iterations: int = 20,
                sources: tuple[str, ...] = ()) -> PatchIndex:
    """k-means (Lloyd, ``iterations`` steps from ``lists`` patches drawn with ``seed``; an empty
    cluster keeps its centre) and the patches sorted by cluster."""
    patches = patches.float()
    lists = max(1, min(int(lists), len(patches)))
    generator = torch.Generator(device=patches.device).manual_seed(int(seed))
    centroids = patches[torch.randperm(len(patches), generator=generator, device=patches.device)[:lists]].clone()
    for _ in range(int(iterations)):
        assign = _nearest_centroid(patches, centroids)
        count = torch.bincount(assign, minlength=lists)
        sums = torch.zeros_like(centroids).index_add_(0, assign, patches)
        centroids = torch.where(count[:, None] > 0, sums / count.clamp_min(1)[:, None], centroids)
    assign = _nearest_centroid(patches, centroids)
    order = torch.argsort(assign, stable=True)
    offsets = torch.zeros(lists + 1, dtype=torch.long, device=patches.device)
    offsets[1:] = torch.bincount(assign, minlength=lists).cumsum(0)
    return PatchIndex(patches[order].contiguous(), centroids, offsets, tuple(sources))


def _rank_exactly(q: torch.Tensor, candidates: torch.Tensor, table: torch.Tensor, take: int) -> torch.Tensor:
    """The ``take`` rows of ``candidates`` (``(Q, m)`` indices into ``table``, −1 = none) nearest to
    ``q``, by distances summed element by element (so the same whatever the batch), ties by index."""
    valid = candidates >= 0
    step = max(1, _CHUNK // (candidates.shape[1] * table.shape[1]) // 8)  # a slice that stays in cache
    dist = torch.cat([((table[candidates[s:s + step].clamp_min(0)] - q[s:s + step, None]) ** 2).sum(-1)
                      for s in range(0, len(q), step)]).masked_fill(~valid, float("inf"))
    by_index = torch.argsort(torch.where(valid, candidates, torch.iinfo(torch.long).max), dim=1, stable=True)
    by_dist = torch.argsort(dist.gather(1, by_index), dim=1, stable=True)
    return candidates.gather(1, by_index.gather(1, by_dist))[:, :take]


def search(index: PatchIndex, queries: torch.Tensor, k: int, probes: int) -> torch.Tensor:
    """Indices ``(Q, k)`` of the ``k`` nearest database patches of each query in its ``probes``
    nearest clusters, nearest first (−1 where fewer than ``k`` were searched)."""
    q = queries.float()
    n, lists = len(q), len(index.centroids)
    probes = max(1, min(int(probes), lists))
    if probes < lists:
        near = torch.addmm((index.centroids ** 2).sum(1)[None], q, index.centroids.T, alpha=-2)
        first = near.topk(min(lists, probes + MARGIN), dim=1, largest=False).indices
        probed = _rank_exactly(q, first, index.centroids, probes)
    else:
        probed = torch.arange(lists, device=q.device).expand(n, lists)
    keep = k + MARGIN
    pair_list = probed.reshape(-1)
    pair_query = torch.arange(n, device=q.device).repeat_interleave(probes)
    order = torch.argsort(pair_list, stable=True)
    counts = torch.bincount(pair_list, minlength=lists).tolist()
    offsets = index.offsets.tolist()
    best = torch.full((n * probes, keep), -1, dtype=torch.long, device=q.device)
    best_dist = torch.full((n * probes, keep), float("inf"), device=q.device)
    start = 0
    for c in range(lists):  # one matrix product per cluster, for all the queries that probe it
        pairs, start = order[start:start + counts[c]], start + counts[c]
        lo, hi = offsets[c], offsets[c + 1]
        if not len(pairs) or hi == lo:
            continue
        # centred on the cluster's centre: small norms, so little cancellation in ‖a‖² + ‖b‖² − 2a·b
        members, take = index.patches[lo:hi] - index.centroids[c], min(keep, hi - lo)
        norms, step = (members * members).sum(1), max(1, _CHUNK // (hi - lo))
        for s in range(0, len(pairs), step):
            rows = pairs[s:s + step]
            centred = q[pair_query[rows]] - index.centroids[c]
            dist = torch.addmm(norms[None], centred, members.T, alpha=-2) + (centred * centred).sum(1, keepdim=True)
            value, where = dist.topk(take, dim=1, largest=False)
            best[rows, :take], best_dist[rows, :take] = where + lo, value
    best, best_dist = best.view(n, -1), best_dist.view(n, -1)
    if best.shape[1] > keep:  # the float32 front-runners over all probed clusters
        best = best.gather(1, best_dist.topk(keep, dim=1, largest=False).indices)
    return _rank_exactly(q, best, index.patches, k)


def min_error_cut(error: torch.Tensor) -> torch.Tensor:
    """The minimum-cost path through ``error`` ``(M, L, W)`` from its first to its last row: one
    column per row (``(M, L)`` long), neighbouring rows at most one column apart (Efros & Freeman
    2001 §2.1, dynamic programming; ties to the lower column)."""
    cost, back = error[:, 0], []
    for t in range(1, error.shape[1]):
        padded = F.pad(cost, (1, 1), value=float("inf"))
        value, arg = torch.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], -1).min(-1)
        back.append(arg - 1)
        cost = error[:, t] + value
    path = torch.empty(error.shape[:2], dtype=torch.long, device=error.device)
    path[:, -1] = cost.argmin(1)
    for t in range(error.shape[1] - 1, 0, -1):
        path[:, t - 1] = path[:, t] + back[t - 1].gather(1, path[:, t:t + 1])[:, 0]
    return path


def _waves(gh: int, gw: int, patch: int, step: int, width: int, device):
    """Per anti-diagonal: the flat pixel indices ``(M, p, p)`` of its positions, their rows and columns."""
    r = torch.arange(patch, device=device)
    out = []
    for w in range(2 * (gh - 1) + gw):
        i = torch.arange(max(0, (w - gw + 2) // 2), min(gh - 1, w // 2) + 1, device=device)
        j = w - 2 * i
        pix = ((i * step)[:, None, None] + r[:, None]) * width + (j * step)[:, None, None] + r
        out.append((pix, i, j))
    return out


def stitch(tiles: torch.Tensor, overlap: int) -> torch.Tensor:
    """Quilt ``tiles`` ``(N, gh, gw, C, p, p)`` (the patch of each grid position) into ``(N, C, H, W)``
    with the minimum-error boundary cut in each overlap (module docstring, step 3)."""
    n, gh, gw, c, p, _ = tiles.shape
    step = p - overlap
    height, width = (gh - 1) * step + p, (gw - 1) * step + p
    out = tiles.new_zeros(n, c, height * width)
    r = torch.arange(p, device=tiles.device)
    for pix, i, j in _waves(gh, gw, p, step, width, tiles.device):
        old = out[:, :, pix]  # (N, C, M, p, p)
        new = tiles[:, i, j].transpose(1, 2)
        if overlap:
            error = ((old - new) ** 2).sum(1).flatten(0, 1)  # (N·M, p, p)
            cuts = min_error_cut(torch.cat([error[:, :, :overlap], error[:, :overlap].transpose(1, 2)]))
            cut_v, cut_h = cuts.view(2, n, len(i), p)
            cut_v = torch.where((j > 0)[:, None], cut_v, 0)
            cut_h = torch.where((i > 0)[:, None], cut_h, 0)
            take = (r >= cut_v[..., None]) & (r[:, None] >= cut_h[..., None, :])  # (N, M, p, p)
            new = torch.where(take[:, None], new, old)
        out[:, :, pix] = new
    return out.view(n, c, height, width)


def quilt(x: torch.Tensor, index: PatchIndex, u: torch.Tensor, patch: int = 5, overlap: int = 2,
          k: int = 10, probes: int = 8) -> torch.Tensor:
    """Quilting of ``x`` ``(N, 3, H, W)``; ``u`` ``(N, positions)`` uniform in [0, 1) picks each
    position's neighbour among its ``k`` nearest (:func:`grid_shape` gives the positions)."""
    n, c, h, w = x.shape
    step = patch - overlap
    (gh, gw), (hp, wp) = grid_shape(h, w, patch, overlap)
    padded = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else x
    queries = F.unfold(padded.float(), patch, stride=step).transpose(1, 2).reshape(n * gh * gw, -1)
    near = torch.cat([search(index, queries[s:s + _QUERIES], k, probes)  # bounded memory; rows are independent
                      for s in range(0, len(queries), _QUERIES)])
    count = (near >= 0).sum(1).clamp_min(1)
    pick = (u.reshape(-1).double() * count).long().clamp_max(count - 1)
    chosen = near.gather(1, pick[:, None])[:, 0]
    tiles = index.patches[chosen].view(n, gh, gw, c, patch, patch)
    return stitch(tiles, overlap)[..., :h, :w].to(x.dtype)


def grid_shape(h: int, w: int, patch: int, overlap: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((rows, columns), (padded height, padded width))`` of the grid of an ``h × w`` image."""
    step = patch - overlap
    hp, wp = (max(patch, s + (-(s - patch) % step)) for s in (h, w))
    return ((hp - patch) // step + 1, (wp - patch) // step + 1), (hp, wp)


def database_sources(folder, tuning_fraction: float | None = None) -> list:
    """The images of ``folder`` a database may use: :func:`~pd_core.evaluation.data.held_apart_everywhere`
    (tuning images by their name there and by their bare file name), in hash order."""
    from ..evaluation.data import DEFAULT_TUNING_FRACTION, held_apart_everywhere, load_items

    return held_apart_everywhere(load_items(folder),
                                 DEFAULT_TUNING_FRACTION if tuning_fraction is None else tuning_fraction)


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pdlab") / "quilting"


def load_database(folder, patch: int = 5, patches: int = 100_000, lists: int = 1024, seed: int = 0,
                  size: int = 224) -> PatchIndex:
    """The index of ``folder``'s tuning images (built, or read from the cache), on the CPU."""
    from ..evaluation.data import EvaluationError
    from ..images import load_image

    try:
        sources = database_sources(folder)
    except EvaluationError as exc:
        raise DefenceError(f"Image quilting cannot read its patch database folder {folder}: {exc}") from None
    if not sources:
        raise DefenceError(f"Image quilting found no held-apart tuning images in {folder}; give database= a "
                           "bigger folder of labelled images.")
    key = hashlib.sha256(repr((FORMAT, patch, int(patches), int(lists), int(seed), size)).encode())
    for it in sources:
        key.update(it.name.encode() + b"\0" + hashlib.sha256(Path(it.path).read_bytes()).digest())
    key = key.hexdigest()[:32]
    if key in _LOADED:
        return _LOADED[key]
    path = _cache_dir() / f"{key}.pt"
    try:
        saved = torch.load(path, weights_only=True)
        index = PatchIndex(saved["patches"], saved["centroids"], saved["offsets"], tuple(saved["sources"]))
    except Exception:  # noqa: BLE001 - absent, corrupt or foreign cache file (weights_only: never runs code): rebuild
        generator = torch.Generator().manual_seed(int(seed))
        per_image, chunks = -(-int(patches) // len(sources)), []
        for it in sources:
            image = load_image(it.path, size=size)
            every = F.unfold(image, patch).transpose(1, 2)[0]  # (positions, 3·p·p)
            chunks.append(every[torch.randperm(len(every), generator=generator)[:per_image]])
        table = torch.cat(chunks)[: int(patches)].clamp(0, 1)
        index = build_index(table, lists, seed, sources=tuple(it.name for it in sources))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"patches": index.patches, "centroids": index.centroids, "offsets": index.offsets,
                        "sources": list(index.sources)}, temporary)
            os.replace(temporary, path)
        except OSError:
            pass  # an unwritable cache only costs the next build
    _LOADED[key] = index
    return index


class Quilting(Defence):
    """``patch_size``, ``overlap``, ``neighbours`` (K), ``database`` (a folder, None = default),
    ``database_patches``, ``lists`` and ``probes`` (the search index), ``database_seed`` (the database's draws);
    or ``index=`` a ready :class:`PatchIndex` (tests, a database of one's own)."""

    def __init__(self, info: DefenceInfo, params, index: PatchIndex | None = None):
        super().__init__(info, params)
        p = self.params
        size, overlap, k = int(p["patch_size"]), int(p["overlap"]), int(p["neighbours"])
        if size < 1 or not 0 <= overlap <= size // 2 or k < 1 or int(p["probes"]) < 1:
            raise DefenceError("Image quilting needs patch_size ≥ 1, 0 ≤ overlap ≤ patch_size / 2, "
                               "neighbours ≥ 1 and probes ≥ 1.")
        if index is None:
            folder = Path(p["database"] or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE)
            if not folder.is_dir():
                raise DefenceError(f"Image quilting needs a folder of clean labelled images for its patch database "
                                   f"and {folder} is not one: pass database=FOLDER or set {DATABASE_ENV}.")
            index = load_database(folder, size, int(p["database_patches"]), int(p["lists"]), int(p["database_seed"]))
        if index.patches.shape[1] != 3 * size * size or len(index.patches) < k:
            raise DefenceError(f"Image quilting's database must hold at least {k} patches of 3×{size}×{size}.")
        self.index = index
        self._on: dict = {}

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        (gh, gw), _ = grid_shape(x.shape[2], x.shape[3], int(p["patch_size"]), int(p["overlap"]))
        device = generator.device if generator is not None else x.device
        u = torch.rand((x.shape[0], gh * gw), generator=generator, device=device).to(x.device)
        if x.device not in self._on:
            self._on[x.device] = self.index.to(x.device)
        with torch.no_grad():
            return quilt(x.detach(), self._on[x.device], u, int(p["patch_size"]), int(p["overlap"]),
                         int(p["neighbours"]), int(p["probes"]))


INFO = DefenceInfo(
    name="quilting", title="Image quilting", short="Quilting",
    citation="Guo et al., ICLR 2018 (arXiv:1711.00117), §3: 5×5 patches, one of the K = 10 nearest clean "
             "patches at random, minimum-error boundary cut (Efros & Freeman, SIGGRAPH 2001)",
    summary="Rebuilds the photo like a quilt from small squares cut out of other, clean photos, each "
            "picked at random among the ten that look most like that part of the photo.",
    build=lambda model=None, **params: Quilting(INFO, params),
    params={"patch_size": 5, "overlap": 2, "neighbours": 10, "database": None, "database_patches": 100_000,
            "lists": 1024, "probes": 8, "database_seed": 0},
    randomised=True, gradient="bpda", surrogate="identity", group="zoo", aliases=("image_quilting",))
