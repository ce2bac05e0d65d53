"""Benchmark: throughput of ``pd_core.evaluation.evaluate`` (Table 1, all seven rows, single and Ens-10)
against a naive per-image loop over the same library calls, in the same process.

Both sides do the same work per image: classify the clean photo (drop it if wrong), and for the
clean row and each attack: the adversarial image (``pd_core.attacks.attack``), the undefended
prediction, one defended run and the Ens-10 vote.

* batched: ``evaluate(model, items, ProtocolSettings(table=1, ensemble=10, batch_size=N, ...))``: one chunk of
  N images per attack; one forward pass gives the undefended prediction and the R-CAM; the single
  run is the first of the ten copies; copies are denoised in batches and classified, on the CPU, in
  channels-last mini-batches of ``evaluation.CPU_MODEL_BATCH`` (4) images (``--nchw-too`` also times
  whole chunks in NCHW, the plain "one big batch" approach).
* naive: for each image, ``attack(model, x[None], ...)``, ``model(adv)``, ``defend(model, adv)`` +
  ``model``, ``ensemble_predict(model, adv, n=10)`` — the way a user would script it with the public API.

Slow attacks: JSMA, L-BFGS and C&W are minutes per image at their paper presets on a CPU. By default
C&W uses its ``interactive`` preset (3×40 steps instead of 4×100), which the output states; the
other attacks use ``--preset`` (paper). The ratio is what matters: both sides use the same presets.
Times are reported as wall time and as CPU time of this process; on a machine shared with other
users only the CPU time is comparable between the runs (use one thread so that idle OpenMP threads
spinning do not count).

    PD_THREADS=1 python bench/bench_evaluation.py [--n 8] [--attacks fgsm,igsm,deepfool,jsma,lbfgs,cw]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pd_core import evaluation as ev  # noqa: E402
from pd_core.attacks import ATTACKS, attack  # noqa: E402
from pd_core.defence import defend, ensemble_predict  # noqa: E402
from pd_core.images import gallery, load_image  # noqa: E402
from pd_core.models import load_model  # noqa: E402

DEV_DIR = ROOT.parent / "shared" / "imagenet-dev"


def choose_items(n: int) -> tuple[list[tuple[Path, int]], str]:
    if (DEV_DIR / "labels.csv").is_file():
        items, _ = ev.split_tuning(ev.load_items(DEV_DIR), ev.DEFAULT_TUNING_FRACTION)
        return [(it.path, it.label) for it in items[:n]], f"../shared/imagenet-dev (first {n} evaluation images)"
    g = [x for x in gallery() if x.source == "Foolbox"][:n]
    return [(x.path, x.label_index) for x in g], f"Foolbox gallery samples (first {n})"


def naive(model, items, attacks, preset, overrides, ensemble, seed):
    """Per-image loop over the public calls; returns {(row, defence): correct count}, kept."""
    counts: dict[tuple[str, str], int] = {}
    kept = 0
    for path, label in items:
        x = load_image(path, spec=model.spec, device=model.device)
        y = torch.tensor([label], device=model.device)
        with torch.no_grad():
            if int(model(x).argmax(1)) != label:
                continue
        kept += 1
        for name in ["clean", *attacks]:
            if name == "clean":
                adv = x
            else:
                adv = attack(model, x, y, name, preset=preset, seed=seed, **overrides.get(name, {})).adversarial
            with torch.no_grad():
                none = int(model(adv).argmax(1))
                single = int(model(defend(model, adv, seed=seed)).argmax(1))
            ens = int(ensemble_predict(model, adv, n=ensemble, seed=seed).prediction[0])
            for d, pred in (("none", none), ("single", single), (f"ens{ensemble}", ens)):
                counts[(name, d)] = counts.get((name, d), 0) + int(pred == label)
    return counts, kept


def compare(model, items, attacks, args, overrides, title):
    """Time evaluate() (and optionally its whole-chunk NCHW variant) against the naive loop."""
    settings = ev.ProtocolSettings(attacks=tuple(attacks), preset=args.preset, table=1, ensemble=args.ensemble,
                                   seed=0, batch_size=len(items), tuning_fraction=0.0, attack_params=overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    result = ev.evaluate(model, items, settings)
    batched_s, batched_cpu = time.perf_counter() - t0, time.process_time() - c0

    if args.nchw_too:
        saved_batch = ev.batching.CPU_MODEL_BATCH
        ev.batching.CHANNELS_LAST_ON_CPU, ev.batching.CPU_MODEL_BATCH = False, len(items)
        t0, c0 = time.perf_counter(), time.process_time()
        ev.evaluate(model, items, settings)
        nchw_s, nchw_cpu = time.perf_counter() - t0, time.process_time() - c0
        ev.batching.CHANNELS_LAST_ON_CPU, ev.batching.CPU_MODEL_BATCH = True, saved_batch

    t0, c0 = time.perf_counter(), time.process_time()
    counts, kept = naive(model, items, attacks, args.preset, overrides, args.ensemble, seed=0)
    naive_s, naive_cpu = time.perf_counter() - t0, time.process_time() - c0

    n = len(items)
    print(f"\n== {title}: {1 + len(attacks)} row(s); kept (correct before attack): batched {result.kept}/{n}, "
          f"naive {kept}/{n}")
    print(f"{'':30s}{'wall s':>9s}{'CPU s':>9s}{'images/min (CPU)':>18s}")

    def line(name, wall, cpu, extra=""):
        print(f"{name:30s}{wall:9.1f}{cpu:9.1f}{60 * n / cpu:18.2f}{extra}")

    line("naive per-image loop", naive_s, naive_cpu)
    if args.nchw_too:
        line("evaluate, whole-chunk NCHW", nchw_s, nchw_cpu, f"   ({naive_cpu / nchw_cpu:.2f}x)")
    line("pd_core.evaluate (batched)", batched_s, batched_cpu)
    print(f"speed-up: {naive_cpu / batched_cpu:.2f}x in CPU time, {naive_s / batched_s:.2f}x in wall time "
          f"(target >= 3x)")
    return result, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="images (default 8)")
    parser.add_argument("--attacks", default="fgsm,igsm,deepfool,jsma,lbfgs,cw")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--cw-preset", default="interactive",
                        help="preset for C&W (default interactive: paper's 4x100 steps are minutes per image)")
    parser.add_argument("--ensemble", type=int, default=10)
    parser.add_argument("--nchw-too", action="store_true",
                        help="also time the batched evaluation with whole chunks in NCHW through the model "
                             "(no channels-last, no CPU mini-batches)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PD_THREADS", "2")))
    from pd_core.runtime import keep_freed_memory

    keep_freed_memory()  # as every entry point does (pd_core.runtime.configure_from_env)
    attacks = [a for a in args.attacks.split(",") if a]
    overrides = {}
    if "cw" in attacks and args.cw_preset != args.preset:
        overrides["cw"] = ATTACKS["cw"].preset(args.cw_preset)
    model = load_model(device="cpu")
    items, source = choose_items(args.n)
    # Warm-up of both paths on one image (imports such as Foolbox's, oneDNN kernel set-up for the
    # batch shapes, allocator), so that neither side pays first-call costs inside its timing.
    warm = [a for a in ("fgsm",) if a in attacks] or []
    ev.evaluate(model, items[:min(len(items), ev.batching.CPU_MODEL_BATCH + 1)],
                ev.ProtocolSettings(attacks=tuple(warm), preset=args.preset, ensemble=args.ensemble,
                                    batch_size=len(items), tuning_fraction=0.0))
    naive(model, items[:1], warm, args.preset, overrides, args.ensemble, seed=0)
    print(f"images: {source}; model {model.name} on {model.device}, {torch.get_num_threads()} threads")
    print(f"rows: clean + {', '.join(attacks)} at preset '{args.preset}'"
          + (f" (C&W at preset '{args.cw_preset}': {overrides['cw']})" if "cw" in overrides else "")
          + f"; defences: none, single, Ens-{args.ensemble}")

    print("CPU time (time.process_time) is the fair measure on a shared machine: wall time counts the other "
          "users' load, which changes between the runs.")
    result = None
    for rows, title in ((attacks, "Table 1, all rows"), ([], "clean row only: the defence's cost (single + Ens-10)")):
        r = compare(model, items, rows, args, overrides, title)
        result = result or r
    result, counts = result
    s = result.summary.set_index(["attack", "defence"])
    print("\ncorrect counts (batched | naive; seeds are drawn differently, so single runs may differ):")
    for name in ["clean", *attacks]:
        cells = []
        for d in ("none", "single", f"ens{args.ensemble}"):
            b = int(s.loc[(name, d), "correct"]) if (name, d) in s.index else -1
            cells.append(f"{d} {b}|{counts.get((name, d), 0)}")
        print(f"  {name:9s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
