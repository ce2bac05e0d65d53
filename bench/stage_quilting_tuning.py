"""Copy image quilting's patch-database images (only those) into ``shared/`` for a GPU machine.

The GPU check times every zoo defence; image quilting builds its patch database from the held-apart
tuning images of ``../shared/imagenet-800`` (:func:`pd_core.defences.quilting.database_sources`),
and the ``../shared`` beside a checkout does not travel to a lent GPU machine, while a ``shared/``
folder inside the checkout does (it is ignored by git here: never committed). The 29 tuning images
are 2.9 MB; the whole folder, 90 MB, would not fit the transfer. Names and bytes are kept, so the
database built there has the same cache key, and the same patches, as the one built here.

    python bench/stage_quilting_tuning.py            # ../shared/imagenet-800 -> shared/imagenet-800
    PD_QUILTING_DATABASE=shared/imagenet-800 bash bench/gpu_check.sh     # then, on the GPU machine

Delete ``shared/`` afterwards; it is a transport copy, not part of the project.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pd_core.defences.quilting import DEFAULT_DATABASE, database_sources  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(DEFAULT_DATABASE),
                        help="the database folder (default: %(default)s)")
    parser.add_argument("--dest", type=Path, default=ROOT / "shared" / "imagenet-800",
                        help="where to copy its tuning images, inside the checkout (default: %(default)s)")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    sources = database_sources(source)
    if not sources:
        print(f"no held-apart tuning images in {source}", file=sys.stderr)
        return 1
    total = 0
    for item in sources:
        relative = Path(item.path).resolve().relative_to(source)
        target = args.dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
        total += target.stat().st_size
    print(f"copied {len(sources)} tuning images ({total / 1e6:.1f} MB) from {source} to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
