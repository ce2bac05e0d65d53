#!/usr/bin/env bash
# The GPU check (issue 21): one command on a GPU machine, under 8 minutes on one GPU, one table at the end:
# every GPU-marked test (pass / fail / skip) and the GPU's timings of the defence (batch 256), Ens-10, one
# attack, one ladder rung, one evaluation unit and the app's story, each beside the CPU's in the same run.
#
#   bash bench/gpu_check.sh                # on a machine with CUDA (uses the first visible card)
#   bash bench/gpu_check.sh --cpu-dry-run  # anywhere: the same code on the CPU, small sizes (checks the script)
#
# Exit status: 0 when every GPU test passed and every timing ran, 1 otherwise.
# The Ray test needs a loopback-only network namespace (unshare -n, as root; the loopback is brought up by
# tests/loopback_up.py, so iproute2 is not needed); without one it is skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=""
case "${1:-}" in
  --cpu-dry-run) dry="--cpu-dry-run" ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac

if [ -z "$dry" ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "No CUDA GPU is visible here (torch.cuda.is_available() is False); nothing was checked." >&2
  echo "Run 'bash bench/gpu_check.sh --cpu-dry-run' to check the script on the CPU." >&2
  exit 1
fi

work=$(mktemp -d /tmp/gpu-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
# Time limits keep the check under 8 minutes on a GPU machine. The dry run computes everything on the CPU,
# twice (its "GPU" side is the CPU), so it gets the time a small CPU needs.
tests_limit=240; timings_limit=230; budget=180
if [ -n "$dry" ]; then
  export PD_GPU_TESTS_ON_CPU=1
  tests_limit=3000; timings_limit=900; budget=700
fi
export RAY_USAGE_STATS_ENABLED=0
# Image quilting's patch database: ../shared/imagenet-800 beside the checkout, else the transport copy of its
# tuning images that bench/stage_quilting_tuning.py leaves in shared/ (a GPU machine gets no ../shared).
if [ -z "${PD_QUILTING_DATABASE:-}" ] && [ ! -d ../shared/imagenet-800 ] && [ -d shared/imagenet-800 ]; then
  export PD_QUILTING_DATABASE="$PWD/shared/imagenet-800"
fi

# 1. Every GPU-marked test, in one process (-n 0: one card, no competing workers), with a JUnit report.
# A test file that cannot be imported here (say, the app's, where Streamlit is missing) shows in the table
# as an ERROR row and fails the check, but no longer stops the GPU tests from running (first H200 run).
echo "== GPU-marked tests" >&2
started=$SECONDS
timeout "$tests_limit" python -m pytest -m gpu -n 0 -q -p no:cacheprovider --continue-on-collection-errors \
  --junitxml="$work/gpu_tests.xml" tests \
  > "$work/pytest.log" 2>&1
tests_rc=$?
tail -n 5 "$work/pytest.log" >&2
if [ "$tests_rc" -ne 0 ]; then
  grep -E "^(FAILED|ERROR)" "$work/pytest.log" >&2 || true
fi

# 2. The timings, and the one table (tests included).
echo "== timings (GPU, then CPU, same inputs)" >&2
timeout "$timings_limit" python bench/gpu_timings.py $dry --budget "$budget" --tests "$work/gpu_tests.xml"
table_rc=$?

if [ "$tests_rc" -ne 0 ] || [ "$table_rc" -ne 0 ]; then
  [ "$tests_rc" -eq 124 ] && echo "the GPU tests ran past $tests_limit s" >&2
  [ "$table_rc" -eq 124 ] && echo "the timings ran past $timings_limit s" >&2
  echo "GPU check: FAILED after $((SECONDS - started)) s" >&2
  exit 1
fi
echo "GPU check: all passed in $((SECONDS - started)) s" >&2
exit 0
