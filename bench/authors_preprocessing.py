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
        --attacks fgsm,igsm,deepfool --limit 128 --seed 0 --out docs/results/table1_authors_preprocessing.csv
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


def main(argv=None) -> int:
    from pd_core.evaluation import evaluate, load_items, progress_bar
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
    args = p.parse_args(argv)

    model = load_model(args.model)
    scratch = Path(args.scratch or Path(tempfile.gettempdir()) / f"pd_authors_{Path(args.images).resolve().name}")
    items = authors_copy(load_items(args.images), scratch, model.spec.input_size)
    update, close = progress_bar(sys.stderr.isatty())
    try:
        result = evaluate(model, items, attacks=args.attacks.split(","), preset=args.preset, limit=args.limit,
                          seed=args.seed, out_csv=args.out, progress=update)
    finally:
        close()
    print(result.format_table())
    print(f"rows: {args.out} (copies in {scratch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
