"""ImageNet validation data as people have it on disk, listed lazily (issue 12).

A dataset here is a stream of :class:`ImageRecord` — ``(path, label, name)`` with ``label`` the
ImageNet-1k class index in the usual sorted-WordNet-id order (torchvision, timm) — never the
decoded images: a worker opens a file only when it evaluates it, so 50,000 images cost a few
megabytes of paths.

Layouts (detected by :func:`detect_layout`, or named with ``layout=``):

``labels-csv``
    Today's ``labels.csv`` (``file,class_index``) in the folder or given with ``labels=``
    (:func:`pd_core.images.read_labelled_folder`).
``imagefolder``
    torchvision's ImageFolder: ``val/n01440764/ILSVRC2012_val_00000293.JPEG``; also flat files
    whose names start with a WordNet id (``n01440764_tench.JPEG``).
``kaggle``
    The flat folder ``ILSVRC2012_val_00000001.JPEG ...`` of Kaggle's "ImageNet Object
    Localization Challenge" with ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first
    token of the prediction string is the WordNet id). The CSV is looked for in the folder and in
    up to four folders above it (Kaggle keeps it at the top, the images in
    ``ILSVRC/Data/CLS-LOC/val``).
``devkit``
    The same flat folder with the ILSVRC2012 devkit's ``ILSVRC2012_validation_ground_truth.txt``
    (one 1-based ILSVRC2012 id per line; line i is ``ILSVRC2012_val_<i:08d>``). Those ids follow
    the devkit's ``meta.mat`` order, which is **not** the sorted-WordNet-id order of the class
    indices, and no installed package ships that table, so the mapping is read from the devkit's
    ``meta.mat`` (next to the ground-truth file in ``ILSVRC2012_devkit_t12/data/``, or given with
    ``devkit_meta=``) or from a text file of the 1000 WordNet ids in devkit order.

``subset`` (a file of names, one per line, like RobustBench's 5,000 ImageNet ids) keeps only
the listed files; an entry matches a record's relative name or its file name, with or without
extension. Every mistake (missing or foreign label file, labels that do not cover the images, a
subset naming files that are not there) is a :class:`DatasetError` with one sentence.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterator, NamedTuple

__all__ = ["ImageRecord", "Dataset", "DatasetError", "open_dataset", "detect_layout", "read_subset",
           "devkit_wnids", "LAYOUTS"]

LAYOUTS = ("labels-csv", "imagefolder", "kaggle", "devkit")
KAGGLE_CSV = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")
_WNID = re.compile(r"^n\d{8}$")


class DatasetError(ValueError):
    """The data or its label file cannot be used; ``str()`` is one sentence for the user."""


class ImageRecord(NamedTuple):
    """One labelled file: ``path``, ImageNet-1k class ``label`` (0-999), ``name`` relative to the root."""

    path: Path
    label: int
    name: str


def _image_extensions() -> set[str]:
    from .images import IMAGE_EXTENSIONS

    return {e.lower() for e in IMAGE_EXTENSIONS}


def _wnid_index() -> dict[str, int]:
    from .images import imagenet_wnids

    return imagenet_wnids()


def _find_upwards(root: Path, name: str, levels: int = 4) -> Path | None:
    for folder in [root, *list(root.resolve().parents)[:levels]]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _find_devkit_truth(root: Path) -> Path | None:
    for base in (root, root.parent):
        for sub in ("", "ILSVRC2012_devkit_t12/data", "data"):
            candidate = base / sub / DEVKIT_TRUTH if sub else base / DEVKIT_TRUTH
            if candidate.is_file():
                return candidate
    return None


def _label_file_kind(path: Path) -> str:
    """Which layout a label file given by the user belongs to, from its first line."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline().strip()
    except FileNotFoundError:
        raise DatasetError(f"The label file '{path.name}' does not exist; please check its name.") from None
    except OSError:
        raise DatasetError(f"The label file '{path.name}' cannot be read; please check its permissions.") from None
    header = [h.strip() for h in first.split(",")]
    if header[:2] == ["ImageId", "PredictionString"]:
        return "kaggle"
    if {"file", "class_index"} <= set(header):
        return "labels-csv"
    if first.isdigit():
        return "devkit"
    raise DatasetError(f"The label file '{path.name}' is none of labels.csv (file,class_index), Kaggle's "
                       f"{KAGGLE_CSV} (ImageId,PredictionString) or the devkit's {DEVKIT_TRUTH}; please "
                       "give one of those.")


def detect_layout(root: str | os.PathLike, labels: str | os.PathLike | None = None) -> tuple[str, Path | None]:
    """``(layout, label file or None)`` for a folder; see the module docstring for the order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"The folder '{root.name or root}' does not exist or is not a folder; "
                           "please give the folder of validation images.")
    if labels is not None:
        labels = Path(labels)
        return _label_file_kind(labels), labels
    if (root / "labels.csv").is_file():
        return "labels-csv", root / "labels.csv"
    kaggle = _find_upwards(root, KAGGLE_CSV)
    if kaggle is not None:
        return "kaggle", kaggle
    truth = _find_devkit_truth(root)
    if truth is not None:
        return "devkit", truth
    return "imagefolder", None


def read_subset(path: str | os.PathLike) -> set[str]:
    """The names of a subset file (one per line; blank lines and ``#`` comments ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"The subset file '{path.name}' does not exist; please check its name.") from None
    except (OSError, UnicodeDecodeError):
        raise DatasetError(f"The subset file '{path.name}' cannot be read as text; please give one file "
                           "name per line.") from None
    names = {line.strip().replace("\\", "/") for line in lines if line.strip() and not line.startswith("#")}
    if not names:
        raise DatasetError(f"The subset file '{path.name}' lists no file names; please give one per line.")
    return names


def _subset_keys(name: str) -> tuple[str, ...]:
    base = name.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0]
    return (name, name.rsplit(".", 1)[0], base, stem)


def devkit_wnids(meta: str | os.PathLike) -> list[str]:
    """The 1000 WordNet ids in ILSVRC2012-id order (entry i is id i + 1), from the devkit's
    ``meta.mat`` (``synsets`` with ``ILSVRC2012_ID`` and ``WNID``) or a text file of 1000 ids."""
    meta = Path(meta)
    if not meta.is_file():
        raise DatasetError(f"The devkit mapping '{meta.name}' does not exist; please give the devkit's "
                           "meta.mat or a list of the 1000 WordNet ids in devkit order.")
    if meta.suffix.lower() == ".mat":
        try:
            from scipy.io import loadmat

            synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
            pairs = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        except Exception:  # noqa: BLE001 - any failure to read it is the same user mistake
            raise DatasetError(f"'{meta.name}' is not the devkit's meta.mat (a 'synsets' table with "
                               "ILSVRC2012_ID and WNID); please give the file from ILSVRC2012_devkit_t12/data.") from None
        wnids = [pairs.get(i, "") for i in range(1, 1001)]
    else:
        try:
            wnids = [w.strip() for w in meta.read_text().split() if w.strip()]
        except (OSError, UnicodeDecodeError):
            wnids = []
    known = _wnid_index()
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or any(w not in known for w in wnids):
        raise DatasetError(f"'{meta.name}' does not hold the 1000 ImageNet-1k WordNet ids in devkit order; "
                           "please give the devkit's meta.mat or such a list.")
    return wnids


class Dataset:
    """A labelled folder, listed lazily. Iterate for :class:`ImageRecord` in a fixed order."""

    def __init__(self, root: Path, layout: str, label_file: Path | None, devkit_meta: Path | None,
                 subset: set[str] | None):
        self.root, self.layout, self.label_file = root, layout, label_file
        self.devkit_meta, self.subset = devkit_meta, subset

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, layout={self.layout!r})"

    def __iter__(self) -> Iterator[ImageRecord]:
        records = {"labels-csv": self._labels_csv, "imagefolder": self._imagefolder,
                   "kaggle": self._flat, "devkit": self._flat}[self.layout]()
        if self.subset is None:
            yield from records
            return
        wanted = {key: name for name in self.subset for key in _subset_keys(name)}
        found: set[str] = set()
        for rec in records:
            hit = next((wanted[k] for k in _subset_keys(rec.name) if k in wanted), None)
            if hit is not None:
                found.add(hit)
                yield rec
        missing = sorted(self.subset - found)
        if missing:
            raise DatasetError(f"{len(missing)} of the {len(self.subset)} subset names are not images of this "
                               f"folder (e.g. '{missing[0]}'); please check the subset file and the folder.")

    def _files(self, folder: Path) -> Iterator[Path]:
        """Image files under ``folder``, depth first, sorted per folder (one folder listed at a time)."""
        extensions = _image_extensions()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir():
                yield from self._files(Path(entry.path))
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in extensions:
                yield Path(entry.path)

    def _name(self, path: Path) -> str:
        """The path relative to the root, as :func:`pd_core.evaluation.load_items` names it."""
        for root in (self.root, self.root.resolve()):
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                continue
        return path.name

    def _labels_csv(self) -> Iterator[ImageRecord]:
        from .images import InputError, read_labelled_folder

        try:
            pairs = read_labelled_folder(self.root, self.label_file)
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        for path, label in pairs:
            yield ImageRecord(Path(path), int(label), self._name(Path(path)))

    def _imagefolder(self) -> Iterator[ImageRecord]:
        known = _wnid_index()
        count = 0
        for path in self._files(self.root):
            parts = [path.name.split("_")[0], *reversed(path.relative_to(self.root).parts[:-1])]
            wnid = next((p for p in parts if _WNID.match(p) and p in known), None)
            if wnid is not None:
                count += 1
                yield ImageRecord(path, known[wnid], self._name(path))
        if count == 0:
            raise DatasetError(f"No labelled images in '{self.root.name}': it is not an ImageFolder "
                               "(n01440764/...), and no labels.csv, LOC_val_solution.csv or "
                               f"{DEVKIT_TRUTH} was found; please give the label file with --labels.")

    def _flat_labels(self) -> dict[str, int]:
        """Validation-image stem (``ILSVRC2012_val_00000001``) -> class index."""
        known = _wnid_index()
        shown = self.label_file.name
        if self.layout == "kaggle":
            out = {}
            try:
                with self.label_file.open(newline="", encoding="utf-8-sig") as fh:
                    for row in csv.DictReader(fh):
                        wnid = (row.get("PredictionString") or "").split()[:1]
                        if not wnid or wnid[0] not in known:
                            raise DatasetError(f"'{shown}' has a row for {row.get('ImageId')} without an "
                                               "ImageNet WordNet id; please give Kaggle's original file.")
                        out[(row.get("ImageId") or "").strip()] = known[wnid[0]]
            except (OSError, csv.Error, UnicodeDecodeError):
                raise DatasetError(f"'{shown}' cannot be read as CSV; please give Kaggle's original file.") from None
            return out
        meta = self.devkit_meta or self.label_file.with_name("meta.mat")
        if self.devkit_meta is None and not meta.is_file():
            raise DatasetError(f"{DEVKIT_TRUTH} uses the devkit's class ids, whose order is in its meta.mat, "
                               "which was not found next to it; please pass --devkit-meta "
                               "ILSVRC2012_devkit_t12/data/meta.mat (or a list of the 1000 WordNet ids in devkit order).")
        wnids = devkit_wnids(meta)
        try:
            lines = self.label_file.read_text().split()
            ids = [int(v) for v in lines]
        except (OSError, ValueError, UnicodeDecodeError):
            raise DatasetError(f"'{shown}' is not the devkit's ground truth (one class id 1-1000 per line); "
                               "please give the original file.") from None
        if any(not 1 <= i <= 1000 for i in ids):
            raise DatasetError(f"'{shown}' has class ids outside 1-1000; please give the devkit's original file.")
        return {f"ILSVRC2012_val_{n + 1:08d}": known[wnids[i - 1]] for n, i in enumerate(ids)}

    def _flat(self) -> Iterator[ImageRecord]:
        labels = self._flat_labels()
        count = 0
        missing: list[str] = []
        for path in self._files(self.root):
            stem = path.name.rsplit(".", 1)[0]
            if not _VAL_NAME.match(stem):
                continue
            if stem not in labels:
                missing.append(path.name)
                continue
            count += 1
            yield ImageRecord(path, labels[stem], self._name(path))
        if missing:
            raise DatasetError(f"'{self.label_file.name}' has no label for {len(missing)} image(s) of the folder "
                               f"(e.g. {missing[0]}); is it the label file of these images?")
        if count == 0:
            raise DatasetError(f"No ILSVRC2012_val_*.JPEG images in '{self.root.name}' to go with "
                               f"'{self.label_file.name}'; please check the folder.")


def open_dataset(root: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                 devkit_meta: str | os.PathLike | None = None, subset: str | os.PathLike | None = None,
                 layout: str = "auto") -> Dataset:
    """A lazily listed labelled folder; see the module docstring. Label and subset files are
    checked when iterating (labels) or here (existence, subset syntax)."""
    root = Path(root)
    detected, label_file = detect_layout(root, labels)
    if layout != "auto":
        if layout not in LAYOUTS:
            raise DatasetError(f"Unknown layout '{layout}'; choose one of {', '.join(LAYOUTS)} or auto.")
        if layout != detected:
            raise DatasetError(f"The folder looks like the '{detected}' layout, not '{layout}'; please give the "
                               "matching label file with --labels.")
    return Dataset(root, detected, label_file, Path(devkit_meta) if devkit_meta else None,
                   read_subset(subset) if subset is not None else None)
