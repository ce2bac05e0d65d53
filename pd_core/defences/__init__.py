"""The defence registry: every input-transformation defence the lab judges, behind one protocol.

- :class:`Defence`, :class:`DefenceInfo` (:mod:`.base`): the protocol and the registry entry;
- :data:`DEFENCES`, :func:`create_defence` (:mod:`.registry`): the one table, and a name to a defence;
- :func:`resolve_defences`, :func:`load_plugin` (:mod:`.plugins`): a user's own defence.

    from pd_core.defences import create_defence
    defence = create_defence("pixel_deflection", model)      # paper defaults
    defended = defence.apply(x, generator)                     # (N, 3, H, W) in [0, 1]
"""
from __future__ import annotations

from .base import Defence, DefenceError, DefenceInfo, check_defended, straight_through
from .plugins import load_plugin, resolve_defences
from .registry import (DEFENCES, TABLE3_COLUMNS, TABLE4_COLUMNS, create_defence, defence_info, defence_names,
                       register_defence, unregister_defence)

__all__ = ["Defence", "DefenceInfo", "DefenceError", "DEFENCES", "TABLE3_COLUMNS", "TABLE4_COLUMNS",
           "create_defence", "defence_info", "defence_names", "register_defence", "unregister_defence",
           "resolve_defences", "load_plugin", "check_defended", "straight_through"]
