"""Batch evaluation that reproduces the paper's Tables 1, 3 and 4 and Figures 2, 5 and 6 (§9–10).

Protocol (paper §9 and §10, SPEC §2, issue 5)
--------------------------------------------
1. Images come from a folder (labels from ``labels.csv`` or a WordNet-id prefix, see
   :func:`pd_core.images.read_labelled_folder`) or from a list of ``(path, label)``.
2. The folder is split **deterministically** into an evaluation part and a held-apart tuning part
   (:func:`split_tuning`: an image is a tuning image when the SHA-256 of its name falls in the
   lowest ``tuning_fraction`` of the hash range). :func:`evaluate` only ever sees the evaluation
   part and :func:`tuning_grid` (Figure 5) only the tuning part, so hyper-parameters are never
   chosen on evaluation images (paper §9.1). The order of the evaluation images is the hash order,
   so ``limit=N`` takes a deterministic, class-mixed prefix, and a larger ``limit`` extends it.
3. Only images the undefended model classifies correctly count ("Clean, no defence" is 100% by
   construction); the others are dropped and reported.
4. For each attack: the adversarial batch (:func:`pd_core.attacks.attack`), then the predictions
   with no defence, one defended copy ("single") and the majority vote of ``ensemble`` copies
   ("ens10"), or the Table 3 / Table 4 defence variants. The clean row (attack ``"clean"``) goes
   through the same defences.

Results are appended to a CSV, one row per (image, attack, defence), as each (batch of images ×
attack) finishes, with a JSON sidecar ``<csv>.meta.json`` recording the model, the parameters,
the library versions, the seed and the date. A restarted run reads the CSV and skips finished rows.

Reproducibility. The deflection randomness of an image comes from its own generator seeded with
``derive_seed(seed, image name, attack)`` (never from its position in a batch), and the same seed
is used for every defence variant of that (image, attack) — common random numbers, so Table 3's
PD, PD+JPEG and WD+PD see the same deflections. Attacks run on fixed chunks of ``batch_size``
images (chunk i is always the same images), seeded from the chunk's image names, so a resumed run
recomputes exactly what an uninterrupted one does; keep ``batch_size`` when resuming (the CSV
sidecar records it) because batched floating point may differ in the last bits between batch
compositions. Raising ``limit`` later extends the same prefix of images and reuses the finished
rows; with a ``limit`` that is a multiple of ``batch_size`` the rows are exactly those of a single
run with the larger limit (otherwise the last, partial chunk is attacked in a different batch,
which changes PGD's random start).

Accuracies carry their sample size and a Wilson 95% interval (:func:`wilson_interval`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from .defence import (PAPER_DEFAULTS, TABLE3_DEFENCES, TABLE4_DEFENCES, DefenceConfig,
                      defend_batch, predict_probs, vote)
from .deflection import deflect, make_generator
from .maps import robust_activation_map

__all__ = [
    "evaluate", "EvaluationResult", "EvaluationError", "format_table", "table_frame", "summarize",
    "wilson_interval", "derive_seed", "split_tuning", "read_results", "load_items",
    "deflection_curve", "tuning_grid", "rank_histogram", "PAPER_TABLE1", "PAPER_TABLE3",
    "PAPER_TABLE4", "TABLE_DEFENCES", "ATTACK_ORDER", "ATTACK_TITLES", "CSV_COLUMNS",
    "add_evaluate_parser",
]

Progress = Callable[[float, str], object]

#: Row order of the paper's tables; attacks the paper does not have (PGD) come after.
ATTACK_ORDER = ("clean", "fgsm", "igsm", "deepfool", "jsma", "lbfgs", "cw", "pgd")
ATTACK_TITLES = {"clean": "Clean", "fgsm": "FGSM", "igsm": "IGSM", "deepfool": "DFool", "jsma": "JSMA",
                 "lbfgs": "LBFGS", "cw": "C&W", "pgd": "PGD"}
#: The paper's Table 1 attacks in its order (the default attack list).
PAPER_ATTACKS = ("fgsm", "igsm", "deepfool", "jsma", "lbfgs", "cw")

CSV_COLUMNS = ("image", "label", "attack", "preset", "defence", "prediction", "correct", "norm_l2",
               "linf_255", "psnr", "seed", "attack_seed", "copies", "agreement", "single_correct",
               "attack_success", "adv_rank_in_clean_top5", "true_rank_in_adv_top5")

TUNING_SALT = "pd-tuning-split-v1"
DEFAULT_TUNING_FRACTION = 0.2

# --------------------------------------------------------------------------------------------
# The paper's numbers (ResNet-50, paper Tables 1, 3, 4), for side-by-side display.
# Table 1: attack -> (|L2|, no defence, single, Ens-10), per preset ("paper" = the main rows,
# "large" = the "Large perturbations" rows). Tables 3 and 4: attack -> {defence: accuracy}; their
# WD+PD and Bayes columns equal Table 1's Ens-10 column, so they are Ens-10 accuracies.
# --------------------------------------------------------------------------------------------

PAPER_TABLE1: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "paper": {
        "clean": (0.00, 100.0, 98.3, 98.9),
        "fgsm": (0.05, 20.0, 79.9, 81.5),
        "igsm": (0.03, 14.1, 83.7, 83.7),
        "deepfool": (0.02, 26.3, 86.3, 90.3),
        "jsma": (0.02, 25.5, 91.5, 97.0),
        "lbfgs": (0.02, 12.1, 88.0, 91.6),
        "cw": (0.04, 4.8, 92.7, 98.0),
    },
    "large": {
        "fgsm": (0.12, 11.1, 61.5, 70.4),
        "igsm": (0.09, 11.1, 62.5, 72.5),
        "deepfool": (0.08, 8.0, 82.4, 88.9),
        "jsma": (0.05, 22.1, 88.9, 92.1),
        "lbfgs": (0.04, 12.1, 77.0, 89.0),
    },
}
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "clean": {"jpeg": 96.1, "wd": 98.7, "pd": 97.4, "pd+jpeg": 96.1, "wd+pd+jpeg": 96.1, "wd+pd": 98.9},
    "fgsm": {"jpeg": 49.1, "wd": 40.6, "pd": 79.7, "pd+jpeg": 81.1, "wd+pd+jpeg": 78.8, "wd+pd": 81.5},
    "igsm": {"jpeg": 49.1, "wd": 31.2, "pd": 82.4, "pd+jpeg": 82.4, "wd+pd+jpeg": 79.7, "wd+pd": 83.7},
    "deepfool": {"jpeg": 67.8, "wd": 61.1, "pd": 86.3, "pd+jpeg": 86.3, "wd+pd+jpeg": 86.3, "wd+pd": 90.3},
    "jsma": {"jpeg": 91.6, "wd": 89.1, "pd": 95.7, "pd+jpeg": 93.0, "wd+pd+jpeg": 93.0, "wd+pd": 97.0},
    "lbfgs": {"jpeg": 71.8, "wd": 67.2, "pd": 90.3, "pd+jpeg": 89.1, "wd+pd+jpeg": 88.9, "wd+pd": 91.6},
    "cw": {"jpeg": 85.5, "wd": 95.4, "pd": 95.4, "pd+jpeg": 94.1, "wd+pd+jpeg": 93.4, "wd+pd": 98.0},
}
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "clean": {"hard": 39.5, "visu": 96.1, "sure": 92.1, "bayes": 98.9},
    "fgsm": {"hard": 35.9, "visu": 63.8, "sure": 79.7, "bayes": 81.5},
    "igsm": {"hard": 42.5, "visu": 67.8, "sure": 81.1, "bayes": 83.7},
    "deepfool": {"hard": 37.2, "visu": 78.4, "sure": 87.7, "bayes": 90.3},
    "jsma": {"hard": 39.9, "visu": 93.0, "sure": 93.0, "bayes": 97.0},
    "lbfgs": {"hard": 37.2, "visu": 81.1, "sure": 90.4, "bayes": 91.6},
    "cw": {"hard": 36.8, "visu": 93.4, "sure": 92.8, "bayes": 98.0},
}

#: Column titles of each table (the CSV ``defence`` values, in the paper's column order).
TABLE3_TITLES = {"jpeg": "JPG", "wd": "WD", "pd": "PD", "pd+jpeg": "PD+JPG", "wd+pd+jpeg": "WD+PD+JPG",
                 "wd+pd": "WD+PD"}
TABLE4_TITLES = {"hard": "Hard", "visu": "VISU", "sure": "SURE", "bayes": "Bayes"}


def _ens_name(n: int) -> str:
    return f"ens{int(n)}"


def TABLE_DEFENCES(table: int, ensemble: int = 10) -> list[str]:  # noqa: N802 (reads like a constant)
    """The ``defence`` values of a table's columns, in the paper's order (``none`` first)."""
    if table == 1:
        return ["none", "single"] + ([_ens_name(ensemble)] if ensemble > 1 else [])
    if table == 3:
        return ["none", *TABLE3_DEFENCES]
    if table == 4:
        return ["none", *TABLE4_DEFENCES]
    raise EvaluationError(f"table must be 1, 3 or 4, not {table!r}.")


class EvaluationError(ValueError):
    """An expected failure (bad folder, incompatible results file, ...): a one-sentence message."""


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927), as fractions in [0, 1].

    ``centre = (p + z²/2n) / (1 + z²/n)``, ``half = z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n)`` with
    ``p = successes / n`` and z the two-sided normal quantile (1.95996 for 95%). Unlike the normal
    approximation it stays inside [0, 1] and is sensible at p = 0 or 1 and small n.
    ``n = 0`` gives ``(nan, nan)``.
    """
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 ≤ successes ≤ n, got successes={successes}, n={n}.")
    if n == 0:
        return (math.nan, math.nan)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and names (image, attack, ...): SHA-256 of their text.

    Depends only on the values, never on batch position or process, so a resumed or re-batched run
    draws the same deflections for the same (image, attack).
    """
    text = "|".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _hash_unit(name: str) -> float:
    """Position of ``name`` in [0, 1) from its SHA-256 (the split and the evaluation order)."""
    digest = hashlib.sha256(f"{TUNING_SALT}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


@dataclass(frozen=True)
class Item:
    """One labelled image: ``name`` (what the CSV calls it), ``path`` and ImageNet ``label``."""

    name: str
    path: Path
    label: int


def split_tuning(items: Sequence[Item], tuning_fraction: float = DEFAULT_TUNING_FRACTION
                 ) -> tuple[list[Item], list[Item]]:
    """Split items deterministically into (evaluation, tuning) by the hash of each image's name.

    An image is a tuning image when ``_hash_unit(name) < tuning_fraction`` (SHA-256 of
    ``"pd-tuning-split-v1|<name>"`` read as a fraction of 2⁶⁴). The split of an image never depends
    on the other images, so adding files to a folder never moves an image between the parts. Both
    parts come back in hash order. ``tuning_fraction = 0`` puts everything in evaluation.
    """
    if not 0 <= tuning_fraction < 1:
        raise EvaluationError(f"tuning_fraction must be in [0, 1), got {tuning_fraction}.")
    ordered = sorted(items, key=lambda it: (_hash_unit(it.name), it.name))
    evaluation = [it for it in ordered if _hash_unit(it.name) >= tuning_fraction]
    tuning = [it for it in ordered if _hash_unit(it.name) < tuning_fraction]
    return evaluation, tuning


def load_items(images: str | os.PathLike | Sequence, labels_csv: str | os.PathLike | None = None
               ) -> list[Item]:
    """The labelled images of a folder (``labels.csv`` or WordNet-id prefix), or of a list of
    ``(path, label)`` pairs. Names are paths relative to the folder, or file names for a list
    (full paths where two files share a name)."""
    if isinstance(images, (str, os.PathLike)):
        from .images import InputError, read_labelled_folder

        folder = Path(images)
        if not folder.is_dir():
            raise EvaluationError(f"{folder} is not a folder of images.")
        try:
            pairs = read_labelled_folder(folder, labels_csv)
        except InputError as exc:
            raise EvaluationError(str(exc)) from None
        items = []
        for path, label in pairs:
            path = Path(path)
            try:
                name = path.relative_to(folder).as_posix()
            except ValueError:
                name = path.name
            items.append(Item(name, path, int(label)))
    else:
        pairs = [(Path(p), int(lbl)) for p, lbl in images]
        names = [p.name for p, _ in pairs]
        dup = {n for n in names if names.count(n) > 1}
        items = [Item(str(p) if p.name in dup else p.name, p, lbl) for p, lbl in pairs]
    for it in items:
        if not 0 <= it.label < 1000:
            raise EvaluationError(f"{it.name}: label {it.label} is not an ImageNet class index (0-999).")
    if not items:
        skipped = getattr(pairs, "skipped", [])
        detail = (f" ({len(skipped)} file(s) left out, e.g. {Path(skipped[0][0]).name}: {skipped[0][1]})"
                  if skipped else "")
        raise EvaluationError(f"no labelled images found{detail}.")
    return items


# --------------------------------------------------------------------------------------------
# Results file
# --------------------------------------------------------------------------------------------

def _meta_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".meta.json")


def read_results(csv_path: str | os.PathLike):
    """The rows of a results CSV as a pandas DataFrame (an incomplete last line is ignored)."""
    import pandas as pd

    path = Path(csv_path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(CSV_COLUMNS))
    text = path.read_text()
    if not text.endswith("\n"):  # a run killed in the middle of a write
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text), dtype={"image": str, "attack": str, "preset": str,
                                                   "defence": str})
    missing = [c for c in ("image", "label", "attack", "preset", "defence", "prediction", "correct")
               if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path} is not a results file of this program (missing {', '.join(missing)}).")
    return frame


def _repair_tail(path: Path) -> None:
    """Cut an incomplete last line (left by a kill during a write) so appends stay well formed."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.seek(0)
        fh.truncate(data.rfind(b"\n") + 1)


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows in one write, then flush and fsync: a unit is in the file whole or not at all
    (a torn last line is cut by :func:`_repair_tail` / ignored by :func:`read_results`)."""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    new = not path.exists() or path.stat().st_size == 0
    if new:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    with path.open("a", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _versions() -> dict:
    from importlib import metadata

    from . import __version__

    out = {"pd_core": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "torchvision", "timm", "foolbox", "ptwt", "PyWavelets", "scikit-image", "numpy",
                 "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["torch"] = torch.__version__  # with the build tag (+cpu, +cu130), which the metadata lacks
    out["git_commit"] = _git_commit()
    return out


def _git_commit() -> str | None:
    """The checkout's commit (with "+dirty" when pd_core has uncommitted changes), or None."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here)], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


# --------------------------------------------------------------------------------------------
# The result object
# --------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    rows: every CSV row (pandas DataFrame), including those of earlier runs into the same file.
    summary: one row per (attack, preset, defence) over the counted images (:func:`summarize`).
    images: evaluation images considered; kept: correctly classified before any attack;
    dropped: names of the images the undefended model misclassified; unreadable: name -> reason.
    meta: the sidecar's content. csv_path: where the rows are (None for an in-memory run).
    """

    rows: object
    summary: object
    images: int
    kept: int
    dropped: list[str]
    unreadable: dict[str, str]
    meta: dict
    csv_path: Path | None
    table: int = 1
    preset: str = "paper"
    ensemble: int = 10
    seconds: float = 0.0

    def format_table(self, table: int | None = None, preset: str | None = None, paper: bool = True) -> str:
        return format_table(self, table=table or self.table, preset=preset or self.preset, paper=paper)


def _counted(rows):
    """Rows of images whose clean, undefended prediction is right (the protocol's images)."""
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    ok = set(clean.loc[clean["correct"].astype(int) == 1, "image"])
    return rows[rows["image"].isin(ok)]


def summarize(rows, confidence: float = 0.95):
    """Accuracy per (attack, preset, defence) over the counted images, with n, Wilson interval and
    the mean norms of the adversarial images. Accuracy and interval are fractions in [0, 1]."""
    import pandas as pd

    counted = _counted(rows)
    out = []
    for (attack, preset, defence), g in counted.groupby(["attack", "preset", "defence"], sort=False):
        n, k = len(g), int(g["correct"].astype(int).sum())
        lo, hi = wilson_interval(k, n, confidence)
        out.append({"attack": attack, "preset": preset, "defence": defence, "n": n, "correct": k,
                    "accuracy": k / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                    "mean_norm_l2": pd.to_numeric(g["norm_l2"], errors="coerce").mean(),
                    "mean_linf_255": pd.to_numeric(g["linf_255"], errors="coerce").mean(),
                    "mean_psnr": pd.to_numeric(g["psnr"], errors="coerce").replace(math.inf, math.nan).mean()})
    return pd.DataFrame(out, columns=["attack", "preset", "defence", "n", "correct", "accuracy", "ci_low",
                                      "ci_high", "mean_norm_l2", "mean_linf_255", "mean_psnr"])


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------

def _defences_for(table: int, ensemble: int, config: DefenceConfig) -> dict[str, tuple[DefenceConfig, int]]:
    """Defence name -> (config, copies) for one table. Deterministic variants (no deflection) need
    one copy; random ones ``ensemble`` copies (Tables 3/4 report the Ens-n vote, as the paper's
    WD+PD and Bayes columns equal its Ens-10 column)."""
    copies = max(1, int(ensemble))
    if table == 1:
        return {"ens": (config, copies)}
    variants = TABLE3_DEFENCES if table == 3 else TABLE4_DEFENCES
    # The variants are stage switches on the paper's defaults; apply them to ``config`` so a
    # non-default σ/K/r passed by the caller is honoured in the ablation too.
    base = PAPER_DEFAULTS
    out = {}
    for name, variant in variants.items():
        changes = {k: getattr(variant, k) for k in variant.as_dict() if getattr(variant, k) != getattr(base, k)}
        cfg = replace(config, **changes)
        random = cfg.deflect and cfg.deflections > 0
        out[name] = (cfg, copies if random else 1)
    return out


def defended_copies(model, x: torch.Tensor, rmap: torch.Tensor | None, config: DefenceConfig,
                     copies: int, seeds: Sequence[int]) -> torch.Tensor:
    """``copies`` defended versions of each image, image-major (N·copies, 3, S, S).

    Deflection is drawn per image with its own generator (seeded from the image's name, so the
    result does not depend on the batch); the map was computed for the whole batch in one pass, and
    the denoising / JPEG stages run on the whole batch at once through :func:`defend_batch`.
    """
    if config.deflect and config.deflections > 0:
        parts = []
        for i, s in enumerate(seeds):
            gen = make_generator(s, x.device)
            rep = x[i:i + 1].expand(copies, -1, -1, -1)
            m = None if (rmap is None or not config.use_map) else rmap[i:i + 1].expand(copies, -1, -1)
            parts.append(deflect(rep, m, config.deflections, config.window, generator=gen))
        out = torch.cat(parts)
    else:
        out = x.repeat_interleave(copies, dim=0) if copies > 1 else x
    if config.denoise or config.jpeg_quality is not None:
        out = defend_batch(model, out, 1, replace(config, deflect=False), seed=0)
    return out


# How the model sees batches on the CPU. Measured here (one thread, CPU time per image,
# EfficientNet-Lite0 at 224²): forward 21.6 ms at batch 1 (NCHW), 16.2 ms at batch 4 channels-last
# (NHWC), 23.5 / 27.0 ms at 8 / 16 NHWC, 38.2 ms at 16 NCHW; forward + input gradient 53.4 ms at 1
# NCHW, 43.8 / 43.4 / 45.3 ms at 4 / 8 / 16 NHWC, 61.5 ms at 16 NCHW. Large batches spill the
# caches, so on the CPU the model gets mini-batches of CPU_MODEL_BATCH images in NHWC layout; on a
# GPU it gets whole chunks. Values are the same up to float rounding order.
CHANNELS_LAST_ON_CPU = True
CPU_MODEL_BATCH = 4


def _model_batch(model, default: int) -> int:
    """Images per model call: :data:`CPU_MODEL_BATCH` on the CPU, ``default`` elsewhere."""
    return CPU_MODEL_BATCH if model.device.type == "cpu" else max(1, int(default))


def _classify(model, images: torch.Tensor, default_batch: int) -> torch.Tensor:
    """Softmax probabilities of a batch, in the device's best mini-batch size and layout."""
    return predict_probs(model, _fast_layout(images), _model_batch(model, default_batch))


def _maps(model, images: torch.Tensor, top_k: int, default_batch: int):
    """:func:`robust_activation_map` in the device's best mini-batch size (one forward pass per
    image gives both the prediction and the map)."""
    from .maps import ActivationMaps

    parts = [robust_activation_map(model, _fast_layout(c), top_k=top_k)
             for c in images.split(_model_batch(model, default_batch))]
    return ActivationMaps(*(torch.cat([getattr(p, f) for p in parts]).contiguous()
                            for f in ("rmap", "logits", "classes", "cams")), parts[0].gradcam)


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """The batch in channels-last layout on the CPU, for the model only (never for deflection, which
    indexes the flat NCHW buffer). Values are the same up to float rounding order."""
    if CHANNELS_LAST_ON_CPU and x.device.type == "cpu" and x.ndim == 4 and x.shape[0] > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class _FastLayoutModel(torch.nn.Module):
    """The shared classifier seen through :func:`_fast_layout` (for the attacks' forward and
    backward passes). Not a copy: the classifier is kept outside the module tree, so nothing here
    can move or modify it; ``spec``, ``device`` and ``name`` are the classifier's."""

    def __init__(self, model):
        super().__init__()
        object.__setattr__(self, "inner", model)
        self.eval()

    spec = property(lambda self: self.inner.spec)
    device = property(lambda self: self.inner.device)
    name = property(lambda self: self.inner.name)
    input_size = property(lambda self: self.inner.input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(_fast_layout(images))


def _ranks(clean_top5: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``cls`` (N,) within each row of ``clean_top5`` (N, 5); 0 when absent (Fig. 6)."""
    hit = clean_top5 == cls[:, None]
    pos = torch.arange(1, clean_top5.shape[1] + 1, device=clean_top5.device)
    return (hit * pos).sum(1)


def load_labelled_images(items: Sequence[Item], model) -> tuple[torch.Tensor, list[Item], dict[str, str]]:
    """Load a chunk; unreadable files are skipped and reported (never a crash)."""
    from .images import ImageError, load_batch, load_image

    try:
        return load_batch([it.path for it in items], spec=model.spec, device=model.device), list(items), {}
    except ImageError:
        pass
    good, tensors, bad = [], [], {}
    for it in items:
        try:
            tensors.append(load_image(it.path, spec=model.spec, device=model.device))
            good.append(it)
        except ImageError as exc:
            bad[it.name] = str(exc)
    x = torch.cat(tensors) if tensors else torch.empty(0, 3, model.input_size, model.input_size,
                                                       device=model.device)
    return x, good, bad


# Rough CPU seconds per image (2 threads, EfficientNet-Lite0) for the progress estimate before a
# measurement exists; replaced by the measured time of each attack after its first chunk.
_COST_PRIOR = {"clean": 0.5, "fgsm": 0.7, "igsm": 1.5, "pgd": 3.0, "deepfool": 4.0, "jsma": 10.0,
               "lbfgs": 10.0, "cw": 25.0}


class _Tracker:
    """Fraction done and time left, weighting each (chunk, attack) unit by its measured cost."""

    def __init__(self, units: list[tuple[int, str, int]], callback: Progress | None):
        self.units = units  # (chunk index, attack, images)
        self.callback = callback
        self.done: set[tuple[int, str]] = set()
        self.rate: dict[str, float] = {}  # measured seconds per image
        self.last = 0.0
        self.started = time.monotonic()

    def _cost(self, attack: str, n: int) -> float:
        return self.rate.get(attack, _COST_PRIOR.get(attack, 5.0)) * max(n, 1)

    def report(self, partial: tuple[int, str, float] | None = None, message: str = "") -> None:
        if self.callback is None:
            return
        total = sum(self._cost(a, n) for _, a, n in self.units)
        done = sum(self._cost(a, n) for c, a, n in self.units if (c, a) in self.done)
        if partial is not None:
            c, a, f = partial
            n = next(n for cc, aa, n in self.units if (cc, aa) == (c, a))
            done += min(max(f, 0.0), 1.0) * self._cost(a, n)
        frac = min(1.0, done / total) if total else 1.0
        self.last = max(self.last, frac)
        self.callback(self.last, message)

    def finish(self, chunk: int, attack: str, n: int, seconds: float, skipped: bool) -> None:
        self.done.add((chunk, attack))
        if not skipped and n:
            # Exponential average: the first chunks include warm-up.
            old = self.rate.get(attack)
            rate = seconds / n
            self.rate[attack] = rate if old is None else 0.5 * old + 0.5 * rate


def _check_meta(meta_path: Path, settings: dict) -> dict:
    """Read an existing sidecar and refuse to mix results made with other settings."""
    if not meta_path.exists():
        return {}
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise EvaluationError(f"{meta_path} is unreadable; delete it (and its CSV) or choose another output file.") from None
    old_settings = old.get("settings", {})
    diff = [k for k in settings if k in old_settings and old_settings[k] != settings[k]]
    if diff:
        detail = ", ".join(f"{k}: {old_settings[k]!r} in the file, {settings[k]!r} now" for k in diff)
        raise EvaluationError(f"the results file was made with other settings ({detail}); "
                              f"choose another output file or use the same settings to resume.")
    return old


def evaluate(model, images, *, attacks: Iterable[str] = PAPER_ATTACKS, preset: str = "paper",
             table: int = 1, ensemble: int = 10, limit: int | None = None, seed: int = 0,
             out_csv: str | os.PathLike | None = None, progress: Progress | None = None,
             batch_size: int = 16, labels_csv: str | os.PathLike | None = None,
             config: DefenceConfig | None = None,
             tuning_fraction: float = DEFAULT_TUNING_FRACTION,
             attack_params: dict[str, dict] | None = None) -> EvaluationResult:
    """Run the paper's protocol (§9–10) on labelled images and return accuracies with intervals.

    Parameters
    ----------
    model : a :class:`pd_core.models.Classifier`; everything runs on its device.
    images : a folder (labels from ``labels_csv``, its ``labels.csv``, or WordNet-id prefixes) or a
        list of ``(path, label)``. Only its evaluation part is used (:func:`split_tuning` with
        ``tuning_fraction``; 0 uses every image).
    attacks : names from :data:`pd_core.attacks.ATTACKS`; the clean row is always added.
    preset : attack strength, ``"paper"``, ``"large"`` or ``"interactive"``.
    table : 1 (no defence / single / Ens-n), 3 (JPEG, WD, PD, ... ablation) or 4 (thresholds).
        Every table also records the undefended prediction (``defence = "none"``).
    ensemble : copies in the majority vote (paper: 10). Table 1's single-run column is the first
        of these copies; Tables 3/4 report the vote for randomised variants.
    limit : use the first ``limit`` evaluation images (hash order) before dropping misclassified ones.
    seed : base seed; per-image seeds are :func:`derive_seed` (seed, image name, attack).
    out_csv : results file; rows are appended as each (chunk × attack) finishes and a restarted run
        skips the finished rows. ``None``: keep results in memory only.
    progress : ``callback(fraction, message)``; may raise to stop the run (finished rows stay).
    batch_size : images per chunk (attacks run on one chunk at a time; copies are classified in
        batches of ``4·batch_size``). Keep it when resuming.
    config : the defence (paper defaults when None). Never retune it on evaluation images.
    attack_params : per-attack overrides of the preset's parameters, ``{"cw": {"steps": 50}}``.

    Returns
    -------
    :class:`EvaluationResult`.
    """
    import pandas as pd

    from .attacks import ATTACKS, attack as run_attack

    started = time.monotonic()
    config = config or PAPER_DEFAULTS
    attacks = [a.strip().lower() for a in attacks if a and a.strip()]
    attacks = [a for a in attacks if a != "clean"]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise EvaluationError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(ATTACKS)}.")
    attacks = list(dict.fromkeys(attacks))
    if table not in (1, 3, 4):
        raise EvaluationError(f"table must be 1, 3 or 4, not {table!r}.")
    if int(ensemble) < 1:
        raise EvaluationError("ensemble must be at least 1.")
    if int(batch_size) < 1:
        raise EvaluationError("batch_size must be at least 1.")
    ensemble, batch_size = int(ensemble), int(batch_size)
    attack_params = attack_params or {}

    items = load_items(images, labels_csv)
    evaluation, _ = split_tuning(items, tuning_fraction)
    if limit is not None:
        if int(limit) < 1:
            raise EvaluationError("limit must be at least 1.")
        evaluation = evaluation[: int(limit)]
    if not evaluation:
        raise EvaluationError("no evaluation images (all went to the tuning subset); lower tuning_fraction.")

    defences = _defences_for(table, ensemble, config)
    names_out = TABLE_DEFENCES(table, ensemble)

    settings = {"model": model.name, "seed": int(seed), "ensemble": ensemble, "defence": config.as_dict(),
                "tuning_fraction": tuning_fraction, "tuning_salt": TUNING_SALT}
    csv_path = Path(out_csv) if out_csv is not None else None
    meta = {}
    existing = pd.DataFrame(columns=list(CSV_COLUMNS))
    if csv_path is not None:
        if csv_path.exists() and csv_path.is_dir():
            raise EvaluationError(f"{csv_path} is a folder; give a file name for the results.")
        if not csv_path.parent.exists():
            raise EvaluationError(f"the folder {csv_path.parent} does not exist.")
        meta = _check_meta(_meta_path(csv_path), settings)
        _repair_tail(csv_path)
        existing = read_results(csv_path)
    done = set(zip(existing["image"].astype(str), existing["attack"].astype(str),
                   existing["preset"].astype(str), existing["defence"].astype(str)))
    clean_known = {r.image: int(r.correct) for r in existing[(existing["attack"] == "clean")
                                                             & (existing["defence"] == "none")].itertuples()}

    run_record = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "table": table,
                  "preset": preset, "attacks": attacks, "limit": limit, "batch_size": batch_size,
                  "images": len(evaluation), "device": str(model.device),
                  "torch_threads": torch.get_num_threads()}
    meta.setdefault("created", run_record["date"])
    meta["settings"] = settings
    meta["model"] = {"name": model.name, "title": model.spec.title, "source": model.spec.source}
    meta["versions"] = _versions()
    run_record["versions"] = meta["versions"]
    meta.setdefault("attack_params", {})
    # Rows of one file must come from one setting of each attack: a preset edited since the file
    # was started (or other overrides) would silently mix two attacks in one row of the table.
    for name in attacks:
        requested = json.loads(json.dumps({**ATTACKS[name].preset(preset), **attack_params.get(name, {})},
                                          default=str))  # as the sidecar stores it (tuples -> lists)
        stored = meta["attack_params"].get(f"{name}/{preset}")
        if stored is not None:
            changed = sorted(k for k in requested if k in stored and stored[k] != requested[k])
            if changed:
                raise EvaluationError(
                    f"the results file has {name} '{preset}' rows made with other parameters "
                    f"({', '.join(f'{k}: {stored[k]!r} then, {requested[k]!r} now' for k in changed)}); "
                    "choose another output file.")
    meta.setdefault("runs", []).append(run_record)
    meta.setdefault("defences", {})[f"table {table}"] = {name: {"config": cfg.as_dict(), "copies": c}
                                                          for name, (cfg, c) in defences.items()}
    meta["protocol"] = ("images the undefended model misclassifies are dropped; per image and attack the "
                        "deflection seed is derive_seed(seed, image, attack) (SHA-256); tuning split: "
                        f"SHA-256('{TUNING_SALT}|name') < tuning_fraction")

    def write_meta():
        if csv_path is not None:
            _meta_path(csv_path).write_text(json.dumps(meta, indent=2, default=str))

    write_meta()

    chunks = [evaluation[i:i + batch_size] for i in range(0, len(evaluation), batch_size)]
    all_attacks = ["clean", *attacks]
    units = [(ci, a, len(ch)) for ci, ch in enumerate(chunks) for a in all_attacks]
    tracker = _Tracker(units, progress)
    new_rows: list[dict] = []
    unreadable: dict[str, str] = {}

    def needed(it: Item, attack: str) -> list[tuple]:
        """The rows (image, attack, preset, defence) this run must have for ``it``: a dropped image
        has only its clean, undefended row."""
        if clean_known.get(it.name) == 0:
            return [(it.name, "clean", "none", "none")] if attack == "clean" else []
        pre = "none" if attack == "clean" else preset
        return [(it.name, attack, pre, d) for d in names_out]

    tracker.report(message=f"{len(evaluation)} images, {len(all_attacks)} rows")
    for ci, chunk in enumerate(chunks):
        # Which units of this chunk still have rows to write?
        pending = {a: [it for it in chunk if any(k not in done for k in needed(it, a))] for a in all_attacks}
        if not any(pending.values()):
            for a in all_attacks:
                tracker.finish(ci, a, len(chunk), 0.0, skipped=True)
            tracker.report(message=f"chunk {ci + 1}/{len(chunks)} already done")
            continue
        x, good, bad = load_labelled_images(chunk, model)
        unreadable.update(bad)
        index = {it.name: i for i, it in enumerate(good)}
        labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
        with torch.no_grad():
            # One pass per image gives the clean prediction (to drop misclassified images) and the
            # map that the clean row's defence uses.
            clean_maps = _maps(model, x, config.top_k, batch_size) if len(good) else None
        clean_logits = clean_maps.logits if clean_maps is not None else torch.empty(0, 1000, device=model.device)
        clean_pred = clean_logits.argmax(1)
        clean_top5 = clean_logits.topk(5, dim=1).indices
        for it in good:
            clean_known[it.name] = int(clean_pred[index[it.name]] == it.label)

        for a in all_attacks:
            t0 = time.monotonic()
            todo = [it for it in pending[a] if it.name in index]
            rows = []
            if a == "clean":
                # The clean, undefended row of a misclassified image records that it was dropped
                # (a resumed run reads it instead of classifying the image again).
                for it in todo:
                    if clean_known[it.name] == 0 and (it.name, "clean", "none", "none") not in done:
                        i = index[it.name]
                        rows.append(_dropped_row(it, int(clean_pred[i]), derive_seed(seed, it.name, "clean")))
            todo = [it for it in todo if clean_known[it.name] == 1]
            if todo:
                rows += _run_unit(model, x, labels, clean_top5, clean_pred, index, todo, a, preset, defences,
                             ensemble, table, seed, batch_size, config, run_attack, attack_params, meta,
                             done, lambda f, m, ci=ci, a=a: tracker.report((ci, a, f), m), clean_maps)
            if not rows:
                tracker.finish(ci, a, len(chunk), 0.0, skipped=True)
                continue
            if csv_path is not None:
                _append_rows(csv_path, rows)
                write_meta()
            new_rows.extend(rows)
            done.update((r["image"], r["attack"], r["preset"], r["defence"]) for r in rows)
            tracker.finish(ci, a, len(todo), time.monotonic() - t0, skipped=False)
            tracker.report(message=f"{ATTACK_TITLES.get(a, a)}: chunk {ci + 1}/{len(chunks)} done")

    rows = read_results(csv_path) if csv_path is not None else pd.DataFrame(new_rows, columns=list(CSV_COLUMNS))
    names = {it.name for it in evaluation}
    rows_eval = rows[rows["image"].astype(str).isin(names)]
    clean = rows_eval[(rows_eval["attack"] == "clean") & (rows_eval["defence"] == "none")]
    dropped = sorted(clean.loc[clean["correct"].astype(int) == 0, "image"])
    kept = int((clean["correct"].astype(int) == 1).sum())
    seconds = time.monotonic() - started
    meta["runs"][-1].update({"finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                             "seconds": round(seconds, 1), "kept": kept, "dropped": len(dropped),
                             "unreadable": unreadable})
    write_meta()
    return EvaluationResult(rows=rows_eval, summary=summarize(rows_eval), images=len(evaluation), kept=kept,
                            dropped=dropped, unreadable=unreadable, meta=meta, csv_path=csv_path, table=table,
                            preset=preset, ensemble=ensemble, seconds=seconds)


def _run_unit(model, x, labels, clean_top5, clean_pred, index, todo, attack_name, preset, defences, ensemble,
              table, seed, batch_size, config, run_attack, attack_params, meta, done, report,
              clean_maps=None) -> list[dict]:
    """One (chunk × attack) unit: the adversarial batch, then every defence; returns the CSV rows."""
    sel = torch.tensor([index[it.name] for it in todo], device=x.device)
    xs, ys = x[sel], labels[sel]
    n = len(todo)
    pre = "none" if attack_name == "clean" else preset
    attack_seed = derive_seed(seed, attack_name, preset, *[it.name for it in todo])
    if attack_name == "clean":
        adv = xs
        norm_l2 = torch.zeros(n)
        linf = torch.zeros(n)
        psnr = torch.full((n,), math.inf)
    else:
        res = run_attack(_FastLayoutModel(model), xs, ys, attack_name, preset=preset, seed=attack_seed,
                         batch_size=_model_batch(model, batch_size),
                         progress=lambda f, m="": report(0.8 * float(f), f"{ATTACK_TITLES.get(attack_name, attack_name)}: {m}"),
                         **attack_params.get(attack_name, {}))
        adv = res.adversarial.to(x.device).contiguous()  # NCHW for deflection
        norm_l2 = torch.as_tensor(res.norm_l2).detach().float().cpu().reshape(n)
        linf = torch.as_tensor(res.linf_255).detach().float().cpu().reshape(n)
        psnr = torch.as_tensor(res.psnr).detach().float().cpu().reshape(n)
        meta["attack_params"].setdefault(f"{attack_name}/{preset}", dict(res.params))
    # One pass gives the undefended prediction and the robust activation map (SPEC §1.1).
    if attack_name == "clean" and clean_maps is not None:
        maps = type(clean_maps)(*(t[sel] for t in clean_maps[:4]), clean_maps.gradcam)
    else:
        maps = _maps(model, adv, config.top_k, batch_size)
    adv_pred = maps.logits.argmax(1)
    adv_top5 = maps.logits.topk(5, dim=1).indices
    rank_adv = _ranks(clean_top5[sel], adv_pred).cpu()
    rank_true = _ranks(adv_top5, ys).cpu()
    seeds = [derive_seed(seed, it.name, attack_name) for it in todo]
    success = (adv_pred != ys).cpu()

    preds: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}
    ones = torch.ones(n)
    preds["none"] = (adv_pred.cpu(), ones, (adv_pred == ys).cpu(), 1)
    for j, (name, (cfg, copies)) in enumerate(defences.items()):
        report(0.8 + 0.2 * j / max(len(defences), 1), f"{ATTACK_TITLES.get(attack_name, attack_name)}: defending")
        rmap = maps.rmap if (cfg.deflect and cfg.use_map) else None
        defended = defended_copies(model, adv, rmap, cfg, copies, seeds)
        probs = _classify(model, defended, 4 * batch_size).view(n, copies, -1)
        voted = vote(probs)
        single = voted.votes[:, 0]
        if table == 1:
            preds["single"] = (single.cpu(), ones, (single == ys).cpu(), 1)
            if ensemble > 1:
                preds[_ens_name(ensemble)] = (voted.prediction.cpu(), voted.agreement.cpu(),
                                              (voted.prediction == ys).cpu(), copies)
        else:
            preds[name] = (voted.prediction.cpu(), voted.agreement.cpu(), (voted.prediction == ys).cpu(), copies,
                           (single == ys).cpu())
    rows = []
    for i, it in enumerate(todo):
        for name, value in preds.items():
            key = (it.name, attack_name, pre, name)
            if key in done:
                continue
            pred, agree, correct, copies = value[:4]
            single_correct = value[4][i] if len(value) > 4 else correct[i]
            rows.append({"image": it.name, "label": it.label, "attack": attack_name, "preset": pre,
                         "defence": name, "prediction": int(pred[i]), "correct": int(correct[i]),
                         "norm_l2": float(norm_l2[i]), "linf_255": float(linf[i]), "psnr": float(psnr[i]),
                         "seed": seeds[i], "attack_seed": attack_seed, "copies": copies,
                         "agreement": float(agree[i]), "single_correct": int(single_correct),
                         "attack_success": int(success[i]), "adv_rank_in_clean_top5": int(rank_adv[i]),
                         "true_rank_in_adv_top5": int(rank_true[i])})
    return rows


def _dropped_row(it: Item, prediction: int, seed: int) -> dict:
    return {"image": it.name, "label": it.label, "attack": "clean", "preset": "none", "defence": "none",
            "prediction": prediction, "correct": 0, "norm_l2": 0.0, "linf_255": 0.0, "psnr": math.inf,
            "seed": seed, "attack_seed": "", "copies": 1, "agreement": 1.0, "single_correct": 0,
            "attack_success": "", "adv_rank_in_clean_top5": "", "true_rank_in_adv_top5": ""}


# --------------------------------------------------------------------------------------------
# Tables in the paper's layout
# --------------------------------------------------------------------------------------------

def _rows_of(results):
    import pandas as pd

    if isinstance(results, EvaluationResult):
        return results.rows
    if isinstance(results, pd.DataFrame):
        return results
    return read_results(results)


def _paper_value(table: int, preset: str, attack: str, defence: str) -> float | None:
    """The paper's (ResNet-50) accuracy in % for one cell, or None where the paper has none.
    The clean row does not depend on the attack preset."""
    if attack == "clean":
        preset = "paper"
    t1 = PAPER_TABLE1.get(preset, {}).get(attack)
    if defence == "none":
        return t1[1] if t1 else None
    if table == 1:
        if t1 is None:
            return None
        return t1[2] if defence == "single" else t1[3] if defence.startswith("ens") else None
    if preset != "paper":
        return None
    paper = PAPER_TABLE3 if table == 3 else PAPER_TABLE4
    return paper.get(attack, {}).get(defence)


def _column_titles(table: int, defences: Sequence[str]) -> dict[str, str]:
    titles = {"none": "No defence", "single": "Single"}
    titles.update(TABLE3_TITLES if table == 3 else TABLE4_TITLES if table == 4 else {})
    for d in defences:
        if d.startswith("ens"):
            titles[d] = f"Ens-{d[3:]}"
    return {d: titles.get(d, d) for d in defences}


def _table_defences(summary, table: int, ensemble: int | None) -> list[str]:
    if table == 1:
        ens = sorted({d for d in summary["defence"] if str(d).startswith("ens")},
                     key=lambda d: int(d[3:]) if d[3:].isdigit() else 0)
        if ensemble is not None and _ens_name(ensemble) in ens:
            ens = [_ens_name(ensemble)]
        return ["none", "single", *ens[-1:]]
    return TABLE_DEFENCES(table)


def _table_attacks(summary, preset: str) -> list[str]:
    present = set(summary.loc[summary["preset"] == preset, "attack"])
    if (summary["attack"] == "clean").any():
        present.add("clean")
    order = [a for a in ATTACK_ORDER if a in present]
    return order + sorted(present - set(order))


def table_frame(results, table: int = 1, preset: str = "paper", ensemble: int | None = None):
    """The measured table in the paper's layout as a DataFrame (one row per attack).

    Columns: ``attack``, ``n``, ``|L2|`` (mean normalised L2 achieved), ``paper |L2|``, and per
    defence column ``<title>`` (accuracy %), ``<title> CI`` (Wilson 95%, "lo–hi" in %),
    ``<title> n`` and ``paper <title>`` (the paper's ResNet-50 value, NaN where it has none).
    """
    import pandas as pd

    rows = _rows_of(results)
    summary = summarize(rows)
    if ensemble is None and isinstance(results, EvaluationResult):
        ensemble = results.ensemble
    defences = _table_defences(summary, table, ensemble)
    titles = _column_titles(table, defences)
    counted = _counted(rows)
    out = []
    for attack in _table_attacks(summary, preset):
        pre = "none" if attack == "clean" else preset
        sub = counted[(counted["attack"] == attack) & (counted["preset"] == pre) & counted["defence"].isin(defences)]
        present = [d for d in defences if (sub["defence"] == d).any()]
        if not [d for d in present if d != "none"]:
            continue  # e.g. PGD in Table 3: only its undefended rows exist
        # Every cell of a row is computed on the same images: those with all the row's columns (a
        # file may hold Table 1 on many images and Table 3 on a few).
        images = set.intersection(*(set(sub.loc[sub["defence"] == d, "image"]) for d in present))
        sub = sub[sub["image"].isin(images)]
        base = sub[sub["defence"] == present[0]]
        paper_t1 = PAPER_TABLE1.get("paper" if attack == "clean" else preset, {}).get(attack)
        rec = {"attack": ATTACK_TITLES.get(attack, attack), "key": attack, "n": len(images),
               "|L2|": float(pd.to_numeric(base["norm_l2"], errors="coerce").mean()),
               "paper |L2|": paper_t1[0] if paper_t1 else math.nan}
        for d in defences:
            title = titles[d]
            g = sub[sub["defence"] == d]
            n, k = len(g), int(g["correct"].astype(int).sum())
            lo, hi = wilson_interval(k, n)
            rec[title] = 100 * k / n if n else math.nan
            rec[f"{title} CI"] = f"{100 * lo:.1f}–{100 * hi:.1f}" if n else ""
            rec[f"{title} n"] = n
            p = _paper_value(table, preset, attack, d)
            rec[f"paper {title}"] = p if p is not None else math.nan
        out.append(rec)
    return pd.DataFrame(out)


def format_table(results, table: int = 1, preset: str = "paper", paper: bool = True,
                 ensemble: int | None = None) -> str:
    """The measured table as text in the paper's layout (rows: attacks; columns: |L2|, then the
    defences), each accuracy in % with its Wilson 95% interval, the row's n, and below it the
    paper's ResNet-50 numbers for the same cells."""
    rows = _rows_of(results)
    frame = table_frame(rows, table, preset, ensemble if ensemble is not None else
                        (results.ensemble if isinstance(results, EvaluationResult) else None))
    summary_defs = _table_defences(summarize(rows), table, ensemble if ensemble is not None else
                                   (results.ensemble if isinstance(results, EvaluationResult) else None))
    titles = list(_column_titles(table, summary_defs).values())
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    kept = int((clean["correct"].astype(int) == 1).sum())
    dropped = len(clean) - kept
    model = ""
    if isinstance(results, EvaluationResult):
        model = results.meta.get("model", {}).get("name", "")
    head = {1: "Table 1: no defence, single defended run, majority of the ensemble",
            3: "Table 3: ablation (JPEG, wavelet denoising WD, pixel deflection PD)",
            4: "Table 4: thresholding after pixel deflection"}[table]
    lines = [f"{head}" + (f" · {model}" if model else "") + f" · attack preset '{preset}'",
             f"top-1 accuracy % [Wilson 95% interval]; {kept} images counted, {dropped} dropped "
             f"(misclassified without attack); every cell of a row uses the row's n images"]
    if table in (3, 4):
        lines.append("randomised columns are the majority vote of the ensemble (as the paper's, "
                     "whose WD+PD / Bayes columns equal its Ens-10)")
    if frame.empty:
        return "\n".join(lines + ["(no results yet)"])
    cell_w = 20
    header = f"{'Attack':8s} {'n':>4s} {'|L2|':>6s}  " + "".join(f"{t:<{cell_w}s}" for t in titles)
    lines += ["", header, "-" * len(header)]
    for r in frame.to_dict("records"):
        cells = []
        for t in titles:
            acc = r.get(t, math.nan)
            if acc != acc:  # NaN
                cells.append(f"{'—':<{cell_w}s}")
                continue
            extra = "" if r[f"{t} n"] == r["n"] else f" n={r[f'{t} n']}"
            lo, _, hi = r[f"{t} CI"].partition("–")
            cells.append(f"{f'{acc:5.1f} [{lo}, {hi}]{extra}':<{cell_w}s}")
        l2 = "" if r["|L2|"] != r["|L2|"] else f"{r['|L2|']:.3f}"
        lines.append(f"{r['attack']:8s} {r['n']:>4d} {l2:>6s}  " + "".join(cells))
    if paper:
        lines += ["", "Paper (ResNet-50, correctly classified images of 1000 ImageNet validation images):"]
        paper_titles = ["Ens-10" if t.startswith("Ens-") else t for t in titles]  # the paper's vote is of 10
        header_p = f"{'Attack':8s} {'':>4s} {'|L2|':>6s}  " + "".join(f"{t:<{cell_w}s}" for t in paper_titles)
        lines += [header_p, "-" * len(header_p)]
        for r in frame.to_dict("records"):
            vals = [r.get(f"paper {t}", math.nan) for t in titles]
            if all(v != v for v in vals):
                lines.append(f"{r['attack']:8s} {'':>4s} {'':>6s}  (not in the paper)")
                continue
            l2 = "" if r["paper |L2|"] != r["paper |L2|"] else f"{r['paper |L2|']:.2f}"
            lines.append(f"{r['attack']:8s} {'':>4s} {l2:>6s}  " +
                         "".join(f"{('—' if v != v else f'{v:5.1f}'):<{cell_w}s}" for v in vals))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figure 6: rank of the adversarial class among the clean image's top-5
# --------------------------------------------------------------------------------------------

def rank_histogram(results, preset: str | None = None, attacks: Sequence[str] | None = None):
    """Paper Figure 6 from the results rows: over successful attacks on counted images, how often
    the adversarial class has rank 1–5 in the clean image's top-5 (0 = not in it), and how often
    the true class has rank 1–5 in the adversarial image's top-5.

    Returns a DataFrame with columns ``attack``, ``direction`` ("adversarial class in clean top-5" or
    "true class in adversarial top-5"), ``rank`` (0–5), ``count``, ``fraction``; ``attack = "all"``
    pools every attack.
    """
    import pandas as pd

    rows = _counted(_rows_of(results))
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

def deflection_curve(model, images: torch.Tensor, labels: torch.Tensor, *, adversarial: torch.Tensor | None = None,
                     attack: str = "fgsm", preset: str = "paper",
                     deflections: Sequence[int] = (0, 100, 300, 1000, 3000, 10000),
                     copies: int = 4, window: int = 10, use_map: bool = False, denoise: bool = False,
                     seed: int = 0, batch_size: int = 32, progress: Progress | None = None):
    """Paper Figure 2: mean probability of the true class and of the adversarial class against the
    number of deflections, for the adversarial images and for their clean originals.

    images : (N, 3, S, S) clean images in [0, 1] on the model's device; labels : (N,) int64.
    adversarial : their adversarial versions; computed with ``attack`` / ``preset`` when None.
    Only images that are correctly classified and whose attack succeeded are used (the
    "adversarial class" is then the undefended prediction on the adversarial image).
    The paper's figure shows deflection alone (§5, uniform: ``use_map=False``, ``denoise=False``);
    ``copies`` random deflections per image and K are averaged.

    Returns a DataFrame: ``image`` ("adversarial" / "clean"), ``deflections``, ``class``
    ("true" / "adversarial"), ``mean_prob``, ``sem`` (standard error over images), ``n``.
    """
    import pandas as pd

    labels = labels.to(images.device).long()
    if adversarial is None:
        from .attacks import attack as run_attack

        adversarial = run_attack(_FastLayoutModel(model), images, labels, attack, preset=preset, seed=seed,
                                 batch_size=_model_batch(model, batch_size)).adversarial
    adversarial = adversarial.to(images.device).contiguous()
    with torch.no_grad():
        clean_pred = _classify(model, images, batch_size).argmax(1)
        adv_pred = _classify(model, adversarial, batch_size).argmax(1)
    keep = (clean_pred == labels) & (adv_pred != labels)
    out = []
    if not bool(keep.any()):
        return pd.DataFrame(out, columns=["image", "deflections", "class", "mean_prob", "sem", "n"])
    sources = {"adversarial": adversarial[keep], "clean": images[keep]}
    y_true, y_adv = labels[keep], adv_pred[keep]
    n = int(keep.sum())
    config = replace(PAPER_DEFAULTS, window=int(window), use_map=use_map, denoise=denoise)
    steps = len(deflections) * 2
    for si, (kind, x) in enumerate(sources.items()):
        rmap = _maps(model, x, config.top_k, batch_size).rmap if use_map else None
        for ki, k in enumerate(deflections):
            cfg = replace(config, deflections=int(k))
            seeds = [derive_seed(seed, "figure2", kind, i, int(k)) for i in range(n)]
            c = copies if k > 0 else 1
            defended = defended_copies(model, x, rmap, cfg, c, seeds)
            probs = _classify(model, defended, batch_size).view(n, c, -1).mean(1)
            for cls_name, cls in (("true", y_true), ("adversarial", y_adv)):
                p = probs.gather(1, cls[:, None])[:, 0].double().cpu()
                sem = float(p.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
                out.append({"image": kind, "deflections": int(k), "class": cls_name,
                            "mean_prob": float(p.mean()), "sem": sem, "n": n})
            if progress is not None:
                progress((si * len(deflections) + ki + 1) / steps, f"{kind} images, K = {k}")
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# Figure 5: accuracy over (σ, window, K) on the held-apart tuning subset
# --------------------------------------------------------------------------------------------

def tuning_grid(model, images, *, labels_csv=None, attacks: Iterable[str] = ("fgsm",), preset: str = "paper",
                sigmas: Sequence[float] = (0.01, 0.02, 0.04, 0.06, 0.08),
                windows: Sequence[int] = (2, 5, 10, 15, 20),
                deflections: Sequence[int] = (25, 50, 100, 200, 400),
                search: str = "linear", ensemble: int = 1, limit: int | None = None, seed: int = 0,
                batch_size: int = 16, tuning_fraction: float = DEFAULT_TUNING_FRACTION,
                progress: Progress | None = None):
    """Paper Figure 5 / §9.1: defended accuracy over a grid of (σ, window r, deflections K), on the
    **tuning subset only** (:func:`split_tuning`: disjoint from what :func:`evaluate` uses).

    search : ``"linear"`` (the paper's "linear search": vary one parameter at a time, the others at
        the paper's defaults σ = 0.04, r = 10, K = 100) or ``"grid"`` (every combination).
    attacks : rows to measure; the clean images are always included (attack ``"clean"``).
    ensemble : copies per image (1 = single run, the cheapest).

    Returns a DataFrame: ``attack``, ``varied`` (the parameter varied, "grid" or "default"),
    ``sigma``, ``window``, ``deflections``, ``n``, ``correct``, ``accuracy``, ``ci_low``,
    ``ci_high`` (Wilson 95%, fractions).
    """
    import itertools

    import pandas as pd

    from .attacks import ATTACKS, attack as run_attack

    attacks = [a for a in attacks if a != "clean"]
    for a in attacks:
        if a not in ATTACKS:
            raise EvaluationError(f"unknown attack {a!r}; choose from: {', '.join(ATTACKS)}.")
    _, tuning = split_tuning(load_items(images, labels_csv), tuning_fraction)
    if limit is not None:
        tuning = tuning[: int(limit)]
    if not tuning:
        raise EvaluationError("the tuning subset is empty; raise tuning_fraction or add images.")
    base = PAPER_DEFAULTS
    if search == "linear":
        points = [("default", base.sigma, base.window, base.deflections)]
        points += [("sigma", s, base.window, base.deflections) for s in sigmas if s != base.sigma]
        points += [("window", base.sigma, w, base.deflections) for w in windows if w != base.window]
        points += [("deflections", base.sigma, base.window, k) for k in deflections if k != base.deflections]
    elif search == "grid":
        points = [("grid", s, w, k) for s, w, k in itertools.product(sigmas, windows, deflections)]
    else:
        raise EvaluationError("search must be 'linear' or 'grid'.")
    counts: dict[tuple, list[int]] = {}
    chunks = [tuning[i:i + batch_size] for i in range(0, len(tuning), batch_size)]
    total = len(chunks) * (1 + len(attacks)) * len(points)
    step = 0
    for chunk in chunks:
        x, good, _ = load_labelled_images(chunk, model)
        labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
        with torch.no_grad():
            keep = _classify(model, x, batch_size).argmax(1) == labels if len(good) else torch.zeros(0, dtype=torch.bool)
        x, labels = x[keep], labels[keep]
        good = [it for it, k in zip(good, keep.tolist()) if k]
        if not good:
            step += (1 + len(attacks)) * len(points)
            continue
        for a in ["clean", *attacks]:
            if a == "clean":
                adv = x
            else:
                adv = run_attack(_FastLayoutModel(model), x, labels, a, preset=preset,
                                 batch_size=_model_batch(model, batch_size),
                                 seed=derive_seed(seed, a, preset, *[it.name for it in good])).adversarial.contiguous()
            rmap = _maps(model, adv, base.top_k, batch_size).rmap
            seeds = [derive_seed(seed, it.name, a) for it in good]
            for varied, s, w, k in points:
                cfg = replace(base, sigma=float(s), window=int(w), deflections=int(k))
                copies = max(1, int(ensemble))
                defended = defended_copies(model, adv, rmap, cfg, copies, seeds)
                probs = _classify(model, defended, 4 * batch_size).view(len(good), copies, -1)
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


# --------------------------------------------------------------------------------------------
# Command line: python -m pd_core evaluate ...
# --------------------------------------------------------------------------------------------

def progress_bar(enabled: bool):
    """A callback drawing a progress bar on stderr (tqdm when installed) and a closer."""
    if not enabled:
        return None, lambda: None
    import sys

    try:
        from tqdm import tqdm

        bar = tqdm(total=1000, file=sys.stderr, unit="‰", dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        state = {"n": 0}

        def update(frac, message=""):
            target = int(1000 * frac)
            if target > state["n"]:
                bar.update(target - state["n"])
                state["n"] = target
            bar.set_postfix_str(str(message)[:60], refresh=True)

        return update, bar.close
    except ImportError:  # pragma: no cover - tqdm ships with the environment
        start = time.monotonic()

        def update(frac, message=""):
            elapsed = time.monotonic() - start
            left = elapsed * (1 - frac) / frac if frac > 0 else math.nan
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30s}] {100 * frac:5.1f}%  ~{left / 60:5.1f} min left  {str(message)[:40]:40s}")
            sys.stderr.flush()

        return update, lambda: sys.stderr.write("\n")


def _cmd_evaluate(args) -> int:
    import sys

    from .cli import CliError, _load_model

    model = _load_model(args.model)
    attacks = [a for a in args.attacks.split(",") if a.strip()] if args.attacks else []
    update, close = progress_bar(not args.no_progress and sys.stderr.isatty() or args.progress)
    if args.figure5:
        try:
            grid = tuning_grid(model, args.images, labels_csv=args.labels, attacks=attacks, preset=args.preset,
                               ensemble=args.ensemble, limit=args.limit, seed=args.seed,
                               batch_size=args.batch_size, tuning_fraction=args.tuning_fraction,
                               progress=update)
        except EvaluationError as exc:
            raise CliError(str(exc)) from None
        finally:
            close()
        grid.to_csv(args.out, index=False)
        shown = grid.assign(accuracy=(100 * grid["accuracy"]).round(1),
                            ci=[f"{100 * lo:.1f}-{100 * hi:.1f}" for lo, hi in zip(grid["ci_low"], grid["ci_high"])])
        print("Figure 5: defended accuracy (%) on the held-apart tuning subset "
              f"(Ens-{args.ensemble} vote; paper defaults σ=0.04, r=10, K=100)")
        print(shown[["attack", "varied", "sigma", "window", "deflections", "n", "accuracy", "ci"]].to_string(index=False))
        print(f"\nrows: {args.out}")
        return 0
    try:
        result = evaluate(model, args.images, attacks=attacks, preset=args.preset, table=args.table,
                          ensemble=args.ensemble, limit=args.limit, seed=args.seed, out_csv=args.out,
                          progress=update, batch_size=args.batch_size, labels_csv=args.labels,
                          tuning_fraction=args.tuning_fraction)
    except EvaluationError as exc:
        raise CliError(str(exc)) from None
    finally:
        close()
    print(result.format_table())
    if result.unreadable:
        print(f"\n{len(result.unreadable)} unreadable file(s) skipped: " +
              "; ".join(f"{k}: {v}" for k, v in list(result.unreadable.items())[:5]))
    ranks = rank_histogram(result, preset=args.preset)
    pooled = ranks[(ranks["attack"] == "all") & (ranks["direction"] == "adversarial class in clean top-5")]
    if pooled["count"].sum() > 0:
        print("\nFigure 6 (successful attacks): rank of the adversarial class in the clean top-5: " +
              ", ".join(f"{'not in top-5' if r.rank == 0 else f'#{r.rank}'} {100 * r.fraction:.0f}%"
                        for r in pooled.itertuples()))
    print(f"\nrows: {args.out}  (metadata: {_meta_path(Path(args.out))}); {result.seconds:.0f} s")
    return 0


def add_evaluate_parser(sub) -> None:
    """Register ``evaluate`` on the ``python -m pd_core`` sub-parsers."""
    p = sub.add_parser("evaluate", help="reproduce the paper's Tables 1, 3, 4 on a folder of labelled images",
                       description="Run the paper's protocol (§9-10) on a folder of labelled images; "
                                   "resumable: run the same command again to continue an interrupted run.")
    p.add_argument("--images", required=True, metavar="DIR",
                   help="folder of images; labels from labels.csv (file,class_index) or WordNet-id prefixes")
    p.add_argument("--labels", metavar="CSV", help="labels file (default: DIR/labels.csv when present)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attacks", default=",".join(PAPER_ATTACKS),
                   help="comma-separated attacks (default: the paper's six); the clean row is always included")
    p.add_argument("--preset", default="paper", choices=["paper", "large", "interactive"])
    p.add_argument("--table", type=int, default=1, choices=[1, 3, 4])
    p.add_argument("--ensemble", type=int, default=10, metavar="N", help="copies in the majority vote (paper: 10)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N evaluation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per chunk (keep it when resuming)")
    p.add_argument("--tuning-fraction", type=float, default=DEFAULT_TUNING_FRACTION, metavar="F",
                   help="share of the folder held apart for tuning, never evaluated (default 0.2)")
    p.add_argument("--out", required=True, metavar="results.csv")
    p.add_argument("--figure5", action="store_true",
                   help="instead of a table: the paper's Figure 5 search over σ, window and K (one at a time) "
                        "on the held-apart tuning subset only, written to --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.set_defaults(func=_cmd_evaluate)
