"""Bring your own defence: a plain function or a :class:`~pd_core.defences.base.Defence`, judged like the rest.

A plugin is named by a spec:

- ``path/to/file.py:FUNCTION`` — a function (or Defence class or instance, or DefenceInfo) in a file;
- ``package.module:FUNCTION`` — the same from an importable module;
- a name published in the Python entry-point group ``pdlab.defences`` (``[project.entry-points."pdlab.defences"]``).

The least a plugin needs is ``def defend(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor``,
``(N, 3, H, W)`` in [0, 1] in and out on the input's device. Such a function is taken to be
randomised (the safe assumption: it is judged with fresh randomness and by the vote) and attacked
through BPDA with the identity; a function may say otherwise with attributes ``randomised``,
``gradient`` (``"exact"`` when autograd through it is its true gradient), ``title``, ``citation``
and ``params``. Every output is checked (:func:`~pd_core.defences.base.check_defended`): a plugin
that raises, or returns the wrong shape, NaN, values outside [0, 1] or another device, gets one
plain sentence as a :class:`~pd_core.defences.base.DefenceError`.

Loading a plugin runs its code, with the rights of whoever loads it. The web app therefore never
loads one named by a visitor: only the operator's ``PD_DEFENCE_PLUGINS`` (a comma-separated list of
specs read at start-up) reaches it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from .base import Defence, DefenceError, DefenceInfo, check_defended
from .registry import DEFENCES, register_defence

__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_ENV", "FunctionDefence", "load_plugin", "resolve_defences",
           "entry_point_names", "is_plugin_spec", "load_operator_plugins"]

ENTRY_POINT_GROUP = "pdlab.defences"
#: The operator's plugins for the web app (comma-separated specs).
PLUGIN_ENV = "PD_DEFENCE_PLUGINS"


class FunctionDefence(Defence):
    """A plain function ``fn(x, *, generator)`` as a defence; every output is checked."""

    def __init__(self, info: DefenceInfo, params: dict, fn: Callable):
        super().__init__(info, params)
        self.fn = fn

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            generator = torch.Generator(device=x.device)
            generator.manual_seed(0)
        try:
            out = self.fn(x, generator=generator, **self.params)
        except DefenceError:
            raise
        except Exception as exc:  # the user's code: any failure becomes one sentence
            raise DefenceError(f"Defence {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        return check_defended(self.name, x, out)


class _CheckedDefence(Defence):
    """A user's Defence object, with its outputs checked like a function's."""

    def __init__(self, inner: Defence):
        super().__init__(inner.info, inner.params)
        self.inner = inner

    @property
    def randomised(self) -> bool:
        return self.inner.randomised

    def _guard(self, x, call):
        try:
            out = call()
        except DefenceError:
            raise
        except Exception as exc:
            raise DefenceError(f"Defence {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        return check_defended(self.name, x, out)

    def apply(self, x, generator=None):
        return self._guard(x, lambda: self.inner.apply(x, generator))

    def apply_copies(self, x, copies, generator=None, *, maps=None):
        extra = {} if maps is None else {"maps": maps}  # an older plugin's apply_copies may not take maps
        return self._guard(x.repeat_interleave(int(copies), dim=0),
                           lambda: self.inner.apply_copies(x, copies, generator, **extra))

    def draw(self, x, copies, generator, *, maps=None):
        extra = {} if maps is None else {"maps": maps}
        return self.inner.draw(x, copies, generator, **extra)

    def replay(self, x_copies, draws):
        return self._guard(x_copies, lambda: self.inner.replay(x_copies, draws))

    def surrogate(self, x):
        return self.inner.surrogate(x)


def is_plugin_spec(spec: str) -> bool:
    """Whether ``spec`` names code (``FILE.py:FUNCTION`` or ``module:FUNCTION``) rather than an entry."""
    return ":" in spec


def _import_target(spec: str):
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise DefenceError(f"A defence plugin is FILE.py:FUNCTION or module.path:FUNCTION, got {spec!r}.")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise DefenceError(f"No plugin file {where!r} (from {spec!r}).")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_name = f"pdlab_plugin_{path.stem}_{digest}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise DefenceError(f"Loading the plugin file {where!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise DefenceError(f"Cannot import the plugin module {where!r}: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise DefenceError(f"The plugin {where!r} has no {attr!r}.") from None


def _info_for(target, name: str) -> DefenceInfo:
    """A registry entry for a plugin target: a DefenceInfo, a Defence class or instance, or a function."""
    if isinstance(target, DefenceInfo):
        inner_build = target.build
        return DefenceInfo(**{**_fields(target), "build": lambda model=None, **p: _CheckedDefence(inner_build(model=model, **p))})
    if isinstance(target, Defence):
        return DefenceInfo(**{**_fields(target.info), "build": lambda model=None, **p: _CheckedDefence(target)})
    if inspect.isclass(target) and issubclass(target, Defence):
        info = getattr(target, "INFO", None)
        if not isinstance(info, DefenceInfo):
            raise DefenceError(f"The Defence class {target.__name__} needs an INFO = DefenceInfo(...) attribute.")
        return _info_for(info, name)
    if not callable(target):
        raise DefenceError(f"The plugin {name!r} is {type(target).__name__}, not a function or a Defence.")
    try:
        inspect.signature(target).bind(torch.empty(0), generator=None)
    except TypeError:
        raise DefenceError(f"The plugin function {name!r} must accept (x, *, generator): "
                           f"def {getattr(target, '__name__', 'defend')}(x, *, generator): ...") from None
    except ValueError:
        pass  # no signature to read (a builtin): try it
    gradient = getattr(target, "gradient", "bpda")
    info = DefenceInfo(
        name=name, title=getattr(target, "title", name), citation=getattr(target, "citation", "your own"),
        summary=getattr(target, "summary", "A defence you brought."),
        build=lambda model=None, **p: FunctionDefence(info, p, target),
        params=dict(getattr(target, "params", {})), randomised=bool(getattr(target, "randomised", True)),
        gradient=gradient if gradient in ("exact", "bpda") else "bpda", surrogate="identity", group="plugin")
    return info


def _fields(info: DefenceInfo) -> dict:
    from dataclasses import fields

    out = {f.name: getattr(info, f.name) for f in fields(info)}
    out["group"] = "plugin"
    return out


def load_plugin(spec: str, *, name: str | None = None) -> DefenceInfo:
    """Load the plugin ``spec`` and register it (again, if its code changed); returns its entry.

    Its registry name is ``name`` or the function's (or the entry's) name.
    """
    target = _import_target(spec)
    default = getattr(target, "name", None) if isinstance(target, (DefenceInfo, Defence)) else None
    info = _info_for(target, name or default or getattr(target, "__name__", spec.rpartition(":")[2]))
    if name:
        info = DefenceInfo(**{**_fields(info), "name": name})
    existing = DEFENCES.get(info.name)
    if existing is not None and existing.group != "plugin":
        raise DefenceError(f"The plugin {spec!r} would replace the built-in defence {info.name!r}: give it "
                           "another name.")
    return register_defence(info, replace=True)


def entry_point_names() -> list[str]:
    """The names published in the ``pdlab.defences`` entry-point group (not loaded)."""
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]


def _load_entry_point(name: str) -> DefenceInfo | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                target = ep.load()
            except Exception as exc:
                raise DefenceError(f"The installed defence {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
            info = _info_for(target, name)
            return register_defence(DefenceInfo(**{**_fields(info), "name": name}), replace=True)
    return None


def resolve_defences(specs: str | list[str]) -> list[str]:
    """Registry names for a comma-separated list (or a list) of entry names, aliases, plugin specs
    and entry-point names; plugins are loaded and registered on the way. Unknown names raise
    :class:`DefenceError` with the list of known ones."""
    from .registry import canonical_name

    items = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs) if s and s.strip()]
    names = []
    for item in items:
        if is_plugin_spec(item):
            names.append(load_plugin(item).name)
            continue
        try:
            names.append(canonical_name(item))
        except DefenceError:
            loaded = _load_entry_point(item)
            if loaded is None:
                raise
            names.append(loaded.name)
    return names


def load_operator_plugins(environ: dict | None = None) -> list[str]:
    """The web app's plugins: the specs in ``PD_DEFENCE_PLUGINS`` (the operator's, never a visitor's)."""
    value = (environ if environ is not None else os.environ).get(PLUGIN_ENV, "")
    return resolve_defences(value) if value.strip() else []
