"""The JSON sidecar of a results file: where it is, what it records about the software, and the
check that a resumed run has the settings the file's rows were made with.

The sidecar of ``results.csv`` is ``results.csv.meta.json`` (:func:`sidecar_path`); that of a shard
folder is ``<folder>/meta.json`` (:func:`pd_core.evaluation.shards.meta_path`). Both hold the same
record: ``settings`` (the run identity :func:`check_sidecar` compares), the model, the library
versions (:func:`library_versions`, with the git commit) and one record per run.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

import torch

from .data import EvaluationError

__all__ = ["sidecar_path", "library_versions", "check_sidecar", "now_iso"]


def sidecar_path(csv_path: str | Path) -> Path:
    """``results.csv`` -> ``results.csv.meta.json``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name + ".meta.json")


def now_iso() -> str:
    """The local time with its offset, to the second (the sidecar's dates)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def library_versions() -> dict:
    from importlib import metadata

    from .. import __version__

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

    here = Path(__file__).resolve().parent.parent  # the pd_core folder
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here)], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


def check_sidecar(meta_path: Path, settings: dict) -> dict:
    """Read an existing sidecar and refuse to mix results made with other settings."""
    if not meta_path.exists():
        return {}
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise EvaluationError(f"{meta_path} is unreadable; delete it (and its CSV) or choose another output "
                              "file.") from None
    old_settings = old.get("settings", {})
    diff = [k for k in settings if k in old_settings and old_settings[k] != settings[k]]
    if diff:
        detail = ", ".join(f"{k}: {old_settings[k]!r} in the file, {settings[k]!r} now" for k in diff)
        raise EvaluationError(f"the results file was made with other settings ({detail}); "
                              f"choose another output file or use the same settings to resume.")
    return old
