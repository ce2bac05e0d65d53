"""Gallery photos as test inputs, shared by the test modules (tests/ is on ``sys.path`` under pytest)::

    from gallery_cases import correct_foolbox_photos, correct_gallery_items, labelled_folder

The photos ship with the package (:func:`pd_core.images.gallery`), so these need no data folder.
"""
from __future__ import annotations

import torch


def correct_foolbox_photos(model, count: int, among: int):
    """``(images, labels)``: the first ``count`` of the first ``among`` Foolbox photos that ``model``
    classifies correctly, at its input size (asserted: there are ``count`` of them)."""
    from pd_core.images import gallery, load_batch

    items = [g for g in gallery() if g.source == "Foolbox"][:among]
    x = load_batch([g.path for g in items], spec=model.spec, device=model.device)
    labels = torch.tensor([g.label_index for g in items])
    with torch.no_grad():
        ok = (model(x).argmax(1) == labels).nonzero()[:, 0][:count]
    assert len(ok) == count, "precondition: enough correctly classified photos"
    return x[ok], labels[ok]


def correct_gallery_items(model, names) -> list[tuple]:
    """``[(path, label index)]`` of the named gallery photos, asserted to be classified correctly."""
    from pd_core.images import gallery, load_batch

    by_name = {g.path.name: g for g in gallery()}
    chosen = [(by_name[n].path, by_name[n].label_index) for n in names]
    x = load_batch([p for p, _ in chosen], spec=model.spec, device=model.device)
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == [lbl for _, lbl in chosen], "precondition: correctly classified"
    return chosen


def labelled_folder(tmp_path, count: int = 2):
    """A folder ``tmp_path/imgs`` with the first ``count`` ``imagenet_*`` gallery photos and their
    ``labels.csv`` (file,class_index), as the folder subcommands read it."""
    from pd_core.images import gallery

    items = [g for g in gallery() if g.path.name.startswith("imagenet_")][:count]
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(folder / "labels.csv", "w") as fh:
        fh.write("file,class_index\n")
        for g in items:
            (folder / g.path.name).write_bytes(g.path.read_bytes())
            fh.write(f"{g.path.name},{g.label_index}\n")
    return folder
