"""Folders of labelled images for the benchmark, and user-chosen paths kept inside a configured root."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path, PureWindowsPath

from .decode import IMAGE_EXTENSIONS
from .errors import PathError, shown_name


class LabelledFiles(list):
    """A list of ``(path, class_index)`` with ``.skipped``: ``(path, reason)`` for every file left out."""

    def __init__(self, items=(), skipped=()):
        super().__init__(items)
        self.skipped: list[tuple[Path, str]] = list(skipped)


_WNID_RE = re.compile(r"^(n\d{8})(?![0-9])")
_wnid_table: dict[str, int] | None = None


def imagenet_wnids() -> dict[str, int]:
    """WordNet id (``n01440764``) -> ImageNet-1k class index, offline from timm's ``ImageNetInfo``."""
    global _wnid_table
    if _wnid_table is None:
        from timm.data import ImageNetInfo

        wnids = ImageNetInfo("imagenet-1k").label_names()
        if len(wnids) != 1000:
            raise RuntimeError("timm's ImageNet-1k class list does not have 1000 entries")
        _wnid_table = {wnid: i for i, wnid in enumerate(wnids)}
    return _wnid_table


def read_labelled_folder(folder: str | os.PathLike, labels_csv: str | os.PathLike | None = None) -> LabelledFiles:
    """List the labelled images of ``folder`` as ``[(path, class_index), ...]``.

    Labels come from ``labels_csv`` or, when it is not given, from ``folder/labels.csv`` if that
    exists (columns ``file`` and ``class_index``, other columns ignored; ``file`` relative to
    ``folder`` and kept inside it). Otherwise the whole tree is listed and each file's class comes
    from a WordNet id at the start of its name (``n01440764_123.JPEG``) or of a parent folder's
    name (the ImageFolder layout ``n01440764/xyz.jpg``). Files are not decoded here: a listed file
    can still fail in :func:`open_image`. Every file left out is in ``result.skipped`` with the
    reason (not an image extension, no class, class out of range, missing, duplicate).
    """
    root = Path(folder)
    if not root.is_dir():
        raise PathError(f"The folder '{shown_name(root) or root}' does not exist or is not a folder; "
                        "please choose a folder of images.", "not_found")
    csv_path = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
    if labels_csv is not None or csv_path.is_file():
        return _from_labels_csv(root, csv_path)
    items, skipped = [], []
    wnids = imagenet_wnids()
    real_root = root.resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not path.resolve().is_relative_to(real_root):  # a symbolic link leading out of the folder
            skipped.append((path, "a link to a file outside the folder"))
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((path, f"not an image file extension ({path.suffix or 'none'})"))
            continue
        candidates = [path.name] + [part for part in reversed(path.relative_to(root).parts[:-1])]
        index = None
        for text in candidates:
            match = _WNID_RE.match(text)
            if match and match.group(1) in wnids:
                index = wnids[match.group(1)]
                break
        if index is None:
            skipped.append((path, "no ImageNet WordNet id (like n01440764_...) in its name or folder, "
                                  "and no labels.csv"))
            continue
        items.append((path, index))
    return LabelledFiles(items, skipped)


def _from_labels_csv(root: Path, csv_path: Path) -> LabelledFiles:
    shown = shown_name(csv_path) or "labels.csv"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise PathError(f"The labels file '{shown}' does not exist; please check its name.", "not_found") from None
    except (OSError, UnicodeDecodeError, csv.Error):
        raise PathError(f"The labels file '{shown}' cannot be read as CSV text; please save it as a UTF-8 "
                        "CSV file with columns file and class_index.", "unreadable") from None
    if not rows or not {"file", "class_index"} <= set(rows[0]):
        raise PathError(f"The labels file '{shown}' needs a header row with the columns file and class_index "
                        "and at least one row; please fix it.", "invalid")
    items, skipped, seen, mentioned = [], [], set(), set()
    for row in rows:
        file = (row.get("file") or "").strip()
        try:
            path = safe_resolve(root, file, must_exist=True)
        except PathError as exc:
            skipped.append((root / file, str(exc)))
            continue
        mentioned.add(path)
        if path.is_dir() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((path, "not an image file"))
            continue
        try:
            index = int(str(row.get("class_index", "")).strip())
        except ValueError:
            index = -1
        if not 0 <= index < 1000:
            skipped.append((path, f"class_index {row.get('class_index')!r} is not an ImageNet class (0-999)"))
            continue
        if path in seen:
            skipped.append((path, "listed twice in the labels file (first row kept)"))
            continue
        seen.add(path)
        items.append((path, index))
    csv_resolved = csv_path.resolve()
    for path in sorted(p for p in root.resolve().rglob("*") if p.is_file()):
        if path not in mentioned and path != csv_resolved:
            skipped.append((path, "not listed in the labels file"))
    return LabelledFiles(items, skipped)


# ----------------------------------------------------------------------------- safe paths
def safe_resolve(root: str | os.PathLike, relative: str | os.PathLike, *, must_exist: bool = True) -> Path:
    """Resolve a user-chosen ``relative`` path inside the configured ``root`` or raise :class:`PathError`.

    Refused: absolute paths (POSIX or Windows drive/UNC), NUL bytes, and anything whose resolved
    location (after ``..`` and symbolic links) is outside ``root``. With ``must_exist`` the target
    must exist. Messages echo only the user's own input, never the server's folders. An empty
    string or ``"."`` is the root itself.
    """
    try:
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathError("The data folder configured on this server is not available; please ask the "
                        "administrator to check it.", "not_found") from None
    text = os.fspath(relative) if relative is not None else ""
    if not isinstance(text, str):
        raise PathError("Please give the path as text.", "invalid")
    shown = "".join(ch if ch.isprintable() else "?" for ch in text)[:120]
    if "\x00" in text:
        raise PathError(f"The path '{shown}' contains an invalid character; please choose another.", "invalid")
    if os.path.isabs(text) or PureWindowsPath(text).drive or PureWindowsPath(text).root:
        # Not echoed: an absolute path may name the server's own folders.
        raise PathError("Absolute paths are not accepted; please give a path relative to the data folder.",
                        "outside_root")
    try:
        target = (base / text).resolve(strict=False)
    except (OSError, RuntimeError):  # symlink loops
        raise PathError(f"The path '{shown}' cannot be resolved (it may contain a link loop); please choose "
                        "another.", "invalid") from None
    if target != base and not target.is_relative_to(base):
        raise PathError(f"The path '{shown}' points outside the data folder; please choose a folder inside it.",
                        "outside_root")
    if must_exist and not target.exists():
        raise PathError(f"The path '{shown}' does not exist in the data folder; please check its name.",
                        "not_found")
    return target
