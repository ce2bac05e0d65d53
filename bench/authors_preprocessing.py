"""Table 1 with the authors' preprocessing instead of the model's (docs/results.md, ledger item 6).

The authors' Keras script loads each photo with ``image.load_img(path, target_size=(224, 224))``:
a nearest-neighbour resize of the whole photo to 224 × 224 (aspect ratio not kept, no crop). This
project's models resize the short side with bicubic filtering and crop the centre (timm's eval
transform). This script writes each photo of ``--images`` the authors' way to a scratch folder
outside the repository (lossless PNG at the model's input size, which ``pd_core`` then uses as it
is: ``images.plan_preprocessing``), and runs the protocol on those files under the *original file
names*, so the tuning split, the image order and every seed are those of the ordinary run. Compare
its table with the ordinary run of the same settings, ``python -m pd_core evaluate --images
../shared/imagenet-dev --table 1 --preset paper --attacks fgsm,igsm,deepfool --limit 128 --seed 0``
(docs/results/table2_lite0.csv).

The authors' "caffe" normalisation (BGR, mean-subtracted, 0–255) belongs to Keras ResNet-50 and
does not apply to EfficientNet-Lite, whose own normalisation is kept.

    PD_THREADS=1 python bench/authors_preprocessing.py --images ../shared/imagenet-dev \
        --attacks fgsm,igsm,deepfool --limit 128 --seed 0 --out docs/results/table1_authors_preprocessing.csv \
        --compare docs/results/table2_lite0.csv
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def authors_copy(items, folder: Path, size: int) -> list:
    """Each item's photo resized to ``size`` × ``size`` with nearest-neighbour (Keras's default),
    saved as PNG in ``folder``; returns items with the original names and labels and the copies' paths."""
    from PIL import Image

    from pd_core.evaluation import Item
    from pd_core.images import open_image

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for k, it in enumerate(items):
        target = folder / f"{k:05d}.png"
        if not target.exists():
            open_image(it.path).convert("RGB").resize((size, size), Image.Resampling.NEAREST).save(target)
        copies.append(Item(it.name, target, it.label))
    return copies


def paired_table(ours, theirs, attacks=("clean", "fgsm", "igsm", "deepfool")) -> str:
    """Single-run accuracy of two result files on the images counted in both (the undefended model
    right on both versions), with the discordant counts: right only in ``ours`` / only in ``theirs``."""
    from pd_core.evaluation import read_results, wilson_interval

    a, b = read_results(ours), read_results(theirs)

    def counted(rows):
        clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
        return set(clean.loc[clean["correct"].astype(int) == 1, "image"])

    both = counted(a) & counted(b)
    lines = [f"images counted in both: {len(both)} (ours {len(counted(a))}, theirs {len(counted(b))}); single run",
             f"{'attack':10s} {'n':>4s}  {'ours':18s}  {'theirs':18s}  only ours / only theirs"]
    for attack in attacks:
        pick = [r[(r["attack"] == attack) & (r["defence"] == "single") & r["image"].isin(both)]
                .set_index("image")["correct"].astype(int) for r in (a, b)]
        shared = pick[0].index.intersection(pick[1].index)
        if shared.empty:
            continue
        x, y = pick[0][shared], pick[1][shared]
        cells = []
        for v in (x, y):
            lo, hi = wilson_interval(int(v.sum()), len(v))
            cells.append(f"{100 * v.mean():.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        lines.append(f"{attack:10s} {len(shared):4d}  {cells[0]:18s}  {cells[1]:18s}  "
                     f"{int(((x == 1) & (y == 0)).sum())} / {int(((x == 0) & (y == 1)).sum())}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from pd_core.evaluation import ProtocolSettings, evaluate, load_items, progress_bar
    from pd_core.models import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--attacks", default="fgsm,igsm,deepfool")
    p.add_argument("--preset", default="paper")
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--scratch", help="folder for the resized copies (default: a folder in the system's temp dir)")
    p.add_argument("--compare", metavar="CSV",
                   help="the ordinary run's results: print both on the images counted in both")
    args = p.parse_args(argv)

    model = load_model(args.model)
    scratch = Path(args.scratch or Path(tempfile.gettempdir()) / f"pd_authors_{Path(args.images).resolve().name}")
    items = authors_copy(load_items(args.images), scratch, model.spec.input_size)
    update, close = progress_bar(sys.stderr.isatty())
    try:
        settings = ProtocolSettings(attacks=tuple(args.attacks.split(",")), preset=args.preset, limit=args.limit,
                                    seed=args.seed)
        result = evaluate(model, items, settings, out_csv=args.out, progress=update)
    finally:
        close()
    print(result.format_table())
    print(f"rows: {args.out} (copies in {scratch})")
    if args.compare:
        print(f"\nours = {args.compare}, theirs = the authors' preprocessing")
        print(paired_table(args.compare, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
