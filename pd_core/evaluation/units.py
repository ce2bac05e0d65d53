"""The protocol's unit of work: one chunk of images × one attack × its preset, with every defence.

An engine (the sequential loop of :func:`pd_core.evaluation.evaluate`, or a distributed one)
calls, per chunk, :func:`load_chunk` (the images and their clean pass) and then, per attack,
:func:`run_unit`, which returns the CSV rows. A unit depends only on its images' names, the
attack and :class:`UnitSettings`, never on which worker runs it or on the other chunks:

- the attack's seed is ``derive_seed(seed, attack, preset, *names of the attacked images)``;
- the deflections of an image are ``derive_seed(seed, image, attack)``
  (:meth:`~pd_core.defences.base.Defence.apply_seeded`), the same for every defence variant
  (common random numbers across Table 3's columns).

Columns. Every defended column is a defence of the registry (:mod:`pd_core.defences`), built with
:func:`~pd_core.defences.registry.create_defence` from its entry and the run's defence settings:
Table 3's and 4's columns through their registry entries (:mod:`.tables`), Table 1's from the
paper's defence, ``UnitSettings.defences`` from any list of entries (plugins included). A randomised
defence is judged on ``ensemble`` copies (``correct`` is their majority vote, ``single_correct`` the
first copy), a deterministic one on one. A defence that raises or breaks its contract
(:func:`~pd_core.defences.base.check_defended`) loses only its own rows of the unit: the unit's
other columns are returned, and the failure is reported in :attr:`UnitResult.failures`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

import torch

from ..defence import PAPER_DEFAULTS, DefenceConfig, vote
from ..defences.base import Defence
from ..defences.registry import create_defence
from ..randomness import derive_seed
from .batching import FastLayoutModel, activation_maps, classify, model_batch
from .data import Item, load_labelled_images
from .tables import ATTACK_TITLES, ens_name, table_columns, table_entries

__all__ = ["UnitSettings", "Chunk", "UnitResult", "load_chunk", "run_unit", "unit_defences", "describe_columns",
           "failed_unit_records"]

#: The perturbation measures copied from the attack result into every row; the clean rows have none.
CLEAN_MEASURES = {"norm_l2": 0.0, "linf_255": 0.0, "psnr": math.inf, "norm_l2_model": 0.0, "rmse": 0.0}


@dataclass(frozen=True)
class UnitSettings:
    """What every unit of one run shares (picklable)."""

    preset: str = "paper"
    table: int = 1
    ensemble: int = 10
    seed: int = 0
    batch_size: int = 16
    config: DefenceConfig = PAPER_DEFAULTS
    attack_params: Mapping[str, dict] = field(default_factory=dict)

    #: Registry names of the columns in Table 1's transfer setting, instead of the table's own
    #: (empty: the table's columns). Plugins must be registered in the process that runs the unit.
    defences: tuple[str, ...] = ()

    def column_entries(self) -> dict[str, tuple[str, DefenceConfig]]:
        """Column key -> (registry entry, the defence settings it is built with), in table order."""
        if self.defences:
            return {name: (name, self.config) for name in self.defences}
        return {key: (entry, self.config) for key, entry in table_entries(self.table).items()}

    @property
    def columns(self) -> list[str]:
        """The ``defence`` values of every (image, attack) in this table, ``none`` first."""
        if self.defences:
            return ["none", *self.defences]
        return table_columns(self.table, self.ensemble)

    def row_preset(self, attack: str) -> str:
        """The ``preset`` column: ``none`` for the clean rows (they do not depend on it)."""
        return "none" if attack == "clean" else self.preset


@dataclass
class Chunk:
    """A chunk of images loaded at the model's resolution, with the clean pass of each.

    items : the readable images, in order; x : (N, 3, S, S); labels : (N,); maps : the clean
    :class:`~pd_core.maps.ActivationMaps` (prediction and R-CAM from one pass), None when empty;
    unreadable : image name -> reason, for the files that could not be read.
    """

    items: list[Item]
    x: torch.Tensor
    labels: torch.Tensor
    maps: object
    unreadable: dict[str, str]
    index: dict[str, int] = field(init=False)  # image name -> row of x

    def __post_init__(self):
        self.index = {it.name: i for i, it in enumerate(self.items)}

    @property
    def clean_logits(self) -> torch.Tensor:
        return self.maps.logits if self.maps is not None else torch.empty(0, 1000, device=self.x.device)

    def clean_correct(self) -> dict[str, int]:
        """Image name -> 1 when the undefended model classifies it correctly, else 0."""
        right = (self.clean_logits.argmax(1) == self.labels).tolist()
        return {it.name: int(ok) for it, ok in zip(self.items, right)}


@dataclass
class UnitResult:
    """The rows of one unit; ``attack_params``: the parameters the attack ran with (None when no
    image was attacked); ``images``: how many images were attacked and defended."""

    rows: list[dict]
    attack_params: dict | None
    images: int
    #: ``{"defence", "reason"}`` of each column whose defence failed on this unit (its rows are missing).
    failures: list[dict] = field(default_factory=list)


def load_chunk(model, items: Sequence[Item], settings: UnitSettings) -> Chunk:
    """Load a chunk (unreadable files skipped and reported) and run its clean pass."""
    x, good, bad = load_labelled_images(list(items), model)
    labels = torch.tensor([it.label for it in good], dtype=torch.long, device=model.device)
    with torch.no_grad():
        # One pass per image gives the clean prediction (to drop misclassified images) and the
        # map that the clean row's defence uses.
        maps = activation_maps(model, x, settings.config.top_k, settings.batch_size) if good else None
    return Chunk(good, x, labels, maps, bad)


def run_unit(model, chunk: Chunk, attack: str, settings: UnitSettings, *, items: Sequence[Item] | None = None,
             skip: Collection[tuple] = frozenset(),
             report: Callable[[float, str], object] | None = None) -> UnitResult:
    """The rows of one (chunk × attack) unit: the adversarial batch, then every defence.

    items : the chunk's images to do (default: all readable ones). Images the undefended model
        misclassifies are dropped: the clean unit records them in one row (``correct = 0``), the
        attacks skip them. skip : keys ``(image, attack, preset, defence)`` already stored (a
        resumed run): those rows are not returned. report : ``callback(fraction of the unit, message)``.
    """
    items = chunk.items if items is None else list(items)
    correct = chunk.clean_correct()
    rows = []
    if attack == "clean":
        # The clean, undefended row of a misclassified image records that it was dropped
        # (a resumed run reads it instead of classifying the image again).
        logits, index = chunk.clean_logits, chunk.index
        rows += [_dropped_row(it, int(logits[index[it.name]].argmax()), derive_seed(settings.seed, it.name, "clean"))
                 for it in items if correct[it.name] == 0 and (it.name, "clean", "none", "none") not in skip]
    todo = [it for it in items if correct[it.name] == 1]
    if not todo:
        return UnitResult(rows, None, 0)
    adv, measures, params = _adversarial(model, chunk, todo, attack, settings, report or (lambda f, m: None))
    defended, failures = _defended_rows(model, chunk, todo, attack, adv, measures, settings, skip,
                                        report or (lambda f, m: None))
    return UnitResult(rows + defended, params, len(todo), failures)


def _attack_seed(settings: UnitSettings, attack: str, todo: Sequence[Item]) -> int:
    return derive_seed(settings.seed, attack, settings.preset, *[it.name for it in todo])


def _adversarial(model, chunk: Chunk, todo: Sequence[Item], attack: str, settings: UnitSettings, report):
    """The adversarial batch (NCHW, for deflection), its per-image measures (name -> (n,) tensor)
    and the attack's parameters (None for the clean unit, whose "adversarial" batch is the clean one)."""
    from ..attacks import attack as run_attack

    sel = torch.tensor([chunk.index[it.name] for it in todo], device=chunk.x.device)
    xs, ys, n = chunk.x[sel], chunk.labels[sel], len(todo)
    if attack == "clean":
        return xs, {k: torch.full((n,), v) for k, v in CLEAN_MEASURES.items()}, None
    title = ATTACK_TITLES.get(attack, attack)
    res = run_attack(FastLayoutModel(model), xs, ys, attack, preset=settings.preset,
                     seed=_attack_seed(settings, attack, todo),
                     batch_size=model_batch(model, settings.batch_size),
                     progress=lambda f, m="": report(0.8 * float(f), f"{title}: {m}"),
                     **settings.attack_params.get(attack, {}))
    measures = {k: torch.as_tensor(getattr(res, k)).detach().float().cpu().reshape(n) for k in CLEAN_MEASURES}
    return res.adversarial.to(chunk.x.device).contiguous(), measures, dict(res.params)


def unit_defences(model, settings: UnitSettings) -> dict[str, tuple[Defence, int]]:
    """Column key -> (the registry's defence, copies judged) of the unit's defended columns.

    A randomised defence gets ``ensemble`` copies, a deterministic one a single copy; Table 1's
    paper column always gets ``ensemble`` (its Single and Ens-n columns are the first copy and the vote)."""
    copies = max(1, int(settings.ensemble))
    out = {}
    for key, (entry, config) in settings.column_entries().items():
        defence = create_defence(entry, model, config=config)
        paper_table1 = settings.table == 1 and not settings.defences
        out[key] = (defence, copies if (defence.randomised or paper_table1) else 1)
    return out


def failed_unit_records(unit: UnitResult, chunk: int, attack: str, settings: UnitSettings,
                        images: Sequence[str] = ()) -> list[dict]:
    """The sidecar's ``failed_units`` entries of one unit: which unit (chunk, attack, preset), which
    defence, and the one-sentence reason."""
    return [{"chunk": chunk, "attack": attack, "preset": settings.row_preset(attack), **f,
             **({"images": list(images)} if images else {})} for f in unit.failures]


def describe_columns(model, settings: UnitSettings) -> dict[str, dict]:
    """The sidecar's record of the defended columns: key -> registry entry, parameters, copies."""
    return {key: {"defence": defence.name, "params": defence.identity()["params"], "copies": copies}
            for key, (defence, copies) in unit_defences(model, settings).items()}


def _predictions(model, chunk: Chunk, todo: Sequence[Item], attack: str, adv: torch.Tensor,
                 settings: UnitSettings, report) -> tuple[dict, dict, list[dict]]:
    """Defence name -> (prediction, agreement, correct, copies[, single correct]), each (n,) on the
    CPU, the undefended facts of each image (success, the two Figure 6 ranks, seeds), and the
    failures (a defence that raised or broke its contract: ``{"defence", "reason"}``)."""
    sel = torch.tensor([chunk.index[it.name] for it in todo], device=chunk.x.device)
    ys, n = chunk.labels[sel], len(todo)
    # One pass gives the undefended prediction and the robust activation map (SPEC §1.1).
    if attack == "clean":
        maps = type(chunk.maps)(*(t[sel] for t in chunk.maps[:4]), chunk.maps.gradcam)
    else:
        maps = activation_maps(model, adv, settings.config.top_k, settings.batch_size)
    adv_pred = maps.logits.argmax(1)
    facts = {"success": (adv_pred != ys).cpu(),
             "rank_adv": _ranks(chunk.clean_logits[sel].topk(5, dim=1).indices, adv_pred).cpu(),
             "rank_true": _ranks(maps.logits.topk(5, dim=1).indices, ys).cpu(),
             "seeds": [derive_seed(settings.seed, it.name, attack) for it in todo]}
    ones = torch.ones(n)
    preds = {"none": (adv_pred.cpu(), ones, (adv_pred == ys).cpu(), 1)}
    failures = []
    defences = unit_defences(model, settings)
    for j, (name, (defence, copies)) in enumerate(defences.items()):
        report(0.8 + 0.2 * j / max(len(defences), 1), f"{ATTACK_TITLES.get(attack, attack)}: defending")
        try:
            with torch.no_grad():
                defended = defence.apply_seeded(adv, copies, facts["seeds"], maps=maps)
                voted = vote(classify(model, defended, 4 * settings.batch_size).view(n, copies, -1))
        except Exception as exc:  # a user's defence may fail in any way: only its own column is lost
            failures.append({"defence": name, "reason": _failure_sentence(name, exc)})
            continue
        single = voted.votes[:, 0]
        ens = (voted.prediction.cpu(), voted.agreement.cpu(), (voted.prediction == ys).cpu(), copies)
        if settings.table == 1 and not settings.defences:
            preds["single"] = (single.cpu(), ones, (single == ys).cpu(), 1)
            if settings.ensemble > 1:
                preds[ens_name(settings.ensemble)] = ens
        else:
            preds[name] = (*ens, (single == ys).cpu())
    return preds, facts, failures


def _failure_sentence(name: str, exc: Exception) -> str:
    """One line: the defence's own sentence (a :class:`~pd_core.defences.base.DefenceError`), else its error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    from ..defences.base import DefenceError

    return text if isinstance(exc, DefenceError) else f"Defence {name!r} raised {type(exc).__name__}: {text}"


def _defended_rows(model, chunk: Chunk, todo: Sequence[Item], attack: str, adv: torch.Tensor, measures: dict,
                   settings: UnitSettings, skip: Collection[tuple], report) -> tuple[list[dict], list[dict]]:
    """One row per (image, defence) of the unit, leaving out the keys in ``skip``; and the failures."""
    preds, facts, failures = _predictions(model, chunk, todo, attack, adv, settings, report)
    pre, attack_seed = settings.row_preset(attack), _attack_seed(settings, attack, todo)
    rows = []
    for i, it in enumerate(todo):
        for name, value in preds.items():
            if (it.name, attack, pre, name) in skip:
                continue
            pred, agree, correct, copies = value[:4]
            single_correct = value[4][i] if len(value) > 4 else correct[i]
            rows.append({"image": it.name, "label": it.label, "attack": attack, "preset": pre,
                         "defence": name, "prediction": int(pred[i]), "correct": int(correct[i]),
                         **{k: float(v[i]) for k, v in measures.items()},
                         "seed": facts["seeds"][i], "attack_seed": attack_seed, "copies": copies,
                         "agreement": float(agree[i]), "single_correct": int(single_correct),
                         "attack_success": int(facts["success"][i]),
                         "adv_rank_in_clean_top5": int(facts["rank_adv"][i]),
                         "true_rank_in_adv_top5": int(facts["rank_true"][i])})
    return rows, failures


def _dropped_row(it: Item, prediction: int, seed: int) -> dict:
    return {"image": it.name, "label": it.label, "attack": "clean", "preset": "none", "defence": "none",
            "prediction": prediction, "correct": 0, **CLEAN_MEASURES,
            "seed": seed, "attack_seed": "", "copies": 1, "agreement": 1.0, "single_correct": 0,
            "attack_success": "", "adv_rank_in_clean_top5": "", "true_rank_in_adv_top5": ""}


def _ranks(clean_top5: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``cls`` (N,) within each row of ``clean_top5`` (N, 5); 0 when absent (Fig. 6)."""
    hit = clean_top5 == cls[:, None]
    pos = torch.arange(1, clean_top5.shape[1] + 1, device=clean_top5.device)
    return (hit * pos).sum(1)
