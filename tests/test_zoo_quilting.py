"""Image quilting (Guo et al. 2018) against independent NumPy oracles on tiny synthetic databases:
each output patch is one of the K nearest database patches, the seam is the minimum-error path
(brute force over all paths), the whole quilt equals a raster-order NumPy quilt; plus the
database's tuning-split guarantee on ../shared, its cache, and its one-sentence errors."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pd_core.defences import DefenceError, create_defence, defence_info
from pd_core.defences import quilting as Q
from pd_core.randomness import make_generator

SHARED = Path(__file__).resolve().parents[2] / "shared"
K, P, OV = 10, 5, 2


def smooth_images(n, h, w, seed):
    """Random images with some spatial structure (a 4× bilinear upsampling of noise)."""
    small = torch.rand(n, 3, h // 4 + 2, w // 4 + 2, generator=make_generator(seed))
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny():
    """A database of 300 patches from smooth random images, in 6 clusters, and a defence searching
    all of them (exact)."""
    table = torch.nn.functional.unfold(smooth_images(4, 24, 24, 0), P).transpose(1, 2).reshape(-1, 3 * P * P)
    table = table[torch.randperm(len(table), generator=make_generator(1))[:300]].contiguous()
    index = Q.build_index(table, 6, 0)
    params = {**defence_info("quilting").params, "lists": 6, "probes": 6}
    return index, Q.Quilting(defence_info("quilting"), params, index=index)


def knn_numpy(table: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dist = ((table[None].astype(np.float64) - query[:, None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")
    return order[:, :k], np.take_along_axis(dist, order, 1)


def all_paths(length, width):
    for path in itertools.product(range(width), repeat=length):
        if all(abs(a - b) <= 1 for a, b in zip(path, path[1:])):
            yield path


def cut_numpy(error: np.ndarray) -> np.ndarray:
    """Brute force: the path (one column per row, steps of at most 1) of least total error."""
    paths = list(all_paths(*error.shape))
    costs = [sum(error[t, c] for t, c in enumerate(path)) for path in paths]
    return np.array(paths[int(np.argmin(costs))])


def quilt_numpy(tiles: np.ndarray, overlap: int) -> np.ndarray:
    """Efros & Freeman in raster order, cuts by brute force: tiles (gh, gw, 3, p, p) -> (3, H, W)."""
    gh, gw, c, p, _ = tiles.shape
    step = p - overlap
    out = np.zeros((c, (gh - 1) * step + p, (gw - 1) * step + p))
    for i in range(gh):
        for j in range(gw):
            y, x = i * step, j * step
            old, new = out[:, y:y + p, x:x + p], tiles[i, j].astype(np.float64)
            error = ((old - new) ** 2).sum(0)
            take = np.ones((p, p), bool)
            if j > 0:
                cut = cut_numpy(error[:, :overlap])
                take &= np.arange(p)[None, :] >= cut[:, None]
            if i > 0:
                cut = cut_numpy(error[:overlap, :].T)
                take &= np.arange(p)[:, None] >= cut[None, :]
            out[:, y:y + p, x:x + p] = np.where(take, new, old)
    return out


def test_output_shape_range_device_and_determinism(tiny):
    _, defence = tiny
    x = smooth_images(2, 23, 31, 5)  # not a size the grid fits: padded, then cropped
    out = defence.apply(x, make_generator(3))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, defence.apply(x, make_generator(3)))
    other = defence.apply(x, make_generator(4))
    assert not torch.equal(out, other) and (out != other).float().mean() > 0.3
    assert float((out - x).abs().mean()) < 0.15, "a quilt of close patches stays close to the image"


def test_every_patch_is_one_of_its_k_nearest_and_the_quilt_equals_a_numpy_quilt(tiny):
    index, defence = tiny
    x = smooth_images(2, 20, 26, 7)  # 6 × 8 positions, no padding
    out = defence.apply(x, make_generator(11)).numpy()
    table = index.patches.numpy()
    step, (gh, gw) = P - OV, (6, 8)
    for n in range(2):
        queries = np.stack([x[n, :, i * step:i * step + P, j * step:j * step + P].reshape(-1).numpy()
                            for i in range(gh) for j in range(gw)])
        near, _ = knn_numpy(table, queries, K)
        centre = table.reshape(-1, 3, P, P)[:, :, P // 2, P // 2]
        tiles = np.empty((gh, gw, 3, P, P), np.float32)
        for g, (i, j) in enumerate(itertools.product(range(gh), range(gw))):
            # the centre pixel is in no overlap: it is the drawn patch's, and that is among the K nearest
            pixel = out[n, :, i * step + P // 2, j * step + P // 2]
            match = [m for m in near[g] if np.array_equal(centre[m], pixel)]
            assert len(match) == 1, f"image {n}, position {(i, j)}: centre pixel from no patch among the K nearest"
            tiles[i, j] = table[match[0]].reshape(3, P, P)
        expected = quilt_numpy(tiles, OV).astype(np.float32)
        # equal up to cuts between two near-equal pixels (overlapping patches of one source image)
        np.testing.assert_allclose(out[n], expected, rtol=0, atol=1e-6)
        assert (out[n] == expected).mean() > 0.99


def test_the_draws_are_spread_over_the_k_nearest(tiny):
    _, defence = tiny
    x = smooth_images(1, 20, 20, 8)
    outs = torch.stack([defence.apply(x, make_generator(s))[0, :, 2, 2] for s in range(200)])  # position (0, 0)
    values = {tuple(v.tolist()) for v in outs}
    assert len(values) == K, "200 draws at one position reach all K nearest patches and no other"


@pytest.mark.parametrize("width", [2, 3])
def test_the_cut_is_the_minimum_error_path(width):
    error = torch.rand(200, P, width, generator=make_generator(width), dtype=torch.float64)
    cuts = Q.min_error_cut(error).numpy()
    for m in range(len(error)):
        np.testing.assert_array_equal(cuts[m], cut_numpy(error[m].numpy()))


def test_search_exact_with_every_cluster_and_rows_do_not_depend_on_the_batch(tiny):
    index, _ = tiny
    queries = torch.rand(500, 3 * P * P, generator=make_generator(9))
    got = Q.search(index, queries, K, probes=6)
    near, dist = knn_numpy(index.patches.numpy(), queries.numpy(), K)
    found = ((index.patches[got] - queries[:, None]) ** 2).sum(-1).double().numpy()
    assert np.all(found <= dist[:, K - 1:K] + 1e-6), "every returned patch is within the K-nearest radius"
    assert (np.sort(got.numpy(), 1) == np.sort(near, 1)).mean() > 0.99
    for probes in (2, 6):
        full = Q.search(index, queries, K, probes)
        assert torch.equal(Q.search(index, queries[123:124], K, probes), full[123:124])
        assert torch.equal(Q.search(index, queries[::3], K, probes), full[::3])


def test_near_ties_of_flat_patches_do_not_depend_on_the_batch():
    """Flat, nearly equal patches (sky, a white wall) are where rounding could reorder the neighbours."""
    g = make_generator(12)
    table = 0.9 + 1e-4 * torch.rand(400, 3 * P * P, generator=g)
    index = Q.build_index(table, 4, 0)
    queries = 0.9 + 1e-4 * torch.rand(300, 3 * P * P, generator=g)
    for probes in (1, 4):
        full = Q.search(index, queries, K, probes)
        parts = torch.cat([Q.search(index, queries[s:s + 7], K, probes) for s in range(0, 300, 7)])
        assert torch.equal(parts, full)
        assert torch.equal(Q.search(index, queries[[5]], K, probes), full[[5]])


def test_searching_in_chunks_changes_nothing(tiny, monkeypatch):
    _, defence = tiny
    x = smooth_images(3, 20, 23, 13)
    whole = defence.apply(x, make_generator(14))
    monkeypatch.setattr(Q, "_QUERIES", 17)
    assert torch.equal(defence.apply(x, make_generator(14)), whole)


def test_bpda_passes_the_gradient_straight_through(tiny):
    _, defence = tiny
    info = defence_info("quilting")
    assert (info.group, info.randomised, info.gradient, info.surrogate) == ("zoo", True, "bpda", "identity")
    x = smooth_images(1, 20, 20, 3)
    draws = defence.draw(x, 2, make_generator(1))
    rep = x.repeat_interleave(2, 0).clone().requires_grad_(True)
    out = defence.replay(rep, draws)
    assert torch.equal(out.detach(), defence.apply(rep.detach(), draws.generator(x.device)))
    upstream = torch.randn(out.shape, generator=make_generator(2))
    (grad,) = torch.autograd.grad(out, rep, upstream)
    assert torch.equal(grad, upstream)


def test_a_missing_or_empty_folder_is_one_sentence(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DefenceError, match=r"nowhere is not one: pass database=FOLDER or set PD_QUILTING_DATABASE\.$"):
        create_defence("quilting", database=str(missing))
    monkeypatch.setenv(Q.DATABASE_ENV, str(missing))
    with pytest.raises(DefenceError, match="nowhere is not one"):
        create_defence("quilting")
    with pytest.raises(DefenceError, match="cannot read its patch database folder"):
        create_defence("quilting", database=str(tmp_path))
    with pytest.raises(DefenceError, match="overlap"):
        create_defence("quilting", overlap=3, database=str(missing))


def _labelled_folder(folder: Path, tuning: int, other: int) -> list[str]:
    """Synthetic wnid-named photos: ``tuning`` held-apart ones and ``other`` evaluation ones."""
    from pd_core.evaluation.data import Item, split_tuning

    names = [f"n01440764_{i}.png" for i in range(200)]
    evaluation, held = split_tuning([Item(n, Path(n), 0) for n in names])
    chosen = [it.name for it in held[:tuning]] + [it.name for it in evaluation[:other]]
    rng = np.random.default_rng(0)
    for name in chosen:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    return [it.name for it in held[:tuning]]


def test_a_database_of_ones_own_is_built_from_its_tuning_images_cached_and_keyed(tmp_path, monkeypatch):
    monkeypatch.setenv(Q.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    held = _labelled_folder(folder, 3, 5)
    params = dict(database=str(folder), database_patches=900, lists=8)
    first = create_defence("quilting", **params).index
    assert sorted(first.sources) == sorted(held) and len(first.patches) == 900
    [cached] = (tmp_path / "cache" / "quilting").glob("*.pt")
    Q._LOADED.clear()
    again = create_defence("quilting", **params).index
    assert torch.equal(again.patches, first.patches) and torch.equal(again.offsets, first.offsets)
    Q._LOADED.clear()
    cached.unlink()
    rebuilt = create_defence("quilting", **params).index
    assert torch.equal(rebuilt.patches, first.patches), "the build is deterministic (seeded)"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(folder / held[0])
    changed = create_defence("quilting", **params).index
    assert len(list((tmp_path / "cache" / "quilting").glob("*.pt"))) == 2, "a changed source, a new key"
    assert not torch.equal(changed.patches, first.patches)
    monkeypatch.delenv(Q.CACHE_ENV)
    repository = Path(__file__).resolve().parents[1]
    assert repository not in Q._cache_dir().resolve().parents, "the default cache is outside the repository"


needs_shared = pytest.mark.skipif(not (SHARED / "imagenet-800").is_dir() or not (SHARED / "imagenet-dev").is_dir(),
                                  reason="needs ../shared/imagenet-800 and ../shared/imagenet-dev")


@needs_shared
def test_the_default_database_holds_no_evaluation_image_of_either_folder():
    from pd_core.evaluation.data import load_items, split_tuning

    sources = Q.database_sources(SHARED / "imagenet-800")
    names = {Path(it.name).name for it in sources}
    dev_eval, _ = split_tuning(load_items(SHARED / "imagenet-dev"))
    big_eval, big_tuning = split_tuning(load_items(SHARED / "imagenet-800"))
    assert len(sources) == 29
    assert not names & {Path(it.name).name for it in dev_eval}, "no source is an imagenet-dev evaluation image"
    assert not {it.name for it in sources} & {it.name for it in big_eval}, "nor an imagenet-800 evaluation image"
    # why both names are needed: by the ImageFolder name alone, 29 tuning images are dev evaluation images
    assert len({Path(it.name).name for it in big_tuning} & {Path(it.name).name for it in dev_eval}) == 29
    defence = create_defence("quilting")
    assert Q.DEFAULT_DATABASE.resolve() == (SHARED / "imagenet-800").resolve()
    assert sorted(defence.index.sources) == sorted(it.name for it in sources)
    assert len(defence.index.patches) == 100_000 and len(defence.index.centroids) == 1024


@needs_shared
def test_the_staged_tuning_images_give_the_same_database_sources(tmp_path):
    """bench/stage_quilting_tuning.py (the GPU machine's copy): the same names and bytes, so the same key."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "stage_quilting_tuning.py"
    proc = subprocess.run([sys.executable, str(script), "--source", str(SHARED / "imagenet-800"),
                           "--dest", str(tmp_path / "imagenet-800")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    here, there = Q.database_sources(SHARED / "imagenet-800"), Q.database_sources(tmp_path / "imagenet-800")
    assert [it.name for it in there] == [it.name for it in here] and len(there) == 29
    assert all(Path(a.path).read_bytes() == Path(b.path).read_bytes() for a, b in zip(here, there))
    assert len(list((tmp_path / "imagenet-800").rglob("*.*"))) == 29, "only the tuning images are copied"
