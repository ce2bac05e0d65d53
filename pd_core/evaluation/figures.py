"""The paper's figures computed from the protocol: Figure 2 (class probability against the number
of deflections; :func:`probability_curve` is the one implementation, used by the app too),
Figure 5 (accuracy over σ, window and K on the tuning subset) and Figure 6 (rank of the
adversarial class among the clean top-5)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from ..attacks.registry import AttackChoiceError, check_attacks
from ..defence import PAPER_DEFAULTS, DefenceConfig, vote
from .batching import FastLayoutModel, activation_maps, classify, model_batch
from .data import EvaluationError, load_items, load_labelled_images, split_tuning
from .paper import results_rows
from .progress import Progress
from .settings import RunSettings
from .tables import ATTACK_TITLES
from ..defences.pixel_deflection import defended_copies
from ..randomness import derive_seed
from .stats import counted_rows, wilson_interval

__all__ = ["rank_histogram", "CurveResult", "CurveSettings", "FIGURE2", "probability_curve", "deflection_curve",
           "TuningGrid", "tuning_grid"]


def rank_histogram(results, preset: str | None = None, attacks: Sequence[str] | None = None):
    """Paper Figure 6 from the results rows: over successful attacks on counted images, how often
    the adversarial class has rank 1–5 in the clean image's top-5 (0 = not in it), and how often
    the true class has rank 1–5 in the adversarial image's top-5.

    Returns a DataFrame with columns ``attack``, ``direction`` ("adversarial class in clean top-5" or
    "true class in adversarial top-5"), ``rank`` (0–5), ``count``, ``fraction``; ``attack = "all"``
    pools every attack.
    """
    import pandas as pd

    rows = counted_rows(results_rows(results))
    rows = rows[(rows["defence"] == "none") & (rows["attack"] != "clean")]
    if preset is not None:
        rows = rows[rows["preset"] == preset]
    if attacks is not None:
        rows = rows[rows["attack"].isin(list(attacks))]
    rows = rows[pd.to_numeric(rows["attack_success"], errors="coerce") == 1]
    out = []
    groups = [("all", rows)] + list(rows.groupby("attack", sort=False))
    for attack, g in groups:
        for column, direction in (("adv_rank_in_clean_top5", "adversarial class in clean top-5"),
                                  ("true_rank_in_adv_top5", "true class in adversarial top-5")):
            ranks = pd.to_numeric(g[column], errors="coerce").dropna().astype(int)
            total = len(ranks)
            for rank in range(6):
                c = int((ranks == rank).sum())
                out.append({"attack": attack, "direction": direction, "rank": rank, "count": c,
                            "fraction": c / total if total else math.nan})
    return pd.DataFrame(out, columns=["attack", "direction", "rank", "count", "fraction"])


# --------------------------------------------------------------------------------------------
# Figure 2: class probability against the number of deflections
# --------------------------------------------------------------------------------------------

@dataclass
class CurveResult:
    """Class probabilities after K deflections, for every K (:func:`probability_curve`).

    deflections : the K values. classes : the followed classes, as given (a list, the same for
    every image, or an (N, C) tensor, per image). probs : per K, an (N, copies, C) tensor on the
    CPU, the probability of followed class j (column j) in each deflected copy of each image; at
    K = 0 there is one copy (nothing random). top1 : per K, the (N, copies) top-1 class of each copy.
    """

    deflections: list[int]
    classes: object
    probs: list[torch.Tensor]
    top1: list[torch.Tensor]
    copies: int
    denoise: bool

    def _columns(self) -> dict:
        keys = self.classes if isinstance(self.classes, list) else range(self.probs[0].shape[-1])
        return {key: j for j, key in enumerate(keys)}

    def _followed(self) -> list[torch.Tensor]:
        """Per K, the (N, C) followed class of each image."""
        n = self.probs[0].shape[0]
        classes = torch.as_tensor(self.classes, dtype=torch.long)
        return [classes.expand(n, -1) if classes.ndim == 1 else classes.cpu()] * len(self.deflections)

    @property
    def mean(self) -> dict:
        """Followed class (column index for per-image classes) -> (len(K),) mean over images and copies."""
        return {key: torch.stack([p[..., j].mean() for p in self.probs]) for key, j in self._columns().items()}

    @property
    def std(self) -> dict:
        """Like :attr:`mean`: the standard deviation over images and random copies (ddof 0)."""
        return {key: torch.stack([p[..., j].std(unbiased=False) for p in self.probs])
                for key, j in self._columns().items()}

    @property
    def top1_rate(self) -> dict:
        """Like :attr:`mean`: the fraction of copies whose top-1 is the followed class."""
        followed = self._followed()
        return {key: torch.stack([(t == f[:, j:j + 1]).float().mean() for t, f in zip(self.top1, followed)])
                for key, j in self._columns().items()}


@dataclass(frozen=True)
class CurveSettings:
    """What Figure 2's curves vary and how (:func:`probability_curve`, :func:`deflection_curve`).

    deflections : the K values. copies : random deflections per image and K (one at K = 0).
    config : map (``use_map``, ``top_k``) and window of the deflection (paper defaults when None).
    denoise : False is deflection alone, as in the paper's figure; True adds the configured wavelet
    denoising (and JPEG, if configured). seed : base seed of the deflections (and of
    :func:`deflection_curve`'s attack). batch_size : copies classified per forward pass.
    """

    deflections: tuple[int, ...] = (0, 50, 100, 200, 400, 800, 1600)
    copies: int = 8
    config: DefenceConfig | None = None
    denoise: bool = False
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self):
        ks = tuple(int(k) for k in self.deflections)
        if not ks or min(ks) < 0 or int(self.copies) < 1 or int(self.batch_size) < 1:
            raise EvaluationError("give K values of 0 or more, and at least one copy and one image per batch.")
        object.__setattr__(self, "deflections", ks)


#: Figure 2 of the paper as :func:`deflection_curve` draws it by default: deflection alone, uniform.
FIGURE2 = CurveSettings(deflections=(0, 100, 300, 1000, 3000, 10000), copies=4,
                        config=replace(PAPER_DEFAULTS, use_map=False), batch_size=32)


def probability_curve(model, images: torch.Tensor, classes, curve: CurveSettings | None = None, *,
                      seed_parts: Sequence = (), progress: Progress | None = None) -> CurveResult:
    """Class probabilities of images after K deflections, for every K (paper Fig. 2, §5).

    The one implementation of the figure: the app's Defence Explorer draws it for one photo and
    :func:`deflection_curve` averages it over attacked and clean photos.

    images : (N, 3, S, S) or (3, S, S) in [0, 1] at the model's resolution (moved to its device).
    classes : the classes to follow, a list (every image) or an (N, C) tensor (per image).
    curve : K values, copies, deflection settings, denoiser, seed (:class:`CurveSettings`).
    seed_parts : the copies of image i at K come from ``derive_seed(curve.seed, *seed_parts, i, K)``,
        so they do not depend on the other images or K values.
    progress : ``callback(fraction, message)`` after each K.
    """
    curve = curve or CurveSettings()
    deflections, copies, denoise, seed, batch_size = (curve.deflections, curve.copies, curve.denoise, curve.seed,
                                                      curve.batch_size)
    config = replace(curve.config or DefenceConfig(), deflect=True, denoise=denoise)
    if not denoise:
        config = replace(config, jpeg_quality=None)
    x = (images if images.ndim == 4 else images[None]).to(model.device, torch.float32).contiguous()
    n = x.shape[0]
    followed = torch.as_tensor(classes, dtype=torch.long, device=x.device)
    followed = followed.expand(n, -1) if followed.ndim == 1 else followed
    with torch.no_grad():
        rmap = activation_maps(model, x, config.top_k, batch_size).rmap if config.use_map else None
    probs, top1 = [], []
    for ki, k in enumerate(int(k) for k in deflections):
        c = copies if k > 0 else 1
        seeds = [derive_seed(seed, *seed_parts, i, k) for i in range(n)]
        defended = defended_copies(model, x, rmap, replace(config, deflections=k), c, seeds)
        p = classify(model, defended, batch_size).view(n, c, -1)
        probs.append(p.gather(2, followed[:, None, :].expand(-1, c, -1)).cpu())
        top1.append(p.argmax(-1).cpu())
        if progress is not None:
            progress((ki + 1) / len(deflections), f"K = {k}")
    return CurveResult(deflections=[int(k) for k in deflections],
                       classes=[int(c) for c in classes] if not isinstance(classes, torch.Tensor) else classes.cpu(),
                       probs=probs, top1=top1, copies=copies, denoise=denoise)


def deflection_curve(model, images: torch.Tensor, labels: torch.Tensor, curve: CurveSettings = FIGURE2, *,
                     adversarial: torch.Tensor | None = None, attack: str = "fgsm", preset: str = "paper",
                     progress: Progress | None = None):
    """Paper Figure 2: mean probability of the true class and of the adversarial class against the
    number of deflections, for the adversarial images and for their clean originals.

    images : (N, 3, S, S) clean images in [0, 1] on the model's device; labels : (N,) int64.
    adversarial : their adversarial versions; computed with ``attack`` / ``preset`` when None.
    Only images that are correctly classified and whose attack succeeded are used (the
    "adversarial class" is then the undefended prediction on the adversarial image).
    curve : the K values, copies, deflection settings and seed (:class:`CurveSettings`; default
    :data:`FIGURE2`, the paper's: deflection alone, uniform, window 10); ``curve.copies`` random
    deflections per image and K are averaged (:func:`probability_curve`).

    Returns a DataFrame: ``image`` ("adversarial" / "clean"), ``deflections``, ``class``
    ("true" / "adversarial"), ``mean_prob``, ``sem`` (standard error over images), ``n``.
    """
    import pandas as pd

    seed, batch_size = curve.seed, curve.batch_size
    labels = labels.to(images.device).long()
    if adversarial is None:
        from ..attacks import attack as run_attack

        adversarial = run_attack(FastLayoutModel(model), images, labels, attack, preset=preset, seed=seed,
                                 batch_size=model_batch(model, batch_size)).adversarial
    adversarial = adversarial.to(images.device).contiguous()
    with torch.no_grad():
        clean_pred = classify(model, images, batch_size).argmax(1)
        adv_pred = classify(model, adversarial, batch_size).argmax(1)
    keep = (clean_pred == labels) & (adv_pred != labels)
    out = []
    if not bool(keep.any()):
        return pd.DataFrame(out, columns=["image", "deflections", "class", "mean_prob", "sem", "n"])
    followed = torch.stack([labels[keep], adv_pred[keep]], 1)  # columns: true, adversarial
    n = int(keep.sum())
    for si, (kind, x) in enumerate((("adversarial", adversarial[keep]), ("clean", images[keep]))):
        report = None if progress is None else (
            lambda f, m, si=si, kind=kind: progress((si + f) / 2, f"{kind} images, {m}"))
        result = probability_curve(model, x, followed, curve, seed_parts=("figure2", kind), progress=report)
        for k, probs in zip(result.deflections, result.probs):
            per_image = probs.mean(1).double()  # (n, 2): mean over the random copies
            for j, cls_name in enumerate(("true", "adversarial")):
                p = per_image[:, j]
                sem = float(p.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
                out.append({"image": kind, "deflections": k, "class": cls_name,
                            "mean_prob": float(p.mean()), "sem": sem, "n": n})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# Figure 5: accuracy over (σ, window, K) on the held-apart tuning subset
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuningGrid:
    """Figure 5's search (§9.1), checked on construction: the ``attacks`` (at ``preset``; the clean
    images are always included) and the values of σ, the window r and the deflections K.
    ``search``: ``"linear"`` (the paper's: vary one parameter at a time, the others at the paper's
    defaults σ = 0.04, r = 10, K = 100) or ``"grid"`` (every combination)."""

    attacks: tuple[str, ...] = ("fgsm",)
    preset: str = "paper"
    sigmas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.06, 0.08)
    windows: tuple[int, ...] = (2, 5, 10, 15, 20)
    deflections: tuple[int, ...] = (25, 50, 100, 200, 400)
    search: str = "linear"

    def __post_init__(self):
        try:
            object.__setattr__(self, "attacks", tuple(check_attacks(self.attacks, self.preset)))
        except AttackChoiceError as exc:
            raise EvaluationError(str(exc)) from None
        self.points()

    def points(self) -> list[tuple[str, float, int, int]]:
        return _grid_points(self.search, self.sigmas, self.windows, self.deflections)


def tuning_grid(model, images, grid: TuningGrid | None = None, settings: RunSettings | None = None, *,
                labels_csv=None, progress: Progress | None = None):
    """Paper Figure 5 / §9.1: defended accuracy over a grid of (σ, window r, deflections K), on the
    **tuning subset only** (:func:`split_tuning`: disjoint from what :func:`evaluate` uses).

    grid : the search (:class:`TuningGrid`). settings : ensemble (copies per image; default 1, the
    single run, the cheapest), limit (of the tuning images), seed, chunk size, tuning fraction
    (:class:`~pd_core.evaluation.settings.RunSettings`).

    Returns a DataFrame: ``attack``, ``varied`` (the parameter varied, "grid" or "default"),
    ``sigma``, ``window``, ``deflections``, ``n``, ``correct``, ``accuracy``, ``ci_low``,
    ``ci_high`` (Wilson 95%, fractions).
    """
    import pandas as pd

    from ..attacks import attack as run_attack

    grid, settings = grid or TuningGrid(), settings or RunSettings(ensemble=1)
    attacks, preset, seed, batch_size = list(grid.attacks), grid.preset, settings.seed, settings.batch_size
    _, tuning = split_tuning(load_items(images, labels_csv), settings.tuning_fraction)
    if settings.limit is not None:
        tuning = tuning[: settings.limit]
    if not tuning:
        raise EvaluationError("the tuning subset is empty; raise tuning_fraction or add images.")
    base = PAPER_DEFAULTS
    points = grid.points()
    counts: dict[tuple, list[int]] = {}
    chunks = [tuning[i:i + batch_size] for i in range(0, len(tuning), batch_size)]
    total = len(chunks) * (1 + len(attacks)) * len(points)
    step = 0
    for chunk in chunks:
        x, good, _ = load_labelled_images(chunk, model)
        labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
        with torch.no_grad():
            keep = classify(model, x, batch_size).argmax(1) == labels if len(good) else torch.zeros(0, dtype=torch.bool)
        x, labels = x[keep], labels[keep]
        good = [it for it, k in zip(good, keep.tolist()) if k]
        if not good:
            step += (1 + len(attacks)) * len(points)
            continue
        for a in ["clean", *attacks]:
            if a == "clean":
                adv = x
            else:
                adv = run_attack(FastLayoutModel(model), x, labels, a, preset=preset,
                                 batch_size=model_batch(model, batch_size),
                                 seed=derive_seed(seed, a, preset, *[it.name for it in good])).adversarial.contiguous()
            rmap = activation_maps(model, adv, base.top_k, batch_size).rmap
            seeds = [derive_seed(seed, it.name, a) for it in good]
            for varied, s, w, k in points:
                cfg = replace(base, sigma=float(s), window=int(w), deflections=int(k))
                copies = settings.ensemble
                defended = defended_copies(model, adv, rmap, cfg, copies, seeds)
                probs = classify(model, defended, 4 * batch_size).view(len(good), copies, -1)
                pred = vote(probs).prediction
                c = counts.setdefault((a, varied, float(s), int(w), int(k)), [0, 0])
                c[0] += int((pred == labels).sum())
                c[1] += len(good)
                step += 1
                if progress is not None:
                    progress(step / total, f"{ATTACK_TITLES.get(a, a)}: σ={s}, r={w}, K={k}")
    out = []
    for (a, varied, s, w, k), (correct, n) in counts.items():
        lo, hi = wilson_interval(correct, n)
        out.append({"attack": a, "varied": varied, "sigma": s, "window": w, "deflections": k, "n": n,
                    "correct": correct, "accuracy": correct / n if n else math.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out, columns=["attack", "varied", "sigma", "window", "deflections", "n", "correct",
                                      "accuracy", "ci_low", "ci_high"])


def _grid_points(search: str, sigmas: Sequence[float], windows: Sequence[int],
                 deflections: Sequence[int]) -> list[tuple[str, float, int, int]]:
    """(varied, σ, window, K) of Figure 5's search: one parameter at a time from the paper's
    defaults (``"linear"``), or every combination (``"grid"``)."""
    import itertools

    base = PAPER_DEFAULTS
    if search == "linear":
        points = [("default", base.sigma, base.window, base.deflections)]
        points += [("sigma", s, base.window, base.deflections) for s in sigmas if s != base.sigma]
        points += [("window", base.sigma, w, base.deflections) for w in windows if w != base.window]
        points += [("deflections", base.sigma, base.window, k) for k in deflections if k != base.deflections]
        return points
    if search == "grid":
        return [("grid", s, w, k) for s, w, k in itertools.product(sigmas, windows, deflections)]
    raise EvaluationError("search must be 'linear' or 'grid'.")
