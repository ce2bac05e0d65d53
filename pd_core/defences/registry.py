"""The one table of defences, :data:`DEFENCES`, and how a name becomes a defence.

Every list of defences in the lab reads this table: the evaluation's columns, the ladder's
defences, the reports' titles, the command line's choices and the app's pickers. To add a defence,
write its module (a :class:`~pd_core.defences.base.Defence` subclass and its ``INFO``) and add
``INFO`` to :data:`BUILTIN` below: nothing else changes.

A user's own defence joins the same table at run time through :func:`register_defence`, from a
``FILE.py:FUNCTION`` or ``module:FUNCTION`` spec or the ``pdlab.defences`` entry points
(:mod:`pd_core.defences.plugins`).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import bit_depth, jpeg, median, none, pixel_deflection, quilting, resize_pad, shield, tvm, wavelet
from .base import Defence, DefenceError, DefenceInfo

__all__ = ["DEFENCES", "BUILTIN", "TABLE3_COLUMNS", "TABLE4_COLUMNS", "register_defence", "unregister_defence",
           "defence_info", "create_defence", "defence_names", "canonical_name", "params_from_config"]

#: The built-in entries, in the order the lab lists them.
BUILTIN: tuple[DefenceInfo, ...] = (
    none.INFO,
    pixel_deflection.INFO,
    wavelet.INFO,
    jpeg.INFO,
    bit_depth.INFO,
    bit_depth.INFO_3,
    median.INFO,
    median.INFO_3X3,
    tvm.INFO,
    resize_pad.INFO,
    shield.INFO,
    quilting.INFO,
    *pixel_deflection.VARIANTS,
)

#: name -> entry. Mutated only by :func:`register_defence` / :func:`unregister_defence`.
DEFENCES: dict[str, DefenceInfo] = {}
_ALIASES: dict[str, str] = {}

#: The paper's Table 3 and Table 4: column key (the ``defence`` value in results files) -> entry.
TABLE3_COLUMNS: Mapping[str, str] = {"jpeg": "jpeg", "wd": "wavelet", "pd": "pd", "pd+jpeg": "pd+jpeg",
                                     "wd+pd+jpeg": "wd+pd+jpeg", "wd+pd": "pixel_deflection"}
TABLE4_COLUMNS: Mapping[str, str] = {"hard": "hard", "visu": "visu", "sure": "sure", "bayes": "pixel_deflection"}


def register_defence(info: DefenceInfo, *, replace: bool = False) -> DefenceInfo:
    """Add ``info`` to :data:`DEFENCES` (its aliases too); a taken name needs ``replace=True``."""
    if not isinstance(info, DefenceInfo):
        raise TypeError(f"register_defence takes a DefenceInfo, got {type(info).__name__}")
    name = info.name
    if not name or name != name.strip() or "," in name or ":" in name:
        raise DefenceError(f"A defence name must be a non-empty word without commas or colons, got {name!r}.")
    for key in (name, *info.aliases):
        owner = DEFENCES.get(key) or DEFENCES.get(_ALIASES.get(key, ""))
        if owner is not None and owner.name != name and not replace:
            raise DefenceError(f"The defence name {key!r} is taken by {owner.title!r}.")
    if name in DEFENCES and not replace:
        raise DefenceError(f"A defence named {name!r} is already registered.")
    DEFENCES[name] = info
    for alias in info.aliases:
        _ALIASES[alias] = name
    return info


def unregister_defence(name: str) -> None:
    """Remove a defence (a test's throw-away defence, a plugin reloaded)."""
    info = DEFENCES.pop(canonical_name(name))
    for alias in info.aliases:
        _ALIASES.pop(alias, None)


def canonical_name(name: str) -> str:
    """The entry name of ``name`` or one of its aliases; :class:`DefenceError` when unknown."""
    if name in DEFENCES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise DefenceError(f"Unknown defence {name!r}; known: {', '.join(DEFENCES)} "
                       "(or FILE.py:FUNCTION for your own, see docs/defences.md).")


def defence_info(name: str) -> DefenceInfo:
    """The entry of ``name`` (or an alias)."""
    return DEFENCES[canonical_name(name)]


def defence_names(groups: Iterable[str] | None = None) -> list[str]:
    """Entry names in table order, optionally only those of the given ``groups``."""
    wanted = None if groups is None else set(groups)
    return [n for n, info in DEFENCES.items() if wanted is None or info.group in wanted]


def params_from_config(info: DefenceInfo, config: Any | None) -> dict:
    """The entry's published parameters, with those that the run's defence settings ``config`` (a
    :class:`~pd_core.defence.DefenceConfig`) also name taking the run's values: a σ or K chosen in
    the sidebar or on the command line reaches every defence that has one."""
    params = dict(info.params)
    if config is not None:
        given = config.as_dict() if hasattr(config, "as_dict") else dict(config)
        params.update({k: v for k, v in given.items() if k in params})
    return params


def create_defence(name: str, model=None, *, config: Any | None = None, **params) -> Defence:
    """Build the defence ``name`` (an entry name or alias).

    model : the classifier, for a defence that reads it (pixel deflection's map).
    config : run-wide defence settings (:func:`params_from_config`); ``params`` override both.
    """
    info = defence_info(name)
    merged = params_from_config(info, config)
    unknown = sorted(set(params) - set(info.params)) if info.params else []
    if unknown and info.group != "plugin":
        raise DefenceError(f"{info.title} has no parameter {unknown[0]!r}; "
                           f"its parameters are {', '.join(info.params) or 'none'}.")
    merged.update(params)
    if info.needs_model and model is None:
        raise DefenceError(f"{info.title} reads the classifier: build it with a model.")
    return info.build(model=model, **merged)


for _info in BUILTIN:
    register_defence(_info)
del _info
