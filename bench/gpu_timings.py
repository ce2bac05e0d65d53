"""GPU against CPU, in one run, and the GPU tests' outcome: the one table of ``bench/gpu_check.sh``.

Times, on the GPU and then on the CPU of the same machine (all its cores unless ``PD_THREADS`` says
otherwise), with the same inputs:

- the defence (deflection guided by R-CAM + wavelet denoising) on a batch of 256 photos;
- Ens-10 (ten defended copies and their vote) on 16 photos;
- one attack (PGD, interactive preset) on 16 photos;
- one ladder rung (BPDA+EOT, margin loss, 8/255, 10 steps, EOT 4) on 4 photos;
- one evaluation unit (8 photos × FGSM at the paper's preset × every Table 1 column);
- the app's story for one photo (the strawberry: FGSM, the defence, Ens-10, maps and norms).

Each GPU figure is the median of three runs after one warm-up run (CUDA's lazy start and cuDNN's
algorithm search are not counted), synchronised; each CPU figure is one run after a warm-up on a small
slice. The sizes keep the CPU's side, the slow one, within ``--budget`` seconds on a 16-core machine;
a workload that would start after the budget is spent is listed as not timed, so the table is always
printed. The ratio column is CPU time / GPU time. ``--tests JUNIT.xml`` adds one line per GPU-marked
test (pass / fail / skip) from pytest's JUnit report.

``--cpu-dry-run``: the "GPU" column is the CPU too and the sizes are small, so the script is checked on
a machine without a GPU; its ratios mean nothing.

Run ``bash bench/gpu_check.sh`` rather than this file: it runs the tests first and then this.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import gpu_calls  # noqa: E402  (tests/gpu_calls.py: the calls the GPU tests make)

#: Work sizes: (full run on a GPU machine, dry run on the CPU).
SIZES = {
    "defence": (256, 8),
    "ensemble": (16, 2),
    "attack": (16, 2),
    "rung": (4, 2),
    "rung_steps": (10, 2),
    "rung_eot": (4, 2),
    "unit": (8, 2),
    "zoo": (64, 4),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``repeats`` runs of ``fn()`` (seconds), synchronised on ``device``."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def workloads(dry: bool, folder: Path):
    """``[(label, make(model) -> (call, warm_up_call))]``: each builds its inputs on the model's device."""
    k = 1 if dry else 0
    size = {name: values[k] for name, values in SIZES.items()}

    def defence(model):
        x, _ = gpu_calls.photos(model, size["defence"])
        return (lambda: gpu_calls.defend(model, x, seed=0)), (lambda: gpu_calls.defend(model, x[:2], seed=0))

    def ens10(model):
        x, _ = gpu_calls.photos(model, size["ensemble"])
        return (lambda: gpu_calls.ensemble(model, x, n=10, seed=0)), (lambda: gpu_calls.ensemble(model, x[:1]))

    def attack(model):
        x, y = gpu_calls.photos(model, size["attack"])
        return ((lambda: gpu_calls.attack(model, x, y, "pgd", preset="interactive", seed=0)),
                (lambda: gpu_calls.attack(model, x[:1], y[:1], "pgd", preset="interactive", seed=0)))

    def rung(model):
        x, y = gpu_calls.photos(model, size["rung"])
        kw = dict(rung="bpda_eot", eps_255=8, steps=size["rung_steps"], eot=size["rung_eot"], loss="margin")
        return (lambda: gpu_calls.ladder_rung(model, x, y, **kw)), (lambda: gpu_calls.ladder_rung(
            model, x[:1], y[:1], rung="bpda_eot", eps_255=8, steps=1, eot=1, loss="margin"))

    def unit(model):
        items = gpu_calls.labelled_items(model, folder / f"unit-{model.device.type}", size["unit"])
        return ((lambda: gpu_calls.evaluation_unit(model, items, "fgsm")),
                (lambda: gpu_calls.evaluation_unit(model, items[:1], "fgsm")))

    def story(model):
        x, label = gpu_calls.story_photo(model)
        call = lambda: gpu_calls.story(model, x, label)  # noqa: E731
        return call, call

    def zoo_defence(name):
        def make(model):
            from pd_core.defences import create_defence
            from pd_core.randomness import make_generator

            x, _ = gpu_calls.photos(model, size["zoo"])
            defence = create_defence(name, model)
            return ((lambda: defence.apply(x, make_generator(0, x.device))),
                    (lambda: defence.apply(x[:1], make_generator(0, x.device))))
        return make

    from pd_core.defences import defence_names

    # The zoo last: the paper's pipeline is timed first when the budget runs short (issue 20: the zoo's
    # GPU counterpart joins this check).
    zoo = [(f"zoo: {name}, batch {size['zoo']}", zoo_defence(name)) for name in defence_names(groups=("zoo",))]
    return [
        (f"defence, batch {size['defence']}", defence),
        (f"Ens-10, {size['ensemble']} photos ({10 * size['ensemble']} copies)", ens10),
        (f"attack PGD (interactive), {size['attack']} photos", attack),
        (f"ladder rung BPDA+EOT 8/255, {size['rung_steps']} steps, EOT {size['rung_eot']}, {size['rung']} photos",
         rung),
        (f"evaluation unit: {size['unit']} photos x FGSM x Table 1 columns", unit),
        ("story: strawberry, FGSM (paper), defence, Ens-10", story),
        *zoo,
    ]


def measure(dry: bool, budget: float = 200.0) -> tuple[list[tuple[str, float | None, float | None, str]], str]:
    """Rows ``(label, gpu seconds, cpu seconds, note)`` and a header line naming the devices."""
    started = time.monotonic()
    gpu = torch.device("cpu") if dry else torch.device("cuda")
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --cpu-dry-run to check the script on the CPU")
    threads = os.environ.get("PD_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    header = (f"device: {name}; CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
              f"torch threads; torch {torch.__version__}")
    models = {"gpu": gpu_calls.load(gpu), "cpu": gpu_calls.load("cpu")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-timings-") as tmp:
        for label, make in workloads(dry, Path(tmp)):
            if time.monotonic() - started > budget:
                rows.append((label, None, None, f"not timed: the {budget:.0f} s budget was spent"))
                continue
            figures, notes = {}, []
            for side, model in models.items():
                device = model.device
                try:
                    call, warm_up = make(model)
                    warm_up() if side == "cpu" else call()
                    figures[side] = _timed(call, device, repeats=1 if (side == "cpu" or dry) else 3)
                except Exception as exc:  # one failed workload must not hide the others
                    figures[side] = None
                    notes.append(f"{side}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            rows.append((label, figures["gpu"], figures["cpu"], "; ".join(notes)))
            print(f"  timed: {label}", file=sys.stderr, flush=True)
    return rows, header


def test_rows(junit: Path | None) -> list[tuple[str, str, str]]:
    """``(test id, outcome, detail)`` of each test in pytest's JUnit report."""
    if junit is None:
        return []
    if not junit.exists():
        return [("(the GPU tests)", "NOT RUN", f"no report at {junit}")]
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        ident = f"{case.get('classname', '').replace('tests.', '')}::{case.get('name')}"
        outcome, detail = "pass", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[kind]
                detail = (found.get("message") or "").splitlines()[0][:90] if found.get("message") else ""
                break
        out.append((ident, outcome, detail))
    return out


def _seconds(value: float | None) -> str:
    return "failed" if value is None else f"{value:9.3f}"


def print_table(tests, rows, header: str, dry: bool, stream=sys.stdout) -> None:
    width = max([len(t[0]) for t in tests] + [len(r[0]) for r in rows] + [40])
    gpu_title = "CPU* s" if dry else "GPU s"
    line = "-" * (width + 48)
    print(line, file=stream)
    print(f"GPU check ({'DRY RUN on the CPU: *the GPU column is the CPU, ratios mean nothing' if dry else 'one GPU'})",
          file=stream)
    print(header, file=stream)
    print(line, file=stream)
    print(f"{'what':<{width}}  {'result':>7}  {gpu_title:>9}  {'CPU s':>9}  {'CPU/GPU':>8}", file=stream)
    print(line, file=stream)
    for ident, outcome, detail in tests:
        print(f"{ident:<{width}}  {outcome:>7}" + (f"  {detail}" if detail and outcome != "pass" else ""),
              file=stream)
    if tests:
        print(line, file=stream)
    for label, g, c, note in rows:
        ratio = f"{c / g:7.1f}x" if (g and c) else "       -"
        result = "ok" if g is not None and c is not None else "FAIL"
        print(f"{label:<{width}}  {result:>7}  {_seconds(g)}  {_seconds(c)}  {ratio}" + (f"  {note}" if note else ""),
              file=stream)
    print(line, file=stream)
    passed = sum(t[1] == "pass" for t in tests)
    failed = sum(t[1] in ("FAIL", "ERROR", "NOT RUN") for t in tests)
    skipped = sum(t[1] == "skip" for t in tests)
    timing_failures = sum(1 for r in rows if r[1] is None or r[2] is None)
    print(f"GPU tests: {passed} passed, {failed} failed, {skipped} skipped; timings: {len(rows) - timing_failures} "
          f"ok, {timing_failures} failed", file=stream)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the GPU column on the CPU, small sizes")
    parser.add_argument("--tests", type=Path, default=None, help="pytest's JUnit XML report of the GPU tests")
    parser.add_argument("--budget", type=float, default=200.0,
                        help="seconds after which no further workload starts (default 200)")
    args = parser.parse_args(argv)
    tests = test_rows(args.tests)
    rows, header = measure(args.cpu_dry_run, args.budget)
    print_table(tests, rows, header, args.cpu_dry_run)
    bad = any(t[1] in ("FAIL", "ERROR", "NOT RUN") for t in tests) or any(r[1] is None or r[2] is None for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
