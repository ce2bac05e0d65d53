"""Scaling of the Ray evaluation (issue 12): Table 1 with 1 and with 2 workers of one thread each.

Table 1 (clean, FGSM, IGSM, DeepFool; no defence, single and Ens-10) on the first 32 evaluation
images of ``../shared/imagenet-dev``, in units of 4 images (the CPU's model batch), once on a
local Ray instance with one worker and once with two, each worker one torch thread. Prints the
wall time of each run (Ray start and model loading included, and the dispatch alone), the
speed-up (target ≥ 1.7× on this 2-core machine), whether both runs gave the same rows, the CPU
time of the units and the share of a core each worker received (other processes on the machine
take the rest, which caps the speed-up whatever the engine does), the measured cost per image of
each attack, and an ESTIMATE — an extrapolation, not a measurement —
of 1,000 and 50,000 images on N such workers.

Ray listens on every interface; on machines that only allow loopback traffic run it in a
loopback-only network namespace (as root):

    unshare -n sh -c 'ip link set lo up && exec python bench/bench_scale.py'

Options: ``--images N`` (32), ``--attacks`` (fgsm,igsm,deepfool), ``--batch-size`` (4).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEV = REPO.parent / "shared" / "imagenet-dev"


def run_once(workers: int, store: Path, args) -> dict:
    import ray

    from pd_core.evaluation.distributed import evaluate_distributed
    from pd_core.evaluation.settings import ClusterSettings, ProtocolSettings

    snaps = []
    started = time.monotonic()
    settings = ProtocolSettings(attacks=tuple(args.attacks.split(",")), ensemble=10, limit=args.images,
                                batch_size=args.batch_size)
    result = evaluate_distributed("efficientnet_lite0", DEV, settings, store=store,
                                  cluster=ClusterSettings(ray=f"local:{workers}", threads=1), on_progress=snaps.append)
    wall = time.monotonic() - started
    ray.shutdown()
    dispatch = snaps[-1].elapsed  # from the workers being ready (model loaded) to the last unit
    return {"wall": wall, "dispatch": dispatch, "result": result, "load": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--attacks", default="fgsm,igsm,deepfool")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    if not DEV.is_dir():
        print(f"needs {DEV} (200 ImageNet dev images)")
        return 2
    print(f"Table 1 ({args.attacks}, Ens-10) on {args.images} images of imagenet-dev, units of {args.batch_size} "
          f"images; {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: run_once(n, Path(tmp) / f"w{n}", args) for n in (1, 2)}
        rows = {n: r["result"].rows.sort_values(["image", "attack", "preset", "defence"]).reset_index(drop=True)
                for n, r in runs.items()}
        same = rows[1][["image", "attack", "defence", "prediction"]].equals(
            rows[2][["image", "attack", "defence", "prediction"]])
        for n, r in runs.items():
            d = r["result"].meta["distributed"]
            print(f"{n} worker(s): {r['wall']:7.1f} s wall (Ray start + model load included), "
                  f"{r['dispatch']:7.1f} s dispatch, {r['wall'] - r['dispatch']:5.1f} s start-up and merge; "
                  f"{d['computed']} units; each worker had {r['result'].meta.get('worker_cpu_share') or 0:.2f} "
                  f"of a core while computing; load average after {r['load'][0]:.2f}")
        print(f"speed-up with 2 workers: {runs[1]['wall'] / runs[2]['wall']:.2f}x wall, "
              f"{runs[1]['dispatch'] / runs[2]['dispatch']:.2f}x dispatch (target >= 1.7x)")
        print(f"same predictions with 1 and 2 workers: {same} ({len(rows[1])} rows)")
        cpu = {n: r["result"].meta.get("worker_cpu_seconds") or 0.0 for n, r in runs.items()}
        share = {n: r["result"].meta.get("worker_cpu_share") or 0.0 for n, r in runs.items()}
        print(f"CPU time of all units: {cpu[1]:.1f} s with 1 worker, {cpu[2]:.1f} s with 2 (equal when the engine "
              f"adds no work); the workers received {share[1]:.2f} and 2 x {share[2]:.2f} cores: below 1 per "
              "worker, other processes had the rest")
        if Path("/proc/sys/kernel/sched_autogroup_enabled").is_file() and \
                Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
            print("note: this kernel shares CPU time between sessions (autogroup), not processes; the Ray workers "
                  "are all in this bench's session, so while another session is busy they share that session's "
                  "part of the cores, however many there are")
        if cpu[2] > 0:
            print(f"ESTIMATE for cores nobody else uses (1-worker CPU time / half the 2-worker CPU time, perfect "
                  f"balance assumed; not measured): {2 * cpu[1] / cpu[2]:.2f}x")
        per_unit = runs[1]["result"].meta["unit_costs"]
        print("\nmeasured cost per image (1 worker, 1 thread; attack + clean pass + no defence/single/Ens-10):")
        for attack, seconds in per_unit.items():
            print(f"  {attack:9s} {seconds:6.2f} s/image, {seconds * args.batch_size:6.2f} s per unit of "
                  f"{args.batch_size} images")
        per_image = sum(per_unit.values())
        efficiency = runs[1]["dispatch"] / runs[2]["dispatch"] / 2
        print(f"  all rows {per_image:6.2f} s/image; parallel efficiency measured at 2 workers: {efficiency:.2f}")
        print("\nESTIMATE (extrapolated from the costs above, assuming the 2-worker efficiency holds; "
              "not measured):")
        for images in (1000, 50000):
            cells = [f"{n} workers: {images * per_image / (n * (1.0 if n == 1 else min(1.0, efficiency))) / 3600:.2f} h"
                     for n in (1, 2, 8, 32)]
            print(f"  {images:6d} images, one thread per worker -> " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
