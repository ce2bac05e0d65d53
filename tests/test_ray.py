"""Evaluation on Ray (pd_core.evaluation.distributed), checked against the single-process run.

Ray listens on every interface; on these machines only loopback traffic is allowed, so the Ray
tests run in a loopback-only network namespace: the outer test below runs
this file's inner tests there through ``tests/ray_namespace.py`` (skipped, with the reason, where no
such namespace can be made).

Few gallery images (Foolbox's ImageNet samples), cheap attacks (FGSM, IGSM), Ens-2, chunks of 2
images: 2 chunks × 3 attacks = 6 units.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gallery_cases import labelled_folder
from ray_namespace import INNER, REPO, inner, run_inner_tests

KW = dict(attacks=("fgsm", "igsm"), ensemble=2, batch_size=2, limit=4, tuning_fraction=0.0, seed=3)


def _settings(**changes):
    from pd_core.evaluation.settings import ProtocolSettings

    return ProtocolSettings(**{**KW, **changes})


def _cluster(ray, **kw):
    from pd_core.evaluation.settings import ClusterSettings

    return ClusterSettings(ray=ray, **kw)


@pytest.mark.slow
@pytest.mark.skipif(INNER, reason="outer wrapper")
def test_ray_scenarios_in_a_loopback_namespace():
    run_inner_tests(__file__, expected_passed=5)


# ------------------------------------------------------------------ inner tests (in the namespace)
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return labelled_folder(tmp_path_factory.mktemp("gallery"), count=4)


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """The single-process run (today's path), as CSV rows."""
    from pd_core.evaluation import evaluate, read_results
    from pd_core.models import load_model

    out = tmp_path_factory.mktemp("ref") / "ref.csv"
    evaluate(load_model("efficientnet_lite0", device="cpu"), folder, _settings(), out_csv=out)
    return read_results(out)


def _same_table(csv_path, reference):
    from pd_core.evaluation import read_results

    key = ["image", "attack", "preset", "defence"]
    got = read_results(csv_path).sort_values(key).reset_index(drop=True)
    ref = reference.sort_values(key).reset_index(drop=True)
    assert len(got) == len(ref) > 0
    exact = ["image", "label", "attack", "preset", "defence", "prediction", "correct", "seed", "copies",
             "single_correct", "attack_success", "adv_rank_in_clean_top5", "true_rank_in_adv_top5", "agreement"]
    assert got[exact].astype(str).equals(ref[exact].astype(str))
    for col in ("norm_l2", "linf_255", "psnr"):
        a, b = got[col].astype(float).to_numpy(), ref[col].astype(float).to_numpy()
        same = a == b
        assert (same | (abs(np.where(same, 0, a) - np.where(same, 0, b)) <= 1e-6)).all(), col


def _raw_row_count(store):
    from pd_core.evaluation.shards import read_shards

    return len(read_shards(store, deduplicate=False)), len(read_shards(store))


@inner
def test_two_node_cluster_gives_the_single_process_table(folder, reference, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from pd_core.evaluation.distributed import evaluate_distributed

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        snaps = []
        res = evaluate_distributed("efficientnet_lite0", folder, _settings(), store=tmp_path / "shards",
                                   cluster=_cluster(cluster.address), out_csv=tmp_path / "out.csv",
                                   on_progress=snaps.append)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 2
    assert res.meta["distributed"]["computed"] == res.meta["distributed"]["units"] == 6
    assert snaps[-1].done == snaps[-1].total == 6 and snaps[-1].workers == 2
    _same_table(tmp_path / "out.csv", reference)
    raw, merged = _raw_row_count(tmp_path / "shards")
    assert raw == merged == len(reference)
    # Both nodes' actors wrote shards (pull-based: each took units).
    writers = {p.name.split("-")[1] for p in (tmp_path / "shards").glob("shard-*.parquet")}
    assert len(writers) == 2


@inner
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(folder, reference, tmp_path):
    import ray

    from pd_core.evaluation.distributed import evaluate_distributed

    killed = []

    def kill_one(snap):
        if not killed and snap.done >= 1 and snap.running >= 1 and snap.worker_pids:
            os.kill(snap.worker_pids[0], signal.SIGKILL)
            killed.append(snap.worker_pids[0])

    try:
        res = evaluate_distributed("efficientnet_lite0", folder, _settings(), store=tmp_path / "shards",
                                   cluster=_cluster("local:2"), out_csv=tmp_path / "out.csv", on_progress=kill_one)
    finally:
        ray.shutdown()
    assert killed
    d = res.meta["distributed"]
    assert d["failed"] >= 1 and d["retried"] >= 1 and d["computed"] == d["units"] == 6
    _same_table(tmp_path / "out.csv", reference)
    raw, merged = _raw_row_count(tmp_path / "shards")
    assert raw == merged == len(reference)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), so the test kills only what it started."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


DRIVER = """
import sys, time
from pd_core.evaluation.distributed import evaluate_distributed
from pd_core.evaluation.settings import ClusterSettings, ProtocolSettings
evaluate_distributed("efficientnet_lite0", sys.argv[1],
                     ProtocolSettings(attacks=("fgsm", "igsm"), ensemble=2, batch_size=2, limit=4, tuning_fraction=0.0,
                                      seed=3),
                     store=sys.argv[2], cluster=ClusterSettings(ray="local:1", in_flight=1),
                     out_csv=sys.argv[3] if len(sys.argv) > 3 else None)
"""


@inner
def test_driver_killed_and_rerun_continues_without_recomputing(folder, reference, tmp_path):
    from pd_core.evaluation.shards import finished_units, shard_files

    store = tmp_path / "shards"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, str(script), str(folder), str(store)], cwd=REPO, env=env,
                            start_new_session=True, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while len(shard_files(store)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
    # The driver and every process it started (Ray's GCS, raylet, workers), by pid.
    family = [proc.pid, *_descendants(proc.pid)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    # Ray's own processes follow their driver; wait until nothing writes any more.
    stable, last = 0, -1
    while stable < 5:
        n = len(shard_files(store))
        stable, last = (stable + 1, n) if n == last else (0, n)
        time.sleep(1)
    before = finished_units(store)
    assert 2 <= len(before) < 6, "the driver was not killed mid-run"
    rerun = subprocess.run([sys.executable, str(script), str(folder), str(store), str(tmp_path / "out.csv")],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = finished_units(store)
    assert len(after) == 6 and set(after.values()) == {1}  # every unit computed exactly once
    _same_table(tmp_path / "out.csv", reference)
    import json

    meta = json.loads((store / "meta.json").read_text())
    assert meta["distributed"]["resumed"] == len(before)
    assert meta["distributed"]["computed"] == 6 - len(before)


@inner
def test_a_failing_plugin_keeps_the_other_columns_and_is_retried(folder, tmp_path):
    """As in the single process: a plugin that raises loses only its own rows, the units are
    reported in ``failed_units`` and left unfinished, so the same run with the plugin fixed
    computes them again (the rows computed the first time stay, once, after the merge)."""
    from pd_core.defences.registry import unregister_defence
    from pd_core.evaluation.distributed import evaluate_distributed

    plugin = tmp_path / "mine.py"
    plugin.write_text("def mine(x, *, generator):\n    raise ValueError('not today')\n\nmine.randomised = False\n")
    settings = _settings(attacks=("fgsm",), defences=f"jpeg,{plugin}:mine")
    try:
        first = evaluate_distributed("efficientnet_lite0", folder, settings, store=tmp_path / "shards",
                                     cluster=_cluster("local:1"), out_csv=tmp_path / "out.csv")
        assert sorted((f["chunk"], f["attack"], f["defence"]) for f in first.failed_units) == [
            (0, "clean", "mine"), (0, "fgsm", "mine"), (1, "clean", "mine"), (1, "fgsm", "mine")]
        assert all("not today" in f["reason"] for f in first.failed_units)
        assert set(first.rows["defence"]) == {"none", "jpeg"}
        assert (first.rows["defence"] == "jpeg").sum() == 2 * first.kept > 0  # clean and FGSM rows kept
        plugin.write_text("def mine(x, *, generator):\n    return x.flip(-1)\n\nmine.randomised = False\n")
        second = evaluate_distributed("efficientnet_lite0", folder, settings, store=tmp_path / "shards",
                                      cluster=_cluster("local:1"), out_csv=tmp_path / "out.csv")
    finally:
        unregister_defence("mine")
    assert second.failed_units == [] and second.meta["distributed"]["computed"] == 4
    counts = second.rows.groupby("defence").size()
    assert counts["mine"] == counts["jpeg"] == 2 * second.kept and len(second.rows) == len(first.rows) + 2 * first.kept


@inner
def test_progress_snapshot_and_parse_target():
    from pd_core.evaluation import EvaluationError
    from pd_core.evaluation.dispatch import ProgressSnapshot
    from pd_core.evaluation.ray_cluster import parse_ray_target

    assert parse_ray_target("local:3") == (None, 3)
    assert parse_ray_target("auto") == ("auto", None)
    with pytest.raises(EvaluationError, match="local:N"):
        parse_ray_target("local:zero")
    snap = ProgressSnapshot(10, 4, 1, 2, 1, 1, 2, 30.0, 0.1, 60.0)
    assert snap.fraction == 0.4 and "4/10 units" in snap.line() and "1 failed / 1 retried" in snap.line()
